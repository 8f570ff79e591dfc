"""Folder to index: walk, chunk, embed and store, re-embedding only what changed.

Rows are always laid out in walk order, file after file, whatever was
re-embedded; an incremental run therefore produces the same rows as a full
rebuild of the same folder, which is what the tests compare.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from msearch import store
from msearch.chunk import ChunkSettings, chunk_texts
from msearch.embed import Embedder, Pending, embed_async
from msearch.errors import IndexCorrupt, IndexNotFound, UsageError
from msearch.lexical import LexicalBuilder
from msearch.walk import (
    FileEntry,
    NotText,
    Skipped,
    WalkOptions,
    check_globs,
    read_bytes,
    text_from_bytes,
    walk,
)

# Passages embedded together: large enough for efficient length-sorted
# batches, small enough that texts never pile up in memory.
WINDOW_PASSAGES = 1024
# Characters of file text chunked together (see chunk.chunk_texts): enough
# lines for a tokenizer to spread over the cores, a bounded amount of text.
CHUNK_BATCH_CHARS = 256 * 1024


class Progress(Protocol):
    """Where indexing reports how far it got (the CLI draws a bar)."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int, passages: int) -> None: ...


class _NoProgress:
    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int, passages: int) -> None:
        pass


@dataclass
class IndexStats:
    files: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    passages: int = 0
    embedded: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    full_reason: str | None = None
    seconds: float = 0.0


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def effective_chunking(settings: ChunkSettings, max_seq_length: int) -> ChunkSettings:
    """Cap the passage size at what the model can see without truncating;
    the overlap is checked against the capped size."""
    if settings.max_tokens < 8:
        raise UsageError("--chunk-tokens must be at least 8")
    if settings.overlap_tokens < 0:
        raise UsageError("--overlap-tokens must not be negative")
    capped = min(settings.max_tokens, max_seq_length)
    if settings.overlap_tokens >= capped:
        raise UsageError(
            f"--overlap-tokens ({settings.overlap_tokens}) must be below the passage size "
            f"({capped} tokens"
            + (
                ", --chunk-tokens capped at the model's maximum)"
                if capped < settings.max_tokens
                else ")"
            )
        )
    return ChunkSettings(capped, settings.overlap_tokens)


def _old_file_rows(old: store.Index) -> dict[str, tuple[store.FileRecord, int, int]]:
    """path -> (record, first row, end row) in the previous generation."""
    col = np.asarray(old.passages[:, 0])
    if len(col) and (col.min() < 0 or col.max() >= len(old.meta.files) or (np.diff(col) < 0).any()):
        raise IndexCorrupt(f"{old.dir / old.meta.data} refers to unknown files")
    starts = np.searchsorted(col, np.arange(len(old.meta.files)), side="left")
    ends = np.searchsorted(col, np.arange(len(old.meta.files)), side="right")
    return {
        rec.path: (rec, int(s), int(e))
        for rec, s, e in zip(old.meta.files, starts, ends, strict=True)
    }


def _full_rebuild_reason(
    old: store.Index, model_record: dict[str, Any], chunking: dict[str, Any], root: Path
) -> str | None:
    if old.meta.model.get("fingerprint") != model_record["fingerprint"]:
        return f"the model changed ({old.meta.model.get('name')} -> {model_record['name']})"
    if old.meta.model.get("precision", "float32") != model_record.get("precision", "float32"):
        return "the precision changed"
    if old.meta.chunking != chunking:
        return "the chunking settings changed"
    if os.path.realpath(old.root) != os.path.realpath(root):
        return "the indexed folder moved"
    return None


