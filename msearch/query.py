"""A search: retrieval finds each query's candidates (the best rows by
cosine and by BM25, in two stages for a large index, and the definitions
of the symbols it names), msearch.ranking orders them, and the hits'
passages are read back from the files.

Passage text is not stored in the index; it is read from the file by its
character range at query time, after checking that the file is still the one
that was indexed. A changed or vanished file makes its hits ``stale``
rather than showing lines that no longer match the score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from msearch import coarse, ranking
from msearch.chunking.syntax import is_code_path
from msearch.config import DEFAULT, TwoStage
from msearch.errors import IndexCorrupt, UsageError
from msearch.lexical import LexicalFormatError
from msearch.storage import safefs
from msearch.storage.layout import FIX_HINT, META_NAME
from msearch.storage.reader import IndexReader, check_paths
from msearch.storage.segment import EMBEDDINGS_NAME, PASSAGES_NAME, prefetch_rows
from msearch.walk import NotText, decode

if TYPE_CHECKING:
    from msearch.config import RankConfig
    from msearch.filters import PathFilter
    from msearch.lexical import Bm25
    from msearch.ranking import QueryInfo
    from msearch.storage.segment import Segment

QueryEncoder = Callable[[Sequence[str]], np.ndarray]
QUERY_GROUP = 32
MODES = ("dense", "lexical", "hybrid")


def _best(scores: np.ndarray, n: int, floor: float) -> np.ndarray:
    """The rows of the ``n`` highest scores above ``floor`` (unordered)."""
    keep = np.flatnonzero(scores > floor)
    if len(keep) > n:
        keep = keep[np.argpartition(-scores[keep], n - 1)[:n]]
    return keep.astype(np.int64)


def two_stage_ready(index: IndexReader, stages: TwoStage) -> bool:
    """Whether the index is searched in two stages (unless asked for an
    exact scan): large enough (``stages.from_rows``), and every segment has
    its sign bits."""
    return index.count >= stages.from_rows and all(seg.bits() is not None for seg in index.segments)


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # as shown to the user: relative to the current folder when inside it
    start_line: int
    end_line: int
    text: str
    stale: bool = False
    abs_path: str = ""
    before: tuple[str, ...] = ()  # context lines, read from the file as grep does
    after: tuple[str, ...] = ()
    lead: str = ""  # the start of the first line, before the passage (a split long line)


def display_path(abs_path: str, cwd: str) -> str:
    rel = os.path.relpath(abs_path, cwd)
    return abs_path if rel.startswith("..") else rel


class FileCache:
    """Reads each hit's file at most once per query batch and checks freshness."""

    def __init__(self, index: IndexReader, follow_links: bool = False) -> None:
        """``follow_links``: this run was given ``-L`` (what the index
        records is never a permission to follow links)."""
        self.index = index
        self.follow_links = follow_links
        self._texts: dict[int, str | None] = {}

    def text(self, file_idx: int) -> str | None:
        if file_idx not in self._texts:
            self._texts[file_idx] = self._load(file_idx)
        return self._texts[file_idx]

    def _load(self, file_idx: int) -> str | None:
        """The file's text if it is still the indexed file, else None (stale).

        The path comes from the index, which may come from anywhere: it must
        name a regular file inside the root (no ``..``, no link unless this
        run was given ``-L``), of the recorded size; nothing larger is read
        and nothing that could block (a FIFO) is opened.
        """
        rec = self.index.meta.files[file_idx]
        check_paths(self.index, [rec])
        try:
            fh, st = safefs.open_beneath(
                self.index.root, rec.path, self.follow_links, max_size=rec.size
            )
            with fh:
                data = safefs.read_limited(fh, rec.size, rec.path)
        except OSError:
            return None
        if not rec.unchanged(len(data), st.st_mtime_ns, lambda: data):
            return None
        try:
            return decode(data)
        except NotText:
            return None


