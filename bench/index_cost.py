"""What the ranking stack costs indexing: msearch before it against msearch now.

    python bench/index_cost.py --before WORKTREE [REPO ...] [--rounds 1] [--write]

WORKTREE is a checkout of the commit before the ranking stack. Each
version indexes each codesearch repository's ``src/`` from scratch with its
own ``msearch index --full`` (bundled model, CPU, this machine's threads),
one after the other, repository by repository, so that the machine's
drift hits both. Before: plain passages, BM25 over whole words. Now:
syntax-tree and section passages with their context, identifiers split,
symbols recorded. The figure is total seconds now / before (the embedding
is most of it: passages carry their context, so there are more tokens).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "index_cost"
DEFAULT_REPOS = ("rack", "cobra", "rxswift", "ecto")


def index_once(tree: Path, src: Path, index_dir: Path) -> float:
    shutil.rmtree(index_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "msearch", "index", str(src), "--index", str(index_dir)]
    t = time.perf_counter()
    # In ``tree``: ``python -m`` puts its folder before PYTHONPATH.
    r = subprocess.run([*cmd, "--full", "-q"], env=env, cwd=tree, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{tree}: index {src} failed: {r.stderr[-2000:]}")
    return dt


def main() -> None:
    sys.path.insert(0, str(BENCH))
    from _results import report, table
    from code_eval import data_root

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repos", nargs="*", default=list(DEFAULT_REPOS))
    ap.add_argument("--before", type=Path, required=True, help="checkout before the stack")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    root = data_root()
    trees = {"before": args.before.resolve(), "now": BENCH.parent}
    totals = dict.fromkeys(trees, 0.0)
    rows = []
    for repo in args.repos:
        src = root / repo / "src"
        got = dict.fromkeys(trees, 0.0)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                got[name] += index_once(tree, src, WORK / name / repo)
        for name in trees:
            totals[name] += got[name]
        rows.append(
            [
                f"{repo}: before / now",
                f"{got['before']:.1f} / {got['now']:.1f} s ({got['now'] / got['before']:.2f}×)",
                "",
            ]
        )
        print(rows[-1], file=sys.stderr, flush=True)
    ratio = totals["now"] / totals["before"]
    rows.append(
        [
            f"indexing time, {len(args.repos)} codesearch repositories: before / now",
            f"{totals['before']:.1f} / {totals['now']:.1f} s ({ratio:.3f}×)",
            "now ≤ 1.15× before",
        ]
    )
    note = f"before = {args.before.name} checkout; `msearch index --full`, {args.rounds} round(s)"
    report("What the ranking stack costs indexing", note, table(rows), args.write)


if __name__ == "__main__":
    main()
