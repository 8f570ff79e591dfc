"""Indexing throughput on a GPU (issue 6), prepared here and run on a lent machine.

The bundled weights (87 MB) are too big to travel with a device run (64 MiB),
so --prepare writes a float16 copy of the model folder (44 MB) under
bench/.gpu/ (git-ignored); the device run carries that folder:

  python bench/gpu_speed.py --prepare                  # here, once
  # on the device, with carry=["bench/.gpu"]:
  python3 bench/gpu_speed.py --passages 20000 --write

Passages are made up of ~85 words drawn from sample_corpus/ (so token
lengths are realistic). Candidates, each timed over all passages after a
warm-up: plain ``SentenceTransformer.encode`` at batch 32 (the baseline);
msearch's indexing encoder as `msearch index --device cuda` runs it at
--batch-size 32, at its GPU default of 1,024, and with --fast (bfloat16);
and ``msearch index --fast`` end to end on the same
passages written as files of ten paragraphs (walk, read, chunk, embed,
store, BM25), to see how much of the GPU's rate the host side keeps.
The cosine column compares each candidate's first 512 vectors with float32
vectors computed on the CPU from the same weights. Without a GPU it runs on
the CPU (a smoke test: --passages 64); the figures then mean nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))  # the device machine runs from a copy, not an install
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
GPU_MODEL = BENCH / ".gpu" / "model"
WORDS_PER_PASSAGE = 85
CHECK = 512  # vectors compared against the CPU in float32


def prepare() -> None:
    """The bundled model folder with float16 weights (loaded back as float32)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from msearch.encoders import bundled_model_path

    src = bundled_model_path()
    if GPU_MODEL.exists():
        shutil.rmtree(GPU_MODEL)
    shutil.copytree(src, GPU_MODEL, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    weights = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v.astype(np.float16) for k, v in weights.items()}, str(GPU_MODEL / "model.safetensors")
    )
    size = sum(p.stat().st_size for p in GPU_MODEL.rglob("*") if p.is_file())
    print(f"gpu_speed: wrote {GPU_MODEL} ({size / 1e6:.1f} MB)")


def make_passages(n: int, seed: int = 0) -> list[str]:
    words = [
        w
        for p in sorted((REPO / "sample_corpus").rglob("*"))
        if p.is_file() and ".msearch" not in p.parts
        for w in p.read_text(encoding="utf-8").split()
    ]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(0, max(1, len(words) - WORDS_PER_PASSAGE))
        length = rng.randint(WORDS_PER_PASSAGE - 25, WORDS_PER_PASSAGE + 25)
        out.append(" ".join(words[start : start + length]))
    return out


def timed(label: str, fn, texts: list[str], sync) -> tuple[float, np.ndarray]:  # type: ignore[no-untyped-def]
    fn(texts[: min(len(texts), 2048)])  # warm-up: kernels, allocator, autotuning
    sync()
    t = time.perf_counter()
    vecs = fn(texts)
    sync()
    dt = time.perf_counter() - t
    print(f"gpu_speed: {label}: {len(texts) / dt:,.0f} passages/s", flush=True)
    return dt, np.asarray(vecs, dtype=np.float32)


PER_FILE = 10  # passages per file in the end-to-end run, one paragraph each


def index_end_to_end(texts: list[str], model: Any) -> tuple[float, int]:
    """``msearch index`` as a user runs it: files written to a folder, then
    walked, read, chunked, embedded and stored with the BM25 side; the
    host's share is what a GPU waits on (see bench/index_speed.py)."""
    import tempfile

    from msearch.chunking import ChunkSettings
    from msearch.indexer import build_index

    work = Path(tempfile.mkdtemp(prefix="msearch-gpu-"))
    (work / "docs").mkdir()
    for k in range(0, len(texts) - PER_FILE + 1, PER_FILE):
        body = "\n\n".join(texts[k : k + PER_FILE]) + "\n"
        (work / "docs" / f"f{k // PER_FILE:05d}.txt").write_text(body, encoding="utf-8")
    model.encode(texts[:2048])  # warm-up, as for the other rows
    t = time.perf_counter()
    # Chunks of at most 128 tokens: each ~85-word paragraph stays one passage.
    stats = build_index(work / "docs", work / "index", model, chunking=ChunkSettings(128, 0))
    dt = time.perf_counter() - t
    print(f"gpu_speed: end to end: {stats.passages / dt:,.0f} passages/s", flush=True)
    return dt, stats.passages


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true", help="write the float16 model copy")
    ap.add_argument("--passages", type=int, default=20000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.prepare:
        prepare()
        return 0
    if not (GPU_MODEL / "model.safetensors").exists():
        print(f"gpu_speed: {GPU_MODEL} missing: run with --prepare first, then carry it")
        return 2

    import torch
    from sentence_transformers import SentenceTransformer

    from msearch.encoders import BUNDLED_MODEL, Model, quiet_libraries

    quiet_libraries()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    card = torch.cuda.get_device_name(0) if cuda else "no GPU (CPU smoke test)"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    texts = make_passages(args.passages)
    ref = Model(BUNDLED_MODEL, "path", GPU_MODEL, "cpu").passage_encoder().encode(texts[:CHECK], 32)

    st = SentenceTransformer(str(GPU_MODEL), device=device, model_kwargs={"dtype": torch.float32})
    cands = {
        "sentence-transformers b32 (baseline)": lambda t: st.encode(
            t, batch_size=32, normalize_embeddings=True
        ),
    }
    for label, prec, batch in (
        ("msearch --device cuda --batch-size 32", "float32", 32),
        ("msearch --device cuda (default batch: 1024)", "float32", None),
        ("msearch --device cuda --fast (default batch: 1024)", "bfloat16", None),
    ):
        emb = Model(BUNDLED_MODEL, "path", GPU_MODEL, device, prec).passage_encoder()
        cands[label] = lambda t, emb=emb, batch=batch: emb.encode(t, batch)

    rows = []
    base = None
    for label, fn in cands.items():
        dt, vecs = timed(label, fn, texts, sync)
        base = base or dt
        cos = (vecs[:CHECK] * ref).sum(axis=1)
        rows.append(f"| {label} | {len(texts) / dt:,.0f} | {base / dt:.2f} | {cos.min():.5f} |")
    assert base is not None
    dt, passages = index_end_to_end(
        texts, Model(BUNDLED_MODEL, "path", GPU_MODEL, device, "bfloat16")
    )
    rows.append(
        f"| msearch index --fast, end to end ({passages:,} passages"
        f" in {len(texts) // PER_FILE:,} files) | {passages / dt:,.0f} | {base / dt:.2f} | |"
    )
    from _results import report

    report(
        f"GPU indexing throughput ({card})",
        f"{len(texts):,} passages of ~{WORDS_PER_PASSAGE} words, all-MiniLM-L6-v2 weights "
        f"stored as float16, torch {torch.__version__}",
        [
            "| encoder | passages/s | × baseline | cosine min vs CPU float32 |",
            "|---|---|---|---|",
            *rows,
        ],
        args.write and cuda,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
