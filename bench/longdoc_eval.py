"""Retrieval over long structured documents: does chunking keep sections whole?

    python bench/longdoc_eval.py [--variants structure,plain,a0d17a2] [--modes hybrid,dense]

The collection is bench/data/longdocs (its README says how it was made: 62
long CMake reStructuredText and Node.js Markdown documents, 164 questions
written from the documents before any retrieval was run, each answered by
a section). Each chunking is indexed with msearch's own indexer (vectors
through the bench's embedding cache) and every question asked through
msearch's own query path, top 10 passages:

- structure: today's default: sections by heading, merged up to the
  budget, the heading path in front of each passage
  (msearch.chunking.structure);
- plain: the same files as plain text (``ChunkSettings(structure=False)``):
  content-defined boundaries at paragraph breaks and headings;
- a0d17a2: the chunker of commit a0d17a2 (bench/_chunk_a0d17a2.py, before
  content-defined boundaries came in), swapped into the indexer here.

A passage hits a target when it is in the target's file and their line
ranges overlap. Figures: MRR@10 (first hit), hit@5, chunk-level NDCG@10
(as bench/code_eval.py), and the passages: how many, their mean size in
tokens (with the context in front), and the share at least half the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import code_eval as CE  # noqa: E402
import eval_lib as L  # noqa: E402

DATA = L.BENCH / "data" / "longdocs"
WORK = L.BENCH / ".work" / "longdocs"
VARIANTS = ("structure", "plain", "a0d17a2")


def load_queries() -> list[CE.Query]:
    out = []
    for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        q = json.loads(line)
        targets = [CE.Target(t["path"], t["start_line"], t["end_line"]) for t in q["targets"]]
        out.append(CE.Query(q["id"], q["query"], q["kind"], targets))
    return out


def chunker(variant: str, counter: Any, settings: Any) -> Any:
    """The chunker of ``variant`` (msearch.chunking's Chunker seam)."""
    from msearch.chunking import Passage, chunker_for

    if variant != "a0d17a2":
        return chunker_for(counter, settings)
    import _chunk_a0d17a2 as old

    class Old:
        def chunk(self, files: Sequence[tuple[str, str]]) -> list[list[Passage]]:
            got = old.chunk_texts(
                [t for _, t in files],
                counter,
                old.ChunkSettings(settings.max_tokens, settings.overlap_tokens),
            )
            return [
                [Passage(p.start_line, p.end_line, p.start, p.end, p.text) for p in ps]
                for ps in got
            ]

    return Old()


def build(emb: Any, variant: str) -> tuple[Path, float]:
    """Index the documents with one chunking; (index folder, seconds)."""
    from msearch import pipeline
    from msearch.chunking import ChunkSettings
    from msearch.indexer import build_index

    index_dir = WORK / variant
    settings = ChunkSettings(structure=variant == "structure")
    saved = pipeline.chunker_for
    pipeline.chunker_for = lambda counter, s: chunker(variant, counter, s)  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        build_index(DATA / "docs", index_dir, emb, chunking=settings, full=True, notice=L.say)
        return index_dir, time.perf_counter() - t0
    finally:
        pipeline.chunker_for = saved  # type: ignore[assignment]


def passage_sizes(emb: Any, variant: str) -> dict[str, float]:
    """How many passages, their mean tokens as embedded (context included),
    the share at least half the budget."""
    from msearch.chunking import SPECIAL_TOKENS, ChunkSettings

    settings = ChunkSettings(structure=variant == "structure")
    files = sorted((DATA / "docs").rglob("*"))
    pairs = [
        (f.relative_to(DATA / "docs").as_posix(), f.read_text(encoding="utf-8"))
        for f in files
        if f.is_file()
    ]
    chunked = chunker(variant, emb.counter, settings).chunk(pairs)
    texts = [p.indexed for ps in chunked for p in ps]
    counts = np.array(emb.counter.count(texts)) if texts else np.zeros(0)
    budget = settings.max_tokens - SPECIAL_TOKENS
    return {
        "passages": float(len(texts)),
        "mean_tokens": float(counts.mean()) if len(counts) else 0.0,
        "half_full": float((counts >= budget / 2).mean()) if len(counts) else 0.0,
    }


def score(results: Sequence[CE.Result], targets: Sequence[CE.Target]) -> tuple[float, float, float]:
    first = None
    for i, (path, s, e) in enumerate(results[: CE.K], 1):
        if any(path == t.path and s <= (t.end or 0) and e >= (t.start or 0) for t in targets):
            first = i
            break
    mrr = 1.0 / first if first else 0.0
    hit5 = 1.0 if first is not None and first <= 5 else 0.0
    return mrr, hit5, CE.ndcg_chunks(results, targets)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--modes", default="hybrid,dense")
    args = ap.parse_args(argv)
    emb = L.load_embedder()
    queries = load_queries()
    src = DATA / "docs"
    print(f"{'variant':10s} {'mode':7s} {'MRR@10':>7s} {'hit@5':>6s} {'nDCG@10':>8s}  passages")
    for variant in [v for v in args.variants.split(",") if v]:
        index_dir, seconds = build(emb, variant)
        sizes = passage_sizes(emb, variant)
        for mode in [m for m in args.modes.split(",") if m]:
            search = CE.msearch_searcher(index_dir, src, mode, CE.Variant())
            results = search([q.text for q in queries], CE.K)
            got = np.array([score(r, q.targets) for r, q in zip(results, queries, strict=True)])
            mrr, hit5, ndcg = got.mean(axis=0)
            print(
                f"{variant:10s} {mode:7s} {mrr:7.3f} {hit5:6.3f} {ndcg:8.3f}  "
                f"{sizes['passages']:.0f} passages, {sizes['mean_tokens']:.0f} tokens mean, "
                f"{100 * sizes['half_full']:.0f}% at least half full ({seconds:.0f} s to index)",
                flush=True,
            )
    L.say(f"longdoc_eval: {emb.stats.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
