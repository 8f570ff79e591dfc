"""Scores to ranked rows: a pure function over arrays, no I/O.

``argpartition`` picks the top k in linear time instead of sorting every
score (a million at a large index).
"""

from __future__ import annotations

import numpy as np


def top_k(
    scores: np.ndarray, k: int, min_score: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best entries of ``scores``, best first,
    none below ``min_score``.

    Ties are broken by the lower index, so results are deterministic. The
    threshold is applied to the k best, not to the whole array: the best k
    of the entries that pass it are the best k that pass it, and a pass
    over every score to collect those that pass (at a million rows, a
    gather that cost more than the partition) is saved.
    """
    if k <= 0:
        raise ValueError("k must be positive")
    n = scores.shape[0]
    if n > k:
        cut = np.partition(scores, n - k)[n - k]  # the k-th largest score
        # The partition leaves ties at the cut in arbitrary order: keep
        # everything above the cut and the lowest indices among the ties.
        above = np.flatnonzero(scores > cut)
        at = np.flatnonzero(scores == cut)[: k - len(above)]
        candidates = np.concatenate([above, at])
    else:
        candidates = np.arange(n)
    order = np.lexsort((candidates, -scores[candidates]))
    idx = candidates[order]
    if min_score is not None:
        idx = idx[scores[idx] >= min_score]
    return idx.astype(np.int64), scores[idx].astype(np.float32)
