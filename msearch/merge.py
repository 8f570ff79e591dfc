"""Merging segments: which to merge (the policy) and how (copy, never re-embed).

Every update adds a segment, so without merging a watch loop would pile up
thousands of them, and every query would pay for each. The policy
(:class:`TieredMergePolicy`, the default of ``IndexConfig.merge``; any
object with a ``plan`` will do) is tiered, as Lucene's and LSM stores'
are: segments are grouped by size in powers of its ``factor``, and when a
tier holds ``factor`` segments they are merged into one of the next tier.
So the number of segments grows with the logarithm of the index's size,
each row is copied about once per tier, and a small update never merges a
large segment. A segment with many dead rows (of files edited or deleted
since; see ``dead_share``) is rewritten with its live rows alone, which
reclaims the space.

A merge copies the live rows of its segments in file-table order: vectors,
passages and keys as they are, BM25 postings merged (msearch.lexical). So
merging everything (``msearch index --compact``) gives exactly the index a
fresh build would: one segment, its rows in walk order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from msearch.errors import IndexCorrupt
from msearch.lexical import LexicalFormatError, merge_lexical
from msearch.storage.disk import writing
from msearch.storage.layout import FIX_HINT
from msearch.storage.ownership import new_segment_dir
from msearch.storage.reader import IndexReader, verify_checksums
from msearch.storage.record import FileRecord, Meta, SegmentInfo
from msearch.storage.segment import SegmentWriter, search_files


class MergePolicy(Protocol):
    """Which segments to merge after an update."""

    def plan(self, segments: Sequence[SegmentInfo]) -> list[list[int]]:
        """Groups of segment positions (into ``segments``, the committed
        order) to merge, each group into one segment; no position twice."""
        ...


@dataclass(frozen=True)
class TieredMergePolicy:
    """Segments by tier of live rows, ``factor`` of a tier merged into one."""

    factor: int = 10
    # Segments below this many live rows all share the lowest tier.
    floor_rows: int = 1000
    # A segment at least this share dead (and not tiny) is rewritten alone.
    # Why this low: a query still scans dead rows (they are masked, not
    # skipped), so they cost what live rows cost; at 15% a query does at
    # most ~18% more work than on a fully merged index, and a segment is
    # rewritten once about a sixth of its files have changed (Lucene allows
    # 20-33% deletes).
    dead_share: float = 0.15

    def tier(self, info: SegmentInfo) -> int:
        if info.live_rows < self.floor_rows:
            return 0
        return 1 + int(math.log(info.live_rows / self.floor_rows, self.factor))

    def plan(self, segments: Sequence[SegmentInfo]) -> list[list[int]]:
        groups: list[list[int]] = []
        taken: set[int] = set()
        for i, info in enumerate(segments):
            dead = info.rows - info.live_rows
            if info.rows >= self.floor_rows and dead >= self.dead_share * info.rows:
                groups.append([i])
                taken.add(i)
        by_tier: dict[int, list[int]] = {}
        for i, info in enumerate(segments):
            if i not in taken:
                by_tier.setdefault(self.tier(info), []).append(i)
        for members in by_tier.values():
            while len(members) >= self.factor:
                members.sort(key=lambda i: segments[i].live_rows)
                groups.append(sorted(members[: self.factor]))
                members = members[self.factor :]
        return groups


def merge(
    index: IndexReader,
    groups: Sequence[Sequence[int]],
    say: Callable[[str], None] = lambda _m: None,
    copy_rows: int = 1 << 16,
) -> Meta:
    """Write one segment per group and return the metadata that names them
    instead of the group's members (to be committed by the caller, under
    the writer lock). The members are checked against their checksums
    first: a merge reads them whole, and must not copy damage. ``copy_rows``:
    rows copied at a time."""
    meta = index.meta
    verify_checksums(index.dir, meta, {meta.segments[i].name for group in groups for i in group})
    segments = list(meta.segments)
    replaced: dict[int, int] = {}  # old position -> position of its merged segment
    new_rows: dict[int, tuple[int, int]] = {}  # file index -> (row, rows) in the new segment
    for group in groups:
        info, rows = _merge_group(index, set(group), copy_rows)
        first = min(group)
        segments[first] = info
        for i in group:
            replaced[i] = first
        new_rows.update(rows)
    dropped = set(replaced) - set(replaced.values())
    position = {}
    kept: list[SegmentInfo] = []
    for i, info in enumerate(segments):
        if i not in dropped:
            position[i] = len(kept)
            kept.append(info)
    files = []
    for f, rec in enumerate(meta.files):
        if not rec.rows:  # a file without passages holds no rows anywhere
            files.append(FileRecord(rec.path, rec.size, rec.mtime_ns, rec.sha256))
            continue
        seg = replaced.get(rec.segment, rec.segment)
        row, n = new_rows.get(f, (rec.row, rec.rows))
        files.append(
            FileRecord(rec.path, rec.size, rec.mtime_ns, rec.sha256, position[seg], row, n)
        )
    say(
        f"msearch: merged {sum(len(g) for g in groups)} segments into {len(groups)} "
        f"({len(kept)} now)"
    )
    return Meta(
        root=meta.root,
        model=meta.model,
        chunking=meta.chunking,
        walk=meta.walk,
        files=files,
        dim=meta.dim,
        segments=kept,
        lexical=meta.lexical,
        created=meta.created,
        extra=meta.extra,
        vocab_cache=meta.vocab_cache,
    )


def _merge_group(
    index: IndexReader, members: set[int], copy_rows: int
) -> tuple[SegmentInfo, dict[int, tuple[int, int]]]:
    """The live rows of segments ``members`` copied into a new segment, in
    file-table order; returns its record and each moved file's new rows."""
    folder = new_segment_dir(index.dir)
    writer = SegmentWriter(folder, index.meta.dim)
    try:
        with writing(folder):
            maps = {i: np.full(index.segments[i].rows, -1, dtype=np.int64) for i in members}
            moved: dict[int, tuple[int, int]] = {}
            ordinal = 0
            for f, rec in enumerate(index.meta.files):
                if not rec.rows or rec.segment not in members:
                    continue
                seg = index.segments[rec.segment]
                start = writer.count
                for a in range(rec.row, rec.row + rec.rows, copy_rows):
                    b = min(a + copy_rows, rec.row + rec.rows)
                    rows = np.array(seg.passages[a:b], dtype=np.int32)
                    rows[:, 0] = ordinal
                    writer.append(
                        rows, np.asarray(seg.embeddings[a:b]), np.asarray(seg.keys()[a:b])
                    )
                maps[rec.segment][rec.row : rec.row + rec.rows] = np.arange(start, start + rec.rows)
                moved[f] = (start, rec.rows)
                ordinal += 1
            try:
                lexical = merge_lexical(
                    [(index.segments[i].lexical(), maps[i]) for i in sorted(members)]
                )
            except LexicalFormatError as exc:
                raise IndexCorrupt(f"{exc}; {FIX_HINT}") from None
            info = writer.close(lexical)
        return info, moved
    except BaseException:
        writer.abort()
        raise


def compact_groups(index: IndexReader) -> list[list[int]]:
    """Everything into one segment, unless it already is one with no dead
    rows, its sign bits, their fast-scan order and its int8 codes (a
    segment from before them gets them so)."""
    infos = index.meta.segments
    if (
        len(infos) == 1
        and infos[0].live_rows == infos[0].rows
        and index.segments[0].bits() is not None
        and all((index.segments[0].path / n).exists() for n in search_files(index.meta.dim))
    ):
        return []
    return [list(range(len(infos)))] if infos else []
