"""The index on disk: format, validation, ownership, atomic commits and the writer lock.

Layout of an index folder (``DIR/.msearch`` by default)::

    msearch-index.json        msearch's marker: this folder is an index msearch made,
                              and the generation folders it created here
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

Safety rules (README, "Safety"): msearch writes only into a folder that is
empty, or that carries its marker (or, for indexes made before the marker
existed, whose ``meta.json`` is msearch's). It deletes only generation
folders that the marker says it created. Everything read from an index is
untrusted input: index files are opened without following links and must be
regular files of the size their headers promise, and the data folder must be
a real folder inside the index.
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
from collections.abc import Callable, Iterator
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

SCHEMA_VERSION = 1
META_NAME = "meta.json"
LOCK_NAME = "lock"
MARKER_NAME = "msearch-index.json"
MARKER_KIND = "msearch index"
EMBEDDINGS_NAME = "embeddings.npy"
PASSAGES_NAME = "passages.npy"
PASSAGE_COLUMNS = ("file", "start_line", "end_line", "start_char", "end_char")
# The folder an index lives in by default (DIR/.msearch). Such a folder
# always searches the folder it lies in, so an index that arrived with a
# repository or an archive can never name another root.
INDEX_DIR_NAME = ".msearch"
# A root recorded as this means "the folder holding the index folder".
PARENT_ROOT = ".."
# Names msearch gives what it creates; nothing else is ever deleted.
DATA_RE = re.compile(r"data-[0-9a-f]{12}\Z")
TMP_RE = re.compile(r"\.(meta\.json|msearch-index\.json)\.[0-9a-f]{8}\.tmp\Z")
# Fixed room for the .npy header so the row count can be filled in at the end
# of a streamed write without moving the data (numpy pads headers with spaces).
NPY_HEADER_LEN = 128
# Upper bounds for files read whole: a damaged or hostile index cannot make
# msearch read gigabytes into memory.
META_MAX_BYTES = 1 << 31
SMALL_JSON_MAX_BYTES = 1 << 24
MAX_DIM = 1 << 16
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
    root: str  # PARENT_ROOT, or an absolute folder (see resolve_root)
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
    # CRC-32 of every file of the data folder: damage that parses (a flipped
    # bit in a vector) is found by ``status`` and before an update builds on it.
    checksums: dict[str, int] = field(default_factory=dict)

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
            "checksums": self.checksums,
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
            cols = _dict(data["files"], "files")
            paths, sizes = cols["path"], cols["size"]
            mtimes, hashes = cols["mtime_ns"], cols["sha256"]
            for name, col, kind in (
                ("path", paths, str),
                ("size", sizes, int),
                ("mtime_ns", mtimes, int),
                ("sha256", hashes, str),
            ):
                if not isinstance(col, list) or not all(type(v) is kind for v in col):
                    raise ValueError(f"files.{name} is not a list of {kind.__name__}")
            files = [
                FileRecord(p, s, m, h)
                for p, s, m, h in zip(paths, sizes, mtimes, hashes, strict=True)
            ]
            count = _int(data["count"], "count")
            dim = _int(data["dim"], "dim")
            if count < 0 or not 0 < dim <= MAX_DIM:
                raise ValueError(f"count {count} or dim {dim} out of range")
            data_name = data["data"]
            if not isinstance(data_name, str) or not DATA_RE.match(data_name):
                raise ValueError(f"data folder {data_name!r} is not one msearch makes")
            root = data["root"]
            if not isinstance(root, str):
                raise ValueError("root is not a string")
            checksums = _dict(data.get("checksums", {}), "checksums")
            if not all(
                isinstance(k, str) and type(v) is int and 0 <= v < 1 << 32
                for k, v in checksums.items()
            ):
                raise ValueError("checksums are not CRC-32 values")
            return cls(
                root=root,
                model=_dict(data["model"], "model"),
                chunking=_dict(data["chunking"], "chunking"),
                walk=_dict(data.get("walk", {}), "walk"),
                files=files,
                count=count,
                dim=dim,
                data=data_name,
                created=float(data.get("created", 0.0)),
                updated=float(data.get("updated", 0.0)),
                schema_version=version,
                extra=_dict(data.get("extra", {}), "extra"),
                checksums=checksums,
            )
        except IndexTooNew:
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
    """A loaded index: metadata plus memory-mapped arrays."""

    dir: Path
    meta: Meta
    embeddings: np.ndarray  # (count, dim) float32, memory-mapped
    passages: np.ndarray  # (count, 5) int32, memory-mapped: queries read only their hits
    root: Path = field(default_factory=Path)

    def passage(self, row: int) -> tuple[int, int, int, int, int]:
        """One passage row, checked: anything out of range means damage."""
        f, a, b, s, e = (int(v) for v in self.passages[row])
        if not (0 <= f < len(self.meta.files) and 1 <= a <= b and 0 <= s <= e):
            raise IndexCorrupt(
                f"{self.dir / self.meta.data / PASSAGES_NAME} is damaged (row {row}); {FIX_HINT}"
            )
        return f, a, b, s, e

    @property
    def data_dir(self) -> Path:
        return self.dir / self.meta.data


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


def read_meta(index_dir: Path) -> Meta:
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
    return Meta.from_json(data, path)


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


def open_data(index_dir: Path, meta: Meta) -> DataFolder:
    """The data folder ``meta`` names: a real folder directly inside the index."""
    path = Path(index_dir) / meta.data
    try:
        return DataFolder(path, parent=Path(index_dir))
    except FileNotFoundError:
        raise
    except OSError as exc:
        # O_NOFOLLOW | O_DIRECTORY on a link fails with ELOOP or ENOTDIR.
        reason = "it is a symbolic link" if os.path.islink(path) else _reason(exc)
        raise IndexCorrupt(f"{path}: cannot open ({reason}); {FIX_HINT}") from None


def load_index(index_dir: Path, mmap: bool = True) -> Index:
    """Load and validate an index; every inconsistency is an ``IndexCorrupt``."""
    index_dir = Path(index_dir).absolute()
    for attempt in range(3):
        meta = read_meta(index_dir)
        root = resolve_root(index_dir, meta.root)
        try:
            with open_data(index_dir, meta) as folder:
                emb = folder.npy(EMBEDDINGS_NAME, mmap)
                pas = folder.npy(PASSAGES_NAME, mmap)
        except FileNotFoundError as exc:
            # A writer may have committed and cleaned up between our reads.
            if attempt < 2:
                continue
            missing = index_dir / meta.data / (exc.filename or "")
            raise IndexCorrupt(f"{missing} is missing; {FIX_HINT}") from None
        break
    data_dir = index_dir / meta.data
    emb_path = data_dir / EMBEDDINGS_NAME
    if emb.dtype != np.float32 or emb.ndim != 2:
        raise IndexCorrupt(
            f"{emb_path} holds {emb.dtype} {emb.shape}, not float32 rows; {FIX_HINT}"
        )
    model_dim = meta.model.get("dim", meta.dim)
    if emb.shape[1] != meta.dim or type(model_dim) is not int or meta.dim != model_dim:
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
    return Index(index_dir, meta, emb, pas, root)


VERIFY_ROWS = 1 << 16


def verify(index: Index) -> None:
    """Check every row of an index (what ``status`` does, not every query):
    passages in file order with sane line and character ranges, and finite
    vectors. Raises ``IndexCorrupt`` at the first problem."""
    n_files = len(index.meta.files)
    # A passage ends within its file: a character is at least one byte.
    sizes = np.array([f.size for f in index.meta.files] or [0], dtype=np.int64)
    where = index.data_dir
    last_file = 0
    for s in range(0, index.meta.count, VERIFY_ROWS):
        rows = np.asarray(index.passages[s : s + VERIFY_ROWS], dtype=np.int64)
        f, a, b, cs, ce = rows.T
        ok = (
            (f >= 0).all()
            and (f < n_files).all()
            and (np.diff(f) >= 0).all()
            and f[0] >= last_file
            and (a >= 1).all()
            and (b >= a).all()
            and (cs >= 0).all()
            and (ce >= cs).all()
            and (ce <= sizes[np.clip(f, 0, len(sizes) - 1)]).all()
        )
        if not ok:
            raise IndexCorrupt(f"{where / PASSAGES_NAME} is damaged; {FIX_HINT}")
        last_file = int(f[-1])
        if not np.isfinite(np.asarray(index.embeddings[s : s + VERIFY_ROWS])).all():
            raise IndexCorrupt(f"{where / EMBEDDINGS_NAME} holds invalid numbers; {FIX_HINT}")
    bad = [f.path for f in index.meta.files if not safefs.safe_relpath(f.path)]
    if bad:
        raise IndexCorrupt(
            f"{index.dir / META_NAME} names a file outside its root ({bad[0]!r}); {FIX_HINT}"
        )
    verify_checksums(index.dir, index.meta)


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


def verify_checksums(index_dir: Path, meta: Meta) -> None:
    """Read every data file ``meta`` has a checksum for, and compare."""
    if not meta.checksums:
        return  # an index made before checksums were recorded
    with open_data(index_dir, meta) as folder:
        for name, expected in sorted(meta.checksums.items()):
            if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
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


def _fsync_dir(path: Path) -> None:
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
    return Marker([g for g in gens if isinstance(g, str) and DATA_RE.match(g)])


def _write_marker(index_dir: Path, marker: Marker) -> None:
    """Replace the marker atomically (the lock holder only)."""
    tmp = index_dir / _tmp_name(MARKER_NAME)
    _write_durable(tmp, marker.to_bytes())
    os.replace(tmp, index_dir / MARKER_NAME)
    _fsync_dir(index_dir)


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
    _fsync_dir(index_dir)
    return True


def _legacy_generation(index_dir: Path) -> str | None:
    """The data folder of an index made before the marker existed: a folder
    whose ``meta.json`` is msearch's own metadata. None if it is not one."""
    try:
        meta = read_meta(index_dir)
    except (IndexNotFound, IndexCorrupt):
        return None
    return meta.data


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
                legacy = _legacy_generation(index_dir)
                if legacy is None:
                    raise IndexRefused(
                        f"{index_dir} is not an msearch index and is not empty; msearch writes "
                        "only into an empty folder or an index it made (choose another --index)"
                    )
                marker = Marker([legacy])
            if _create_marker(index_dir, marker):
                return
        raise IndexRefused(f"{index_dir}: could not mark it as an msearch index")


