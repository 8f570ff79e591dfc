"""The index on disk: format, validation, atomic commits and the writer lock.

Layout of an index folder (``DIR/.msearch`` by default)::

    meta.json                 the commit point: names the data folder below
    data-<generation>/
        embeddings.npy        float32 (passages x dim), one normalized row each
        passages.npy          int32 (passages x 5): file, start line, end line,
                              start char, end char
    lock                      held (flock) by the process writing the index

A new index is written into a fresh ``data-*`` folder; only when every byte
is on disk is ``meta.json`` replaced (``os.replace``), which switches readers
from the old generation to the new one in a single step. A crash at any
moment leaves either the old ``meta.json`` with its intact data folder, or
the new one. Unreferenced data folders are removed by the next writer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from msearch.errors import IndexCorrupt, IndexLocked, IndexNotFound, IndexTooNew

SCHEMA_VERSION = 1
META_NAME = "meta.json"
LOCK_NAME = "lock"
EMBEDDINGS_NAME = "embeddings.npy"
PASSAGES_NAME = "passages.npy"
PASSAGE_COLUMNS = ("file", "start_line", "end_line", "start_char", "end_char")
# Fixed room for the .npy header so the row count can be filled in at the end
# of a streamed write without moving the data (numpy pads headers with spaces).
NPY_HEADER_LEN = 128
FIX_HINT = "rebuild it with `msearch index --full DIR`"


@dataclass
class FileRecord:
    """One indexed file, as it was when its passages were embedded."""

    path: str  # relative to the index root, POSIX separators
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class Meta:
    root: str
    model: dict[str, Any]
    chunking: dict[str, Any]
    walk: dict[str, Any]
    files: list[FileRecord]
    count: int
    dim: int
    data: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

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
            "count": self.count,
            "dim": self.dim,
            "dtype": "float32",
            "normalized": True,
            "data": self.data,
            "files": {
                "path": [f.path for f in self.files],
                "size": [f.size for f in self.files],
                "mtime_ns": [f.mtime_ns for f in self.files],
                "sha256": [f.sha256 for f in self.files],
            },
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Meta:
        try:
            version = int(data["schema_version"])
            if version > SCHEMA_VERSION:
                raise IndexTooNew(
                    f"{where}: index schema version {version} is newer than this msearch "
                    f"understands ({SCHEMA_VERSION}); upgrade msearch or {FIX_HINT}"
                )
            cols = data["files"]
            files = [
                FileRecord(p, int(s), int(m), str(h))
                for p, s, m, h in zip(
                    cols["path"], cols["size"], cols["mtime_ns"], cols["sha256"], strict=True
                )
            ]
            return cls(
                root=str(data["root"]),
                model=dict(data["model"]),
                chunking=dict(data["chunking"]),
                walk=dict(data.get("walk", {})),
                files=files,
                count=int(data["count"]),
                dim=int(data["dim"]),
                data=str(data["data"]),
                created=float(data.get("created", 0.0)),
                updated=float(data.get("updated", 0.0)),
                schema_version=version,
                extra=dict(data.get("extra", {})),
            )
        except IndexTooNew:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorrupt(f"{where}: malformed index metadata ({exc}); {FIX_HINT}") from None


@dataclass
class Index:
    """A loaded index: metadata plus memory-mapped arrays."""

    dir: Path
    meta: Meta
    embeddings: np.ndarray  # (count, dim) float32, memory-mapped
    passages: np.ndarray  # (count, 5) int32, memory-mapped: queries read only their hits

    def passage(self, row: int) -> tuple[int, int, int, int, int]:
        """One passage row, checked: a file index out of range means damage."""
        f, a, b, s, e = (int(v) for v in self.passages[row])
        if not 0 <= f < len(self.meta.files):
            raise IndexCorrupt(
                f"{self.dir / self.meta.data / PASSAGES_NAME} refers to unknown files; {FIX_HINT}"
            )
        return f, a, b, s, e

    @property
    def root(self) -> Path:
        return Path(self.meta.root)


def _parse_json(raw: bytes) -> Any:
    try:
        import orjson

        return orjson.loads(raw)
    except ImportError:
        return json.loads(raw)


def read_meta(index_dir: Path) -> Meta:
    path = index_dir / META_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IndexNotFound(
            f"no index at {index_dir} (create one with `msearch index DIR`)"
        ) from None
    except OSError as exc:
        raise IndexCorrupt(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = _parse_json(raw)
    except ValueError:
        raise IndexCorrupt(f"{path} is not valid JSON; {FIX_HINT}") from None
    if not isinstance(data, dict):
        raise IndexCorrupt(f"{path} is not an msearch index; {FIX_HINT}")
    return Meta.from_json(data, path)


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise IndexCorrupt(f"{path} is damaged or truncated ({exc}); {FIX_HINT}") from None
    if not isinstance(arr, np.ndarray):
        raise IndexCorrupt(f"{path} is not a plain array; {FIX_HINT}")
    return arr


def load_index(index_dir: Path, mmap: bool = True) -> Index:
    """Load and validate an index; every inconsistency is an ``IndexCorrupt``."""
    for attempt in range(3):
        meta = read_meta(index_dir)
        data_dir = index_dir / meta.data
        try:
            emb = _load_npy(data_dir / EMBEDDINGS_NAME, mmap)
            pas = _load_npy(data_dir / PASSAGES_NAME, mmap)
        except FileNotFoundError as exc:
            # A writer may have committed and cleaned up between our reads.
            if attempt < 2:
                continue
            raise IndexCorrupt(f"{exc.filename} is missing; {FIX_HINT}") from None
        break
    emb_path = data_dir / EMBEDDINGS_NAME
    if emb.dtype != np.float32 or emb.ndim != 2:
        raise IndexCorrupt(
            f"{emb_path} holds {emb.dtype} {emb.shape}, not float32 rows; {FIX_HINT}"
        )
    if emb.shape[1] != meta.dim or meta.dim != int(meta.model.get("dim", meta.dim)):
        raise IndexCorrupt(
            f"{emb_path} has vectors of dimension {emb.shape[1]}, the model makes {meta.dim}; "
            f"{FIX_HINT}"
        )
    if emb.shape[0] != meta.count:
        raise IndexCorrupt(
            f"{emb_path} has {emb.shape[0]} rows but {index_dir / META_NAME} lists "
            f"{meta.count} passages; {FIX_HINT}"
        )
    if pas.shape != (meta.count, len(PASSAGE_COLUMNS)):
        raise IndexCorrupt(
            f"{data_dir / PASSAGES_NAME} has shape {pas.shape}, expected "
            f"({meta.count}, {len(PASSAGE_COLUMNS)}); {FIX_HINT}"
        )
    if pas.dtype != np.int32:
        raise IndexCorrupt(f"{data_dir / PASSAGES_NAME} is not int32; {FIX_HINT}")
    return Index(index_dir, meta, emb, pas)


# ---------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _npy_header(rows: int, dim: int) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = header.encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    room = NPY_HEADER_LEN - len(prefix) - 2 - 1
    if len(body) > room:
        raise ValueError("npy header does not fit")
    body = body + b" " * (room - len(body)) + b"\n"
    return prefix + len(body).to_bytes(2, "little") + body


class DataWriter:
    """Streams rows into a new, not yet visible, data folder.

    Vectors go to disk as they are produced, so memory stays flat however
    large the index; the row count is written into the header at the end.
    """

    def __init__(self, index_dir: Path, dim: int) -> None:
        self.index_dir = index_dir
        self.dim = dim
        self.name = f"data-{uuid.uuid4().hex[:12]}"
        self.dir = index_dir / self.name
        self.dir.mkdir(parents=True)
        self.count = 0
        self._fh: IO[bytes] = open(self.dir / EMBEDDINGS_NAME, "wb")
        self._fh.write(_npy_header(0, dim))
        self._rows: list[np.ndarray] = []

    def append(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        if len(rows) != len(vectors):
            raise ValueError("one passage row per vector")
        self._fh.write(vectors.tobytes())
        self._rows.append(np.asarray(rows, dtype=np.int32).reshape(-1, len(PASSAGE_COLUMNS)))
        self.count += len(vectors)

    def finish(self, extra: Callable[[Path], None] | None = None) -> str:
        """Flush everything to stable storage; returns the data folder name.

        ``extra`` may write more files into the folder (the lexical index);
        they are made durable along with the rest, before any commit.
        """
        self._fh.seek(0)
        self._fh.write(_npy_header(self.count, self.dim))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        rows = (
            np.concatenate(self._rows)
            if self._rows
            else np.zeros((0, len(PASSAGE_COLUMNS)), dtype=np.int32)
        )
        with open(self.dir / PASSAGES_NAME, "wb") as fh:
            np.save(fh, rows)
            fh.flush()
            os.fsync(fh.fileno())
        if extra is not None:
            extra(self.dir)
            for entry in os.scandir(self.dir):
                if entry.name not in (EMBEDDINGS_NAME, PASSAGES_NAME):
                    fd = os.open(entry.path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        _fsync_dir(self.dir)
        return self.name

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def commit(index_dir: Path, meta: Meta) -> None:
    """Make ``meta`` (and the data folder it names) the index, atomically."""
    tmp = index_dir / f".{META_NAME}.{uuid.uuid4().hex[:8]}.tmp"
    payload = json.dumps(meta.to_json(), ensure_ascii=False, separators=(",", ":"))
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, index_dir / META_NAME)
    _fsync_dir(index_dir)
    cleanup(index_dir, keep=meta.data)


def cleanup(index_dir: Path, keep: str | None) -> None:
    """Remove data folders and temp files that no commit refers to.

    Only called by the lock holder, so nothing removed here is being written.
    Readers that still map an old generation keep working: on POSIX an
    unlinked file lives on while it is open.
    """
    try:
        entries = list(os.scandir(index_dir))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("data-") and entry.name != keep and entry.is_dir():
            shutil.rmtree(entry.path, ignore_errors=True)
        elif entry.name.startswith(f".{META_NAME}.") and entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


@contextlib.contextmanager
def write_lock(index_dir: Path, wait: bool = True, notice: Any = None) -> Iterator[None]:
    """Hold the index's writer lock (``flock``: released by the kernel if we die)."""
    import fcntl

    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise IndexLocked(
                    f"another msearch (pid {holder}) is writing the index at {index_dir}"
                ) from None
            if notice:
                notice(f"msearch: waiting for another msearch (pid {holder}) writing {index_dir}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
