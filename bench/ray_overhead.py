"""Ray's overhead: ``msearch index --ray`` on a local cluster against the
single process, same corpus, same model, same precision (issue 15).

  python bench/ray_overhead.py [--passages 5000] [--precision bfloat16]
                               [--cpus 2] [--rounds 1] [--write]

The corpus: SciFact and NFCorpus abstracts from ../shared/eval, one file
each, as many as make about ``--passages`` passages (counted with the
model's own chunking). Each round indexes it from scratch twice, single
process first, then on Ray (a local cluster of ``--cpus`` CPUs, started and
stopped inside the round, as ``msearch index --ray`` does), and reports:

- wall time of each, and the overhead: Ray's whole wall time (cluster
  start and stop included) over the single process's, less one;
- Ray's start-up (``ray.init``) and shutdown, and its pipeline alone;
- passages/s per worker: passages an actor embedded over the seconds it
  spent embedding them (model loading excluded), the mean over actors;
- the projection for N workers. The driver's share is serial: start-up,
  walk and plan, and writing the segments, which overlaps the embedding
  (the driver writes parcel k while workers embed k+1...). So
  T(N) = fixed + P / min(N x r, d), with P passages, r the rate per
  worker, d the driver's writing rate (passages over its writing seconds)
  and ``fixed`` what this run spent outside that pipeline (start-up, walk,
  plan, commit, shutdown, and the actors' model loading);
- what shipping the files' bytes through Ray's object store would cost
  instead of reading them on the workers (the driver reads every file and
  ``ray.put``s it, a task ``ray.get``s it all), against a task that reads
  them by path: the choice docs/how-it-works.md ("Indexing on a Ray
  cluster: how") explains.

Both indexes are also compared: the smallest cosine between a passage's
two vectors (must be at least 0.9999), and the same passages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import report, table
from embed_speed import EVAL

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def abstracts() -> list[str]:
    """Every SciFact and NFCorpus abstract, title first, alternating."""
    out: list[list[str]] = []
    for coll in ("scifact", "nfcorpus"):
        with open(EVAL / coll / "corpus.jsonl", encoding="utf-8") as fh:
            out.append([f"{d['title']}\n{d['text']}" for d in map(json.loads, fh)])
    a, b = out
    return [t for pair in zip(a, b, strict=False) for t in pair]


def write_corpus(folder: Path, passages: int, model: Any) -> int:
    """Abstracts as files until they make ``passages`` passages (the
    indexer's chunking); returns how many passages they make."""
    from msearch.chunking import ChunkSettings, chunk_texts
    from msearch.indexer import effective_chunking

    _, settings = effective_chunking(
        ChunkSettings(), model.record.max_seq_length, model.document_prompt_tokens
    )
    texts = abstracts()
    total = 0
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        for i, chunks in enumerate(chunk_texts(batch, model.counter, settings)):
            if total >= passages:
                return total
            (folder / f"d{(start + i) // 1000:02d}").mkdir(exist_ok=True)
            (folder / f"d{(start + i) // 1000:02d}" / f"doc-{start + i}.txt").write_text(
                batch[i] + "\n"
            )
            total += len(chunks)
    return total


def vectors_by_passage(index_dir: Path) -> dict[tuple[str, int, int], np.ndarray]:
    from msearch.storage import reader

    idx = reader.load_index(index_dir)
    out = {}
    for rec in idx.meta.files:
        seg = idx.segments[rec.segment]
        for r in range(rec.row, rec.row + rec.rows):
            out[(rec.path, int(seg.passages[r, 3]), int(seg.passages[r, 4]))] = np.asarray(
                seg.embeddings[r]
            )
    return out


def shipping(ray: Any, paths: list[Path], parcel: int) -> tuple[float, float, int]:
    """(seconds to ship the files' bytes through the object store, seconds
    for workers to read them by path, bytes)."""

    @ray.remote(num_cpus=0.25)
    def take(*parts: bytes) -> int:  # the refs arrive resolved: the bytes were moved
        return sum(len(p) for p in parts)

    @ray.remote(num_cpus=0.25)
    def read(names: list[str]) -> int:
        return sum(len(Path(n).read_bytes()) for n in names)

    groups = [paths[i : i + parcel] for i in range(0, len(paths), parcel)]
    # Warm: the worker processes start before either is timed.
    ray.get([take.remote(ray.put(b"")) for _ in groups] + [read.remote([]) for _ in groups])
    t = time.perf_counter()
    refs = [ray.put(b"".join(p.read_bytes() for p in g)) for g in groups]
    shipped = sum(ray.get([take.remote(r) for r in refs]))
    ship = time.perf_counter() - t
    del refs
    t = time.perf_counter()
    read_back = sum(ray.get([read.remote([str(p) for p in g]) for g in groups]))
    local = time.perf_counter() - t
    assert shipped == read_back
    return ship, local, shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=5000)
    ap.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16"))
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()

    import ray

    from msearch.distributed import RayIndexer
    from msearch.encoders import load_model
    from msearch.indexer import build_index

    model = load_model(None, device="cpu", precision=args.precision, notice=lambda _m: None)
    work = Path(tempfile.mkdtemp(prefix="msearch-ray-overhead-"))
    docs = work / "docs"
    docs.mkdir()
    passages = write_corpus(docs, args.passages, model)
    files = sorted(p for p in docs.rglob("*.txt"))
    model.encode(["warm up"] * 8)  # torch and the weights load once, before any timing

    one_s, ray_s, init_s, stop_s, pipe_s, write_s, rates, loads = ([] for _ in range(8))
    workers = 0
    min_cos = 1.0
    for r in range(args.rounds):
        t = time.perf_counter()
        one = build_index(docs, work / f"one-{r}", model, full=True)
        one_s.append(time.perf_counter() - t)

        t = time.perf_counter()
        ray.init(
            num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
        )
        init_s.append(time.perf_counter() - t)
        runner = RayIndexer(device="cpu")
        t1 = time.perf_counter()
        on_ray = build_index(docs, work / f"ray-{r}", model, full=True, segments_writer=runner)
        t2 = time.perf_counter()
        ray.shutdown()
        stop_s.append(time.perf_counter() - t2)
        ray_s.append(init_s[-1] + (t2 - t1) + stop_s[-1])
        pipe_s.append(runner.report.pipeline_seconds)
        write_s.append(runner.report.write_seconds)
        rates.append(runner.report.rate_per_worker())
        loads.append(runner.report.load_seconds())
        workers = runner.report.workers
        assert on_ray.passages == one.passages and on_ray.embedded == one.embedded

        a, b = vectors_by_passage(work / f"one-{r}"), vectors_by_passage(work / f"ray-{r}")
        assert a.keys() == b.keys(), "the two indexes hold different passages"
        min_cos = min(min_cos, min(float(a[k] @ b[k]) for k in a))

    # The same two runs as a user makes them: `msearch index` with and
    # without --ray, each a fresh process loading its model (and, with
    # --ray, starting and stopping its own local cluster).
    exe = Path(sys.executable).parent / "msearch"
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "msearch"]
    flags = ["--precision", args.precision, "-q", "--device", "cpu"]
    cli_one, cli_ray = [], []
    for r in range(args.rounds):
        for extra, into in (([], cli_one), (["--ray"], cli_ray)):
            out = work / f"cli-{len(extra)}-{r}"
            t = time.perf_counter()
            subprocess.run(
                [*cli, "index", str(docs), "--index", str(out), *flags, *extra], check=True
            )
            into.append(time.perf_counter() - t)

    ray.init(
        num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
    )
    ship, local, nbytes = shipping(ray, files, max(1, len(files) // (4 * args.cpus)))
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    t_one, t_ray = med(one_s), med(ray_s)
    rate, t_write = med(rates), med(write_s)
    driver_rate = passages / t_write if t_write else float("inf")
    embed_part = passages / min(workers * rate, driver_rate)
    fixed = max(0.0, t_ray - embed_part)

    def projected(n: int) -> str:
        throughput = min(n * rate, driver_rate)
        return f"{fixed + passages / throughput:.1f} s ({throughput:,.0f} passages/s)"

    rows = [
        ["corpus", f"{len(files)} files, {passages:,} passages", ""],
        ["precision", model.precision, ""],
        ["single process", f"{t_one:.1f} s ({passages / t_one:.1f} passages/s)", ""],
        [f"Ray, {workers} CPU workers, all in", f"{t_ray:.1f} s", ""],
        [
            "overhead (the single process's model loaded beforehand)",
            f"{t_ray / t_one - 1:+.1%}",
            "",
        ],
        [
            "`msearch index` end to end (a fresh process, model load included)",
            f"{med(cli_one):.1f} s",
            "",
        ],
        ["`msearch index --ray` end to end (its own local cluster)", f"{med(cli_ray):.1f} s", ""],
        ["overhead, end to end", f"{med(cli_ray) / med(cli_one) - 1:+.1%}", "≤ +25%"],
        ["  Ray start-up (ray.init)", f"{med(init_s):.1f} s", ""],
        ["  Ray shutdown", f"{med(stop_s):.1f} s", ""],
        ["  an actor loading the model (slowest)", f"{med(loads):.1f} s", ""],
        ["  pipeline (first parcel to last written)", f"{med(pipe_s):.1f} s", ""],
        ["  driver writing segments (overlapped)", f"{t_write:.1f} s", ""],
        ["passages/s per worker (embedding time)", f"{rate:.1f}", ""],
        ["driver writing rate", f"{driver_rate:,.0f} passages/s", ""],
        ["fixed part of this run", f"{fixed:.1f} s", ""],
        *[[f"projected, {n} workers", projected(n), ""] for n in (1, 2, 4, 8, 16, 64)],
        ["smallest cosine, Ray vs single", f"{min_cos:.6f}", "≥ 0.9999"],
        [
            f"ship {nbytes / 1e6:.1f} MB of files via the object store",
            f"{ship * 1000:.0f} ms ({nbytes / 1e6 / ship:.1f} MB/s)",
            "",
        ],
        ["workers read them by path instead", f"{local * 1000:.0f} ms", ""],
    ]
    note = (
        f"local Ray cluster of {args.cpus} CPUs, bundled all-MiniLM-L6-v2 on CPU, "
        f"median of {args.rounds} round(s); T(N) = fixed + P / min(N x per-worker rate, "
        "driver writing rate)"
    )
    report("Indexing on Ray against one process", note, table(rows), args.write)


if __name__ == "__main__":
    main()