def build_index(
    root: Path,
    index_dir: Path,
    embedder: Embedder,
    walk_options: WalkOptions | None = None,
    chunking: ChunkSettings | None = None,
    full: bool = False,
    progress: Progress | None = None,
    notice: Callable[[str], None] | None = None,
    batch_size: int | None = None,
) -> IndexStats:
    """Create or update the index of ``root`` in ``index_dir``.

    Holds the writer lock for the whole run, and commits atomically at the
    end: until then readers see the previous index, untouched.
    """
    t0 = time.perf_counter()
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root}: no such folder")
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    root = root.resolve()
    index_dir = Path(index_dir).absolute()
    if index_dir.name == store.INDEX_DIR_NAME and os.path.realpath(
        index_dir.parent
    ) != os.path.realpath(root):
        raise UsageError(
            f"an index folder named {store.INDEX_DIR_NAME} must lie in the folder it indexes "
            f"({root / store.INDEX_DIR_NAME}); give --index another name"
        )
    wopts = walk_options or WalkOptions()
    say = notice or (lambda _msg: None)
    prog = progress or _NoProgress()

    with store.write_lock(index_dir, notice=say):
        store.prepare_commit_point(index_dir, say)
        store.cleanup(index_dir, keep=_current_data(index_dir))
        record = embedder.record
        settings = effective_chunking(chunking or ChunkSettings(), record.max_seq_length)
        chunk_json = asdict(settings)
        model_json = record.to_json()
        stats = IndexStats()

        old: store.Index | None = None
        old_rows: dict[str, tuple[store.FileRecord, int, int]] = {}
        if not full:
            try:
                old = store.load_index(index_dir)
                old_rows = _old_file_rows(old)
                store.verify_checksums(index_dir, old.meta)  # rows are copied from it
            except IndexNotFound:
                old = None
            except IndexCorrupt as exc:
                old = None
                say(f"msearch: the existing index is damaged ({exc}); rebuilding it")
                stats.full_reason = "the previous index was damaged"
            if old is not None:
                reason = _full_rebuild_reason(old, model_json, chunk_json, root)
                if reason:
                    say(f"msearch: {reason}; rebuilding the whole index")
                    stats.full_reason = reason
                    old = None
        else:
            stats.full_reason = "--full"

        walked = walk(root, wopts, exclude_dirs=[index_dir])
        stats.skipped.extend(walked.skipped)
        if old is None:
            old_rows = {}
        plan = _plan(walked.files, old_rows, wopts, stats)
        stats.removed = len(set(old_rows) - {e.rel for e, _ in plan}) if old is not None else 0
        files_out = [f for _, f in plan if isinstance(f, store.FileRecord)]

        if old is not None and not (stats.added or stats.changed or stats.removed):
            # Nothing to embed or drop: keep the data folder, refresh the file table.
            data_name, count, checksums = old.meta.data, old.meta.count, old.meta.checksums
        else:
            data_name, count, checksums = _write_data(
                index_dir, record.dim, plan, old, embedder, settings, prog, stats, batch_size, wopts
            )
            files_out = [f for _, f in plan if isinstance(f, store.FileRecord)]

        meta = store.Meta(
            root=store.root_record(index_dir, root),
            model=model_json,
            chunking=chunk_json,
            walk=_walk_json(wopts),
            files=files_out,
            count=count,
            dim=record.dim,
            data=data_name,
            created=old.meta.created if old is not None else time.time(),
            updated=time.time(),
            extra={"skipped": sorted(s.rel for s in stats.skipped)},
            checksums=checksums,
        )
        store.commit(index_dir, meta)
        stats.files = len(files_out)
        stats.passages = count
        stats.seconds = time.perf_counter() - t0
        return stats


@dataclass
class _Todo:
    """A file to (re-)embed. Its text is read again when its turn comes, so a
    large change never holds every text in memory."""

    record: store.FileRecord


def _plan(
    files: list[FileEntry],
    old_rows: dict[str, tuple[store.FileRecord, int, int]],
    wopts: WalkOptions,
    stats: IndexStats,
) -> list[tuple[FileEntry, Any]]:
    """Classify every walked file before any work: unchanged (its old record),
    to embed (a _Todo) or skipped. Size and mtime first, then a content hash,
    so a touched but unchanged file is never re-embedded."""
    plan: list[tuple[FileEntry, Any]] = []
    for entry in files:
        prev = old_rows.get(entry.rel)
        if prev is not None and _same_stat(entry, prev[0]):
            plan.append((entry, prev[0]))
            stats.unchanged += 1
            continue
        try:
            data = _read(entry, wopts)
            digest = sha256_bytes(data)
            rec = store.FileRecord(entry.rel, len(data), entry.mtime_ns, digest)
            if prev is not None and prev[0].sha256 == digest:
                plan.append((entry, rec))
                stats.unchanged += 1
                continue
            text_from_bytes(data, wopts.include_noise)  # binary or undecodable: skip it now
        except NotText as exc:
            stats.skipped.append(Skipped(entry.rel, str(exc)))
            continue
        plan.append((entry, _Todo(rec)))
        if prev is None:
            stats.added += 1
        else:
            stats.changed += 1
    return plan


