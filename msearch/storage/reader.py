"""Reading an index: a committed generation opened and checked, its rows
numbered across segments, live and dead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msearch.errors import IndexCorrupt
from msearch.storage import safefs
from msearch.storage.disk import checksum, open_folder
from msearch.storage.layout import FIX_HINT, META_NAME, resolve_root
from msearch.storage.record import FileRecord, Meta, read_meta
from msearch.storage.segment import (
    EMBEDDINGS_NAME,
    PASSAGE_COLUMNS,
    PASSAGES_NAME,
    Segment,
    open_segment,
)


@dataclass
class IndexReader:
    """A loaded index: metadata plus its open segments.

    Rows are numbered across segments in ``meta.segments`` order (a
    segment's rows start at its ``offset``); rows no file points at are
    dead: their scores are masked, they are never hits.
    """

    dir: Path
    meta: Meta
    segments: list[Segment]
    root: Path = field(default_factory=Path)
    _ranges: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    _arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _live: dict[int, np.ndarray | None] = field(default_factory=dict)
    _dead: dict[int, np.ndarray | None] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def count(self) -> int:
        return self.meta.count

    def check_mapped(self) -> None:
        """No file mapped by this reader was cut short since it was opened
        (see :meth:`Segment.check_mapped`): before each search."""
        for seg in self.segments:
            seg.check_mapped()

    def _file_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(segment, first row, row count) of every file, as arrays; a file
        without passages has segment -1."""
        if self._arrays is None:
            files = self.meta.files
            n = len(files)
            segs = np.fromiter((f.segment for f in files), dtype=np.int64, count=n)
            starts = np.fromiter((f.row for f in files), dtype=np.int64, count=n)
            counts = np.fromiter((f.rows for f in files), dtype=np.int64, count=n)
            segs[counts == 0] = -1
            self._arrays = (segs, starts, counts)
        return self._arrays

    def file_ranges(self, seg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first rows, row counts, file indices) of the live files of segment
        ``seg``, ordered by first row."""
        if self._ranges is None:
            segs, starts, counts = self._file_arrays()
            order = np.lexsort((starts, segs))
            bounds = np.searchsorted(segs[order], np.arange(len(self.segments) + 1))
            self._ranges = []
            for i in range(len(self.segments)):
                sel = order[bounds[i] : bounds[i + 1]]
                self._ranges.append((starts[sel], counts[sel], sel))
        return self._ranges[seg]

    def dead_rows(self, seg: int) -> np.ndarray | None:
        """The dead rows of segment ``seg``; None when all are live."""
        if seg not in self._dead:
            live = self.live_mask(seg)
            self._dead[seg] = None if live is None else np.flatnonzero(~live)
        return self._dead[seg]

    def live_mask(self, seg: int) -> np.ndarray | None:
        """Which rows of segment ``seg`` are live; None when all are."""
        if seg not in self._live:
            info = self.segments[seg].info
            if info.live_rows == info.rows:
                self._live[seg] = None
            else:
                starts, counts, _ = self.file_ranges(seg)
                # +1 where a file's rows start, -1 where they end: the running
                # sum is 1 on live rows (ranges never overlap: checked at load).
                edges = np.zeros(info.rows + 1, dtype=np.int32)
                edges[starts] += 1
                edges[starts + counts] -= 1
                self._live[seg] = np.cumsum(edges[:-1]) > 0
        return self._live[seg]

    def locate(self, row: int) -> tuple[int, int]:
        """(segment, row within it) of a row number across segments."""
        offsets = [s.offset for s in self.segments]
        seg = int(np.searchsorted(offsets, row, side="right")) - 1
        return seg, row - self.segments[seg].offset

    def passage(self, row: int) -> tuple[int, int, int, int, int]:
        """(file index, start line, end line, start char, end char) of a live
        row, checked: anything out of range means damage."""
        seg, r = self.locate(row)
        starts, counts, files = self.file_ranges(seg)
        i = int(np.searchsorted(starts, r, side="right")) - 1
        segment = self.segments[seg]
        if i < 0 or r >= starts[i] + counts[i]:
            raise IndexCorrupt(f"{segment.path / PASSAGES_NAME} is damaged (row {r}); {FIX_HINT}")
        _, a, b, s, e = (int(v) for v in segment.passages[r])
        if not (1 <= a <= b and 0 <= s <= e):
            raise IndexCorrupt(f"{segment.path / PASSAGES_NAME} is damaged (row {r}); {FIX_HINT}")
        return int(files[i]), a, b, s, e

    def files_of(self, rows: np.ndarray) -> np.ndarray:
        """The file (index into the file table) of each live row (rows across
        segments), for many rows at once; -1 for a row no file holds."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full(len(rows), -1, dtype=np.int64)
        if not len(rows):
            return out
        offsets = np.array([s.offset for s in self.segments], dtype=np.int64)
        seg_of = np.searchsorted(offsets, rows, side="right") - 1
        # A set, not np.unique: that imports numpy.ma (17 ms) on a cold query.
        for si in sorted(set(seg_of.tolist())):
            sel = np.flatnonzero(seg_of == si)
            starts, counts, files = self.file_ranges(si)
            local = rows[sel] - offsets[si]
            i = np.searchsorted(starts, local, side="right") - 1
            ok = (i >= 0) & (local < starts[np.maximum(i, 0)] + counts[np.maximum(i, 0)])
            out[sel[ok]] = files[i[ok]]
        return out

    def file_rows(self, file_idx: int) -> tuple[Segment | None, int, int]:
        """The segment and row range holding a file's passages (None for a
        file without passages)."""
        rec = self.meta.files[file_idx]
        if not rec.rows:
            return None, 0, 0
        return self.segments[rec.segment], rec.row, rec.row + rec.rows

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live passage in file-table order: (passages, vectors), the
        passages' first column the file index. What a fully merged index
        stores as it is; for tests and the retrieval benchmark."""
        rows, vecs = [], []
        for i in range(len(self.meta.files)):
            seg, a, b = self.file_rows(i)
            if seg is None:
                continue
            part = np.array(seg.passages[a:b], dtype=np.int32)
            part[:, 0] = i
            rows.append(part)
            vecs.append(np.asarray(seg.embeddings[a:b]))
        empty = np.zeros((0, len(PASSAGE_COLUMNS)), np.int32)
        return (
            np.concatenate(rows) if rows else empty,
            np.concatenate(vecs) if vecs else np.zeros((0, self.meta.dim), np.float32),
        )


def load_index(index_dir: Path, mmap: bool = True, lexical: bool = False) -> IndexReader:
    """Load and validate an index; every inconsistency is an ``IndexCorrupt``.

    ``lexical``: open the BM25 statistics now, in the same attempt as the
    rest, so that a writer's cleanup between the two cannot fail a query.
    """

    index_dir = Path(index_dir).absolute()
    for attempt in range(3):
        meta = read_meta(index_dir)
        root = resolve_root(index_dir, meta.root)
        segments: list[Segment] = []
        try:
            offset = 0
            for info in meta.segments:
                with open_folder(index_dir, info.name) as folder:
                    seg = open_segment(folder, info, meta.dim, mmap)
                    seg.load_bits(folder)
                    if lexical:
                        seg.load_lexical(folder, mmap)
                seg.offset = offset
                offset += info.rows
                segments.append(seg)
        except FileNotFoundError as exc:
            # A writer may have committed and cleaned up between our reads.
            if attempt < 2:
                continue
            raise IndexCorrupt(f"{exc.filename or index_dir} is missing; {FIX_HINT}") from None
        break
    model_dim = meta.model.get("dim", meta.dim)
    if type(model_dim) is not int or meta.dim != model_dim:
        raise IndexCorrupt(
            f"{index_dir / META_NAME}: vectors of dimension {meta.dim}, the model makes "
            f"{model_dim}; {FIX_HINT}"
        )
    index = IndexReader(index_dir, meta, segments, root)
    _check_file_table(index)
    return index


def _check_file_table(index: IndexReader) -> None:
    """Every file is named once, its rows lie inside its segment, no two
    files share a row, and each segment's live count is what its files hold. Vectorized: it
    runs on every query."""
    where = index.dir / META_NAME
    n_seg = len(index.segments)
    segs, starts, counts = index._file_arrays()
    files = index.meta.files
    if len({f.path for f in files}) != len(files):
        raise IndexCorrupt(f"{where}: the file table names a file twice; {FIX_HINT}")
    empty = counts == 0
    if empty.any():
        raw = np.array([(files[i].segment, files[i].row) for i in np.flatnonzero(empty)])
        if raw.any():
            raise IndexCorrupt(f"{where}: a file without passages points at rows; {FIX_HINT}")
    held = ~empty
    seg_rows = np.array([s.rows for s in index.segments] + [0], dtype=np.int64)
    if held.any() and (
        (segs[held] < 0).any()
        or (segs[held] >= n_seg).any()
        or (starts[held] < 0).any()
        or (counts[held] < 0).any()
        or (starts[held] > seg_rows[np.clip(segs[held], 0, n_seg)] - counts[held]).any()
    ):
        raise IndexCorrupt(f"{where}: a file points outside its segment; {FIX_HINT}")
    order = np.lexsort((starts, segs))
    s_seg, s_start, s_count = segs[order], starts[order], counts[order]
    same = (s_seg[1:] == s_seg[:-1]) & (s_seg[1:] >= 0)
    if (same & (s_start[1:] < s_start[:-1] + s_count[:-1])).any():
        raise IndexCorrupt(f"{where}: two files share rows of a segment; {FIX_HINT}")
    live = np.bincount(segs[held], weights=counts[held], minlength=n_seg).astype(np.int64)
    expected = np.array([s.info.live_rows for s in index.segments], dtype=np.int64)
    if not np.array_equal(live[:n_seg], expected):
        raise IndexCorrupt(f"{where}: the segments' live counts do not match the files; {FIX_HINT}")


VERIFY_ROWS = 1 << 16


def verify(index: IndexReader) -> None:
    """Check every row of an index (what ``status`` does, not every query):
    checksums, passages with sane line and character ranges inside their
    files, finite unit vectors, lexical counts that match the rows. Raises
    ``IndexCorrupt`` at the first problem."""
    verify_checksums(index.dir, index.meta)
    sizes = np.array([f.size for f in index.meta.files] or [0], dtype=np.int64)
    for i, seg in enumerate(index.segments):
        starts, counts, files = index.file_ranges(i)
        owner = np.full(seg.rows, -1, dtype=np.int64)
        for a, n, f in zip(starts.tolist(), counts.tolist(), files.tolist(), strict=True):
            owner[a : a + n] = f
        ordinal_of: list[np.ndarray] = []
        waiting = np.zeros(seg.rows, dtype=bool)  # rows whose vector is still to come
        if seg.pending:
            waiting[seg.pending_texts()[0]] = True
        for s in range(0, seg.rows, VERIFY_ROWS):
            rows = np.asarray(seg.passages[s : s + VERIFY_ROWS], dtype=np.int64)
            own = owner[s : s + VERIFY_ROWS]
            live = own >= 0
            _, a, b, cs, ce = rows[live].T
            ok = (
                (a >= 1).all()
                and (b >= a).all()
                and (cs >= 0).all()
                and (ce >= cs).all()
                and (ce <= sizes[own[live]]).all()  # a character is at least one byte
            )
            if not ok:
                raise IndexCorrupt(f"{seg.path / PASSAGES_NAME} is damaged; {FIX_HINT}")
            ordinals = np.asarray(seg.passages[s : s + VERIFY_ROWS, 0], dtype=np.int64)
            ordinal_of.append(ordinals)
            vecs = np.asarray(seg.embeddings[s : s + VERIFY_ROWS])[
                live & ~waiting[s : s + VERIFY_ROWS]
            ]
            norms = np.linalg.norm(vecs, axis=1) if len(vecs) else np.ones(0)
            if not (np.isfinite(vecs).all() and (np.abs(norms - 1) < 1e-2).all()):
                raise IndexCorrupt(
                    f"{seg.path / EMBEDDINGS_NAME} holds invalid vectors; {FIX_HINT}"
                )
        # All rows of a file carry one ordinal, and ordinals rise with the rows.
        col = np.concatenate(ordinal_of) if ordinal_of else np.zeros(0, np.int64)
        if len(starts):
            first = col[starts]
            last = col[starts + counts - 1]
            lo = np.minimum.reduceat(col, starts) if len(col) else first
            if not ((first == last).all() and (lo == first).all() and (np.diff(first) > 0).all()):
                raise IndexCorrupt(f"{seg.path / PASSAGES_NAME} is damaged; {FIX_HINT}")
        seg.check_lexical(term_order=True)
        lengths = np.asarray(seg.lexical().lengths, dtype=np.int64)
        live_tokens = int(lengths[owner >= 0].sum())
        if int(lengths.sum()) != seg.info.tokens or live_tokens != seg.info.live_tokens:
            raise IndexCorrupt(
                f"{index.dir / META_NAME}: {seg.info.name}'s lexical counts are wrong; {FIX_HINT}"
            )
    check_paths(index)


def check_paths(index: IndexReader, files: Iterable[FileRecord] | None = None) -> None:
    """Every file the index names (or ``files`` of them) lies strictly inside
    its root: an index can come from anywhere, and its file table must not
    send a read, a hit or an update outside the folder it searches."""
    for f in index.meta.files if files is None else files:
        if not safefs.safe_relpath(f.path):
            raise IndexCorrupt(
                f"{index.dir / META_NAME} names a file outside its root ({f.path!r}); {FIX_HINT}"
            )


def verify_checksums(index_dir: Path, meta: Meta, names: set[str] | None = None) -> None:
    """Read every file of the segments (those in ``names``, or all) and compare
    its CRC-32 with the one recorded when it was written."""
    for info in meta.segments:
        if names is not None and info.name not in names:
            continue
        with open_folder(index_dir, info.name) as folder:
            for name, expected in sorted(info.checksums.items()):
                if "/" in name or name in ("", ".", ".."):
                    raise IndexCorrupt(f"{index_dir / META_NAME}: bad checksum entry; {FIX_HINT}")
                try:
                    fh, _ = folder.open(name)
                except FileNotFoundError:
                    raise IndexCorrupt(f"{folder.path / name} is missing; {FIX_HINT}") from None
                with fh:
                    got = checksum(fh)
                if got != expected:
                    raise IndexCorrupt(f"{folder.path / name} is damaged (checksum); {FIX_HINT}")
