"""Re-index cost after one change and after none, against a full index (issue 4).

Writes N documents of an eval collection as files (title on the first line),
then, with the real bundled model and the real `msearch` command:
  1. a full index (`msearch index DIR --full -q`),
  2. R re-indexes after appending a line to one file,
  3. R re-indexes with nothing changed,
all in one run, and reports the ratios.

  python bench/incremental.py [--collection nfcorpus] [--files 600] [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _results import report, table

BENCH = Path(__file__).resolve().parent
EVAL = BENCH.parent.parent / "shared" / "eval"


def msearch(*args: str) -> float:
    exe = Path(sys.executable).parent / "msearch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "msearch"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collection", default="nfcorpus")
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    root = BENCH / ".work" / f"incremental-{args.collection}-{args.files}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with open(EVAL / args.collection / "corpus.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= args.files:
                break
            doc = json.loads(line)
            (root / f"{doc['_id']}.txt").write_text(f"{doc['title']}\n{doc['text']}\n")
    files = sorted(root.glob("*.txt"))

    full = msearch("index", str(root), "--full", "-q", "--model", "all-MiniLM-L6-v2")
    one, none = [], []
    for i in range(args.repeats):
        with open(files[i * 7 % len(files)], "a", encoding="utf-8") as fh:
            fh.write(f"An added sentence number {i} about dietary fibre.\n")
        one.append(msearch("index", str(root), "-q"))
        none.append(msearch("index", str(root), "-q"))
    start_up = statistics.median(msearch("--help") for _ in range(3))
    med = statistics.median
    rows = [
        (f"full index, {len(files)} {args.collection} files", f"{full:.1f} s", ""),
        ("re-index after one file changed (median)", f"{med(one):.2f} s", ""),
        ("  as a share of the full index", f"{med(one) / full * 100:.1f} %", "≤ 5 %"),
        ("re-index with no change (median)", f"{med(none):.2f} s", "well under 1 s + start-up"),
        ("  start-up (`msearch --help`, median)", f"{start_up:.2f} s", ""),
    ]
    report(
        "Incremental re-index",
        "bundled all-MiniLM-L6-v2, CPU",
        table(rows),
        args.write,
    )


if __name__ == "__main__":
    main()
