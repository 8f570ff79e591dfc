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
from pathlib import Path

from _fakes import RandomEmbedder, write_corpus
from _results import report, table

from msearch.chunking import ChunkSettings
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

    def text_of(f: int) -> str:
        # 12-word lines, one passage each at --chunk-tokens 16 without overlap
        lines = (
            " ".join(WORDS[(f + i + j) % len(WORDS)] for j in range(12))
            for i in range(LINES_PER_FILE)
        )
        return "\n".join(lines) + "\n"

    root = write_corpus(
        BENCH / ".work" / f"memory-{args.passages}", args.passages // LINES_PER_FILE, text_of
    )
    index_dir = BENCH / ".work" / f"memory-index-{args.passages}"
    shutil.rmtree(index_dir, ignore_errors=True)
    base = rss_mb()
    t = time.perf_counter()
    stats = build_index(
        root,
        index_dir,
        RandomEmbedder(),
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
