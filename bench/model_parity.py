"""Parity of msearch's own encoders with sentence-transformers, per model
family, pooling and prompt (issue 13).

For each model: the worst cosine, over a set of queries and passages, between
msearch's vectors and sentence-transformers' own (``encode_query`` for
queries, ``encode_document`` for passages), for the numpy encoder (queries,
and passages of a small job) and the torch encoder (passages of a large
job). Models: the bundled all-MiniLM-L6-v2 (real weights) as shipped, with
CLS and max pooling, with prompts, and with a random Dense layer; and small
random-weight BERT and XLM-RoBERTa models (tests/tiny_models.py) with every
pooling msearch covers, with prompts kept in or left out of the pooling.

  python bench/model_parity.py [--write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from _results import report, table

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))

from tiny_models import build, set_pooling  # noqa: E402

from msearch.encoders import Model, bundled_model_path  # noqa: E402

WORK = BENCH / ".work" / "parity"


def texts() -> list[str]:
    docs = sorted((BENCH.parent / "sample_corpus").rglob("*.md"))
    out = [p.read_text(encoding="utf-8")[: 100 + 37 * i] for i, p in enumerate(docs)]
    lines = [ln for p in docs for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return out + lines[:60] + ["", "x", "ÜNÏCODE café 日本語", "moon " * 300]


def bundled_variant(name: str, pooling: str | None = None, prompts: dict | None = None) -> Path:
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bundled_model_path(), folder)
    if pooling:
        set_pooling(folder, pooling)
    if prompts:
        path = folder / "config_sentence_transformers.json"
        cfg = json.loads(path.read_text())
        cfg["prompts"] = prompts
        path.write_text(json.dumps(cfg))
    return folder


def bundled_with_dense() -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(bundled_model_path()), device="cpu")
    torch.manual_seed(0)
    dense = models.Dense(384, 256, activation_function=torch.nn.Tanh())
    folder = WORK / "minilm-dense"
    shutil.rmtree(folder, ignore_errors=True)
    SentenceTransformer(modules=[base[0], base[1], dense, models.Normalize()], device="cpu").save(
        str(folder)
    )
    return folder


def measure(folder: Path, sample: list[str]) -> tuple[float, float, float, str]:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    q_ref = np.asarray(st.encode_query(sample, normalize_embeddings=True))
    d_ref = np.asarray(st.encode_document(sample, normalize_embeddings=True))
    notices: list[str] = []
    model = Model("m", "path", folder, "cpu", notice=notices.append)
    q = model.encode_queries(sample)
    small = model.encode(sample[:60])
    large = model.passage_encoder().encode(sample)
    via = "msearch" if model.spec.fast and not notices else "sentence-transformers"

    def worst(a: np.ndarray, b: np.ndarray) -> float:
        return float((a * b).sum(axis=1).min())

    return worst(q, q_ref), worst(small, d_ref[:60]), worst(large, d_ref), via


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sample = texts()
    prompts = {"query": "query: ", "document": "passage: "}
    models: list[tuple[str, str, Path]] = [
        ("BERT (all-MiniLM-L6-v2)", "mean", bundled_model_path()),
        ("BERT (all-MiniLM-L6-v2)", "cls", bundled_variant("minilm-cls", "pooling_mode_cls_token")),
        (
            "BERT (all-MiniLM-L6-v2)",
            "max",
            bundled_variant("minilm-max", "pooling_mode_max_tokens"),
        ),
        (
            "BERT (all-MiniLM-L6-v2)",
            "mean, prompts",
            bundled_variant("minilm-prompts", prompts=prompts),
        ),
        ("BERT (all-MiniLM-L6-v2)", "mean, Dense 384→256", bundled_with_dense()),
    ]
    for family, label in (("bert", "BERT, random"), ("xlm-roberta", "XLM-RoBERTa, random")):
        for pooling in ("cls", "mean", "max"):
            for name, p, include in (
                ("", {}, True),
                (", prompts", prompts, True),
                (", prompts left out of pooling", prompts, False),
            ):
                folder = build(
                    WORK / f"{family}-{pooling}-{bool(p)}-{include}",
                    family=family,
                    pooling=pooling,
                    prompts=p,
                    include_prompt=include,
                    dense=pooling == "mean",
                    hidden=64,
                )
                dense = ", Dense" if pooling == "mean" else ""
                models.append((label, pooling + name + dense, folder))
    rows = []
    for family, pooling, folder in models:
        q, small, large, via = measure(folder, sample)
        rows.append((family, pooling, f"{q:.6f}", f"{small:.6f}", f"{large:.6f}", via))
    header = (
        "model family",
        "pooling",
        "queries (numpy)",
        "passages, small job (numpy)",
        "passages (torch)",
        "encoders",
    )
    report(
        "Parity with sentence-transformers, per family and pooling (worst cosine)",
        f"{len(sample)} texts; reference: encode_query / encode_document",
        table(rows, header),
        args.write,
    )


if __name__ == "__main__":
    main()
