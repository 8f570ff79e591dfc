"""Small sentence-transformers models built on the spot, with random weights,
for parity tests (and bench/model_parity.py): BERT and XLM-RoBERTa, any
pooling, a Dense layer or not, prompts or not, the Pooling module in a
folder under any name. Not a test module.

Nothing is downloaded: BERT uses the bundled model's tokenizer; XLM-RoBERTa
gets a small Unigram (SentencePiece-style) tokenizer trained here on the
sample corpus, with XLM-R's special tokens and ids.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((REPO / "sample_corpus").rglob("*.md"))]


def xlmr_tokenizer(folder: Path, vocab_size: int = 1200, pad_to: int | None = None) -> int:
    """A SentencePiece-style Unigram tokenizer with XLM-R's special tokens
    (<s>=0, <pad>=1, </s>=2, <unk>=3), saved into ``folder``; returns the
    vocabulary size. ``pad_to``: grow the vocabulary with rare random pieces
    to that many (a real XLM-R tokenizer has 250,002), for timing."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import XLMRobertaTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(_texts(), trainer)
    if pad_to:
        import random
        import string

        data = json.loads(tok.to_str())
        vocab = data["model"]["vocab"]
        mask = vocab.pop(next(i for i, (p, _) in enumerate(vocab) if p == "<mask>"))
        seen = {p for p, _ in vocab}
        floor = min(score for _, score in vocab)
        rng = random.Random(0)
        while len(vocab) < pad_to - 1:
            piece = "▁" * (rng.random() < 0.5) + "".join(
                rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 12))
            )
            if piece not in seen:
                seen.add(piece)
                vocab.append([piece, floor - 1 - rng.random() * 10])
        vocab.append(mask)
        for added in data["added_tokens"]:
            if added["content"] == "<mask>":
                added["id"] = len(vocab) - 1
        tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    fast.model_max_length = 128
    fast.save_pretrained(str(folder))
    return int(tok.get_vocab_size())


def build(
    folder: Path,
    family: str = "bert",
    pooling: str = "mean",
    dense: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt: str | None = None,
    include_prompt: bool = True,
    pooling_folder: str | None = None,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    max_seq_length: int = 128,
    vocab_size: int | None = None,
    heads: int | None = None,
) -> Path:
    """A sentence-transformers model folder with random (seeded) weights."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    from msearch.encoders import bundled_model_path

    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    hf = folder.parent / (folder.name + "-hf")
    shutil.rmtree(hf, ignore_errors=True)
    hf.mkdir(parents=True)
    torch.manual_seed(seed)
    common: dict[str, Any] = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads or max(hidden // 16, 2),
        intermediate_size=hidden * 4,
    )
    if family == "bert":
        for f in (
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        ):
            shutil.copy(bundled_model_path() / f, hf / f)
        BertModel(
            BertConfig(vocab_size=30522, max_position_embeddings=512, **common)
        ).save_pretrained(hf)
    elif family == "xlm-roberta":
        trained = xlmr_tokenizer(hf, pad_to=vocab_size)
        cfg = XLMRobertaConfig(
            vocab_size=vocab_size or trained,
            max_position_embeddings=max_seq_length + 2,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            **common,
        )
        XLMRobertaModel(cfg).save_pretrained(hf)
    else:
        raise ValueError(family)
    modules: list[Any] = [
        models.Transformer(str(hf), max_seq_length=max_seq_length),
        models.Pooling(hidden, pooling_mode=pooling, include_prompt=include_prompt),
    ]
    if dense:
        modules.append(models.Dense(hidden, hidden // 2, activation_function=torch.nn.Tanh()))
    modules.append(models.Normalize())
    model = SentenceTransformer(
        modules=modules, prompts=prompts or {}, default_prompt_name=default_prompt, device="cpu"
    )
    model.save(str(folder))
    shutil.rmtree(hf)
    if pooling_folder:
        # modules.json may name the Pooling module's folder anything.
        spec = json.loads((folder / "modules.json").read_text())
        for m in spec:
            if m["type"].endswith("Pooling"):
                (folder / m["path"]).rename(folder / pooling_folder)
                m["path"] = pooling_folder
        (folder / "modules.json").write_text(json.dumps(spec, indent=2))
    return folder


def set_pooling(folder: Path, pooling: str) -> Path:
    """Switch a model folder's ``1_Pooling`` to one ``pooling_mode_*`` (in place)."""
    import json

    cfg_path = folder / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in list(cfg):
        if key.startswith("pooling_mode"):
            cfg[key] = key == pooling
    cfg_path.write_text(json.dumps(cfg))
    return folder
