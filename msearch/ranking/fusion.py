"""One score per candidate from its cosine and its BM25 score, weighted by
the kind of query.

Why calibrated: a cosine lies on one scale for every query, a BM25 score
on a scale set by the query's words and the collection. Dividing BM25 by
the best candidate's (the fixed mix msearch used before) makes the best
lexical match worth 1 even when it matches one common word weakly; here
BM25 is divided by the best score plus a quarter of ``unit`` (what a
passage holding every query word once would score, ``Bm25.scores_and_unit``),
so a query whose words are all matched well lets words count in full,
and one matched weakly lets them count less.

Why a cosine is imputed: while ``msearch index`` embeds, some passages
have no vector yet (their cosine is NaN) and are found by their words
only. To rank them on the same scale as the others, each gets the cosine
that the passages with vectors have at the same standing by words: the
quantile of its BM25 score among theirs, mapped to the same quantile of
their cosines (monotone in BM25, so among themselves they rank by words).

Why by kind of query: an identifier (``TypeAdapter``) is found by its
spelling, a question by its meaning. Measured on ../shared/codesearch and
../shared/eval (bench/RESULTS.md): weights 0.2 dense for identifiers,
0.6 for natural language.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from msearch.ranking.candidates import Candidates
    from msearch.ranking.queries import QueryInfo

# The dense side's weight, by kind of query (the lexical side gets the rest).
DENSE_WEIGHT = {"identifier": 0.2, "natural": 0.6}
# Share of the query's unit added to the best BM25 score in the divisor.
CONFIDENCE = 0.25
# The fixed mix of msearch before the ranking stage (RankConfig(fusion=False)).
FIXED_LEXICAL_WEIGHT = 0.3


def fuse(info: QueryInfo, cand: Candidates, adaptive: bool = True) -> np.ndarray:
    """One score per candidate, in [0, 1] for the usual cosines.
    ``adaptive=False``: the fixed mix (0.7 cosine + 0.3 BM25 / best BM25)."""
    n = len(cand.rows)
    lex = None if cand.lexical is None else np.nan_to_num(cand.lexical.astype(np.float32), nan=0.0)
    dense = None if cand.dense is None else cand.dense.astype(np.float32)
    if dense is not None:
        dense = impute_cosines(dense, lex)
    if lex is not None and not (lex > 0).any():
        lex = None  # no candidate holds a query word: meaning alone
    if lex is None:
        return dense if dense is not None else np.zeros(n, dtype=np.float32)
    best = np.float32(max(cand.lexical_best, float(lex.max())))
    if not adaptive:
        if dense is None:
            return lex / best
        return np.float32(1.0 - FIXED_LEXICAL_WEIGHT) * dense + np.float32(FIXED_LEXICAL_WEIGHT) * (
            lex / best
        )
    unit = cand.lexical_unit if cand.lexical_unit > 0 else float(best)
    calibrated = lex / (best + np.float32(CONFIDENCE * unit))
    if dense is None:
        return calibrated
    w = np.float32(DENSE_WEIGHT[info.kind])
    return w * dense + (np.float32(1.0) - w) * calibrated


def impute_cosines(dense: np.ndarray, lex: np.ndarray | None) -> np.ndarray | None:
    """``dense`` with each NaN (a passage without a vector yet) replaced by
    the cosine of the same quantile among the passages with one, the
    quantile taken by BM25 (``lex``); None when no candidate has a vector
    (words alone then rank)."""
    missing = np.isnan(dense)
    if not missing.any():
        return dense
    known = ~missing
    if not known.any():
        return None
    out = dense.copy()
    if lex is None:
        out[missing] = np.float32(np.median(dense[known]))
        return out
    matched = known & (lex > 0)  # the candidates with a vector that hold a query word
    pool = matched if matched.any() else known
    words = np.sort(lex[pool])  # ascending
    cosines = np.sort(dense[pool])
    # Share of them scoring below each missing one by words -> the cosine
    # at that share.
    below = np.searchsorted(words, lex[missing], side="left")
    at = np.minimum((below * len(cosines)) // max(len(words), 1), len(cosines) - 1)
    out[missing] = cosines[at]
    return out