def _write_data(
    index_dir: Path,
    dim: int,
    plan: list[tuple[FileEntry, Any]],
    old: store.Index | None,
    embedder: Embedder,
    settings: ChunkSettings,
    prog: Progress,
    stats: IndexStats,
    batch_size: int | None,
    wopts: WalkOptions,
) -> tuple[str, int, dict[str, int]]:
    """Stream every row of the new generation into a fresh data folder.

    Rows of unchanged files are copied from the old generation; the others
    are chunked and embedded a window at a time, then written in file order.
    """
    old_rows = {f.path: (s, e) for f, s, e in _old_file_rows(old).values()} if old else {}
    writer = store.DataWriter(index_dir, dim)
    try:
        pending: list[tuple[int, Any]] = []  # (file index, old row range | passages)
        pending_passages = 0
        pending_bytes = 0  # credited to progress once embedded, so the ETA is honest
        # The window whose vectors are on their way: written once the next
        # window is submitted, so a GPU computes while this thread reads and
        # chunks (see embed.embed_async). Rows are still written in order.
        inflight: _Window | None = None

        # The BM25 side, fed window by window in row order: passage texts are
        # never all held at once.
        lexical = LexicalBuilder()

        def write(window: _Window) -> None:
            vecs = window.vectors() if window.vectors is not None else None
            texts: list[str] = []  # the window's passages in row order, for BM25
            pos = 0
            for file_idx, item in window.items:
                if isinstance(item, list):
                    n = len(item)
                    if n == 0:
                        continue
                    assert vecs is not None
                    rows = np.array(
                        [(file_idx, p.start_line, p.end_line, p.start, p.end) for p in item],
                        dtype=np.int32,
                    )
                    writer.append(vecs[pos : pos + n], rows)
                    texts.extend(p.text for p in item)
                    pos += n
                    stats.embedded += n
                    prog.advance(0, 0, n)
                else:
                    assert old is not None
                    s, e, path = item
                    rows = np.array(old.passages[s:e], dtype=np.int32)
                    rows[:, 0] = file_idx
                    writer.append(np.asarray(old.embeddings[s:e]), rows)
                    if e > s:
                        texts.extend(_passage_texts(path, rows, wopts))
            lexical.add(texts)
            prog.advance(0, window.nbytes, 0)

        def flush() -> None:
            nonlocal pending, pending_passages, pending_bytes, inflight
            texts = [p.text for _, item in pending if isinstance(item, list) for p in item]
            job = embed_async(embedder, texts, batch_size) if texts else None
            if inflight is not None:
                write(inflight)
            inflight = _Window(pending, job, pending_bytes)
            pending, pending_passages, pending_bytes = [], 0, 0

        # Files read but not yet chunked: (file index, text, size). Chunked
        # together, so that their lines are tokenized in one call.
        batch: list[tuple[int, str, int]] = []
        batch_chars = 0

        def chunk_batch() -> None:
            nonlocal batch, batch_chars, pending_passages, pending_bytes
            if not batch:
                return
            texts = [text for _, text, _ in batch]
            chunked = chunk_texts(texts, embedder.counter, settings)
            for (idx, _, size), passages in zip(batch, chunked, strict=True):
                pending_bytes += size
                # A long file goes in window-sized parts (its rows stay
                # contiguous), so memory is bounded by the window, not the file.
                for s in range(0, max(len(passages), 1), WINDOW_PASSAGES):
                    part = passages[s : s + WINDOW_PASSAGES]
                    pending.append((idx, part))
                    pending_passages += len(part)
                    if pending_passages >= WINDOW_PASSAGES:
                        flush()
            batch, batch_chars = [], 0

        prog.start(len(plan), sum(e.size for e, a in plan if isinstance(a, _Todo)))
        file_idx = 0
        for i, (entry, action) in enumerate(plan):
            if isinstance(action, _Todo):
                try:
                    text = text_from_bytes(_read(entry, wopts), True)
                except NotText as exc:  # vanished or changed under us since planning
                    stats.skipped.append(Skipped(entry.rel, str(exc)))
                    plan[i] = (entry, None)
                    prog.advance(1, entry.size, 0)
                    continue
                batch.append((file_idx, text, entry.size))
                batch_chars += len(text)
                plan[i] = (entry, action.record)
                if batch_chars >= CHUNK_BATCH_CHARS:
                    chunk_batch()
            else:
                chunk_batch()  # rows stay in file order
                pending.append((file_idx, (*old_rows[entry.rel], entry.path)))
            file_idx += 1
            prog.advance(1, 0, 0)
        chunk_batch()
        flush()
        if inflight is not None:
            write(inflight)

        def save_lexical(folder: Path) -> None:
            lexical.finish().save(folder)

        name = writer.finish(save_lexical)
        return name, writer.count, writer.checksums
    except BaseException:
        writer.abort()
        raise