class Searcher:
    """An open index plus a query encoder: answers many queries, loads once.

    ``mode`` is "dense" (cosine only), "lexical" (BM25 only, no model needed)
    or "hybrid" (both, fused by msearch.ranking); hybrid and lexical need
    the index's lexical side (:func:`open_lexical`).
    """

    def __init__(
        self,
        index: IndexReader,
        encode: QueryEncoder | None,
        lexical: Bm25 | None = None,
        mode: str = "dense",
        cwd: str | os.PathLike[str] | None = None,
        exact: bool = False,
        stages: TwoStage = DEFAULT.two_stage,
        rank_config: RankConfig | None = None,
        follow_links: bool = False,
    ) -> None:
        """``cwd``: hits' paths are shown relative to it when inside it
        (default: the current folder). ``exact``: score every passage even
        where a large index would be searched in two stages (``stages``:
        from what size, how wide). ``rank_config``: which parts of the
        ranking stage run (default: all). ``follow_links``: hits' files may
        be read through symbolic links (this run's ``-L`` only)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode != "dense" and lexical is None:
            raise UsageError(f"{mode} search needs the index's lexical side")
        if mode != "lexical" and encode is None:
            raise ValueError("dense and hybrid search need a query encoder")
        self.index = index
        self.encode = encode
        self.lexical = lexical
        self.mode = mode
        self.cwd = os.getcwd() if cwd is None else str(cwd)
        self.exact = exact
        self.stages = stages
        self.rank_config = rank_config or ranking.RankConfig()
        self.follow_links = follow_links
        self._masks: dict[tuple[str, ...], np.ndarray] = {}
        self._live: np.ndarray | None = None
        self._paths: list[str] | None = None
        self._mostly_code: bool | None = None
        self._waiting: np.ndarray | None = None

    def query(
        self,
        text: str,
        k: int = 10,
        min_score: float | None = None,
        paths: PathFilter | None = None,
        context: tuple[int, int] = (0, 0),
        files: bool = False,
    ) -> list[Hit]:
        return self.query_many([text], k, min_score, paths, context, files)[0]

    def query_many(
        self,
        texts: Sequence[str],
        k: int = 10,
        min_score: float | None = None,
        paths: PathFilter | None = None,
        context: tuple[int, int] = (0, 0),
        files: bool = False,
    ) -> list[list[Hit]]:
        """The best ``k`` passages for each query; with ``paths``, among the
        files it passes only; ``context`` = (lines before, lines after);
        ``files``: each file's best passage, ``k`` files (``-l``).

        Search request, candidates, ranking, hits: retrieval scores the
        candidates (:meth:`candidates`), msearch.ranking picks what becomes
        a hit, the file table and the files themselves make the hits. The
        arguments are checked by the caller (``api.SearchRequest``)."""
        if self.index.count == 0:
            return [[] for _ in texts]
        allowed = self._mask(paths) if paths else None
        if allowed is not None and not allowed.any():
            return [[] for _ in texts]
        want = ranking.passages_for(k, files)
        cache = FileCache(self.index, self.follow_links)
        out: list[list[Hit]] = []
        for g in range(0, len(texts), QUERY_GROUP):
            group = list(texts[g : g + QUERY_GROUP])
            infos = [ranking.analyze(t) for t in group]
            for info, found in zip(
                infos, self.candidates(group, infos, allowed, want), strict=True
            ):
                rows, scores = ranking.rank(
                    info, found, self.paths(), want, self.rank_config, self.mostly_code()
                )
                if min_score is not None:
                    keep = scores >= min_score
                    rows, scores = rows[keep], scores[keep]
                if self.mode != "lexical":
                    self._check_vectors(rows)
                if files:
                    rows, scores = ranking.one_per_file(rows, scores, self._file_of, k)
                out.append(self._hits(rows, scores, cache, context))
        return out

    def candidates(
        self, texts: list[str], infos: list[QueryInfo], allowed: np.ndarray | None, k: int
    ) -> list[ranking.Candidates]:
        """What retrieval finds for each query of a group (``infos``: what
        ``ranking.analyze`` says of each): the best usable rows by cosine
        and by BM25 (exact scores; for a large index, those the two stages
        keep), and the rows defining a symbol the query names."""
        staged = self._two_stage_group(texts, infos, allowed, k) if self.two_stage() else None
        return staged if staged is not None else self._scan_group(texts, infos, allowed, k)

    def paths(self) -> list[str]:
        """The file table's paths (what the ranking's path rules read)."""
        if self._paths is None:
            self._paths = [f.path for f in self.index.meta.files]
        return self._paths

    def mostly_code(self) -> bool:
        """Whether most of the index's passages are source code (some rules
        of msearch.ranking apply only there)."""
        if self._mostly_code is None:
            files = self.index.meta.files
            code = sum(f.rows for f in files if f.rows and is_code_path(f.path))
            self._mostly_code = ranking.mostly_code(code, self.index.count)
        return self._mostly_code

    def _definitions(
        self, info: QueryInfo, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Live rows (that the filter passes) defining a symbol the query
        names, ascending, and how much each counts (``QueryInfo.weights``)."""
        if self.lexical is None or not info.symbols or not self.rank_config.definitions:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        try:
            rows, which = self.lexical.symbol_rows(info.symbols)
        except LexicalFormatError as exc:
            raise IndexCorrupt(f"{exc}; {FIX_HINT}") from None
        keep = self._usable(allowed)[rows] if len(rows) else np.zeros(0, bool)
        rows, which = rows[keep], which[keep]
        return rows, np.asarray(info.weights, dtype=np.float64)[which]

    def _scan_group(
        self, texts: list[str], infos: list[QueryInfo], allowed: np.ndarray | None, k: int
    ) -> list[ranking.Candidates]:
        """Each query's candidates from a scan of every row: the best by
        meaning, the best by words, and the definitions it names.

        Dense scores for a group come from one pass over the matrix (a
        matrix-matrix product) instead of one pass per query."""
        dense: np.ndarray | None = None
        if self.mode != "lexical" and self.has_vectors():
            assert self.encode is not None
            vecs = np.ascontiguousarray(self.encode(texts), dtype=np.float32)
            dense = self.dense_scores(vecs)
            # One pass over the scores (a millisecond at a million rows):
            # a NaN in the index would otherwise rank silently.
            if np.isnan(dense).any() or np.isposinf(dense).any():
                raise IndexCorrupt(
                    f"{self.index.dir} holds invalid numbers in its vectors; {FIX_HINT}"
                )
            if allowed is not None:
                dense[~allowed] = -np.inf
        want = max(ranking.CANDIDATES, k)
        out = []
        for j, (text, info) in enumerate(zip(texts, infos, strict=True)):
            parts = []
            d = None if dense is None else np.ascontiguousarray(dense[:, j])
            if d is not None:
                parts.append(_best(d, want, -np.inf))  # dead rows score -inf
            lex, unit = None, 0.0
            if self.mode != "dense":
                lex, unit = self._lexical_scores(text, allowed)
                # A passage without any query word is not a lexical hit.
                parts.append(_best(lex, want, 0.0))
            def_rows, def_w = self._definitions(info, allowed)
            parts.append(def_rows)
            # Sorted and deduplicated by hand: np.unique imports numpy.ma,
            # 17 ms of a cold query.
            rows = np.sort(np.concatenate(parts))
            rows = rows[np.concatenate(([True], rows[1:] != rows[:-1]))] if len(rows) else rows
            out.append(
                self._candidates(
                    rows,
                    None if d is None else self._cosines(d, rows),
                    None if lex is None else lex[rows],
                    unit,
                    def_rows,
                    def_w,
                    float(lex.max()) if lex is not None and len(lex) else 0.0,
                )
            )
        return out

    def has_vectors(self) -> bool:
        """Whether any segment has vectors (right after the words of a new
        index are committed, none has: the query is not even encoded)."""
        return any(not seg.pending for seg in self.index.segments)

    def _vectorless(self) -> np.ndarray | None:
        """Rows (across segments) without a vector yet: those of pending
        segments; None when there are none."""
        if self._waiting is None:
            segs = self.index.segments
            if not any(seg.pending for seg in segs):
                self._waiting = np.zeros(0, bool)
            else:
                self._waiting = np.concatenate(
                    [np.full(seg.rows, seg.pending, dtype=bool) for seg in segs]
                )
        return self._waiting if len(self._waiting) else None

    def _cosines(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The candidates' cosines from a scan's scores, NaN for a row
        without a vector (msearch.ranking.fusion imputes it)."""
        out = scores[rows]
        waiting = self._vectorless()
        if waiting is not None:
            out[waiting[rows]] = np.nan
        return out

    def _candidates(
        self,
        rows: np.ndarray,
        dense: np.ndarray | None,
        lex: np.ndarray | None,
        unit: float,
        def_rows: np.ndarray,
        def_w: np.ndarray,
        best_lexical: float = 0.0,
    ) -> ranking.Candidates:
        defines = np.zeros(len(rows), dtype=np.float64)
        if len(def_rows):
            defines[np.searchsorted(rows, def_rows)] = def_w
        return ranking.Candidates(
            rows, self.index.files_of(rows), dense, lex, defines, unit, best_lexical
        )

    def _file_of(self, row: int) -> int:
        return self.index.passage(row)[0]

    def two_stage(self) -> bool:
        """Whether dense scores come from the two-stage search: a large index
        whose every segment has its sign bits, unless ``exact`` was asked for."""
        return (
            not self.exact and self.mode != "lexical" and two_stage_ready(self.index, self.stages)
        )

    def _usable(self, allowed: np.ndarray | None) -> np.ndarray:
        """Live rows (across segments) that the path filter passes."""
        if self._live is None:
            parts = [self.index.live_mask(i) for i in range(len(self.index.segments))]
            self._live = np.concatenate(
                [
                    np.ones(s.rows, bool) if m is None else m
                    for s, m in zip(self.index.segments, parts, strict=True)
                ]
            )
        return self._live if allowed is None else self._live & allowed

    def _two_stage_group(
        self, texts: list[str], infos: list[QueryInfo], allowed: np.ndarray | None, k: int = 10
    ) -> list[ranking.Candidates] | None:
        """Each query's candidates, with exact cosines, from the two-stage
        search; None when so few rows are usable (live, passing the filter)
        that scanning them all is as cheap.

        Stage one (:func:`msearch.coarse.nearest_rows`): every row's sign
        bits against the query's components (faiss's fast-scan kernel, on
        1/32 of the vectors' bytes); the best share of each segment's
        usable rows goes on, wherever those lie. Stage two
        (:mod:`msearch.int8`): their int8 codes estimate their cosines.
        Stage three: the best ``stages.rescored(k)`` rows by that
        estimate (and every candidate of a segment without codes) are
        scored exactly from the float32 vectors; only those are returned.
        Hybrid adds the best BM25 rows to the candidates, and every mode
        the definitions of the symbols the query names; the rows to score
        exactly are picked by a fixed mix of estimate and BM25 (so that the
        rows strongest on words are scored exactly too), and definitions
        are always scored exactly (the ranking lifts them).
        """
        import faiss

        from msearch.lexical import fuse

        # One thread: faiss's OpenMP threads would wait on OpenBLAS's, still
        # spinning after the query's encoding (2x slower on 2 cores).
        faiss.omp_set_num_threads(1)

        index = self.index
        usable = self._usable(allowed)
        n_usable = int(usable.sum()) if allowed is not None else index.count
        want = max(self.stages.candidates(index.count), k)
        if n_usable <= 4 * want:
            return None
        assert self.encode is not None
        vecs = np.ascontiguousarray(self.encode(texts), dtype=np.float32)
        unusable = None if n_usable == index.total_rows else ~usable
        bad_counts = None
        if unusable is not None:
            bad_counts = [
                int(np.count_nonzero(unusable[seg.offset : seg.offset + seg.rows]))
                for seg in index.segments
            ]
        best = self.stages.rescored(k)
        out = []
        for j, (text, info) in enumerate(zip(texts, infos, strict=True)):
            vec = vecs[j]
            rows, est = coarse.nearest_rows(
                vec,
                index.segments,
                k,
                unusable,
                bad_counts,
                None if self.mode == "hybrid" else best,
                candidates=self.stages.candidates,
            )
            lex, unit = None, 0.0
            extra_parts = []
            if self.mode == "hybrid":
                lex, unit = self._lexical_scores(text, allowed)
                # The best BM25 rows join (the best one fixes the fused
                # scale); rows strong on words but weak on meaning are few.
                extra_parts.append(_best(lex, min(want, max(100 * k, 1000)), 0.0))
            def_rows, def_w = self._definitions(info, allowed)
            extra_parts.append(def_rows)
            extra = np.setdiff1d(np.concatenate(extra_parts), rows)
            if len(extra):
                rows = np.concatenate([rows, extra])
                est = np.concatenate([est, self._estimates(extra, vec)])
                order = np.argsort(rows, kind="stable")
                rows, est = rows[order], est[order]
            dense = est.copy()
            exact = np.isnan(est)
            if exact.any():
                dense[exact] = self._exact_cosines(rows[exact], vec)
            known = np.flatnonzero(~exact)
            if len(known):
                key = dense if lex is None else fuse(dense, lex[rows])
                if len(known) > best:
                    known = np.sort(known[np.argpartition(-key[known], best - 1)[:best]])
                dense[known] = self._exact_cosines(rows[known], vec)
                exact[known] = True
            todo = np.isin(rows, def_rows) & ~exact
            if todo.any():
                dense[todo] = self._exact_cosines(rows[todo], vec)
                exact |= todo
            if np.isnan(dense[exact]).any() or np.isposinf(dense[exact]).any():
                raise IndexCorrupt(f"{index.dir} holds invalid numbers in its vectors; {FIX_HINT}")
            rows, dense = rows[exact], dense[exact]
            lexical = None if lex is None else lex[rows]
            best_lex = float(lex.max()) if lex is not None and len(lex) else 0.0
            out.append(self._candidates(rows, dense, lexical, unit, def_rows, def_w, best_lex))
        return out

    def _estimates(self, rows: np.ndarray, vec: np.ndarray) -> np.ndarray:
        """The int8 estimates of ``rows`` (ascending, across segments); NaN
        for rows of a segment without codes."""
        out = np.full(len(rows), np.nan, dtype=np.float32)
        for seg, sel in self._by_segment(rows):
            codes = seg.int8()
            if codes is not None:
                out[sel] = codes.estimate(vec, rows[sel] - seg.offset)
        return out

    def _by_segment(self, rows: np.ndarray) -> Iterator[tuple[Segment, np.ndarray]]:
        """Each segment holding some of ``rows`` (rows across segments), and
        where in ``rows`` its rows are."""
        if not len(rows):
            return
        offsets = np.array([s.offset for s in self.index.segments])
        seg_of = np.searchsorted(offsets, rows, side="right") - 1
        for si in np.unique(seg_of).tolist():
            yield self.index.segments[si], np.flatnonzero(seg_of == si)

    def _lexical_scores(self, text: str, allowed: np.ndarray | None) -> tuple[np.ndarray, float]:
        """BM25 of every row (0 for rows the filter leaves out), checked, and
        the query's calibration unit (``Bm25.scores_and_unit``)."""
        assert self.lexical is not None
        try:
            lex, unit = self.lexical.scores_and_unit(text)
        except LexicalFormatError as exc:
            raise IndexCorrupt(f"{exc}; {FIX_HINT}") from None
        if not np.isfinite(lex).all():
            raise IndexCorrupt(
                f"the lexical side of {self.index.dir} holds invalid numbers; {FIX_HINT}"
            )
        if allowed is not None:
            lex[~allowed] = 0
        return lex, unit

    def _exact_cosines(self, rows: np.ndarray, vec: np.ndarray) -> np.ndarray:
        """Cosines of ``rows`` (ascending, across segments) with ``vec``."""
        import faiss

        out = np.empty(len(rows), dtype=np.float32)
        query = np.ascontiguousarray(vec, dtype=np.float32)
        for seg, sel in self._by_segment(rows):
            ids = np.ascontiguousarray(rows[sel] - seg.offset, dtype=np.int64)
            if ids[0] < 0 or ids[-1] >= seg.rows:  # ascending: the ends bound them
                raise ValueError(f"rows {ids[0]}..{ids[-1]} outside a segment of {seg.rows}")
            if len(ids) <= self.stages.prefetch_rows:
                prefetch_rows(seg.embeddings, ids)
            matrix = np.asarray(seg.embeddings).view(np.ndarray)
            if not (matrix.flags.c_contiguous and matrix.dtype == np.float32):
                raise ValueError("faiss reads the vectors as contiguous float32 rows")
            part = np.empty(len(ids), dtype=np.float32)
            # Each row read once where it lies (numpy's take() would copy
            # them all first, then read the copy: 3x the memory traffic).
            faiss.fvec_inner_products_by_idx(  # type: ignore[attr-defined]
                faiss.swig_ptr(part),
                faiss.swig_ptr(query),
                faiss.swig_ptr(matrix),
                faiss.swig_ptr(ids),
                matrix.shape[1],
                1,
                len(ids),
            )
            out[sel] = part
        return out

    def _mask(self, paths: PathFilter) -> np.ndarray:
        """The rows ``paths`` passes, remembered per set of globs (a server
        answers many queries with the same filter)."""
        mask = self._masks.get(paths.globs)
        if mask is None:
            if len(self._masks) >= 16:
                self._masks.clear()
            mask = self._masks[paths.globs] = paths.row_mask(self.index)
        return mask

    def dense_scores(self, vecs: np.ndarray) -> np.ndarray:
        """Cosine of every row with each query vector (rows x queries): one
        matrix product per segment, a single one when the index is fully
        merged. Dead rows get -inf."""
        n = self.index.total_rows
        out = np.empty((n, len(vecs)), dtype=np.float32)
        for i, seg in enumerate(self.index.segments):
            part = out[seg.offset : seg.offset + seg.rows]
            if seg.pending:  # no vectors yet: found by words only
                part[:] = -np.inf
                continue
            np.matmul(seg.embeddings, vecs.T, out=part)
            dead = self.index.dead_rows(i)
            if dead is not None:
                part[dead] = -np.inf
        return out

    def _check_vectors(self, rows: np.ndarray) -> None:
        """The hits' vectors must be unit length, as every stored vector is: a
        damaged vector (a flipped exponent bit) would otherwise top the
        ranking. Costs k rows, not a pass over the index."""
        for row in rows.tolist():
            seg, r = self.index.locate(row)
            segment = self.index.segments[seg]
            if segment.pending:
                continue  # no vector yet
            norm = float(np.linalg.norm(np.asarray(segment.embeddings[r])))
            if not abs(norm - 1.0) < 1e-2:
                raise IndexCorrupt(
                    f"{segment.path / EMBEDDINGS_NAME} holds damaged vectors; {FIX_HINT}"
                )

    def _hits(
        self, idx: np.ndarray, scores: np.ndarray, cache: FileCache, context: tuple[int, int]
    ) -> list[Hit]:
        hits: list[Hit] = []
        files = self.index.meta.files
        root = self.index.root
        for rank, (row, sc) in enumerate(zip(idx.tolist(), scores.tolist(), strict=True), 1):
            f, start_line, end_line, start, end = self.index.passage(row)
            abs_path = str(root / files[f].path)
            text = cache.text(f)
            if text is not None and end > len(text):
                seg, r = self.index.locate(row)
                where = self.index.segments[seg].path / PASSAGES_NAME
                raise IndexCorrupt(f"{where} is damaged (row {r}); {FIX_HINT}")
            before: tuple[str, ...] = ()
            after: tuple[str, ...] = ()
            if text is not None and any(context):
                before, after = context_lines(text, start, end, *context)
            hits.append(
                Hit(
                    rank=rank,
                    score=float(sc),
                    path=display_path(abs_path, self.cwd),
                    start_line=start_line,
                    end_line=end_line,
                    text="" if text is None else text[start:end],
                    stale=text is None,
                    abs_path=abs_path,
                    before=before,
                    after=after,
                    lead="" if text is None else text[text.rfind("\n", 0, start) + 1 : start],
                )
            )
        return hits


def context_lines(
    text: str, start: int, end: int, before: int, after: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Up to ``before`` whole lines above the passage at ``text[start:end]``
    and ``after`` below it, as ``grep -B/-A`` shows them (no line ends).

    A passage may start or end inside a line (a very long line is cut in
    pieces): context begins at the next whole line either way.
    """
    head = text.rfind("\n", 0, start) + 1  # start of the passage's first line
    above = text[:head].split("\n")[:-1][-before:] if before else []
    nl = text.find("\n", max(end - 1, start))
    rest = "" if nl < 0 else text[nl + 1 :]  # after the passage's last line
    below = rest.split("\n")
    if rest.endswith("\n") or not rest:
        below.pop()
    below = below[:after]
    return tuple(s.rstrip("\r") for s in above), tuple(s.rstrip("\r") for s in below)


def open_lexical(index: IndexReader) -> Bm25:
    """BM25 over the index's segments, their statistics memory-mapped."""
    from msearch.lexical import Bm25, LexicalFormatError, LexicalParams, LexicalPart

    try:
        params = LexicalParams.from_json(index.meta.lexical)
    except LexicalFormatError as exc:
        raise IndexCorrupt(f"{index.dir / META_NAME}: {exc}; {FIX_HINT}") from None
    parts = [
        LexicalPart(seg.lexical(), seg.offset, index.live_mask(i))
        for i, seg in enumerate(index.segments)
    ]
    live_tokens = sum(s.live_tokens for s in index.meta.segments)
    return Bm25(params, parts, index.total_rows, index.count, live_tokens)
