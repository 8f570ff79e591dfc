"""The layout of an index folder, the names msearch gives what it puts there,
and which folder an index searches.

Layout of an index folder (``DIR/.msearch`` by default)::

    msearch-index.json        msearch's marker: this folder is an index msearch made,
                              and the segment folders it created here
                              (msearch.storage.ownership)
    meta.json                 the commit point: names the segments below and
                              the file table (which rows of which segment
                              hold each file's passages; msearch.storage.record)
    seg-<id>/                 one immutable segment (msearch.storage.segment)
    vocab-<key>-<id>/         the model's vocabulary, cached for cold queries
    lock                      held (flock) by the process writing the index

An update writes a new segment folder; only when every byte of it is on
disk is ``meta.json`` replaced (``os.replace``), which switches readers
from the old list of segments to the new one in a single step. Rows of a
file that changed or vanished stay where they are, dead: the file table no
longer points at them, and a merge reclaims them later. A crash at any
moment leaves either the old ``meta.json`` with its intact segments, or
the new one. Folders no commit names are removed by the next writer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from msearch.errors import IndexCorrupt, IndexNotFound

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


def find_index(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """``--index``, else ``MSEARCH_INDEX``, else the nearest ``.msearch`` upwards."""
    if explicit:
        path = Path(explicit)
        if not os.path.lexists(path / META_NAME):
            raise IndexNotFound(f"no index at {path} (create one with `msearch index DIR`)")
        return path
    env = os.environ.get("MSEARCH_INDEX")
    if env:
        path = Path(env)
        if not os.path.lexists(path / META_NAME):
            raise IndexNotFound(
                f"no index at {path} (from MSEARCH_INDEX; create one with `msearch index DIR`)"
            )
        return path
    try:
        here = (cwd or Path.cwd()).absolute()
    except OSError as exc:
        raise IndexNotFound(f"cannot tell the current folder ({exc.strerror})") from None
    for folder in (here, *here.parents):
        candidate = folder / INDEX_DIR_NAME
        if os.path.lexists(candidate / META_NAME):
            return candidate
    raise IndexNotFound(
        "no index found in this folder or its parents; create one with `msearch index DIR`"
    )
