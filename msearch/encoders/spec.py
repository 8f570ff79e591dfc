"""What a sentence-transformers model folder says about itself, read once.

A model is a pipeline of modules (``modules.json``: a Transformer, a
Pooling, perhaps Dense layers, perhaps Normalize), each with a config in its
own folder under any name, plus ``config_sentence_transformers.json``
(prompts, the default prompt, the similarity function). msearch's own
encoders (numpy for queries, torch for indexing) reproduce that pipeline by
hand, so they must understand all of it or not run at all: a pooling mode
read wrong, a Dense layer or a prompt left out, gives vectors that look fine
and are not. :func:`read_spec` gathers everything into one
:class:`ModelSpec`; :attr:`ModelSpec.unsupported` says, in words, what the
fast encoders would get wrong, and then sentence-transformers runs instead
(with a notice).

Prompts follow sentence-transformers 6's rules, which queries
(``encode_query``) and passages (``encode_document``) use: the prompts
dictionary starts as ``{"query": "", "document": ""}`` and the model's
``prompts`` fill it; a query gets ``prompts["query"]``; a document the first
of ``document``, ``passage``, ``corpus`` present (``document`` always is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Architectures the fast encoders implement (the BERT encoder with absolute
# positions; RoBERTa and XLM-RoBERTa differ only in where positions start).
BERT_FAMILY = {"bert": 0, "roberta": 1, "xlm-roberta": 1, "camembert": 1}
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}
LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
FAST_POOLING = ("cls", "mean", "max")


@dataclass(frozen=True)
class DenseSpec:
    """A Dense module: ``activation(x @ W.T + b)``; weights in ``folder``."""

    folder: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a key of ACTIVATIONS' values, or the unknown class name


@dataclass(frozen=True)
class ModelSpec:
    folder: Path
    model_type: str
    max_seq_length: int
    do_lower_case: bool
    pooling: tuple[str, ...]
    include_prompt: bool
    dense: tuple[DenseSpec, ...]
    normalize: bool
    prompts: dict[str, str]
    default_prompt_name: str | None
    similarity: str | None
    word_dim: int
    config: dict[str, Any] = field(default_factory=dict)  # the transformer's config.json
    unsupported: tuple[str, ...] = ()
    transformer_path: str = ""  # the Transformer module's folder, relative
    custom_code: bool = False  # the model ships code of its own (auto_map, custom modules)

    @property
    def transformer_folder(self) -> Path:
        return self.folder / self.transformer_path

    @property
    def dim(self) -> int:
        """Dimension of the sentence vectors."""
        if self.dense:
            return self.dense[-1].out_features
        return self.word_dim * max(len(self.pooling), 1)

    @property
    def position_offset(self) -> int:
        """Where positions start: 0 for BERT; after the padding index for the
        RoBERTa family (``padding_idx + 1``)."""
        if BERT_FAMILY.get(self.model_type, 0) == 0:
            return 0
        return int(self.config.get("pad_token_id", 1)) + 1

    def query_prompt(self) -> str:
        """The prompt ``SentenceTransformer.encode_query`` puts before a query."""
        return self.prompts.get("query", "")

    def document_prompt(self) -> str:
        """The prompt ``SentenceTransformer.encode_document`` puts before a passage."""
        for name in ("document", "passage", "corpus"):
            if name in self.prompts:
                return self.prompts[name]
        return ""

    @property
    def fast(self) -> bool:
        """Whether msearch's own encoders reproduce this model exactly."""
        return not self.unsupported


class SpecError(ValueError):
    """The folder is not a model msearch can describe (its files are unreadable)."""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: unreadable ({exc})") from None


def _class(module_type: str) -> str:
    return module_type.rsplit(".", 1)[-1]


def _pooling_modes(cfg: dict[str, Any]) -> tuple[str, ...]:
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list | tuple):
        return tuple(str(m) for m in mode)
    return tuple(name for key, name in LEGACY_POOLING.items() if cfg.get(key))


