"""What retrieval hands the ranking stage for one query."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidates:
    """Passages retrieved for one query, in any order."""

    rows: np.ndarray  # row numbers across the index
    files: np.ndarray  # the file (index into the file table) of each
    dense: np.ndarray | None  # cosine of each; None when the dense side did not run
    lexical: np.ndarray | None  # BM25 of each; None when the lexical side did not run
    defines: np.ndarray  # > 0 where the passage defines a symbol the query names
    # What a passage holding each query word once scores (Bm25.scores_and_unit).
    lexical_unit: float = 0.0
    # The best BM25 score of any usable row (0: the best among these): the
    # calibration's scale, the same whichever candidates a search kept.
    lexical_best: float = 0.0
