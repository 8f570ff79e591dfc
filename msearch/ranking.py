"""Candidates to the passages a search returns: thresholds, the best k, one
passage per file.

Retrieval (msearch.query.Searcher) scores passages; this module decides
which of them become hits and in what order, the same for every interface
(the table and machine formats, ``-l``, stdin queries, the MCP ``search``
tool), since all of them go through ``Searcher.query_many``. A ranking
stage that reorders candidates belongs here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from msearch.search import top_k

# Below any score a live row can have (dead rows and rows a path filter
# leaves out score -inf).
LOWEST = float(np.finfo(np.float32).min)
# The lowest BM25 score of a passage that holds a query word: a passage
# without any is not a lexical hit.
ANY_WORD = float(np.nextafter(np.float32(0), np.float32(1)))


@dataclass(frozen=True)
class Candidates:
    """What retrieval scored for one query: ``scores`` of ``rows`` (rows
    across segments, ascending; None: of every row, in row order), and the
    lowest score a hit may have."""

    scores: np.ndarray
    rows: np.ndarray | None = None
    floor: float = LOWEST


def passages_for(k: int, files: bool) -> int:
    """How many passages to rank for ``k`` hits: ``k``, or, for one hit per
    file (``-l``), enough passages to find ``k`` distinct files."""
    return max(k * 20, 100) if files else k


def select(
    candidates: Candidates, k: int, min_score: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows and their scores, best first (ties: the lower row
    first), none below ``min_score`` nor the candidates' floor."""
    floor = candidates.floor if min_score is None else max(min_score, candidates.floor)
    i, scores = top_k(candidates.scores, k, floor)
    rows = i if candidates.rows is None else candidates.rows[i]
    return rows, scores


def one_per_file(
    rows: np.ndarray, scores: np.ndarray, file_of: Callable[[int], int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each file's best row (``rows`` come best first), at most ``k`` files."""
    seen: set[int] = set()
    keep: list[int] = []
    for i, row in enumerate(rows.tolist()):
        f = file_of(row)
        if f not in seen:
            seen.add(f)
            keep.append(i)
            if len(keep) == k:
                break
    return rows[keep], scores[keep]
