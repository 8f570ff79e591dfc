"""What an index holds, and how the folder has moved on since it was built."""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from msearch.config import DEFAULT, IndexConfig, TwoStage
from msearch.storage import safefs
from msearch.storage.reader import IndexReader, load_index, verify
from msearch.walk import NotText, WalkOptions, read_bytes, walk


@dataclass
class Changes:
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


@dataclass
class Status:
    index_dir: str
    root: str
    model: str
    dim: int
    precision: str
    files: int
    passages: int
    # Live passages with their vector; the others (``msearch index`` still
    # embedding, or interrupted) are found by their words only.
    embedded: int
    segments: int
    dead: int  # rows of changed or deleted files, not yet reclaimed by a merge
    search: str  # how dense search runs: "exact" or "two-stage (...)"
    size_bytes: int
    created: float
    updated: float
    changed: list[str]
    added: list[str]
    deleted: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def folder_changes(index: IndexReader, follow_links: bool = False) -> Changes:
    """Compare the folder with the index: stat first, content hash to confirm.

    ``follow_links``: this run was given ``-L``; what the index records is
    never a permission to follow links (it may come from anywhere).

    Files the indexer skipped (binary, too large) are not in the file table,
    so they would show as "added" forever; they are left out by walking with
    the index's own options and ignoring files that were skipped for cause.
    """
    from msearch.indexer import walk_options_from_json

    root = index.root
    opts: WalkOptions = walk_options_from_json(index.meta.walk)
    opts = replace(opts, follow_symlinks=follow_links)
    if not safefs.is_dir_nofollow(root) and not safefs.exists(root):
        # The folder is gone: everything it held is deleted, nothing walked.
        return Changes(deleted=[f.path for f in index.meta.files])
    walked = walk(root, opts, exclude_dirs=[index.dir])
    known = {f.path: f for f in index.meta.files}
    listed = index.meta.extra.get("skipped", [])
    skipped = {s for s in listed if isinstance(s, str)} if isinstance(listed, list) else set()
    changes = Changes()
    present: set[str] = set()
    for entry in walked.files:
        present.add(entry.rel)
        rec = known.get(entry.rel)
        if rec is None:
            if entry.rel not in skipped:
                changes.added.append(entry.rel)
        elif not rec.unchanged(
            entry.size, entry.mtime_ns, functools.partial(_read, entry.path, opts)
        ):
            changes.changed.append(entry.rel)
    changes.deleted = [p for p in known if p not in present]
    return changes


def _read(path: Path, opts: WalkOptions) -> bytes | None:
    try:
        return read_bytes(path, opts.max_file_size, follow=opts.follow_symlinks)
    except NotText:
        return None


def _disk_size(index_dir: Path, folders: list[str]) -> int:
    total = 0
    for folder in (index_dir, *(index_dir / name for name in folders)):
        if folder != index_dir and not safefs.is_dir_nofollow(folder):
            continue  # a link in a segment's place is not followed
        try:
            for entry in os.scandir(folder):
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total


def search_kind(index: IndexReader, stages: TwoStage = DEFAULT.two_stage) -> str:
    """How a dense query of this index runs (see msearch.query.Searcher)."""
    from msearch.query import two_stage_ready

    if two_stage_ready(index, stages):
        n = stages.candidates(index.count)
        if all(seg.int8() is not None for seg in index.segments):
            return (
                f"two-stage (sign bits pick {n:,} candidates, their int8 codes the best "
                f"{stages.rescored(10)} to score exactly; --exact scans all)"
            )
        return (
            f"two-stage (sign bits, then exact scores of {n:,} candidates: segments without "
            "int8 codes, `msearch index --compact` adds them; --exact scans all)"
        )
    if any(seg.pending for seg in index.segments):
        return "exact, by words where a passage has no vector yet (`msearch index` embeds them)"
    if all(seg.bits() is not None for seg in index.segments):
        return f"exact (two-stage from {stages.from_rows:,} passages)"
    return "exact (segments without sign bits: `msearch index --compact` adds them)"


def index_status(
    index_dir: Path, config: IndexConfig = DEFAULT, follow_links: bool = False
) -> Status:
    """What the index holds, checked row by row (``verify``: a damaged
    index is an error here, not a report), and what changed since
    (``follow_links``: this run's ``-L``, see :func:`folder_changes`)."""
    index = load_index(index_dir)
    verify(index)
    changes = folder_changes(index, follow_links)
    meta = index.meta
    return Status(
        index_dir=str(index_dir),
        root=str(index.root),
        model=str(meta.model.get("name")),
        dim=meta.dim,
        precision=str(meta.model.get("precision", "float32")),
        files=len(meta.files),
        passages=meta.count,
        embedded=meta.count - meta.waiting,
        segments=len(meta.segments),
        dead=sum(x.rows - x.live_rows for x in meta.segments),
        search=search_kind(index, config.two_stage),
        size_bytes=_disk_size(index_dir, [x.name for x in meta.segments]),
        created=meta.created,
        updated=meta.updated,
        changed=changes.changed,
        added=changes.added,
        deleted=changes.deleted,
    )
