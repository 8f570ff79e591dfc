"""Query-time path filters: ``-g/--glob`` on ``msearch query`` and the MCP
``search`` tool.

ripgrep's rules, in gitignore syntax: a file must match at least one glob
that does not start with ``!`` (when there is one) and none of the ``!``
globs. Globs are matched against paths relative to the index root, the
same paths ``msearch index -g`` matches, so one glob means one thing.

Filtering happens before ranking: rows of other files never compete, and
hybrid search scales BM25 by the best lexical score among the rows that
pass (term statistics stay those of the whole index, as in Lucene's
filtered queries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from msearch.walk import check_globs

if TYPE_CHECKING:
    from msearch.storage.reader import IndexReader


class PathFilter:
    def __init__(self, globs: Sequence[str], option: str = "--glob") -> None:
        import pathspec

        globs = [g for g in globs if g.strip()]
        positive = [g for g in globs if not g.startswith("!")]
        negative = [g[1:] for g in globs if g.startswith("!")]
        check_globs(positive, option)
        check_globs(negative, option)
        self.globs = tuple(globs)
        self._pos = pathspec.GitIgnoreSpec.from_lines(positive) if positive else None
        self._neg = pathspec.GitIgnoreSpec.from_lines(negative) if negative else None

    def __bool__(self) -> bool:
        return bool(self.globs)

    def match(self, rel: str) -> bool:
        if self._pos is not None and not self._pos.match_file(rel):
            return False
        return self._neg is None or not self._neg.match_file(rel)

    def row_mask(self, index: IndexReader) -> np.ndarray:
        """Which rows (across segments) belong to a file that passes."""
        mask = np.zeros(index.total_rows, dtype=bool)
        offsets = [s.offset for s in index.segments]
        for rec in index.meta.files:
            if rec.rows and self.match(rec.path):
                start = offsets[rec.segment] + rec.row
                mask[start : start + rec.rows] = True
        return mask
