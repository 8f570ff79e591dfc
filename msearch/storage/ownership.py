"""What msearch owns in an index folder, and how it changes it: the marker,
the writer lock, new folders, the commit and the cleanup after it.

Safety rules (docs/safety.md): msearch writes only into a folder that is
empty, or that carries its marker (or, for indexes made before the marker
existed, whose ``meta.json`` is msearch's). It deletes only folders that
the marker says it created.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msearch.errors import IndexCorrupt, IndexLocked, IndexNotFound, IndexRefused
from msearch.storage import safefs
from msearch.storage.disk import (
    fsync_dir,
    os_reason,
    parse_json,
    tmp_name,
    write_durable,
    writing,
)
from msearch.storage.layout import (
    FOLDER_RE,
    LOCK_NAME,
    MARKER_KIND,
    MARKER_NAME,
    META_NAME,
    SMALL_JSON_MAX_BYTES,
    TMP_RE,
)
from msearch.storage.record import Meta, named_folders, read_meta_json


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
            f"{path} is not msearch's marker ({os_reason(exc)}); remove it, or choose another --index"
        ) from None
    with fh:
        raw = fh.read()
    try:
        data = parse_json(raw)
        gens = data["generations"]
        if data.get("kind") != MARKER_KIND or not isinstance(gens, list):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return Marker()
    return Marker([g for g in gens if isinstance(g, str) and FOLDER_RE.match(g)])


def _write_marker(index_dir: Path, marker: Marker) -> None:
    """Replace the marker atomically (the lock holder only)."""
    tmp = index_dir / tmp_name(MARKER_NAME)
    write_durable(tmp, marker.to_bytes())
    os.replace(tmp, index_dir / MARKER_NAME)
    fsync_dir(index_dir)


def _create_marker(index_dir: Path, marker: Marker) -> bool:
    """Create the marker if there is none (``link`` is atomic and exclusive,
    so two first runs cannot both claim a folder); False if one appeared."""
    tmp = index_dir / tmp_name(MARKER_NAME)
    write_durable(tmp, marker.to_bytes())
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
        data = read_meta_json(index_dir)
    except (IndexNotFound, IndexCorrupt):
        return None
    if not {"schema_version", "root", "model", "files"} <= set(data):
        return None
    return named_folders(data)


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
    with writing(index_dir):
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
    with writing(index_dir):
        st = _check_part(index_dir, META_NAME)
        if st is not None and not stat.S_ISREG(st.st_mode):
            aside = index_dir / f"{META_NAME}.moved-{uuid.uuid4().hex[:8]}"
            os.rename(index_dir / META_NAME, aside)
            notice(f"msearch: {index_dir / META_NAME} was not a file; moved it to {aside}")


def new_owned_dir(index_dir: Path, name: str) -> Path:
    """Create a folder of msearch's (a segment, a vocabulary cache), recorded
    in the marker before it exists. Only the lock holder calls this."""
    if not FOLDER_RE.match(name):
        raise ValueError(f"{name!r} is not a folder name msearch makes")
    index_dir = Path(index_dir)
    with writing(index_dir):
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


def commit(index_dir: Path, meta: Meta) -> None:
    """Make ``meta`` (and the segments it names) the index, atomically."""
    index_dir = Path(index_dir)
    meta.updated = time.time()
    # Names that are not UTF-8 live in ``str`` as lone surrogates; they are
    # written as JSON "\\udcXX" escapes, which read back as the same names.
    payload = json.dumps(meta.to_json(), ensure_ascii=False, separators=(",", ":"))
    raw = payload.encode("utf-8", "backslashreplace")
    with writing(index_dir / META_NAME):
        _check_part(index_dir, META_NAME)
        tmp = index_dir / tmp_name(META_NAME)
        try:
            write_durable(tmp, raw)
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


def current_segments(index_dir: Path) -> set[str]:
    """The folders the committed ``meta.json`` names (any schema), for
    cleanup before a write; empty when it cannot be read."""
    try:
        data = read_meta_json(index_dir)
    except (IndexNotFound, IndexCorrupt):
        return set()
    return set(named_folders(data))


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
    with writing(path):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise IndexRefused(
                    f"{path} is not msearch's lock file ({os_reason(exc)}); remove it and run again"
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
        with writing(path):
            os.pwrite(fd, f"{os.getpid()}\n".ljust(LOCK_PID_WIDTH).encode(), 0)
        yield
    finally:
        os.close(fd)
