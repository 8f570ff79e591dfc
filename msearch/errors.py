"""Typed errors raised by the core library.

The CLI maps every subclass of :class:`MsearchError` to a one-line message on
stderr and exit status 2; anything else is a bug, reported as a one-line
"internal error" (exit 2; ``MSEARCH_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations


class MsearchError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class UsageError(MsearchError):
    """The arguments make no sense (bad folder, empty query, -k 0, ...)."""


class IndexNotFound(MsearchError):
    """No index where one was expected."""


class IndexCorrupt(MsearchError):
    """An index file is damaged, truncated or inconsistent with its siblings."""


class IndexTooNew(IndexCorrupt):
    """The index was written by a newer msearch with an unknown schema."""


class ModelMismatch(MsearchError):
    """A query asked for a different model than the one that built the index."""


class ModelUnavailable(MsearchError):
    """A model could not be loaded (not cached and no network, bad path, ...)."""


class IndexLocked(MsearchError):
    """Another msearch process is writing the same index."""


class IndexRefused(MsearchError):
    """msearch will not write into this folder: it is not an index msearch
    made (a folder of the user's), or part of it is a link or not a file."""


class IndexWriteError(MsearchError):
    """The operating system refused a write (disk full, read-only, file size
    limit, permissions); the previous index is left as it was."""


class WatchStopped(MsearchError):
    """``msearch watch`` cannot go on: the folder it watches vanished, or the
    operating system will not watch it (too many folders for inotify, ...)."""


class ClusterError(MsearchError):
    """``msearch index --ray`` cannot run or finish: Ray is not installed,
    the cluster cannot be reached, or a worker failed. The previous index
    is left as it was."""


class OutputError(MsearchError):
    """Standard output cannot take the results: it is closed, or the
    operating system refused a write (a full disk, ``>/dev/full``)."""
