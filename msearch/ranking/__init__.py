"""The ranking stage: from retrieved candidates to the passages shown, best first.

Retrieval (msearch.query) finds candidates: the passages closest to the
query by meaning (cosine) and by words (BM25), and the definitions of the
symbols the query names. Which of those come first is decided here, the
same for every interface (the table and machine formats, ``-l``, stdin
queries, MCP ``search``), by rules that hold for any repository or folder
of documents:

1. Fusion by kind of query (``fusion``): each side's score on one scale,
   weighted by what the query is (``queries.analyze``): an identifier leans
   on words, a question in plain language on meaning.
2. Definitions: a passage that defines a symbol the query names is lifted
   above passages that merely use it, more when its file is named after it.
3. File names (``paths``): a question whose words name a file (``session``
   for ``session.rb``) lifts that file's passages.
4. Priors (``paths.prior``): tests, examples, benchmarks, vendored,
   generated and documentation files rank lower unless the query asks for
   them ("test", "example", "docs" ...); documentation only in a folder
   that is mostly code.
5. Selection (``selection``): a file's later passages wait while other
   files get their turn, and a file with several matching passages is
   lifted as a whole (in a folder that is mostly code).

Every score shown is the final ranking score, so ``--min-score`` compares
with what decided the order. ``RankConfig`` turns each part off (the
ablation in bench/code_eval.py; ``--no-priors``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msearch.config import RankConfig
from msearch.ranking.candidates import Candidates
from msearch.ranking.fusion import fuse
from msearch.ranking.paths import mostly_code, path_match, prior, stem_names
from msearch.ranking.queries import QueryInfo, analyze
from msearch.ranking.selection import (
    best_first,
    coherence,
    one_per_file,
    passages_for,
    take_in_turn,
)

__all__ = [
    "CANDIDATES",
    "Candidates",
    "QueryInfo",
    "RankConfig",
    "analyze",
    "mostly_code",
    "one_per_file",
    "passages_for",
    "rank",
]

# Candidates taken from each retriever: enough that a definition or a file
# lifted by the later rules is among them, few enough to cost nothing next
# to the scan.
CANDIDATES = 100
# A definition of a symbol the query names, added to the fused score (which
# lies in [0, 1]): above any passage without one for an identifier query.
DEFINITION_BOOST = {"identifier": 1.0, "natural": 0.35}
# The definition's file is named after the symbol (``TypeAdapter.java``).
DEFINITION_FILE_BOOST = 0.25
# Share of a question's content words found in the file's name or folder:
# up to this much.
PATH_BOOST = 0.2
# A query naming a symbol lifts the file named after it (``Args`` -> args.go).
STEM_BOOST = 0.3


def rank(
    info: QueryInfo,
    cand: Candidates,
    paths: Sequence[str],
    k: int,
    config: RankConfig | None = None,
    code: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` candidates, best first: (rows, scores).

    ``paths``: the file table's paths (``cand.files`` index it). ``code``:
    the folder is mostly code (``mostly_code``), where documentation files
    get their prior (in a folder of documents they are what is searched)
    and a file matching in several passages is lifted (a source file is a
    module about one thing; among documents that would favour long ones)."""
    config = config or RankConfig()
    if len(cand.rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    score = fuse(info, cand, config.fusion).astype(np.float64)
    uniq, inverse = np.unique(cand.files, return_inverse=True)
    file_paths = [paths[f] for f in uniq.tolist()]

    def per_file(values: list[float] | list[bool]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[inverse]

    wanted = {n.lower() for n in info.symbols}
    named = per_file([bool(stem_names(p) & wanted) for p in file_paths]) if wanted else None
    if config.definitions and named is not None and cand.defines.any():
        score += cand.defines * (DEFINITION_BOOST[info.kind] + DEFINITION_FILE_BOOST * named)
    if config.paths and info.kind == "natural":
        score += PATH_BOOST * per_file([path_match(info, p) for p in file_paths])
    if config.paths and named is not None:
        score += STEM_BOOST * named
    if config.priors:
        score *= per_file([prior(info, p, code) for p in file_paths])
    if config.diversity and len(score) > 1:
        if code:
            score = coherence(score, inverse, len(uniq))
        idx, taken = take_in_turn(score, inverse, k, cand.rows)
        return cand.rows[idx].astype(np.int64), taken
    order = best_first(score, cand.rows, k)
    return cand.rows[order].astype(np.int64), score[order].astype(np.float32)