def read_spec(folder: Path) -> ModelSpec:
    """Everything msearch needs to know about a sentence-transformers folder.

    A folder without ``modules.json`` is read as sentence-transformers reads
    a plain Hugging Face model: the transformer, then mean pooling.
    """
    folder = Path(folder)
    modules = _json(folder / "modules.json")
    if modules is None:
        modules = [{"type": "Transformer", "path": ""}, {"type": "Pooling", "path": None}]
    if not isinstance(modules, list):
        raise SpecError(f"{folder / 'modules.json'} is not a list of modules")
    unsupported: list[str] = []
    transformer_path: str | None = None
    pooling_cfg: dict[str, Any] | None = None
    dense: list[DenseSpec] = []
    normalize = False
    order: list[str] = []
    custom_code = False
    for m in sorted(modules, key=lambda m: int(m.get("idx", 0)) if isinstance(m, dict) else 0):
        if not isinstance(m, dict):
            raise SpecError(f"{folder / 'modules.json'} is not a list of modules")
        kind = _class(str(m.get("type", "")))
        custom_code |= not str(m.get("type", "sentence_transformers.")).startswith(
            ("sentence_transformers.", "Transformer", "Pooling")
        )
        path = m.get("path")
        sub = folder / path if isinstance(path, str) else None
        order.append(kind)
        if kind == "Transformer" and transformer_path is None:
            transformer_path = path or ""
        elif kind == "Pooling" and pooling_cfg is None:
            pooling_cfg = (_json(sub / "config.json") if sub is not None else None) or {}
        elif kind == "Dense":
            cfg = (_json(sub / "config.json") if sub is not None else None) or {}
            act = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh"))
            dense.append(
                DenseSpec(
                    folder=sub or folder,
                    in_features=int(cfg.get("in_features", 0)),
                    out_features=int(cfg.get("out_features", 0)),
                    bias=bool(cfg.get("bias", True)),
                    activation=ACTIVATIONS.get(act, act),
                )
            )
        elif kind == "Normalize":
            normalize = True
        else:
            unsupported.append(f"a {kind} module")
    expected = ["Transformer", "Pooling", *(["Dense"] * len(dense))] + (
        ["Normalize"] if normalize else []
    )
    if order != expected and not unsupported:
        unsupported.append(f"modules in the order {', '.join(order)}")
    if transformer_path is None:
        unsupported.append("no Transformer module")
        transformer_path = ""
    tfolder = folder / transformer_path
    st_cfg = (
        _json(tfolder / "sentence_bert_config.json")
        or _json(folder / "sentence_bert_config.json")
        or {}
    )
    tok_cfg = _json(tfolder / "tokenizer_config.json") or {}
    config = _json(tfolder / "config.json") or {}
    model_type = str(config.get("model_type", ""))
    if model_type not in BERT_FAMILY:
        unsupported.append(f"model type {model_type or 'unknown'!r}")
    elif config.get("hidden_act", "gelu") != "gelu":
        unsupported.append(f"activation {config.get('hidden_act')!r}")
    elif config.get("position_embedding_type", "absolute") != "absolute":
        unsupported.append("non-absolute position embeddings")
    if config.get("auto_map"):
        unsupported.append("its own modelling code")
        custom_code = True
    if not (tfolder / "model.safetensors").exists():
        unsupported.append("no model.safetensors")
    if not (tfolder / "tokenizer.json").exists():
        unsupported.append("no tokenizer.json")
    pooling_cfg = pooling_cfg if pooling_cfg is not None else {"pooling_mode": "mean"}
    if not isinstance(pooling_cfg, dict):
        raise SpecError(f"{folder}: the Pooling config is not an object")
    modes = _pooling_modes(pooling_cfg)
    if len(modes) != 1 or modes[0] not in FAST_POOLING:
        unsupported.append(f"pooling {'+'.join(modes) or 'none'}")
    for d in dense:
        if d.activation not in ACTIVATIONS.values():
            unsupported.append(f"a Dense activation {d.activation}")
        if not (d.folder / "model.safetensors").exists():
            unsupported.append("Dense weights not in safetensors")
    hidden = int(config.get("hidden_size", 0) or 0)
    word_dim = int(
        pooling_cfg.get("embedding_dimension")
        or pooling_cfg.get("word_embedding_dimension")
        or hidden
    )
    cst = _json(folder / "config_sentence_transformers.json") or {}
    prompts: dict[str, str] = {"query": "", "document": ""}
    raw_prompts = cst.get("prompts") or {}
    if isinstance(raw_prompts, dict):
        for name, text in raw_prompts.items():
            prompts[str(name)] = "" if text is None else str(text)
    default = cst.get("default_prompt_name")
    # sentence-transformers' rule: sentence_bert_config.json's max_seq_length,
    # else the tokenizer's model_max_length capped at the position table.
    positions = int(config.get("max_position_embeddings", 512) or 512)
    if st_cfg.get("max_seq_length"):
        max_len = int(st_cfg["max_seq_length"])
    else:
        max_len = min(int(tok_cfg.get("model_max_length", positions) or positions), positions)
    if BERT_FAMILY.get(model_type, 0):
        # Positions start after the padding index: no more tokens than fit.
        max_len = min(max_len, positions - (int(config.get("pad_token_id", 1)) + 1))
    return ModelSpec(
        folder=folder,
        model_type=model_type,
        max_seq_length=max_len,
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
        pooling=modes,
        include_prompt=bool(pooling_cfg.get("include_prompt", True)),
        dense=tuple(dense),
        normalize=normalize,
        prompts=prompts,
        default_prompt_name=str(default) if isinstance(default, str) else None,
        similarity=cst.get("similarity_fn_name")
        if isinstance(cst.get("similarity_fn_name"), str)
        else None,
        word_dim=word_dim,
        config=config if isinstance(config, dict) else {},
        unsupported=tuple(dict.fromkeys(unsupported)),
        transformer_path=transformer_path,
        custom_code=custom_code,
    )
