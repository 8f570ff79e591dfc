"""Code-search quality of msearch on ../shared/codesearch (semble benchmark subset).

    python bench/code_eval.py [REPO ...] [--modes hybrid,dense,lexical]
        [--variant NAME] [--json FILE]
    python bench/code_eval.py --ablation     # each part of the ranking stack off in turn

Each repository's ``src/`` is indexed with msearch's own indexer (vectors
from the bundled all-MiniLM-L6-v2 through the bench's embedding cache,
bench/eval_lib.py) and every labeled question is asked through msearch's
own query path for its top 10 passages. Scored as semble scores itself
(shared/codesearch/README.md, "How semble scores it"):

- chunk level: a target counts at the rank of the first passage of its
  file whose line range overlaps the labeled span (any passage of the
  file for a file target); binary gains, NDCG@10 with
  IDCG over min(10, targets);
- file level: the ten passages reduced to distinct files in rank order,
  a target counting at its file's position.

NDCG@10 is averaged over a repository's questions, then over the
repositories (semble's averaging); per kind of question likewise (the mean
over repositories of each repository's mean for that kind).

Variants (``--variant``; ``--ablation`` runs them all, hybrid):
``default`` (the ranking stack), ``plain`` (msearch before it: plain
passages, no identifier splitting, fixed fusion, no definitions, paths,
priors or turns, no vendor/ folders skipped), and one part switched off
each: ``no-structure`` (1), ``no-identifiers`` (2), ``no-definitions``
(3), ``no-fusion`` (4: the fixed 0.7/0.3 mix), ``no-selection`` (5: no
turns, priors or path rules), and within 5 ``no-priors``, ``no-diversity``,
``no-paths``; ``words-first`` (not in the ablation): the index as
``msearch index`` first commits it, words only, before any vector (a
hybrid query then ranks by words: what an answer at that moment is worth);
``half-embedded``: pending segments of 256 passages, the first half of them
embedded (a query while ``msearch index`` embeds: words and cosines fused
on one scale).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_lib as L  # noqa: E402

WORK = L.BENCH / ".work" / "code"
K = 10
CATEGORIES = ("architecture", "semantic", "symbol")


def data_root() -> Path:
    """shared/codesearch beside (or inside) the checkout, or $MSEARCH_CODESEARCH."""
    env = os.environ.get("MSEARCH_CODESEARCH")
    candidates = [Path(env)] if env else []
    candidates += [L.REPO / "shared" / "codesearch", L.REPO.parent / "shared" / "codesearch"]
    for c in candidates:
        if (c / "MANIFEST.tsv").exists():
            return c
    raise SystemExit("code_eval: shared/codesearch not found; set MSEARCH_CODESEARCH")


@dataclass(frozen=True)
class Target:
    path: str
    start: int | None = None  # None: any passage of the file counts
    end: int | None = None


@dataclass
class Query:
    qid: str
    text: str
    category: str
    targets: list[Target]


def load_queries(repo_dir: Path) -> list[Query]:
    out = []
    with open(repo_dir / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            targets = []
            for t in q["relevant"] + q.get("secondary", []):
                if isinstance(t, str):
                    targets.append(Target(t))
                else:
                    targets.append(Target(t["path"], t["start_line"], t["end_line"]))
            out.append(Query(q["id"], q["query"], q["category"], targets))
    return out


# A ranked result as the metrics see it: (path relative to src/, start line, end line).
Result = tuple[str, int, int]


def _dcg(ranks: Sequence[int], n_targets: int) -> float:
    if not n_targets:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 1) for r in set(ranks))
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(K, n_targets) + 1))
    return dcg / idcg


def ndcg_chunks(results: Sequence[Result], targets: Sequence[Target]) -> float:
    """semble's chunk-level NDCG@10 (its benchmarks/metrics.py rules)."""
    ranks = []
    for t in targets:
        for i, (path, s, e) in enumerate(results[:K], 1):
            if path != t.path:
                continue
            if t.start is None or (s <= (t.end or 0) and e >= t.start):
                ranks.append(i)
                break
    return _dcg(ranks, len(targets))


def ndcg_files(results: Sequence[Result], targets: Sequence[Target]) -> float:
    """semble's file-level NDCG@10 (its CLI baselines: distinct files of the
    top 10 passages, in order, not refilled)."""
    files: list[str] = []
    for path, _s, _e in results[:K]:
        if path not in files:
            files.append(path)
    ranks = [files.index(t.path) + 1 for t in targets if t.path in files]
    return _dcg(ranks, len(targets))


