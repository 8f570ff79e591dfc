"""Which ranked passages are shown: files take turns, a file that matches in
several passages is lifted, ``-l`` keeps one passage per file.

Why turns: one long file's passages otherwise fill the list (on code, the
median top 10 held 4 distinct files), hiding the other files a search is
for. Each further passage of a file counts SATURATION times less, so a
file's second passage still comes before another file's much weaker one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

# Each further passage of one file: its score times this, once more per passage.
SATURATION = 0.7
# The best passage of a file gets up to this much for the file's other
# matching passages (only where the folder is mostly code).
COHERENCE_BOOST = 0.1


def passages_for(k: int, files: bool) -> int:
    """How many passages to rank for ``k`` hits: ``k``, or, for one hit per
    file (``-l``), enough passages to find ``k`` distinct files."""
    return max(k * 20, 100) if files else k


def best_first(score: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best scores, best first; ties: the lower row."""
    return np.lexsort((rows, -score))[:k]


def coherence(score: np.ndarray, inverse: np.ndarray, files: int) -> np.ndarray:
    """``score`` with each file's best passage lifted by a share of the
    file's other passages' scores (relative to the file with most)."""
    out = score.copy()
    order = np.argsort(-score, kind="stable")
    total = np.bincount(inverse, weights=np.maximum(score, 0.0), minlength=files)
    best = np.full(files, -1, dtype=np.int64)
    for i in order.tolist():
        if best[inverse[i]] < 0:
            best[inverse[i]] = i
    rest = total - np.maximum(score[best], 0.0)
    top_rest = float(rest.max()) if len(rest) else 0.0
    if top_rest > 0:
        out[best] += COHERENCE_BOOST * rest / top_rest
    return out


def take_in_turn(
    score: np.ndarray, inverse: np.ndarray, k: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``k`` candidates and the scores they were taken at: each
    time a file's passage is taken, that file's remaining passages count
    SATURATION times less (a negative score is left as it is). Ties go to
    the lower row."""
    taken_from = np.zeros(int(inverse.max()) + 1 if len(inverse) else 0, dtype=np.int64)
    heap = [(-float(score[i]), int(rows[i]), int(i), 0) for i in range(len(score))]
    heapq.heapify(heap)
    out: list[tuple[float, int]] = []
    while heap and len(out) < k:
        neg, row, i, seen = heapq.heappop(heap)
        f = inverse[i]
        if seen != taken_from[f]:
            eff = score[i] * SATURATION ** taken_from[f] if score[i] > 0 else score[i]
            heapq.heappush(heap, (-float(eff), row, i, int(taken_from[f])))
            continue
        out.append((-neg, i))
        taken_from[f] += 1
    idx = np.array([i for _, i in out], dtype=np.int64)
    return idx, np.array([s for s, _ in out], dtype=np.float32)


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
