"""What the ranking stack costs a query: msearch before it against msearch now.

    python bench/rank_cost.py --before WORKTREE [--runs 15] [--warm 200] [--write]

WORKTREE is a checkout of the commit before the ranking stack (for this
run: ``git worktree add --detach ../old 31102cb``). Each version runs its
own code (``PYTHONPATH``) on an index it built itself (the lexical format
changed), in subprocesses, interleaved so that the machine's drift hits
both sides:

- cold query: ``msearch query TEXT --json`` on an index of sample_corpus
  (each version's ``msearch index``; bundled model), ``--runs`` each;
- warm hybrid query at 100,000 passages: the synthetic index of
  bench/query_latency.py (random unit vectors, Zipf texts over real files),
  in one process per version: ``Searcher.query`` (hybrid, k=10) after a
  warm-up, ``--warm`` queries each, in rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "rank_cost"
SAMPLE = BENCH.parent / "sample_corpus"
QUERY = "how do I keep my bread from being dense"

WORKER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path({tree!r}) / "bench"))
import query_latency as Q
from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path
work = Path({work!r})
if {what!r} == "build":
    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    d = Q.make_index(work / "idx-100k", work / "corpus", 100_000, model.record.to_json())
    Q.add_vocab_cache(d, model)
else:
    print(json.dumps(Q.warm_queries(work / "idx-100k", {n})))
"""


def env_for(tree: Path) -> dict[str, str]:
    """The environment that runs ``tree``'s msearch. The subprocesses also
    start in ``tree``: ``python -c`` and ``-m`` put their folder before
    PYTHONPATH, so a run from another checkout would import that one."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def worker(tree: Path, work: Path, what: str, n: int = 0) -> str:
    code = WORKER.format(tree=str(tree), work=str(work), what=what, n=n)
    r = subprocess.run(
        [sys.executable, "-c", code], env=env_for(tree), cwd=tree, capture_output=True, text=True
    )
    if r.returncode:
        raise SystemExit(f"{tree}: {what} failed: {r.stderr[-2000:]}")
    return r.stdout


def msearch(tree: Path, *args: str) -> float:
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "msearch", *args], env=env_for(tree), cwd=tree, capture_output=True
    )
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"{tree}: msearch {args[0]} failed: {r.stderr.decode()[-2000:]}")
    return dt


def main() -> None:
    sys.path.insert(0, str(BENCH))
    from _results import report, table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="checkout before the stack")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "now": BENCH.parent}
    for name, tree in trees.items():
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "msearch")])
        work = WORK / name
        work.mkdir(parents=True, exist_ok=True)
        worker(tree, work, "build")
        msearch(tree, "index", str(SAMPLE), "--index", str(work / "sample"), "-q")
    cold: dict[str, list[float]] = {n: [] for n in trees}
    for _ in range(args.runs):
        for name, tree in trees.items():
            cold[name].append(
                msearch(tree, "query", QUERY, "--json", "--index", str(WORK / name / "sample"))
            )
    warm: dict[str, list[float]] = {n: [] for n in trees}
    rounds = 4
    for _ in range(rounds):
        for name, tree in trees.items():
            warm[name] += json.loads(worker(tree, WORK / name, "warm", args.warm // rounds))
    c = {n: statistics.median(v) for n, v in cold.items()}
    w = {n: statistics.median(v) * 1000 for n, v in warm.items()}
    rows = [
        [
            "cold query, sample_corpus, jsonl (median): before / now",
            f"{c['before']:.3f} / {c['now']:.3f} s ({c['now'] / c['before']:.3f}×)",
            "now ≤ 1.10× before",
        ],
        [
            "warm hybrid query, 100,000 passages (median): before / now",
            f"{w['before']:.1f} / {w['now']:.1f} ms ({w['now'] / w['before']:.3f}×)",
            "now ≤ 1.2× before",
        ],
    ]
    note = (
        f"before = {args.before.name} checkout; {args.runs} cold runs and {args.warm} warm "
        "queries each, interleaved"
    )
    report("What the ranking stack costs a query", note, table(rows), args.write)


if __name__ == "__main__":
    main()