@dataclass
class RepoRun:
    repo: str
    passages: int = 0
    files: int = 0
    index_seconds: float = 0.0
    embedded: int = 0
    per_query: dict[str, dict[str, Any]] = field(default_factory=dict)


Searcher = Callable[[list[str], int], list[list[Result]]]


@dataclass(frozen=True)
class Variant:
    """How the index is built and which parts of the ranking run."""

    structure: bool = True
    identifiers: bool = True
    vendor: bool = False  # index vendor/ folders (msearch before the noise list grew)
    ranking: dict[str, bool] = field(default_factory=dict)  # RankConfig fields
    # Words only: the index as it answers before any vector is embedded
    # (msearch index's first commit; hybrid then ranks by words).
    words_only: bool = False
    # Half embedded: pending segments of 256 rows, the first half of them
    # given their vectors (a query while msearch index embeds).
    half: bool = False

    def index_name(self) -> str:
        """Variants that differ only in ranking share an index."""
        name = f"s{int(self.structure)}i{int(self.identifiers)}v{int(self.vendor)}"
        return name + ("w" if self.words_only else "") + ("h" if self.half else "")


OFF = dict.fromkeys(("fusion", "definitions", "paths", "priors", "diversity"), False)
VARIANTS = {
    "default": Variant(),
    "plain": Variant(structure=False, identifiers=False, vendor=True, ranking=OFF),
    "no-structure": Variant(structure=False),
    "no-identifiers": Variant(identifiers=False),
    "no-definitions": Variant(ranking={"definitions": False}),
    "no-fusion": Variant(ranking={"fusion": False}),
    "no-selection": Variant(ranking={"paths": False, "priors": False, "diversity": False}),
    "no-priors": Variant(ranking={"priors": False}),
    "no-diversity": Variant(ranking={"diversity": False}),
    "no-paths": Variant(ranking={"paths": False}),
    "words-first": Variant(words_only=True),
    "half-embedded": Variant(half=True),
}


def msearch_searcher(index_dir: Path, src: Path, mode: str, variant: Variant) -> Searcher:
    """msearch's own query path (the CLI's): top-k passages per question."""
    from msearch.config import RankConfig
    from msearch.models import query_encoder
    from msearch.query import Searcher as S
    from msearch.query import open_lexical
    from msearch.storage.reader import load_index

    index = load_index(index_dir, lexical=mode != "dense")
    lexical = open_lexical(index) if mode != "dense" else None
    encode = query_encoder(index, device="cpu", notice=L.say) if mode != "lexical" else None
    ranking = RankConfig(**variant.ranking)
    searcher = S(index, encode, lexical, mode, cwd=src, rank_config=ranking)

    def run(texts: list[str], k: int) -> list[list[Result]]:
        out = []
        for hits in searcher.query_many(texts, k):
            out.append(
                [
                    (
                        os.path.relpath(h.abs_path, src).replace(os.sep, "/"),
                        h.start_line,
                        h.end_line,
                    )
                    for h in hits
                ]
            )
        return out

    return run


def index_repo(emb: Any, src: Path, index_dir: Path, variant: Variant) -> Any:
    """A fresh index of ``src`` as the variant builds it (a kept one is
    updated: nothing changed, nothing is embedded)."""
    from msearch import walk as walk_module
    from msearch.chunking import ChunkSettings
    from msearch.config import DEFAULT, IndexConfig
    from msearch.indexer import build_index
    from msearch.lexical import LexicalParams
    from msearch.walk import NOISE_DIRS, WalkOptions

    lexical = LexicalParams.default()
    if not variant.identifiers:
        lexical = LexicalParams(stopwords=lexical.stopwords)
    saved = walk_module.NOISE_DIRS
    if variant.vendor:  # the noise list before vendored folders joined it
        walk_module.NOISE_DIRS = NOISE_DIRS - {"vendor", "third_party", "thirdparty"}
    try:
        return build_index(
            src,
            index_dir,
            emb,
            WalkOptions(),
            ChunkSettings(structure=variant.structure),
            notice=L.say,
            lexical=lexical,
            vectors=not (variant.words_only or variant.half),
            config=IndexConfig(pending_rows=256) if variant.half else DEFAULT,
        )
    finally:
        walk_module.NOISE_DIRS = saved


def embed_half(emb: Any, index_dir: Path) -> None:
    """The first half of an index's pending segments given their vectors."""
    from msearch.config import IndexConfig
    from msearch.storage.record import read_meta
    from msearch.vectors import finish_pending

    waiting = sum(1 for s in read_meta(index_dir).segments if s.pending)
    done = len(read_meta(index_dir).segments) - waiting
    total = len(read_meta(index_dir).segments)
    want = (total + 1) // 2 - done
    if want > 0:
        finish_pending(index_dir, emb, config=IndexConfig(pending_rows=256), limit=want)


