"""Disk primitives of an index: its folders opened by descriptor, ``.npy``
files read as untrusted input, checksums, durable writes.

Everything read from an index is untrusted input: index files are opened
without following links and must be regular files of the size their
headers promise, and segment folders must be real folders inside the
index (msearch.storage.safefs holds the rules for opening files).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from msearch.errors import IndexCorrupt, IndexLocked, IndexRefused, IndexWriteError
from msearch.storage import safefs
from msearch.storage.layout import FIX_HINT, SMALL_JSON_MAX_BYTES


def parse_json(raw: bytes) -> Any:
    """JSON from an index file, its nesting bounded (msearch.jsonsafe):
    anything malformed, however deep, is a ``ValueError``."""
    from msearch import jsonsafe

    return jsonsafe.loads(raw)


def os_reason(exc: OSError) -> str:
    if isinstance(exc, safefs.UnsafeFile):
        return str(exc)
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link"
    return exc.strerror or str(exc)


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

    def open(self, name: str, max_size: int | None = None) -> tuple[IO[bytes], os.stat_result]:
        """A regular file of this folder (at most ``max_size`` bytes), never
        through a link: ``FileNotFoundError`` where it is missing, one
        ``IndexCorrupt`` line for anything else."""
        try:
            return safefs.open_regular(name, dir_fd=self.fd, follow=False, max_size=max_size)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IndexCorrupt(
                f"{self.path / name}: cannot read ({os_reason(exc)}); {FIX_HINT}"
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
                fh, _ = self.open(name)
                with fh:
                    if checksum(fh) != expected:
                        return False
        except (OSError, IndexCorrupt):
            return False
        return True

    def read_json(self, name: str) -> Any:
        fh, _ = self.open(name, SMALL_JSON_MAX_BYTES)
        with fh:
            raw = fh.read()
        try:
            return parse_json(raw)
        except ValueError:
            raise IndexCorrupt(f"{self.path / name} is not valid JSON; {FIX_HINT}") from None

    def npy(self, name: str, mmap: bool = True) -> np.ndarray:
        """A plain ``.npy`` array, memory-mapped by default; its size must be
        exactly what its header promises (a truncated or padded file is
        damage, never read past)."""
        from numpy.lib import format as npy_format

        where = self.path / name
        fh, st = self.open(name)
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
        reason = "it is a symbolic link" if os.path.islink(path) else os_reason(exc)
        raise IndexCorrupt(f"{path}: cannot open ({reason}); {FIX_HINT}") from None


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


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """OS errors while writing (disk full, read-only, ``ulimit -f``,
    permissions) become one line naming the path and the cause."""
    try:
        yield
    except (IndexRefused, IndexWriteError, IndexLocked):
        raise
    except OSError as exc:
        where = exc.filename if exc.filename else path
        raise IndexWriteError(
            f"cannot write {where}: {_write_reason(exc, Path(path))}; "
            "the previous index is unchanged"
        ) from None


def _write_reason(exc: OSError, path: Path) -> str:
    """The cause of a failed write. A short write reported without one
    (numpy's "N requested and M written") is most often a full disk: said
    so where the file system has no room left."""
    if exc.strerror:
        return exc.strerror
    if "requested and" in str(exc):
        for where in (path, path.parent):
            try:
                st = os.statvfs(where)
            except OSError:
                continue
            if st.f_bavail * st.f_frsize < 1 << 20:
                return os.strerror(errno.ENOSPC)
            return f"the file system took only part of a write ({exc})"
    return str(exc)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_new(path: Path) -> IO[bytes]:
    """A file that did not exist: ``O_EXCL``, which also refuses a link, so
    nothing of anyone's is truncated or written through."""
    return open(path, "xb")


def write_durable(path: Path, payload: bytes) -> None:
    with create_new(path) as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def tmp_name(base: str) -> str:
    return f".{base}.{uuid.uuid4().hex[:8]}.tmp"
