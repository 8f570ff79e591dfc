"""Keep an index fresh while files change: the loop behind ``msearch watch``.

:func:`watch` runs the caller's ``update`` (one incremental
:func:`msearch.indexer.build_index`, with a model loaded once) whenever
files under the folder change. Why it is built this way:

- It updates once at the start, so that the index exists and matches the
  folder before anything is watched, and so that what would fail every
  update (an index a newer msearch made, a folder that is not msearch's)
  ends the watch at once. Setting up the watches takes a moment on a large
  tree, and changes made before they are in place send no event: once they
  are, it updates once more (as a rule, with nothing to do).
- Changes are gathered into batches, and one batch is one update: a batch
  closes when ``step_ms`` pass with no new change, or ``debounce_ms`` after
  its first change. An update walks the whole folder whatever changed, so a
  burst (a ``git checkout`` of a thousand files, a build) must be one or a
  few updates, never one per file; changes made while an update runs wait
  in the watcher and make the next batch. The changed paths are only a
  trigger: the update finds what changed itself (size, mtime, content
  hash), so a spurious event costs a walk, never a wrong index.
- Events inside the index folder are ignored: every update writes there,
  so each commit would otherwise trigger the next update, for ever. (The
  index folder itself being deleted is not ignored: the next update builds
  it again.) So are events inside any ``.git`` folder, which git writes to
  on every command, and inside any other ``.msearch`` folder, which the
  walk never enters.
- An update that fails with an msearch error (a full disk, an index folder
  someone replaced, ...) is said through ``notice`` and the watch goes on:
  the next change tries again. Files that vanish or cannot be read during
  an update are no error: the update skips them (``IndexStats.skipped``).
- The folder vanishing (deleted, renamed away, or replaced by another of
  the same name, which no watch covers) ends the watch with
  :class:`~msearch.errors.WatchStopped`.
- Ctrl-C (``KeyboardInterrupt``) leaves the loop wherever it is; an update
  it interrupts leaves the previous index as it was (commits are atomic).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from msearch.errors import MsearchError, UsageError, WatchStopped
from msearch.storage.layout import INDEX_DIR_NAME

S = TypeVar("S")

# Folders whose changes never trigger an update (see the module docstring).
IGNORED_DIRS = frozenset({".git", INDEX_DIR_NAME})


def load_watchfiles() -> ModuleType:
    """The ``watchfiles`` module, or a ``UsageError`` saying how to install it."""
    try:
        import watchfiles
    except ImportError:
        raise UsageError(
            "msearch watch needs the watch extra: pip install 'msearch[watch]'"
        ) from None
    return watchfiles


def watch(
    root: Path,
    index_dir: Path,
    update: Callable[[], S],
    notice: Callable[[str], None],
    *,
    stop: threading.Event | None = None,
    debounce_ms: int = 1600,
    step_ms: int = 50,
    check_ms: int = 1000,
    on_update: Callable[[S], None] | None = None,
) -> None:
    """Run ``update`` now, then once for every batch of changes under ``root``.

    ``update`` makes ``index_dir`` match ``root`` (it may raise an
    :class:`MsearchError`); ``on_update`` receives what each update that
    succeeded returned. ``notice`` hears about updates that failed after
    the first (whose errors are raised). ``check_ms``: how often, when
    nothing changes, the folder is checked to be still there.

    Returns when ``stop`` is set; raises :class:`WatchStopped` when the
    folder vanishes or cannot be watched, and ``KeyboardInterrupt`` on
    Ctrl-C.
    """
    watchfiles = load_watchfiles()
    folder = _Folder(Path(root))

    def run(first: bool) -> None:
        try:
            stats = update()
        except Exception as exc:
            folder.check(exc)
            if first or not isinstance(exc, MsearchError):
                raise
            notice(f"msearch: update failed: {exc} (still watching)")
            return
        if on_update is not None:
            on_update(stats)

    run(first=True)
    batches = watchfiles.watch(
        folder.real,
        watch_filter=_change_filter(folder.real, os.path.realpath(index_dir)),
        debounce=debounce_ms,
        step=step_ms,
        stop_event=stop,
        rust_timeout=check_ms,
        yield_on_timeout=True,  # an empty batch every check_ms: check the folder
        ignore_permission_denied=True,  # an unreadable subfolder: the walk says so
    )
    caught_up = False
    while True:
        try:
            batch = next(batches, None)
        except OSError as exc:
            folder.check(exc)
            raise WatchStopped(f"cannot watch {folder.shown}: {exc}") from exc
        if batch is None:  # stopped
            return
        folder.check()
        if batch or not caught_up:
            caught_up = True
            run(first=False)


class _Folder:
    """The watched folder, and whether it is still the one being watched."""

    def __init__(self, root: Path) -> None:
        self.shown = root  # as the user named it, for messages
        self.path = root.absolute()
        try:
            st = self._stat()
        except OSError as exc:
            raise UsageError(f"{root}: {exc.strerror}") from None
        if st is None:
            raise UsageError(f"{root}: no such folder")
        self.real = os.path.realpath(self.path)
        self.identity = (st.st_dev, st.st_ino)

    def _stat(self) -> os.stat_result | None:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if stat.S_ISDIR(st.st_mode) else None

    def check(self, cause: BaseException | None = None) -> None:
        """Raise ``WatchStopped`` if the folder is gone, renamed away, or
        another folder took its name."""
        try:
            st = self._stat()
        except OSError:
            return  # there, but unreadable: the update says so
        if st is None or (st.st_dev, st.st_ino) != self.identity:
            raise WatchStopped(f"{self.shown} vanished; stopped watching") from cause


def _change_filter(root: str, index_dir: str) -> Callable[[object, str], bool]:
    """Keep a change unless it is inside the index folder, or is or lies
    inside a folder named in IGNORED_DIRS below the root. The index folder
    itself is kept: deleted, it must be built again."""
    inside_index = index_dir + os.sep
    prefix = root.rstrip(os.sep) + os.sep

    def keep(_change: object, path: str) -> bool:
        if path == index_dir:
            return True
        if path.startswith(inside_index):
            return False
        rel = path[len(prefix) :] if path.startswith(prefix) else ""
        return not any(name in IGNORED_DIRS for name in rel.split(os.sep))

    return keep
