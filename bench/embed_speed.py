"""Indexing throughput on CPU: candidate encoders against plain sentence-transformers.

Same real passages for every candidate (SciFact and NFCorpus abstracts, title
first, cut at the model's 256 tokens by each encoder the same way), timed
interleaved round by round so machine noise hits all candidates alike.

  python bench/embed_speed.py [--passages 256] [--rounds 3] [--onnx] [--write]

Candidates: plain ``SentenceTransformer.encode`` at its default batch 32 in a
process of its own (the baseline, see PlainProcess), and in msearch's process
for reference; msearch's own indexing encoder as `msearch index` runs it
(``msearch.encoders.torch_encoder``: length-sorted batches of at most 2,048 tokens), in
float32 (the default) and in bfloat16 (``--fast``; only where the CPU has
bfloat16); and, with --st-batched, the same batches through
sentence-transformers (``SentenceTransformerEncoder``, the path for
models msearch's own encoders do not cover, and msearch's indexing path
before its torch encoder). With --onnx (needs
``pip install -e '.[bench]'``): ONNX Runtime fp32 (plain export; with ORT's
BERT fusions) and int8 (dynamic quantization, per channel). Reports
passages/s, the ratio to the baseline and the cosine to the baseline's
vectors (min and mean).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
EVAL = BENCH.parent.parent / "shared" / "eval"


def passages(n: int, words: int = 0) -> list[str]:
    """``n`` abstracts, title first; with ``words``, each cut to its first
    ``words`` words (real text at the passage lengths of short notes)."""
    out: list[str] = []
    for coll in ("scifact", "nfcorpus"):
        with open(EVAL / coll / "corpus.jsonl", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= n // 2:
                    break
                d = json.loads(line)
                text = f"{d['title']}\n{d['text']}"
                out.append(" ".join(text.split()[:words]) if words else text)
    return out


def export_onnx(folder: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder)).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(
            self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
        ) -> torch.Tensor:
            h = self.m(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    ids = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(
            Wrap(model),
            (ids, ids, torch.zeros_like(ids)),
            str(out),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes},
            opset_version=17,
            dynamo=False,
        )


class OrtEncoder:
    def __init__(self, path: Path, folder: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads = os.cpu_count() or 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(256)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        encs = self.tok.encode_batch([t.strip() for t in texts])
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        out = np.zeros((len(texts), 384), np.float32)
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            n = max(len(encs[i].ids) for i in rows)
            ids = np.zeros((len(rows), n), np.int64)
            mask = np.zeros_like(ids)
            for j, i in enumerate(rows):
                m = len(encs[i].ids)
                ids[j, :m] = encs[i].ids
                mask[j, :m] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            v = self.sess.run(None, feeds)[0]
            out[rows] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out


def add_onnx(cands: dict, folder: Path, texts: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    tmp = Path(tempfile.mkdtemp())
    export_onnx(folder, tmp / "fp32.onnx")
    opt = optimizer.optimize_model(
        str(tmp / "fp32.onnx"), model_type="bert", num_heads=12, hidden_size=384
    )
    opt.save_model_to_file(str(tmp / "fused.onnx"))
    quantize_dynamic(
        str(tmp / "fp32.onnx"),
        str(tmp / "int8.onnx"),
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    for name, path in (
        ("ORT fp32", "fp32"),
        ("ORT fp32 fused", "fused"),
        ("ORT int8 per-channel", "int8"),
    ):
        enc = OrtEncoder(tmp / f"{path}.onnx", folder)
        cands[name] = lambda enc=enc: enc.encode(texts, 32)


BASELINE = "sentence-transformers b32, own process (baseline)"


def _plain_worker(conn: Any, folder: str, texts: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(folder, device="cpu")
    while conn.recv():
        conn.send(st.encode(texts, batch_size=32, normalize_embeddings=True))


class PlainProcess:
    """Plain ``SentenceTransformer.encode`` in a process of its own.

    Why: msearch tunes its process for indexing (``keep_freed_memory``: the
    C allocator keeps freed blocks), which also speeds up sentence-transformers
    running in that process. The baseline is sentence-transformers as a user's
    script runs it, so it gets a fresh process, still timed round by round
    with the others.
    """

    def __init__(self, folder: Path, texts: list[str]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_plain_worker, args=(child, str(folder), texts))
        self.proc.start()

    def encode(self) -> np.ndarray:
        self.conn.send(True)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(False)
        self.proc.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--words", type=int, default=0, help="cut each passage to N words")
    ap.add_argument("--onnx", action="store_true", help="also ONNX Runtime candidates")
    ap.add_argument(
        "--st-batched", action="store_true", help="also token batches through sentence-transformers"
    )
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    from msearch.encoders import (
        BUNDLED_MODEL,
        BUNDLED_SOURCE,
        Model,
        bundled_model_path,
        cpu_has_bfloat16,
        quiet_libraries,
        token_counter,
    )
    from msearch.encoders.st_encoder import SentenceTransformerEncoder

    quiet_libraries()
    folder = bundled_model_path()
    texts = passages(args.passages, args.words)
    st = SentenceTransformer(str(folder), device="cpu")
    plain = PlainProcess(folder, texts)

    cands = {
        BASELINE: plain.encode,
        "sentence-transformers b32, in msearch's process": lambda: st.encode(
            texts, batch_size=32, normalize_embeddings=True
        ),
    }
    precisions = ["float32"] + (["bfloat16"] if cpu_has_bfloat16() else [])
    for prec in precisions:
        ours = Model(BUNDLED_MODEL, BUNDLED_SOURCE, folder, "cpu", prec).passage_encoder()
        label = "default" if prec == "float32" else "--fast"
        cands[f"msearch {prec} ({label})"] = lambda ours=ours: ours.encode(texts, 32)
        if args.st_batched:
            via = SentenceTransformerEncoder(BUNDLED_MODEL, folder, "cpu", precision=prec)
            lengths = [n + 2 for n in token_counter(folder).count(texts)]
            cands[f"token batches via sentence-transformers, {prec}"] = (
                lambda via=via, lengths=lengths: via.encode_documents(texts, lengths, 32)
            )
    if args.onnx:
        add_onnx(cands, folder, texts)
    ref = cands[BASELINE]()
    for f in cands.values():  # warm up
        f()
    times: dict[str, list[float]] = {k: [] for k in cands}
    vecs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, f in cands.items():
            t = time.perf_counter()
            vecs[name] = f()
            times[name].append(time.perf_counter() - t)
    plain.close()
    base = statistics.median(times[BASELINE])
    lines = [
        "| encoder | passages/s | × baseline | cosine min | cosine mean |",
        "|---|---|---|---|---|",
    ]
    for name in cands:
        t = statistics.median(times[name])
        cos = (vecs[name] * ref).sum(axis=1)
        lines.append(
            f"| {name} | {len(texts) / t:.1f} | {base / t:.2f} | {cos.min():.5f} | {cos.mean():.5f} |"
        )
    report(
        "CPU indexing throughput",
        f"{len(texts)} SciFact+NFCorpus abstracts"
        + (f" cut to {args.words} words" if args.words else "")
        + ", bundled all-MiniLM-L6-v2, "
        f"median of {args.rounds} interleaved rounds; CPU bfloat16: "
        f"{'yes' if cpu_has_bfloat16() else 'no'}",
        lines,
        args.write,
    )


if __name__ == "__main__":
    main()
