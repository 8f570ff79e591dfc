"""Peak memory of indexing 1,000,000 short passages (issue 6).

A synthetic corpus of short lines and a fast fake embedder (random unit
vectors, no model) isolate what msearch itself holds: vectors stream to disk
as they are produced and passage texts live only for one window, so peak
RSS should stay flat as the corpus grows.

  python bench/memory.py [--passages 1000000] [--write]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _results import report, table

from msearch.chunk import ChunkSettings, WhitespaceCounter
from msearch.encoders import ModelRecord
from msearch.indexer import build_index

BENCH = Path(__file__).resolve().parent
LINES_PER_FILE = 50
WORDS = [
    "river",
    "stone",
    "cloud",
    "moon",
    "bread",
    "garden",
    "python",
    "star",
    "travel",
    "sleep",
    "coffee",
    "tomato",
]


class FastFake:
    """Random unit vectors: the cheapest possible embedder, for memory only."""

    def __init__(self) -> None:
        self.record = ModelRecord("fake", "fake", 384, 16, True, "fake")
        self.counter = WhitespaceCounter()
        self.rng = np.random.default_rng(0)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        v = self.rng.standard_normal((len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    root = BENCH / ".work" / f"memory-{args.passages}"
    files = args.passages // LINES_PER_FILE
    marker = root.with_suffix(".ok")
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        for f in range(files):
            d = root / f"d{f // 1000:03d}"
            d.mkdir(parents=True, exist_ok=True)
            # 12-word lines, one passage each at --chunk-tokens 16 without overlap
            lines = (
                " ".join(WORDS[(f + i + j) % len(WORDS)] for j in range(12))
                for i in range(LINES_PER_FILE)
            )
            (d / f"f{f:06d}.txt").write_text("\n".join(lines) + "\n")
        marker.write_text("")
    index_dir = BENCH / ".work" / f"memory-index-{args.passages}"
    shutil.rmtree(index_dir, ignore_errors=True)
    base = rss_mb()
    t = time.perf_counter()
    stats = build_index(
        root,
        index_dir,
        FastFake(),
        chunking=ChunkSettings(max_tokens=16, overlap_tokens=0),
    )
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        (f"passages indexed ({stats.files:,} files)", f"{stats.passages:,}", ""),
        ("RSS before indexing", f"{base:.0f} MB", ""),
        ("peak RSS during indexing", f"{peak:.0f} MB", ""),
        ("peak beyond the start", f"{peak - base:.0f} MB", "< 1,500 MB"),
        ("time", f"{dt:.0f} s ({stats.passages / dt:,.0f} passages/s)", ""),
    ]
    report("Indexing memory", "fake embedder: random vectors, no model", table(rows), args.write)


if __name__ == "__main__":
    main()