def evaluate_repo(
    emb: Any, root: Path, repo: str, modes: Sequence[str], name: str
) -> dict[str, RepoRun]:
    variant = VARIANTS[name]
    src = root / repo / "src"
    index_dir = WORK / variant.index_name() / repo
    t0 = time.perf_counter()
    before = emb.stats.embedded
    stats = index_repo(emb, src, index_dir, variant)
    if variant.half:
        embed_half(emb, index_dir)
    seconds = time.perf_counter() - t0
    queries = load_queries(root / repo)
    out = {}
    for mode in modes:
        run = RepoRun(repo, stats.passages, stats.files, seconds, emb.stats.embedded - before)
        results = msearch_searcher(index_dir, src, mode, variant)([q.text for q in queries], K)
        for q, res in zip(queries, results, strict=True):
            run.per_query[q.qid] = {
                "category": q.category,
                "chunk": ndcg_chunks(res, q.targets),
                "file": ndcg_files(res, q.targets),
                "top": res[:3],
            }
        out[mode] = run
    return out


def summarize(runs: Sequence[RepoRun]) -> dict[str, Any]:
    """Means over each repository's questions, then over repositories."""
    per_repo: dict[str, dict[str, float]] = {}
    by_cat: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        qs = list(run.per_query.values())
        per_repo[run.repo] = {
            "chunk": sum(q["chunk"] for q in qs) / len(qs),
            "file": sum(q["file"] for q in qs) / len(qs),
            "queries": len(qs),
            "passages": run.passages,
        }
        for cat in CATEGORIES:
            vals = [q["chunk"] for q in qs if q["category"] == cat]
            if vals:
                by_cat[cat].append(sum(vals) / len(vals))
    n = len(per_repo)
    return {
        "chunk": sum(r["chunk"] for r in per_repo.values()) / n,
        "file": sum(r["file"] for r in per_repo.values()) / n,
        "categories": {c: sum(v) / len(v) for c, v in by_cat.items()},
        "repos": per_repo,
    }


def report_lines(name: str, report: dict[str, Any], per_repo: bool) -> list[str]:
    out = []
    for mode, s in report.items():
        cats = " ".join(f"{c} {v:.3f}" for c, v in sorted(s["categories"].items()))
        out.append(f"{name:15s} {mode:8s} chunk {s['chunk']:.3f} file {s['file']:.3f}  {cats}")
        if per_repo:
            for repo, r in s["repos"].items():
                out.append(
                    f"    {repo:20s} chunk {r['chunk']:.3f} file {r['file']:.3f} "
                    f"({r['passages']} passages)"
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repos", nargs="*", help="repositories (default: all twelve)")
    ap.add_argument("--modes", default="hybrid,dense,lexical")
    ap.add_argument(
        "--variant", default="default", choices=sorted(VARIANTS), help="what to build and rank"
    )
    ap.add_argument(
        "--ablation", action="store_true", help="every variant in turn (hybrid), one table"
    )
    ap.add_argument("--json", type=Path, help="write per-query results here")
    args = ap.parse_args(argv)
    root = data_root()
    repos = args.repos or [
        line.split("\t")[0]
        for line in (root / "MANIFEST.tsv").read_text().splitlines()[1:]
        if line.strip()
    ]
    modes = [m for m in args.modes.split(",") if m]
    extra = ("words-first", "half-embedded")
    names = [n for n in VARIANTS if n not in extra] if args.ablation else [args.variant]
    emb = L.load_embedder()
    lines: list[str] = []
    dump: dict[str, Any] = {"machine": platform.platform(), "variants": {}}
    for name in names:
        runs: dict[str, list[RepoRun]] = defaultdict(list)
        variant_modes = modes if name == "default" or not args.ablation else ["hybrid"]
        for repo in repos:
            L.say(f"code_eval: {name} {repo}")
            for mode, run in evaluate_repo(emb, root, repo, variant_modes, name).items():
                runs[mode].append(run)
        report = {mode: summarize(rs) for mode, rs in runs.items()}
        got = report_lines(name, report, per_repo=not args.ablation)
        print("\n".join(got), flush=True)
        lines += got
        dump["variants"][name] = {
            "summary": report,
            "index_seconds": {m: {r.repo: r.index_seconds for r in rs} for m, rs in runs.items()},
            "queries": {m: {r.repo: r.per_query for r in rs} for m, rs in runs.items()},
        }
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))
    L.say(f"code_eval: {emb.stats.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
