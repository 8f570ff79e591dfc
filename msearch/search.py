"""Vectors to ranked rows: pure functions over arrays, no I/O.

One matrix-vector product scores every passage (rows are normalized, so a dot
product is the cosine); ``argpartition`` then picks the top k in linear time
instead of sorting the whole score vector.
"""

from __future__ import annotations

import numpy as np


def top_k(
    scores: np.ndarray, k: int, min_score: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best entries of ``scores``, best first.

    Ties are broken by the lower index, so results are deterministic.
    """
    if k <= 0:
        raise ValueError("k must be positive")
    pool = np.arange(scores.shape[0]) if min_score is None else np.flatnonzero(scores >= min_score)
    if len(pool) > k:
        vals = scores[pool]
        cut = vals[np.argpartition(-vals, k - 1)[k - 1]]
        # argpartition leaves ties at the cut in arbitrary order: keep
        # everything above the cut and the lowest indices among the ties.
        above = pool[vals > cut]
        at = pool[vals == cut][: k - len(above)]
        pool = np.concatenate([above, at])
    candidates = pool
    order = np.lexsort((candidates, -scores[candidates]))
    idx = candidates[order]
    return idx.astype(np.int64), scores[idx].astype(np.float32)


def score(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of every row with ``query`` (both normalized): one mat-vec product."""
    return np.asarray(embeddings @ np.asarray(query, dtype=np.float32), dtype=np.float32)


def search(
    embeddings: np.ndarray, query: np.ndarray, k: int, min_score: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    return top_k(score(embeddings, query), k, min_score)