def is_index_folder(index_dir: Path) -> bool:
    """Whether ``index_dir`` is recognisably an msearch index (so that
    "damaged, rebuilding" may apply to it)."""
    try:
        return read_marker(index_dir) is not None or _legacy_generation(index_dir) is not None
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


def _npy_header(rows: int, dim: int) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = header.encode("latin1")
    prefix = b"\x93NUMPY\x01\x00"
    room = NPY_HEADER_LEN - len(prefix) - 2 - 1
    if len(body) > room:
        raise ValueError("npy header does not fit")
    body = body + b" " * (room - len(body)) + b"\n"
    return prefix + len(body).to_bytes(2, "little") + body


def new_generation(index_dir: Path) -> Path:
    """Create a fresh data folder, recorded in the marker before it exists
    (so a crash leaves nothing that cleanup cannot prove is msearch's).
    Only the lock holder calls this."""
    index_dir = Path(index_dir)
    with _writing(index_dir):
        marker = read_marker(index_dir)
        if marker is None:
            raise IndexRefused(f"{index_dir} is not marked as an msearch index")
        name = f"data-{uuid.uuid4().hex[:12]}"
        _write_marker(index_dir, Marker([*marker.generations, name]))
        path = index_dir / name
        os.mkdir(path)
        return path


class DataWriter:
    """Streams rows into a new, not yet visible, data folder.

    Vectors go to disk as they are produced, so memory stays flat however
    large the index; the row count is written into the header at the end.
    """

    def __init__(self, index_dir: Path, dim: int) -> None:
        self.index_dir = Path(index_dir)
        self.dim = dim
        self.dir = new_generation(self.index_dir)
        self.name = self.dir.name
        self.count = 0
        self.checksums: dict[str, int] = {}
        with _writing(self.dir):
            self._fh: IO[bytes] = _create_new(self.dir / EMBEDDINGS_NAME)
            self._fh.write(_npy_header(0, dim))
        self._rows: list[np.ndarray] = []

    def append(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        if len(rows) != len(vectors):
            raise ValueError("one passage row per vector")
        with _writing(self.dir / EMBEDDINGS_NAME):
            self._fh.write(vectors.tobytes())
        self._rows.append(np.asarray(rows, dtype=np.int32).reshape(-1, len(PASSAGE_COLUMNS)))
        self.count += len(vectors)

    def finish(self, extra: Callable[[Path], None] | None = None) -> str:
        """Flush everything to stable storage; returns the data folder name.

        ``extra`` may write more files into the folder (the lexical index);
        they are made durable along with the rest, before any commit.
        """
        with _writing(self.dir):
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
            with _create_new(self.dir / PASSAGES_NAME) as fh:
                np.save(fh, rows)
                fh.flush()
                os.fsync(fh.fileno())
            if extra is not None:
                extra(self.dir)
            for entry in os.scandir(self.dir):
                with open(
                    os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb"
                ) as fh:
                    if entry.name not in (EMBEDDINGS_NAME, PASSAGES_NAME):
                        os.fsync(fh.fileno())
                    self.checksums[entry.name] = checksum(fh)
            _fsync_dir(self.dir)
        return self.name

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def commit(index_dir: Path, meta: Meta) -> None:
    """Make ``meta`` (and the data folder it names) the index, atomically."""
    index_dir = Path(index_dir)
    # Names that are not UTF-8 live in ``str`` as lone surrogates; they are
    # written as JSON "\udcXX" escapes, which read back as the same names.
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
        _fsync_dir(index_dir)
    cleanup(index_dir, keep=meta.data)


def cleanup(index_dir: Path, keep: str | None) -> None:
    """Remove the generation folders msearch created here that no commit
    refers to, and its own temporary files.

    Only what the marker records is deleted, and only if it is still a real
    folder (a link in its place is dropped from the record, not followed).
    Only called by the lock holder, so nothing removed here is being
    written. Readers that still map an old generation keep working: on
    POSIX an unlinked file lives on while it is open.
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
        if name == keep:
            remaining.append(name)
        elif safefs.is_dir_nofollow(path):
            shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(path):
                remaining.append(name)  # could not remove all of it: try next time
    if remaining != marker.generations:
        with contextlib.suppress(OSError):
            _write_marker(index_dir, Marker(remaining))


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
