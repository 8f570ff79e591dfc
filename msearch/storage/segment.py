"""One segment of an index: an immutable folder of passages, written once.

An index is a list of segments named by ``meta.json`` (see
:mod:`msearch.storage`). An update writes one new segment holding the
passages of the files it added or changed; the rows those files had in
older segments are dead from then on (the file table no longer points at
them), and a merge (:mod:`msearch.merge`) later copies the live rows of
several segments into one. Nothing in a segment is ever rewritten; the
writer is a codec: the caller decides which rows it gets (msearch.pipeline
embeds or reuses their vectors, msearch.merge copies them). Files::

    embeddings.npy     float32 (rows x dim), one normalized vector a row
    passages.npy       int32 (rows x 5): file ordinal within the segment,
                       start line, end line, start char, end char
    keys.npy           uint8 (rows x 16): each passage's key, a keyed hash of
                       its text (msearch.pipeline.passage_keys), to reuse its
                       vector later
    bits.npy           uint8 (rows x dim/8): the sign of each vector component,
                       packed (numpy.packbits); the first stage of a search of
                       a large index (msearch.coarse), 1/32 of the vectors' size
    scan.npy           uint8: the same bits in faiss's fast-scan block order
                       (msearch.coarse), where the dimension is a multiple of 8
    int8.faiss         the vectors as int8 codes, a scale per component
    int8_scale.npy     (msearch.int8): the second stage of a large search,
                       1/4 of the vectors' size; written with scan.npy
    lex_*.npy          BM25 statistics of the same rows (msearch.lexical)

A segment whose words are committed before its vectors (``msearch index``
makes every passage searchable by its words first) is *pending*: its
``meta.json`` record counts the rows still without a vector, whose rows of
``embeddings.npy`` hold zeros and whose texts wait in three more files
until msearch.vectors writes the finished segment in its place (no sign
bits, fast-scan order or int8 codes before that)::

    pending_rows.npy   int32: the rows still to embed, ascending
    pending_ends.npy   int64: where each one's text ends in pending_text.npy
    pending_text.npy   uint8: their texts, UTF-8, one after another
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from msearch import int8, npyfile
from msearch.coarse import SCAN_NAME, ScanIndex, pack, scannable, sign_bits
from msearch.errors import IndexCorrupt
from msearch.int8 import Int8Codes
from msearch.lexical import LexicalBuilder, LexicalParams, LexicalSegment
from msearch.storage.layout import FIX_HINT
from msearch.storage.record import SegmentInfo

EMBEDDINGS_NAME = "embeddings.npy"
PASSAGES_NAME = "passages.npy"
KEYS_NAME = "keys.npy"
BITS_NAME = "bits.npy"
PENDING_ROWS_NAME = "pending_rows.npy"
PENDING_ENDS_NAME = "pending_ends.npy"
PENDING_TEXT_NAME = "pending_text.npy"
PASSAGE_COLUMNS = ("file", "start_line", "end_line", "start_char", "end_char")
KEY_BYTES = 16
# Fixed room for the .npy header so the row count can be filled in at the end
# of a streamed write without moving the data (numpy pads headers with spaces).
NPY_HEADER_LEN = 128


def populate(array: np.ndarray) -> None:
    """Touch every page of a memory-mapped matrix now (from the page cache).

    Why: the two-stage search reads a few thousand rows scattered over the
    whole matrix; in a fresh mapping each is a page fault (20-30 ms a query
    at a million rows) until every page has been touched once. A
    long-running process pays that once per index generation (0.3 s at a
    million rows) instead. (madvise(MADV_POPULATE_READ) left the faults
    in place here; reading one number a page does not.)
    """
    plain = np.asarray(array).view(np.ndarray)
    if plain.ndim != 2 or not plain.size:
        return
    step = max(1, 4096 // max(plain.strides[0], 1))  # one row a page at least
    float(np.add.reduce(plain[::step, 0], dtype=np.float64))


def search_files(dim: int) -> tuple[str, ...]:
    """The files, beyond its sign bits, that :meth:`SegmentWriter.close`
    writes for a large search of a segment of ``dim`` components; one
    missing was written by an older msearch (``index --compact`` adds it)."""
    if not scannable(dim):
        return ()
    return (SCAN_NAME, int8.CODES_NAME, int8.SCALE_NAME) if int8.writable(dim) else (SCAN_NAME,)


def populate_segments(segments: Sequence[Segment]) -> None:
    """:func:`populate` what the two-stage search reads of every segment
    row by row: its int8 codes, or its vectors where it has none."""
    for seg in segments:
        codes = seg.int8()
        if codes is not None:
            codes.populate()
        else:
            populate(seg.embeddings)


def _mapping(array: np.ndarray) -> tuple[Any, int]:
    """The ``mmap`` under a memory-mapped array and where the array's data
    starts in it; (None, 0) for an array in ordinary memory."""
    import mmap

    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if not isinstance(base, mmap.mmap):
        return None, 0
    start = np.frombuffer(base, dtype=np.uint8).ctypes.data
    return base, int(np.asarray(array).ctypes.data) - start


def mapping_cut_short(array: np.ndarray | None) -> bool:
    """Whether the file under a memory-mapped array is now shorter than its
    mapping (one ``fstat``): reading past the new end would kill the
    process with SIGBUS. False for an array in ordinary memory."""
    import mmap

    first: Any = None  # the np.memmap made over the mmap: it knows where it starts
    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        if isinstance(base, np.memmap):
            first = base
        base = getattr(base, "base", None)
    if first is None or not isinstance(base, mmap.mmap):
        return False
    try:
        return bool(base.size() < int(first.offset) + int(first.nbytes))
    except (OSError, ValueError):
        return True  # closed or gone: do not read it


def prefetch_rows(array: np.ndarray, rows: np.ndarray) -> None:
    """Have the kernel start reading the pages of ``rows`` of a mapped
    matrix now, all at once, before they are read one by one (a hundred
    page faults waiting on the disk one after another otherwise: the
    float32 rows a large search rescores, where the page cache does not
    hold them). Costs a system call a row; nothing where pages are cached."""
    import mmap

    mm, start = _mapping(array)
    if mm is None or not hasattr(mmap, "MADV_WILLNEED"):
        return
    width = array.strides[0]
    page = mmap.PAGESIZE
    with contextlib.suppress(OSError):  # advice only; a range outside the map is a bug
        for r in np.asarray(rows).tolist():
            at = start + r * width
            lo = at - at % page
            mm.madvise(mmap.MADV_WILLNEED, lo, at + width - lo)


def read_rows_at_random(array: np.ndarray) -> None:
    """Advise the kernel that a mapped matrix is read a row here and there.

    Why: once the int8 codes pick them, a search reads about a hundred
    float32 rows a query. By default a page fault in a mapping reads the
    pages around it too (128 KiB), so scattered reads would bring most of
    the float32 file into memory after all (the memory a large index is
    meant to save: bench/big_search.py); this reads just the page."""
    import mmap

    mm, _ = _mapping(array)
    if mm is not None and hasattr(mmap, "MADV_RANDOM"):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_RANDOM)


def _npy_header(rows: int, dim: int, descr: str = "<f4") -> bytes:
    shape = f"({rows}, {dim})"
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    body = header.encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    room = NPY_HEADER_LEN - len(prefix) - 2 - 1
    if len(body) > room:
        raise ValueError("npy header does not fit")
    body = body + b" " * (room - len(body)) + b"\n"
    return prefix + len(body).to_bytes(2, "little") + body


class SegmentWriter:
    """Streams rows into a new segment folder that no commit names yet.

    A codec: it writes what it is handed, in the order it is handed
    (vectors, passage rows, keys and sign bits stream to disk at once, so
    memory stays flat however large the segment), and at :meth:`close`
    the fast-scan order, the int8 codes, the lexical statistics and the
    checksums. Which passages are embedded, reused or copied, and when, is
    the caller's (msearch.pipeline, msearch.merge).
    """

    def __init__(
        self,
        folder: Path,
        dim: int,
        lexical: LexicalParams | None = None,
        deferred: bool = False,
    ) -> None:
        """``lexical`` given: statistics are built from the texts appended;
        otherwise ``close`` must be handed them (a merge). ``deferred``: rows
        may come without their vector (NaN in its first component); their
        texts are kept for later and the segment is pending."""
        self.dir = Path(folder)
        self.deferred = deferred
        self._pending_rows: list[int] = []
        self._pending_ends: list[int] = []
        self._pending_text = bytearray()
        self.name = self.dir.name
        self.dim = dim
        self.builder = LexicalBuilder(lexical) if lexical is not None else None
        self.count = 0  # rows written
        # Each component's largest magnitude so far: the int8 codes' scales.
        self._max_abs = np.zeros(dim, dtype=np.float32)
        # The row count goes into each header at the end.
        self._files: dict[str, tuple[IO[bytes], int, str]] = {}
        for name, width, descr in (
            (EMBEDDINGS_NAME, dim, "<f4"),
            (PASSAGES_NAME, len(PASSAGE_COLUMNS), "<i4"),
            (KEYS_NAME, KEY_BYTES, "|u1"),
            (BITS_NAME, (dim + 7) // 8, "|u1"),
        ):
            fh = open(self.dir / name, "xb")
            self._files[name] = (fh, width, descr)
            fh.write(_npy_header(0, width, descr))

    def append(
        self,
        rows: np.ndarray,
        vectors: np.ndarray,
        keys: np.ndarray,
        texts: Sequence[str] | None = None,
        symbols: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """Write rows now: ``rows`` (n x 5: file ordinal, start line, end
        line, start char, end char), their vectors (normalized float32),
        keys (n x KEY_BYTES) and, for a writer that builds the lexical
        statistics, their texts and the symbols each defines."""
        if len(rows):
            vectors = self._keep_pending(vectors, texts)
            emb = self._files[EMBEDDINGS_NAME][0]
            if self._pending_rows and not vectors.any():
                emb.seek(vectors.nbytes, os.SEEK_CUR)  # zeros: a hole in the file
            else:
                emb.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            for name, arr, dtype in (
                (PASSAGES_NAME, rows, "<i4"),
                (KEYS_NAME, keys, "|u1"),
                (BITS_NAME, sign_bits(vectors), "|u1"),
            ):
                self._files[name][0].write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
            # fmax: a NaN (never stored by msearch) must not poison the scales.
            np.fmax(self._max_abs, np.abs(vectors).max(axis=0), out=self._max_abs)
            self.count += len(rows)
        if self.builder is not None and texts is not None:
            self.builder.add(texts, symbols)

    def _keep_pending(self, vectors: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
        """``vectors`` with the rows that have none yet (NaN first component,
        a deferred writer only) zeroed, their texts kept for later."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if not self.deferred:
            return vectors  # what it is handed, as it is (a NaN is the caller's damage)
        missing = np.flatnonzero(np.isnan(vectors[:, 0])) if len(vectors) else np.zeros(0, np.intp)
        if not len(missing):
            return vectors
        if texts is None:
            raise ValueError("rows without vectors need their texts")
        for i in missing.tolist():
            self._pending_rows.append(self.count + i)
            self._pending_text += texts[i].encode("utf-8", "surrogatepass")
            self._pending_ends.append(len(self._pending_text))
        out = np.array(vectors, dtype=np.float32)
        out[missing] = 0.0
        return out

    def close(self, lexical: LexicalSegment | None = None) -> SegmentInfo:
        """Finish the files and flush every one to stable storage."""
        if lexical is None:
            if self.builder is None:
                raise ValueError("a merge hands close() its lexical statistics")
            lexical = self.builder.finish()
        if lexical.num_rows != self.count:
            raise ValueError(f"{lexical.num_rows} lexical rows for {self.count} passages")
        for fh, width, descr in self._files.values():
            fh.truncate(NPY_HEADER_LEN + self.count * width * np.dtype(descr).itemsize)
            fh.seek(0)
            fh.write(_npy_header(self.count, width, descr))
            fh.close()
        pending = len(self._pending_rows)
        if pending:
            # Nothing to search in two stages until the vectors come.
            os.unlink(self.dir / BITS_NAME)
            for name, arr in (
                (PENDING_ROWS_NAME, np.asarray(self._pending_rows, dtype=np.int32)),
                (PENDING_ENDS_NAME, np.asarray(self._pending_ends, dtype=np.int64)),
                (PENDING_TEXT_NAME, np.frombuffer(bytes(self._pending_text), dtype=np.uint8)),
            ):
                with open(self.dir / name, "xb") as out:
                    npyfile.save(out, arr)
        elif scannable(self.dim):
            # The fast-scan order of the bits just written (0.12 s a million
            # rows), so that no search has to reorder them, and the int8
            # codes (one more pass over the vectors, 2 s a million rows).
            bits = np.load(self.dir / BITS_NAME, mmap_mode="r")
            with open(self.dir / SCAN_NAME, "xb") as out:
                npyfile.save(out, pack(bits) if len(bits) else np.zeros(0, np.uint8))
            del bits
            vectors = np.load(self.dir / EMBEDDINGS_NAME, mmap_mode="r")
            int8.write(self.dir, vectors, self._max_abs)
            del vectors
        lexical.save(self.dir)
        from msearch.storage.disk import checksum, fsync_dir

        checksums = {}
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            with open(os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as fh:
                os.fsync(fh.fileno())
                checksums[entry.name] = checksum(fh)
        fsync_dir(self.dir)
        tokens = int(np.asarray(lexical.lengths, dtype=np.int64).sum())
        return SegmentInfo(self.name, self.count, tokens, self.count, tokens, checksums, pending)

    def abort(self) -> None:
        for fh, _, _ in self._files.values():
            with contextlib.suppress(OSError):
                fh.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Segment:
    """An open segment: memory-mapped vectors and passages; keys and the
    lexical statistics are opened when first asked for."""

    info: SegmentInfo
    path: Path
    embeddings: np.ndarray
    passages: np.ndarray
    offset: int = 0  # where its rows start among all rows of the index
    _folder: Any = None
    _lexical: LexicalSegment | None = None
    _keys: np.ndarray | None = None
    _bits: np.ndarray | None = None
    _bits_read: bool = False
    _scan_stored: np.ndarray | None = None
    _scan: ScanIndex | None = None
    _int8: Int8Codes | None = None
    _int8_read: bool = False

    @property
    def rows(self) -> int:
        return self.info.rows

    @property
    def pending(self) -> bool:
        """Whether some rows have no vector yet (their rows of
        ``embeddings`` hold zeros): the segment is searched by words only."""
        return self.info.pending > 0

    def pending_rows(self) -> np.ndarray:
        """The rows still to embed (ascending), checked against the record;
        their texts are not read (see :meth:`pending_texts`)."""
        rows = self._pending_npy(PENDING_ROWS_NAME)
        n = self.info.pending
        if not (
            rows.dtype == np.int32
            and rows.shape == (n,)
            and (n == 0 or (int(rows[0]) >= 0 and int(rows[-1]) < self.rows))
            and bool(np.all(np.diff(rows) > 0))
        ):
            raise IndexCorrupt(f"{self.path}: the texts to embed are damaged; {FIX_HINT}")
        return rows.astype(np.int64)

    def pending_texts(self) -> tuple[np.ndarray, list[str]]:
        """The rows still to embed (ascending) and their texts, checked
        against the record."""
        rows = self.pending_rows()
        ends = self._pending_npy(PENDING_ENDS_NAME)
        text = self._pending_npy(PENDING_TEXT_NAME)
        n = self.info.pending
        if not (
            ends.dtype == np.int64
            and text.dtype == np.uint8
            and ends.shape == (n,)
            and text.ndim == 1
            and bool(np.all(np.diff(ends) >= 0))
            and (n == 0 or (int(ends[0]) >= 0 and int(ends[-1]) == len(text)))
        ):
            raise IndexCorrupt(f"{self.path}: the texts to embed are damaged; {FIX_HINT}")
        blob = text.tobytes()
        starts = [0, *ends[:-1].tolist()]
        try:
            texts = [
                blob[a:b].decode("utf-8", "surrogatepass")
                for a, b in zip(starts, ends.tolist(), strict=True)
            ]
        except UnicodeDecodeError:
            raise IndexCorrupt(f"{self.path}: the texts to embed are damaged; {FIX_HINT}") from None
        return rows, texts

    def _pending_npy(self, name: str) -> np.ndarray:
        try:
            with self._reopen() as folder:
                return folder.npy(name, False)  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            raise IndexCorrupt(f"{self.path}: the texts to embed are missing; {FIX_HINT}") from None

    def check_mapped(self) -> None:
        """Every file of the segment that is mapped still holds all that was
        mapped of it: a file truncated under a long-running process is an
        ``IndexCorrupt`` here, before a search reads it, not SIGBUS. One
        ``fstat`` a file; run before each search."""
        arrays: list[np.ndarray | None] = [
            self.embeddings,
            self.passages,
            self._keys,
            self._bits,
            self._scan_stored,
        ]
        if self._lexical is not None:
            lex = self._lexical
            arrays += [lex.terms, lex.term_offsets, lex.indptr, lex.rows, lex.tfs, lex.lengths]
        cut = any(mapping_cut_short(a) for a in arrays)
        if cut or (self._int8 is not None and not self._int8.intact()):
            raise IndexCorrupt(
                f"{self.path}: a file of the segment was cut short while it was open; {FIX_HINT}"
            )

    def lexical(self) -> LexicalSegment:
        if self._lexical is None:
            try:
                with self._reopen() as folder:
                    self.load_lexical(folder)
            except FileNotFoundError as exc:
                raise IndexCorrupt(f"{exc.filename or self.path} is missing; {FIX_HINT}") from None
        assert self._lexical is not None
        return self._lexical

    def load_lexical(self, folder: Any, mmap: bool = True) -> None:
        """The BM25 statistics from the segment's open folder, checked
        against its rows (a missing file: ``FileNotFoundError``, for the
        caller to look again or report)."""
        from msearch.lexical import LexicalFormatError

        try:
            lexical = LexicalSegment.load(folder, mmap)
        except LexicalFormatError as exc:
            raise IndexCorrupt(f"{exc}; {FIX_HINT}") from None
        if lexical.num_rows != self.rows:
            raise IndexCorrupt(
                f"the lexical side of {self.path} holds {lexical.num_rows} rows, "
                f"the segment {self.rows}; {FIX_HINT}"
            )
        if int(np.asarray(lexical.lengths, dtype=np.int64).sum()) != self.info.tokens:
            raise IndexCorrupt(
                f"the lexical side of {self.path} is damaged (passage lengths); {FIX_HINT}"
            )
        self._lexical = lexical

    def check_lexical(self, term_order: bool = False) -> None:
        """Every posting of the BM25 statistics, not only the structure a
        load checks (see msearch.lexical.LexicalSegment.check_postings): for
        ``status`` (with ``term_order``) and for an update that keeps the
        segment."""
        from msearch.lexical import LexicalFormatError

        try:
            self.lexical().check_postings(term_order)
        except LexicalFormatError as exc:
            raise IndexCorrupt(f"{self.path}: {exc}; {FIX_HINT}") from None

    def keys(self) -> np.ndarray:
        if self._keys is None:
            try:
                with self._reopen() as folder:
                    keys = folder.npy(KEYS_NAME)
            except FileNotFoundError:
                raise IndexCorrupt(f"{self.path / KEYS_NAME} is missing; {FIX_HINT}") from None
            if keys.shape != (self.rows, KEY_BYTES) or keys.dtype != np.uint8:
                raise IndexCorrupt(f"{self.path / KEYS_NAME} has shape {keys.shape}; {FIX_HINT}")
            self._keys = keys
        return self._keys

    def bits(self) -> np.ndarray | None:
        """The packed sign bits of the vectors (memory-mapped), or None for a
        segment written without them (by an msearch before they existed),
        which a search then scans exactly. Checked like every other file;
        opened with the rest by ``load_index`` (a merge may remove the
        folder once a newer generation is committed)."""
        if not self._bits_read:
            with self._reopen() as folder:
                self.load_bits(folder)
        return self._bits

    def load_bits(self, folder: Any) -> None:
        """Sign bits that are missing, unreadable or of the wrong shape count
        as absent: they only speed a search up, and the exact scan gives the
        right answer without them (`status` reports the damage). Their
        fast-scan order is mapped too; :meth:`scan` checks it."""
        bits = None
        try:
            if folder.exists(BITS_NAME):
                bits = folder.npy(BITS_NAME)
        except (IndexCorrupt, OSError, ValueError):
            bits = None
        width = (self.embeddings.shape[1] + 7) // 8
        if bits is not None and (bits.shape != (self.rows, width) or bits.dtype != np.uint8):
            bits = None
        stored = None
        if bits is not None and scannable(self.embeddings.shape[1]):
            try:
                if folder.exists(SCAN_NAME):
                    stored = folder.npy(SCAN_NAME)
            except (IndexCorrupt, OSError, ValueError):
                stored = None
        self._bits, self._scan_stored, self._bits_read = bits, stored, True

    def scan(self) -> ScanIndex | None:
        """The sign bits ready for the fast-scan estimate (built once per
        open segment), or None where there are no bits or the dimension
        does not suit the kernel (the Hamming pass then serves)."""
        if self._scan is None:
            bits = self.bits()
            if bits is None or not scannable(self.embeddings.shape[1]) or not self.rows:
                return None
            self._scan = ScanIndex.open(bits, self._scan_stored)
            self._scan_stored = None  # copied into the index: unmap
        return self._scan

    def int8(self) -> Int8Codes | None:
        """The int8 codes of the vectors (mapped by faiss, opened once), or
        None where the segment has none that pass their check, or its
        folder has gone (a merge): its candidates are then scored from the
        float32 vectors, which stay mapped."""
        if not self._int8_read:
            try:
                with self._reopen() as folder:
                    self._int8 = Int8Codes.open(folder, self.rows, self.embeddings.shape[1])
            except IndexCorrupt:
                self._int8 = None
            self._int8_read = True
            if self._int8 is not None:
                read_rows_at_random(self.embeddings)
        return self._int8

    def _reopen(self) -> Any:
        from msearch.storage.disk import DataFolder

        try:
            return DataFolder(self.path, parent=self.path.parent)
        except FileNotFoundError:
            raise IndexCorrupt(f"{self.path} is missing; {FIX_HINT}") from None
        except OSError as exc:
            raise IndexCorrupt(f"{self.path}: cannot open ({exc.strerror}); {FIX_HINT}") from None


def open_segment(folder: Any, info: SegmentInfo, dim: int, mmap: bool = True) -> Segment:
    """A segment's vectors and passages from its open folder (a
    :class:`msearch.storage.disk.DataFolder`), checked against what ``meta.json``
    says of it."""
    emb = folder.npy(EMBEDDINGS_NAME, mmap)
    pas = folder.npy(PASSAGES_NAME, mmap)
    where = folder.path
    if emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[1] != dim:
        raise IndexCorrupt(
            f"{where / EMBEDDINGS_NAME} holds {emb.dtype} {emb.shape}, not float32 rows of "
            f"dimension {dim}; {FIX_HINT}"
        )
    if emb.shape[0] != info.rows:
        raise IndexCorrupt(
            f"{where / EMBEDDINGS_NAME} has {emb.shape[0]} rows, meta.json says {info.rows}; "
            f"{FIX_HINT}"
        )
    if pas.shape != (info.rows, len(PASSAGE_COLUMNS)) or pas.dtype != np.int32:
        raise IndexCorrupt(
            f"{where / PASSAGES_NAME} has shape {pas.shape}, expected "
            f"({info.rows}, {len(PASSAGE_COLUMNS)}) int32; {FIX_HINT}"
        )
    return Segment(info, Path(where), emb, pas)
