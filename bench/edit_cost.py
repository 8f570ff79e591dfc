"""What one edit costs (issue 12): time, bytes written and files read by an
update after one file changed, at 200,000 and 1,000,000 passages.

A synthetic corpus of files of 50 twelve-word lines (one passage a line at
--chunk-tokens 16, as bench/memory.py) and a fast fake embedder (random
unit vectors, no model: what is left is msearch's own work). For each size:

- a full build (time, index bytes);
- one edited file, then one deleted file: the update's time, the part of it
  spent embedding, bytes written (the process's write() calls, from
  /proc/self/io) against the index's size, and which user files it read
  (msearch.indexer.read_bytes, the indexer's only reader of user files);
- (--updates N, at the smallest size) N successive single-file updates, then
  the warm query time (hybrid, in process) on that index against the same
  index fully merged (--compact), interleaved;
- appending a paragraph to a long Markdown file (60+ passages, the bundled
  model's tokenizer, default chunking): passages embedded.

  python bench/edit_cost.py [--sizes 200000,1000000] [--updates 1000] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _fakes import RandomEmbedder, write_corpus
from _results import report, table

from msearch.chunking import ChunkSettings
from msearch.encoders import ModelRecord
from msearch.indexer import build_index
from msearch.storage import reader, record

BENCH = Path(__file__).resolve().parent
LINES_PER_FILE = 50
CHUNKING = ChunkSettings(max_tokens=16, overlap_tokens=0)
QUERIES = ["river stone w17 w4242", "moon garden w99", "w1234 w777 coffee", "tomato star w5"]


def line(f: int, i: int, version: int) -> str:
    h = hashlib.blake2b(f"{f}:{i}:{version}".encode(), digest_size=24).digest()
    return " ".join(f"w{int.from_bytes(h[2 * j : 2 * j + 2], 'little') % 20000}" for j in range(12))


def file_text(f: int, version: int = 0) -> str:
    return "\n".join(line(f, i, version) for i in range(LINES_PER_FILE)) + "\n"


def make_corpus(passages: int) -> Path:
    return write_corpus(BENCH / ".work" / f"edit-{passages}", passages // LINES_PER_FILE, file_text)


def written() -> int:
    with open("/proc/self/io") as fh:
        for row in fh:
            if row.startswith("wchar:"):
                return int(row.split()[1])
    return 0


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def update(root: Path, index_dir: Path, compact: bool = False) -> dict[str, float]:
    """One build_index run: seconds, seconds embedding, bytes written, user files read."""
    import msearch.pipeline

    reads: list[str] = []
    real = msearch.pipeline.read_bytes

    def spy(path: Path, *a, **k):  # type: ignore[no-untyped-def]
        reads.append(str(path))
        return real(path, *a, **k)

    msearch.pipeline.read_bytes = spy  # type: ignore[assignment]
    emb = RandomEmbedder()
    w0 = written()
    t = time.perf_counter()
    try:
        stats = build_index(root, index_dir, emb, chunking=CHUNKING, compact=compact)  # type: ignore[arg-type]
    finally:
        msearch.pipeline.read_bytes = real  # type: ignore[assignment]
    return {
        "seconds": time.perf_counter() - t,
        "embed_seconds": emb.seconds,
        "written": written() - w0,
        "reads": len(set(reads)),
        "embedded": stats.embedded,
        "passages": stats.passages,
        "segments": stats.segments,
    }


def warm_query_ms(index_dirs: Sequence[Path], rounds: int = 400) -> list[float]:
    """Median warm hybrid query time on each index, the indexes taking turns
    query by query (so that the machine's drift hits them alike)."""
    from msearch.query import Searcher, open_lexical

    searchers = []
    for index_dir in index_dirs:
        idx = reader.load_index(index_dir)
        s = Searcher(idx, RandomEmbedder().encode, open_lexical(idx), "hybrid")
        for q in QUERIES:
            s.query(q)
        searchers.append(s)
    times: list[list[float]] = [[] for _ in searchers]
    for i in range(rounds):
        for s, out in zip(searchers, times, strict=True):
            t = time.perf_counter()
            s.query(QUERIES[i % len(QUERIES)])
            out.append(time.perf_counter() - t)
    return [statistics.median(t) * 1000 for t in times]


def size_rows(passages: int) -> list[tuple[str, str, str]]:
    root = make_corpus(passages)
    index_dir = BENCH / ".work" / f"edit-index-{passages}"
    shutil.rmtree(index_dir, ignore_errors=True)
    full = update(root, index_dir)
    size = folder_bytes(index_dir)
    files = passages // LINES_PER_FILE
    edited = root / f"d{(files // 2) // 1000:03d}" / f"f{files // 2:06d}.txt"
    edited.write_text(file_text(files // 2, version=1))
    edit = update(root, index_dir)
    deleted = root / f"d{(files // 3) // 1000:03d}" / f"f{files // 3:06d}.txt"
    keep = deleted.read_text()
    deleted.unlink()
    gone = update(root, index_dir)
    deleted.write_text(keep)  # the corpus stays as it was for the next run
    edited.write_text(file_text(files // 2))
    n = f"{passages:,}"
    rows = [
        (f"{n}: full build", f"{full['seconds']:.1f} s, {size / 1e6:,.0f} MB on disk", ""),
    ]
    for label, r in (("one edited file", edit), ("one deleted file", gone)):
        beyond = r["seconds"] - r["embed_seconds"]
        rows += [
            (
                f"{n}: update, {label}",
                f"{r['seconds']:.2f} s ({r['embed_seconds']:.3f} s embedding, "
                f"{int(r['embedded'])} passages)",
                "",
            ),
            ("  beyond embedding", f"{beyond:.2f} s", "≤ 1.0 s"),
            (
                "  bytes written / index",
                f"{r['written'] / 1e6:.2f} MB / {size / 1e6:,.0f} MB = "
                f"{100 * r['written'] / size:.2f} %",
                "≤ 1 %",
            ),
            (
                "  user files read (distinct)",
                f"{int(r['reads'])}",
                "the edited one" if "edited" in label else "none",
            ),
        ]
    return rows


def many_updates_rows(passages: int, updates: int) -> list[tuple[str, str, str]]:
    root = make_corpus(passages)
    index_dir = BENCH / ".work" / f"edit-index-{passages}"
    shutil.rmtree(index_dir, ignore_errors=True)
    update(root, index_dir)
    files = passages // LINES_PER_FILE
    rng = np.random.default_rng(1)
    touched: dict[int, str] = {}
    times = []
    for k in range(updates):
        f = int(rng.integers(files))
        path = root / f"d{f // 1000:03d}" / f"f{f:06d}.txt"
        touched.setdefault(f, path.read_text())
        path.write_text(file_text(f, version=k + 1))
        times.append(update(root, index_dir)["seconds"])
    infos = record.read_meta(index_dir).segments
    segments = len(infos)
    rows = sum(s.rows for s in infos)
    dead = sum(s.rows - s.live_rows for s in infos)
    merged = index_dir.parent / (index_dir.name + "-merged")
    shutil.rmtree(merged, ignore_errors=True)
    shutil.copytree(index_dir, merged)
    update(root, merged, compact=True)
    a, b = warm_query_ms([index_dir, merged])
    for f, text in touched.items():  # restore the corpus
        (root / f"d{f // 1000:03d}" / f"f{f:06d}.txt").write_text(text)
    n = f"{passages:,}"
    return [
        (
            f"{n}: {updates} single-file updates",
            f"median {statistics.median(times):.2f} s, max {max(times):.2f} s; "
            f"{segments} segments after",
            "",
        ),
        ("  dead rows after the updates", f"{dead:,} of {rows:,}", ""),
        (
            "  warm hybrid query (median of 400, taking turns): after the updates / merged",
            f"{a:.1f} / {b:.1f} ms = {a / b:.2f}",
            "≤ 1.20",
        ),
    ]


def append_rows() -> list[tuple[str, str, str]]:
    """A long Markdown file (the sample corpus, concatenated) with the real
    tokenizer and default chunking; a paragraph appended."""
    from msearch.encoders import bundled_model_path, token_counter

    root = BENCH / ".work" / "edit-append"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    docs = sorted((BENCH.parent / "sample_corpus").rglob("*.md"))
    text = "\n\n".join(p.read_text() for p in docs) * 2
    (root / "long.md").write_text(text)
    emb = RandomEmbedder()
    emb.counter = token_counter(bundled_model_path())  # type: ignore[assignment]
    emb.record = ModelRecord("fake", "fake", 384, 256, True, "fake")
    index_dir = root / ".msearch"
    first = build_index(root, index_dir, emb)  # type: ignore[arg-type]
    (root / "long.md").write_text(
        text + "\n\nA new closing paragraph, written later, about the moon and the tides.\n"
    )
    emb.embedded = 0
    second = build_index(root, index_dir, emb)  # type: ignore[arg-type]
    return [
        (
            f"append a paragraph to a {first.passages}-passage Markdown file",
            f"{second.embedded} embedded ({second.reused} reused)",
            "≤ 3",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, str, str]] = []
    for n in sizes:
        rows += size_rows(n)
    if args.updates:
        rows += many_updates_rows(min(sizes), args.updates)
    rows += append_rows()
    report("Cost of an edit", "fake embedder: random vectors, no model", table(rows), args.write)


if __name__ == "__main__":
    main()
