"""Opening files that msearch did not write, without being tricked by them.

Why a module of its own: an index can arrive from anywhere (a repository,
an archive), and the folder being searched can change under us. Every read
of a user's file or of an index file goes through here, so that one set of
rules holds everywhere:

- regular files only: a FIFO would block a read forever and a device such
  as ``/dev/zero`` would never end, so files are opened non-blocking and
  checked with ``fstat`` before a byte is read;
- reads are bounded: a file larger than its caller's limit is refused, not
  read into memory;
- no symbolic links where none are expected: index files are opened
  relative to the index folder's descriptor with ``O_NOFOLLOW``, and a file
  named by an index is reached component by component from its root, so a
  link planted anywhere on the way cannot lead outside it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_READ = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class UnsafeFile(OSError):
    """The path exists but is not a regular file msearch may read (a link,
    a FIFO, a device, a folder), or it is larger than allowed."""


def safe_relpath(rel: object) -> bool:
    """Whether ``rel`` (from an index) names a path strictly inside a root:
    relative, POSIX separators, no empty, ``.`` or ``..`` components, no NUL."""
    if not isinstance(rel, str) or not rel or "\0" in rel or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def _check_regular(fd: int, what: str, max_size: int | None) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{what} is not a regular file")
    if max_size is not None and st.st_size > max_size:
        raise UnsafeFile(f"{what} is larger than {max_size:,} bytes")
    return st


def open_regular(
    path: str | os.PathLike[str],
    *,
    dir_fd: int | None = None,
    follow: bool = True,
    max_size: int | None = None,
) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading: never blocks, never a device.

    ``follow=False`` refuses a symbolic link as the last component.
    Returns the open file and its ``fstat``.
    """
    flags = _READ | (0 if follow else _NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        st = _check_regular(fd, os.fsdecode(path), max_size)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


READ_BLOCK = 1 << 20


def read_limited(fh: BinaryIO, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes: a file that grew since it was sized is refused
    rather than read until memory runs out. Read a block at a time, so that
    a huge limit (from a damaged index) allocates nothing up front."""
    blocks: list[bytes] = []
    total = 0
    while True:
        block = fh.read(min(READ_BLOCK, limit + 1 - total))
        if not block:
            break
        blocks.append(block)
        total += len(block)
        if total > limit:
            raise UnsafeFile(f"{what} is larger than {limit:,} bytes")
    return b"".join(blocks)


def read_regular(
    path: str | os.PathLike[str], limit: int, follow: bool = True, dir_fd: int | None = None
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    fh, _ = open_regular(path, dir_fd=dir_fd, follow=follow, max_size=limit)
    with fh:
        return read_limited(fh, limit, os.fsdecode(path))


@contextlib.contextmanager
def open_dir(
    path: str | os.PathLike[str], dir_fd: int | None = None, follow: bool = True
) -> Iterator[int]:
    """A folder's descriptor, for opening what is inside it relative to it."""
    fd = os.open(path, os.O_RDONLY | _DIRECTORY | (0 if follow else _NOFOLLOW), dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def open_beneath(
    root: Path, rel: str, follow_links: bool, max_size: int | None = None
) -> tuple[BinaryIO, os.stat_result]:
    """Open ``root/rel``, a regular file named by an index, without leaving ``root``.

    ``rel`` must pass :func:`safe_relpath`. Unless the index was built
    following links (``-L``), every component is opened with ``O_NOFOLLOW``
    relative to the one before, so no symbolic link inside the root (one
    that arrived with an archive, say) can lead elsewhere.
    """
    if not safe_relpath(rel):
        raise UnsafeFile(f"{rel!r} is not a path inside the indexed folder")
    if follow_links:
        return open_regular(root / rel, follow=True, max_size=max_size)
    parts = rel.split("/")
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return open_regular(parts[-1], dir_fd=fd, follow=False, max_size=max_size)
    finally:
        os.close(fd)


def is_dir_nofollow(path: str | os.PathLike[str]) -> bool:
    """A real folder, not a link to one (and no error if it is unreadable)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def exists(path: str | os.PathLike[str]) -> bool:
    """``os.path.exists`` that also answers False where permission is
    denied (``Path.exists`` raises there, which stopped a whole walk)."""
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True
