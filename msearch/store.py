"""The index on disk: format, validation, ownership, atomic commits and the writer lock.

Layout of an index folder (``DIR/.msearch`` by default)::

    msearch-index.json        msearch's marker: this folder is an index msearch made,
                              and the segment folders it created here
    meta.json                 the commit point: names the segments below and
                              the file table (which rows of which segment
                              hold each file's passages)
    seg-<id>/                 one immutable segment (msearch.segment)
    lock                      held (flock) by the process writing the index

An update writes a new segment folder; only when every byte of it is on
disk is ``meta.json`` replaced (``os.replace``), which switches readers
from the old list of segments to the new one in a single step. Rows of a
file that changed or vanished stay where they are, dead: the file table no
longer points at them, and a merge reclaims them later. A crash at any
moment leaves either the old ``meta.json`` with its intact segments, or
the new one. Folders no commit names are removed by the next writer.

Safety rules (README, "Safety"): msearch writes only into a folder that is
empty, or that carries its marker (or, for indexes made before the marker
existed, whose ``meta.json`` is msearch's). It deletes only folders that
the marker says it created. Everything read from an index is untrusted
input: index files are opened without following links and must be regular
files of the size their headers promise, and segment folders must be real
folders inside the index.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from msearch import safefs
from msearch.errors import (
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    IndexRefused,
    IndexTooNew,
    IndexWriteError,
)
from msearch.segment import (
    EMBEDDINGS_NAME,
    PASSAGE_COLUMNS,
    PASSAGES_NAME,
    Segment,
    SegmentInfo,
    open_segment,
)

SCHEMA_VERSION = 2
META_NAME = "meta.json"
LOCK_NAME = "lock"
MARKER_NAME = "msearch-index.json"
MARKER_KIND = "msearch index"
# The folder an index lives in by default (DIR/.msearch). Such a folder
# always searches the folder it lies in, so an index that arrived with a
# repository or an archive can never name another root.
INDEX_DIR_NAME = ".msearch"
# A root recorded as this means "the folder holding the index folder".
PARENT_ROOT = ".."
# Names msearch gives the folders it creates; nothing else is ever deleted.
# ("data-" folders were the generations of schema 1.)
FOLDER_RE = re.compile(r"(?:(?:seg|data)-[0-9a-f]{12}|vocab-[0-9a-f]{16}-[0-9a-f]{8})\Z")
VOCAB_RE = re.compile(r"vocab-[0-9a-f]{16}-[0-9a-f]{8}\Z")
SEGMENT_RE = re.compile(r"seg-[0-9a-f]{12}\Z")
TMP_RE = re.compile(r"\.(meta\.json|msearch-index\.json)\.[0-9a-f]{8}\.tmp\Z")
# Upper bounds for files read whole: a damaged or hostile index cannot make
# msearch read gigabytes into memory.
META_MAX_BYTES = 1 << 31
SMALL_JSON_MAX_BYTES = 1 << 24
MAX_DIM = 1 << 16
MAX_ROWS = 1 << 40  # rows of a segment: far beyond any real index
FIX_HINT = "rebuild it with `msearch index --full DIR`"
__all__ = ["EMBEDDINGS_NAME", "PASSAGES_NAME", "PASSAGE_COLUMNS", "Segment", "SegmentInfo"]


@dataclass
class FileRecord:
    """One indexed file, as it was when its passages were embedded, and
    where they are: rows ``row .. row + rows`` of segment ``segment`` (an
    index into ``Meta.segments``)."""

    path: str  # relative to the index root, POSIX separators
    size: int
    mtime_ns: int
    sha256: str
    segment: int = 0
    row: int = 0
    rows: int = 0


class IndexOutdated(IndexCorrupt):
    """The index was written by an older msearch (schema 1); ``msearch index``
    converts it."""


@dataclass
class Meta:
    root: str  # PARENT_ROOT, or an absolute folder (see resolve_root)
    model: dict[str, Any]
    chunking: dict[str, Any]
    walk: dict[str, Any]
    files: list[FileRecord]
    dim: int
    segments: list[SegmentInfo] = field(default_factory=list)
    lexical: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # The model's vocabulary, cached for cold queries (msearch.encoders.vocab_cache).
    vocab_cache: str = ""

    @property
    def count(self) -> int:
        """Live passages."""
        return sum(s.live_rows for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        # Columnar file table: parsing a few long lists is several times
        # faster than one object per file, which matters on every query.
        return {
            "schema_version": self.schema_version,
            "root": self.root,
            "created": self.created,
            "updated": self.updated,
            "model": self.model,
            "chunking": self.chunking,
            "walk": self.walk,
            "lexical": self.lexical,
            "count": self.count,
            "dim": self.dim,
            "dtype": "float32",
            "normalized": True,
            "segments": [s.to_json() for s in self.segments],
            "vocab_cache": self.vocab_cache,
            "files": {
                "path": [f.path for f in self.files],
                "size": [f.size for f in self.files],
                "mtime_ns": [f.mtime_ns for f in self.files],
                "sha256": [f.sha256 for f in self.files],
                "segment": [f.segment for f in self.files],
                "row": [f.row for f in self.files],
                "rows": [f.rows for f in self.files],
            },
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Meta:
        """Parse and type-check untrusted metadata; any surprise is an
        ``IndexCorrupt`` naming the file. File paths are checked where they
        are used (:func:`msearch.safefs.safe_relpath`), not here: a cold
        query must not pay for checking every path of a large index."""
        try:
            version = _int(data["schema_version"], "schema_version")
            if version > SCHEMA_VERSION:
                raise IndexTooNew(
                    f"{where}: index schema version {version} is newer than this msearch "
                    f"understands ({SCHEMA_VERSION}); upgrade msearch or {FIX_HINT}"
                )
            if version < SCHEMA_VERSION:
                raise IndexOutdated(
                    f"{where}: this index was made by an older msearch (schema {version}); "
                    "update it with `msearch index DIR`, which converts it"
                )
            segments = [_segment_info(s) for s in _list(data["segments"], "segments")]
            names = [s.name for s in segments]
            if len(set(names)) != len(names):
                raise ValueError("a segment is listed twice")
            cols = _dict(data["files"], "files")
            columns = []
            for name, kind in (
                ("path", str),
                ("size", int),
                ("mtime_ns", int),
                ("sha256", str),
                ("segment", int),
                ("row", int),
                ("rows", int),
            ):
                col = cols[name]
                if not isinstance(col, list) or not all(type(v) is kind for v in col):
                    raise ValueError(f"files.{name} is not a list of {kind.__name__}")
                columns.append(col)
            for col in columns[4:]:  # segment, row, rows
                if col and (min(col) < 0 or max(col) >= MAX_ROWS):
                    raise ValueError("a file's rows are out of range")
            files = [FileRecord(*rec) for rec in zip(*columns, strict=True)]
            dim = _int(data["dim"], "dim")
            if not 0 < dim <= MAX_DIM:
                raise ValueError(f"dim {dim} out of range")
            root = data["root"]
            if not isinstance(root, str):
                raise ValueError("root is not a string")
            vocab_cache = data.get("vocab_cache", "")
            if not isinstance(vocab_cache, str) or (
                vocab_cache and not VOCAB_RE.match(vocab_cache)
            ):
                raise ValueError(f"vocabulary cache {vocab_cache!r} is not one msearch makes")
            return cls(
                root=root,
                model=_dict(data["model"], "model"),
                chunking=_dict(data["chunking"], "chunking"),
                walk=_dict(data.get("walk", {}), "walk"),
                files=files,
                dim=dim,
                segments=segments,
                lexical=_dict(data["lexical"], "lexical"),
                created=float(data.get("created", 0.0)),
                updated=float(data.get("updated", 0.0)),
                schema_version=version,
                extra=_dict(data.get("extra", {}), "extra"),
                vocab_cache=vocab_cache,
            )
        except IndexCorrupt:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise IndexCorrupt(f"{where}: malformed index metadata ({exc}); {FIX_HINT}") from None


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{name} is not an integer")
    return value


def _dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    return dict(value)


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return value


def _segment_info(data: Any) -> SegmentInfo:
    d = _dict(data, "segment")
    name = d["name"]
    if not isinstance(name, str) or not SEGMENT_RE.match(name):
        raise ValueError(f"segment folder {name!r} is not one msearch makes")
    nums = [_int(d[k], k) for k in ("rows", "tokens", "live_rows", "live_tokens")]
    rows, tokens, live_rows, live_tokens = nums
    if min(nums) < 0 or max(nums) >= MAX_ROWS * 1024 or live_rows > rows or live_tokens > tokens:
        raise ValueError(f"segment {name} counts are out of range")
    checksums = _dict(d.get("checksums", {}), "checksums")
    if not all(
        isinstance(k, str) and type(v) is int and 0 <= v < 1 << 32 for k, v in checksums.items()
    ):
        raise ValueError("checksums are not CRC-32 values")
    return SegmentInfo(name, rows, tokens, live_rows, live_tokens, checksums)


def resolve_root(index_dir: Path, recorded: str) -> Path:
    """The folder an index searches, from what its ``meta.json`` records.

    Why this rule: an index can arrive with a repository or an archive,
    and its metadata must not send reads anywhere on the machine. An index
    folder named ``.msearch`` searches the folder that holds it, whatever
    it records (an absolute root must be that very folder: one written by
    an older msearch, or moved along with its folder, is refused with a
    hint). Any other index folder (``--index``, ``MSEARCH_INDEX``: named by
    the user) searches the absolute root it records, never ``/``.
    """
    index_dir = Path(index_dir).absolute()
    parent = index_dir.parent
    if recorded == PARENT_ROOT:
        return parent
    path = Path(recorded)
    if not path.is_absolute() or os.path.normpath(recorded) != recorded or "\0" in recorded:
        raise IndexCorrupt(
            f"{index_dir / META_NAME}: root {recorded!r} is not an absolute folder; {FIX_HINT}"
        )
    if path == Path(path.anchor):
        raise IndexCorrupt(
            f"{index_dir / META_NAME} names the whole file system as its root; {FIX_HINT}"
        )
    if index_dir.name == INDEX_DIR_NAME and os.path.realpath(parent) != os.path.realpath(path):
        raise IndexCorrupt(
            f"the index at {index_dir} names {recorded} as its root, not the folder it lies in; "
            f"re-index with `msearch index {parent}`"
        )
    return path


def root_record(index_dir: Path, root: Path) -> str:
    """What to record as the root: ``..`` when the index lies directly in its
    root (the default; the pair can then be moved or copied together)."""
    parent = Path(index_dir).absolute().parent
    if os.path.realpath(parent) == os.path.realpath(root):
        return PARENT_ROOT
    return str(root)


@dataclass
class Index:
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


def _parse_json(raw: bytes) -> Any:
    try:
        import orjson

        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # orjson refuses "\udcXX" escapes, which file names that are not UTF-8 need
    except ImportError:
        pass
    return json.loads(raw)


def _reason(exc: OSError) -> str:
    if isinstance(exc, safefs.UnsafeFile):
        return str(exc)
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link"
    return exc.strerror or str(exc)


def _read_meta_json(index_dir: Path) -> Any:
    path = Path(index_dir) / META_NAME
    try:
        fh, _ = safefs.open_regular(path, follow=False, max_size=META_MAX_BYTES)
        with fh:
            raw = fh.read()
    except FileNotFoundError:
        raise IndexNotFound(
            f"no index at {index_dir} (create one with `msearch index DIR`)"
        ) from None
    except NotADirectoryError:
        raise IndexNotFound(f"no index at {index_dir} (it is not a folder)") from None
    except OSError as exc:
        raise IndexCorrupt(f"{path}: cannot read ({_reason(exc)}); {FIX_HINT}") from None
    try:
        data = _parse_json(raw)
    except ValueError:
        raise IndexCorrupt(f"{path} is not valid JSON; {FIX_HINT}") from None
    if not isinstance(data, dict):
        raise IndexCorrupt(f"{path} is not an msearch index; {FIX_HINT}")
    return data


def read_meta(index_dir: Path) -> Meta:
    return Meta.from_json(_read_meta_json(index_dir), Path(index_dir) / META_NAME)


class DataFolder:
    """A folder of index files, opened once; files inside are opened relative
    to it, never through a link, and must be regular files.

    Why a descriptor: a path is looked up again at every open, so a link
    swapped in between a check and an open would be followed; a descriptor
    pins the folder that was checked.
    """

    def __init__(self, path: Path, parent: Path | None = None) -> None:
        """``parent`` given: ``path`` must be a real folder directly inside it
        (an index's data folder); otherwise ``path`` is opened as named."""
        self.path = Path(path)
        if parent is None:
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        else:
            with safefs.open_dir(parent) as pfd:
                self.fd = os.open(
                    self.path.name,
                    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0),
                    dir_fd=pfd,
                )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DataFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, name: str, max_size: int | None = None) -> tuple[IO[bytes], os.stat_result]:
        try:
            return safefs.open_regular(name, dir_fd=self.fd, follow=False, max_size=max_size)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IndexCorrupt(
                f"{self.path / name}: cannot read ({_reason(exc)}); {FIX_HINT}"
            ) from None

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def intact(self, names: Collection[str]) -> bool:
        """Whether ``seal`` recorded exactly the files ``names`` here, and
        each still has its CRC-32 (for a folder whose damage must not go
        unnoticed but costs nothing to ignore: a cache)."""
        try:
            recorded = self.read_json(SEAL_NAME)
            if not isinstance(recorded, dict) or set(recorded) != set(names):
                return False
            for name, expected in recorded.items():
                if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
                    return False
                fh, _ = self._open(name)
                with fh:
                    if checksum(fh) != expected:
                        return False
        except (OSError, IndexCorrupt):
            return False
        return True

    def read_json(self, name: str) -> Any:
        fh, _ = self._open(name, SMALL_JSON_MAX_BYTES)
        with fh:
            raw = fh.read()
        try:
            return _parse_json(raw)
        except ValueError:
            raise IndexCorrupt(f"{self.path / name} is not valid JSON; {FIX_HINT}") from None

    def npy(self, name: str, mmap: bool = True) -> np.ndarray:
        """A plain ``.npy`` array, memory-mapped by default; its size must be
        exactly what its header promises (a truncated or padded file is
        damage, never read past)."""
        from numpy.lib import format as npy_format

        where = self.path / name
        fh, st = self._open(name)
        with fh:
            try:
                version = npy_format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f"unknown .npy version {version}")
                if fortran or dtype.hasobject or not isinstance(shape, tuple):
                    raise ValueError("not a plain C-ordered array")
                offset = fh.tell()
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if st.st_size != offset + nbytes:
                    raise ValueError(
                        f"{st.st_size - offset} bytes of data where the header says {nbytes}"
                    )
                if nbytes == 0:
                    return np.zeros(shape, dtype=dtype)
                if mmap:
                    return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape)
                arr = np.fromfile(fh, dtype=dtype, count=nbytes // dtype.itemsize)
                return arr.reshape(shape)
            except Exception as exc:  # numpy's header parser raises many kinds
                raise IndexCorrupt(f"{where} is damaged or truncated ({exc}); {FIX_HINT}") from None


def open_folder(index_dir: Path, name: str) -> DataFolder:
    """A folder of the index: a real folder directly inside it."""
    path = Path(index_dir) / name
    try:
        return DataFolder(path, parent=Path(index_dir))
    except FileNotFoundError:
        raise
    except OSError as exc:
        # O_NOFOLLOW | O_DIRECTORY on a link fails with ELOOP or ENOTDIR.
        reason = "it is a symbolic link" if os.path.islink(path) else _reason(exc)
        raise IndexCorrupt(f"{path}: cannot open ({reason}); {FIX_HINT}") from None


def load_index(index_dir: Path, mmap: bool = True, lexical: bool = False) -> Index:
    """Load and validate an index; every inconsistency is an ``IndexCorrupt``.

    ``lexical``: open the BM25 statistics now, in the same attempt as the
    rest, so that a writer's cleanup between the two cannot fail a query.
    """
    from msearch.lexical import LexicalFormatError, LexicalSegment

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
                        try:
                            seg._lexical = LexicalSegment.load(folder, mmap)
                        except LexicalFormatError as exc:
                            raise IndexCorrupt(f"{exc}; {FIX_HINT}") from None
                        if seg._lexical.num_rows != info.rows:
                            raise IndexCorrupt(
                                f"the lexical side of {folder.path} holds "
                                f"{seg._lexical.num_rows} rows, not {info.rows}; {FIX_HINT}"
                            )
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
    index = Index(index_dir, meta, segments, root)
    _check_file_table(index)
    return index


def _check_file_table(index: Index) -> None:
    """Every file's rows lie inside its segment, no two files share a row,
    and each segment's live count is what its files hold. Vectorized: it
    runs on every query."""
    where = index.dir / META_NAME
    n_seg = len(index.segments)
    segs, starts, counts = index._file_arrays()
    files = index.meta.files
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


def verify(index: Index) -> None:
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
            vecs = np.asarray(seg.embeddings[s : s + VERIFY_ROWS])[live]
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
        lengths = np.asarray(seg.lexical().lengths, dtype=np.int64)
        live_tokens = int(lengths[owner >= 0].sum())
        if int(lengths.sum()) != seg.info.tokens or live_tokens != seg.info.live_tokens:
            raise IndexCorrupt(
                f"{index.dir / META_NAME}: {seg.info.name}'s lexical counts are wrong; {FIX_HINT}"
            )
    bad = [f.path for f in index.meta.files if not safefs.safe_relpath(f.path)]
    if bad:
        raise IndexCorrupt(
            f"{index.dir / META_NAME} names a file outside its root ({bad[0]!r}); {FIX_HINT}"
        )


CRC_BLOCK = 1 << 22


def checksum(fh: IO[bytes]) -> int:
    """CRC-32 of a file, read a block at a time (about 4 GB/s here): the
    integrity check Lucene's segment footers use, for damage, not for
    tampering (a crafted index can carry matching checksums)."""
    import zlib

    crc = 0
    for block in iter(lambda: fh.read(CRC_BLOCK), b""):
        crc = zlib.crc32(block, crc)
    return crc


SEAL_NAME = "checksums.json"


def seal(folder: Path) -> None:
    """Make a folder msearch has just written durable, and record the CRC-32
    of each of its files in ``checksums.json``, written last (see
    ``DataFolder.intact``)."""
    sums = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        with open(entry.path, "rb") as fh:
            sums[entry.name] = checksum(fh)
            os.fsync(fh.fileno())
    with open(Path(folder) / SEAL_NAME, "xb") as fh:
        fh.write(json.dumps(sums, sort_keys=True).encode("ascii"))
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(Path(folder))


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
                    fh, _ = folder._open(name)
                except FileNotFoundError:
                    raise IndexCorrupt(f"{folder.path / name} is missing; {FIX_HINT}") from None
                with fh:
                    got = checksum(fh)
                if got != expected:
                    raise IndexCorrupt(f"{folder.path / name} is damaged (checksum); {FIX_HINT}")


# ---------------------------------------------------------------- ownership


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OS errors while writing (disk full, read-only, ``ulimit -f``,
    permissions) become one line naming the path and the cause."""
    try:
        yield
    except (IndexRefused, IndexWriteError, IndexLocked):
        raise
    except OSError as exc:
        where = exc.filename if exc.filename else path
        raise IndexWriteError(
            f"cannot write {where}: {exc.strerror or exc}; the previous index is unchanged"
        ) from None


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_new(path: Path) -> IO[bytes]:
    """A file that did not exist: ``O_EXCL``, which also refuses a link, so
    nothing of anyone's is truncated or written through."""
    return open(path, "xb")


def _write_durable(path: Path, payload: bytes) -> None:
    with _create_new(path) as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def _tmp_name(base: str) -> str:
    return f".{base}.{uuid.uuid4().hex[:8]}.tmp"


@dataclass
class Marker:
    """msearch's marker file: proof that a folder is an index msearch made,
    and the generation folders msearch created in it (the only folders it
    will ever delete)."""

    generations: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        data = {"kind": MARKER_KIND, "version": 1, "generations": self.generations}
        return json.dumps(data, indent=1).encode() + b"\n"


def read_marker(index_dir: Path) -> Marker | None:
    """The folder's marker; None where there is none. A marker that is a link
    or not a regular file is refused; a damaged one still marks the folder
    (no other program writes a file of that name) but names no generations."""
    path = Path(index_dir) / MARKER_NAME
    try:
        fh, _ = safefs.open_regular(path, follow=False, max_size=SMALL_JSON_MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexRefused(
            f"{path} is not msearch's marker ({_reason(exc)}); remove it, or choose another --index"
        ) from None
    with fh:
        raw = fh.read()
    try:
        data = json.loads(raw)
        gens = data["generations"]
        if data.get("kind") != MARKER_KIND or not isinstance(gens, list):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return Marker()
    return Marker([g for g in gens if isinstance(g, str) and FOLDER_RE.match(g)])


def _write_marker(index_dir: Path, marker: Marker) -> None:
    """Replace the marker atomically (the lock holder only)."""
    tmp = index_dir / _tmp_name(MARKER_NAME)
    _write_durable(tmp, marker.to_bytes())
    os.replace(tmp, index_dir / MARKER_NAME)
    fsync_dir(index_dir)


def _create_marker(index_dir: Path, marker: Marker) -> bool:
    """Create the marker if there is none (``link`` is atomic and exclusive,
    so two first runs cannot both claim a folder); False if one appeared."""
    tmp = index_dir / _tmp_name(MARKER_NAME)
    _write_durable(tmp, marker.to_bytes())
    try:
        os.link(tmp, index_dir / MARKER_NAME)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(index_dir)
    return True


def _legacy_index(index_dir: Path) -> list[str] | None:
    """The folders of an index made before the marker existed (a folder
    whose ``meta.json`` is msearch's, of any schema): None if it is not one."""
    try:
        data = _read_meta_json(index_dir)
    except (IndexNotFound, IndexCorrupt):
        return None
    if not {"schema_version", "root", "model", "files"} <= set(data):
        return None
    names = [data.get("data"), data.get("vocab_cache")] + [
        s.get("name") for s in data.get("segments", []) if isinstance(s, dict)
    ]
    return [n for n in names if isinstance(n, str) and FOLDER_RE.match(n)]


def claim(index_dir: Path) -> None:
    """Make sure msearch may write into ``index_dir``, creating and marking it
    if needed.

    Allowed: a folder that does not exist yet, an empty one, one with
    msearch's marker, or an index made by an earlier msearch (its
    ``meta.json`` is msearch's), which gets the marker now. Anything else
    (a folder of the user's, a file) is refused with ``IndexRefused``:
    msearch never deletes or replaces what it cannot prove it made.
    """
    index_dir = Path(index_dir)
    with _writing(index_dir):
        try:
            st = os.stat(index_dir)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                index_dir.mkdir(parents=True)
            st = os.stat(index_dir)
        except NotADirectoryError:
            raise IndexRefused(f"{index_dir}: a part of this path is not a folder") from None
        if not stat.S_ISDIR(st.st_mode):
            raise IndexRefused(f"{index_dir} is not a folder; --index must name a folder")
        for _ in range(3):
            if read_marker(index_dir) is not None:
                return
            entries = os.listdir(index_dir)
            if not entries:
                marker = Marker()
            else:
                legacy = _legacy_index(index_dir)
                if legacy is None:
                    raise IndexRefused(
                        f"{index_dir} is not an msearch index and is not empty; msearch writes "
                        "only into an empty folder or an index it made (choose another --index)"
                    )
                marker = Marker(legacy)
            if _create_marker(index_dir, marker):
                return
        raise IndexRefused(f"{index_dir}: could not mark it as an msearch index")


def is_index_folder(index_dir: Path) -> bool:
    """Whether ``index_dir`` is recognisably an msearch index (so that
    "damaged, rebuilding" may apply to it)."""
    try:
        return read_marker(index_dir) is not None or _legacy_index(index_dir) is not None
    except IndexRefused:
        return False


def _check_part(index_dir: Path, name: str) -> os.stat_result | None:
    """lstat of one of msearch's names in the index; a link there is refused."""
    try:
        st = os.lstat(index_dir / name)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise IndexRefused(
            f"{index_dir / name} is a symbolic link, not msearch's; remove it and run again"
        )
    return st


def prepare_commit_point(index_dir: Path, notice: Callable[[str], None]) -> None:
    """Make room for a new ``meta.json`` in a folder msearch owns: something
    that is not a file at that name (a folder, say) is moved aside, never
    deleted, so that ``--full`` can always start over."""
    with _writing(index_dir):
        st = _check_part(index_dir, META_NAME)
        if st is not None and not stat.S_ISREG(st.st_mode):
            aside = index_dir / f"{META_NAME}.moved-{uuid.uuid4().hex[:8]}"
            os.rename(index_dir / META_NAME, aside)
            notice(f"msearch: {index_dir / META_NAME} was not a file; moved it to {aside}")


# ---------------------------------------------------------------- writing


def new_owned_dir(index_dir: Path, name: str) -> Path:
    """Create a folder of msearch's (a segment, a vocabulary cache), recorded
    in the marker before it exists. Only the lock holder calls this."""
    if not FOLDER_RE.match(name):
        raise ValueError(f"{name!r} is not a folder name msearch makes")
    index_dir = Path(index_dir)
    with _writing(index_dir):
        marker = read_marker(index_dir)
        if marker is None:
            raise IndexRefused(f"{index_dir} is not marked as an msearch index")
        _write_marker(index_dir, Marker([*marker.generations, name]))
        path = index_dir / name
        os.mkdir(path)
        return path


def new_segment_dir(index_dir: Path) -> Path:
    """A fresh segment folder (see new_owned_dir)."""
    return new_owned_dir(index_dir, f"seg-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """OS errors while writing become ``IndexWriteError`` (one line)."""
    with _writing(path):
        yield


def commit(index_dir: Path, meta: Meta) -> None:
    """Make ``meta`` (and the segments it names) the index, atomically."""
    index_dir = Path(index_dir)
    meta.updated = time.time()
    # Names that are not UTF-8 live in ``str`` as lone surrogates; they are
    # written as JSON "\\udcXX" escapes, which read back as the same names.
    payload = json.dumps(meta.to_json(), ensure_ascii=False, separators=(",", ":"))
    raw = payload.encode("utf-8", "backslashreplace")
    with _writing(index_dir / META_NAME):
        _check_part(index_dir, META_NAME)
        tmp = index_dir / _tmp_name(META_NAME)
        try:
            _write_durable(tmp, raw)
            os.replace(tmp, index_dir / META_NAME)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(index_dir)
    cleanup(index_dir, keep={s.name for s in meta.segments} | {meta.vocab_cache} - {""})


def cleanup(index_dir: Path, keep: set[str]) -> None:
    """Remove the folders msearch created here that no commit refers to, and
    its own temporary files.

    Only what the marker records is deleted, and only if it is still a real
    folder (a link in its place is dropped from the record, not followed).
    Only called by the lock holder, so nothing removed here is being
    written. Readers that still map an old segment keep working: on POSIX
    an unlinked file lives on while it is open.
    """
    index_dir = Path(index_dir)
    try:
        marker = read_marker(index_dir)
        entries = os.listdir(index_dir)
    except (OSError, IndexRefused):
        return
    for name in entries:
        if TMP_RE.match(name):
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(index_dir / name).st_mode):
                    os.unlink(index_dir / name)
    if marker is None:
        return
    remaining: list[str] = []
    for name in marker.generations:
        path = index_dir / name
        if name in keep:
            remaining.append(name)
        elif safefs.is_dir_nofollow(path):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):
                remaining.append(name)  # could not remove all of it: try next time
    if remaining != marker.generations:
        with contextlib.suppress(OSError):
            _write_marker(index_dir, Marker(remaining))


def recorded_model(index_dir: Path) -> Any:
    """The model record of the committed ``meta.json``, of any schema (an
    index of an older msearch is converted with the model it was made with)."""
    return _read_meta_json(index_dir).get("model")


def current_segments(index_dir: Path) -> set[str]:
    """The folders the committed ``meta.json`` names (any schema), for
    cleanup before a write; empty when it cannot be read."""
    try:
        data = _read_meta_json(index_dir)
    except (IndexNotFound, IndexCorrupt):
        return set()
    names = [data.get("data"), data.get("vocab_cache")] + [
        s.get("name") for s in data.get("segments", []) if isinstance(s, dict)
    ]
    return {n for n in names if isinstance(n, str) and FOLDER_RE.match(n)}


LOCK_PID_WIDTH = 16


@contextlib.contextmanager
def write_lock(index_dir: Path, wait: bool = True, notice: Any = None) -> Iterator[None]:
    """Hold the index's writer lock (``flock``: released by the kernel if we die).

    Claims the folder first (see :func:`claim`). The lock file is opened
    without following links and must be msearch's own: a regular file with
    no other names. The holder's pid is written over its first bytes; it is
    never truncated.
    """
    import fcntl

    index_dir = Path(index_dir)
    claim(index_dir)
    path = index_dir / LOCK_NAME
    with _writing(path):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise IndexRefused(
                    f"{path} is not msearch's lock file ({_reason(exc)}); remove it and run again"
                ) from None
            raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise IndexRefused(
                f"{path} is not msearch's lock file (not a plain file); remove it and run again"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raw = os.pread(fd, 32, 0).decode(errors="replace").split()
            holder = raw[0] if raw and raw[0].isdigit() else "?"
            if not wait:
                raise IndexLocked(
                    f"another msearch (pid {holder}) is writing the index at {index_dir}"
                ) from None
            if notice:
                notice(f"msearch: waiting for another msearch (pid {holder}) writing {index_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        with _writing(path):
            os.pwrite(fd, f"{os.getpid()}\n".ljust(LOCK_PID_WIDTH).encode(), 0)
        yield
    finally:
        os.close(fd)