@dataclass
class _Window:
    """Files submitted together: their passages (or old row ranges), the
    vectors on their way and the bytes to credit to progress once written."""

    items: list[tuple[int, Any]]
    vectors: Pending | None
    nbytes: int


def _read(entry: FileEntry, wopts: WalkOptions) -> bytes:
    """A walked file's bytes, within the size limit, never through a link
    that appeared since the walk unless links are followed."""
    return read_bytes(entry.path, wopts.max_file_size, follow=wopts.follow_symlinks)


def _passage_texts(path: Path, rows: np.ndarray, wopts: WalkOptions) -> list[str]:
    """An unchanged file's passage texts, for the lexical index: read again and
    cut at the stored character offsets (no re-chunking, no re-embedding)."""
    try:
        text = text_from_bytes(
            read_bytes(path, wopts.max_file_size, follow=wopts.follow_symlinks),
            include_noise=True,
        )
    except NotText:
        return [""] * len(rows)  # vanished since planning: its rows go stale
    return [text[int(a) : int(b)] for a, b in rows[:, 3:5]]


def _current_data(index_dir: Path) -> str | None:
    try:
        return store.read_meta(index_dir).data
    except Exception:
        return None


def _same_stat(entry: FileEntry, rec: store.FileRecord) -> bool:
    return entry.size == rec.size and entry.mtime_ns == rec.mtime_ns


def _walk_json(opts: WalkOptions) -> dict[str, Any]:
    data = asdict(opts)
    data["include"] = list(opts.include)
    data["exclude"] = list(opts.exclude)
    return data


def walk_options_from_json(data: dict[str, Any]) -> WalkOptions:
    """The walking options an index records, type-checked (the index may
    come from anywhere): anything malformed is ``IndexCorrupt``."""
    known = {k: data[k] for k in WalkOptions.__dataclass_fields__ if k in data}
    try:
        for key in ("hidden", "follow_symlinks", "use_ignore_files", "include_noise"):
            if key in known and type(known[key]) is not bool:
                raise ValueError(f"{key} is not true or false")
        size = known.get("max_file_size", 1)
        if type(size) is not int or size < 1:
            raise ValueError("max_file_size is not a positive integer")
        for key in ("include", "exclude"):
            globs = known.get(key, [])
            if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
                raise ValueError(f"{key} is not a list of globs")
            known[key] = tuple(globs)
            check_globs(known[key], key)
    except (ValueError, UsageError) as exc:
        raise IndexCorrupt(
            f"the index's walking options are malformed ({exc}); "
            "rebuild it with `msearch index --full DIR`"
        ) from None
    return WalkOptions(**known)
