"""Folder to index: walk, plan, chunk, embed into a new segment, merge.

An update costs what changed: unchanged files are not read (size and mtime
match, or their content hash does); the passages of added and changed files
go into one new segment, and only those whose text is new are embedded (the
vector of a passage that a changed or renamed file still contains is
copied, keyed by a hash of its text); the rows the changed and removed
files had become dead; nothing else is rewritten. Then the merge policy
(msearch.merge) may merge small segments.

Who turns the files to embed into segments is a ``SegmentsWriter``: this
process by default (one segment), or a Ray cluster (msearch.distributed,
one segment per block of files). Everything else (the walk, the plan, the
reuse pool, dead rows, the commit, merges) is the same for both.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msearch import merge
from msearch.chunking import ChunkSettings
from msearch.config import DEFAULT, IndexConfig
from msearch.encoders import Embedder
from msearch.errors import IndexCorrupt, IndexNotFound, IndexTooNew, UsageError
from msearch.lexical import LexicalParams
from msearch.pipeline import (
    Embed,
    IndexStats,
    Progress,
    SegmentsWriter,
    WriteJob,
    _NoProgress,
    _read,
    key_salt,
    passage_keys,
    vectors_started,
    write_one_segment,
)
from msearch.storage.disk import open_folder, seal, writing
from msearch.storage.layout import (
    FIX_HINT,
    INDEX_DIR_NAME,
    META_NAME,
    root_record,
)
from msearch.storage.migrate import v1_pool
from msearch.storage.ownership import (
    cleanup,
    commit,
    current_segments,
    new_owned_dir,
    prepare_commit_point,
    write_lock,
)
from msearch.storage.reader import IndexReader, check_paths, load_index, verify_checksums
from msearch.storage.record import (
    FileRecord,
    IndexOutdated,
    Meta,
    SegmentInfo,
    content_hash,
)
from msearch.storage.safefs import open_beneath, read_limited
from msearch.vectors import finish_pending
from msearch.walk import (
    FileEntry,
    NotText,
    Skipped,
    WalkOptions,
    check_globs,
    text_from_bytes,
    walk,
)

# An update checks the checksums of every segment under this size (cheap);
# larger ones are checked by ``status`` and whenever a merge reads them.
VERIFY_BYTES = 64 << 20


# ---------------------------------------------------------------- the plan


@dataclass
class Keep:
    """An unchanged file: its rows stay where they are."""

    entry: FileEntry
    record: FileRecord


def effective_chunking(
    settings: ChunkSettings, max_seq_length: int, prompt_tokens: int = 0
) -> tuple[ChunkSettings, ChunkSettings]:
    """(the settings to record, the settings to chunk with).

    The passage size is capped at what the model can see without
    truncating; the index records that. The model then sees the document
    prompt in front of every passage, so passages are cut that much
    smaller (a prompt's tokens count toward the passage's size); the
    overlap is checked against what is left."""
    if settings.max_tokens < 8:
        raise UsageError("--chunk-tokens must be at least 8")
    if settings.overlap_tokens < 0:
        raise UsageError("--overlap-tokens must not be negative")
    capped = min(settings.max_tokens, max_seq_length)
    room = capped - prompt_tokens
    if room < 8:
        raise UsageError(
            f"the model's document prompt takes {prompt_tokens} of the passage's {capped} "
            "tokens: no room left for text (raise --chunk-tokens)"
        )
    if settings.overlap_tokens >= room:
        what = (
            ", --chunk-tokens capped at the model's maximum" if capped < settings.max_tokens else ""
        )
        what += f", less {prompt_tokens} for the model's document prompt" if prompt_tokens else ""
        raise UsageError(
            f"--overlap-tokens ({settings.overlap_tokens}) must be below the passage size "
            f"({room} tokens{what})"
        )
    return ChunkSettings(capped, settings.overlap_tokens, settings.structure), ChunkSettings(
        room, settings.overlap_tokens, settings.structure
    )


def _full_rebuild_reason(
    old: IndexReader,
    model_record: dict[str, Any],
    chunking: dict[str, Any],
    root: Path,
    lexical: dict[str, Any],
) -> str | None:
    if old.meta.model.get("fingerprint") != model_record["fingerprint"]:
        return f"the model changed ({old.meta.model.get('name')} -> {model_record['name']})"
    if old.meta.model.get("precision", "float32") != model_record.get("precision", "float32"):
        return "the precision changed"
    for key in ("query_prompt", "document_prompt"):
        if old.meta.model.get(key, "") != model_record.get(key, ""):
            return "the model's prompts changed"
    if old.meta.chunking != chunking:
        return "the chunking settings changed"
    if os.path.realpath(old.root) != os.path.realpath(root):
        return "the indexed folder moved"
    if old.meta.lexical != lexical:
        return "the lexical settings changed"
    return None


def check_root(root: Path) -> Path:
    """``root`` if it is a folder to index, else a ``UsageError`` that says
    why: no such folder, not a folder, permission denied, or (a relative
    path in a current folder that was deleted) no current folder."""
    if not root.is_absolute():
        try:
            os.getcwd()
        except OSError as exc:
            raise UsageError(
                f"cannot tell the current folder ({exc.strerror}); "
                "was it deleted? cd to a folder that exists"
            ) from None
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise UsageError(f"{root}: no such folder") from None
    except OSError as exc:
        raise UsageError(f"{root}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{root}: not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UsageError(f"{root}: {os.strerror(errno.EACCES)} (msearch cannot list it)")
    return root


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
    compact: bool = False,
    segments_writer: SegmentsWriter | None = None,
    config: IndexConfig = DEFAULT,
    lexical: LexicalParams | None = None,
    verify_all: bool = False,
    vectors: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> IndexStats:
    """Create or update the index of ``root`` in ``index_dir``; with
    ``compact``, then merge every segment into one. ``segments_writer``
    makes the new segments (default: this process, one segment; see
    msearch.distributed for a Ray cluster). ``config``: the merge policy and
    the embedding window. ``lexical``: how passages are tokenized for BM25
    (default ``LexicalParams.default()``; another only for measurements,
    such as the benchmarks' ablations). ``verify_all``: compare every
    segment's checksums before reusing it (by default only small segments',
    which cost little; a long-running watcher does it at its first update).

    Words first (with this process's writer): the new passages are
    committed without vectors (pending segments, searchable by their words
    at once), then, with ``vectors``, each pending segment is embedded and
    committed in turn (msearch.vectors; also those an interrupted run
    left), until ``should_stop()`` says to leave the rest for later.
    Without ``vectors`` the caller embeds them (``finish_pending``: a
    watcher does it in a thread, so that an update never waits long).

    Holds the writer lock for the whole run, and commits atomically (the
    words, each segment's vectors, then each merge): readers see the
    previous commit until the next.
    """
    t0 = time.perf_counter()
    root = check_root(Path(root)).resolve()
    index_dir = Path(index_dir).absolute()
    if index_dir.name == INDEX_DIR_NAME and os.path.realpath(index_dir.parent) != os.path.realpath(
        root
    ):
        raise UsageError(
            f"an index folder named {INDEX_DIR_NAME} must lie in the folder it indexes "
            f"({root / INDEX_DIR_NAME}); give --index another name"
        )
    wopts = walk_options or WalkOptions()
    say = notice or (lambda _msg: None)
    prog = progress or _NoProgress()

    with write_lock(index_dir, notice=say):
        prepare_commit_point(index_dir, say)
        cleanup(index_dir, keep=current_segments(index_dir))
        record = embedder.record
        recorded, settings = effective_chunking(
            chunking or ChunkSettings(), record.max_seq_length, embedder.document_prompt_tokens
        )
        chunk_json = asdict(recorded)
        model_json = record.to_json()
        lexical_params = lexical or LexicalParams.default()
        lexical_json = lexical_params.to_json()
        stats = IndexStats()
        old, convert = (
            (None, False)
            if full
            else _open_previous(
                index_dir, model_json, chunk_json, root, say, stats, lexical_json, verify_all
            )
        )
        if full:
            stats.full_reason = "--full"

        walked = walk(root, wopts, exclude_dirs=[index_dir])
        stats.skipped.extend(walked.skipped)
        known = {f.path: f for f in old.meta.files} if old is not None else {}
        plan = _plan(walked.files, known, wopts, stats)
        kept_paths = {item.entry.rel for item in plan}
        removed = [rec for path, rec in known.items() if path not in kept_paths]
        stats.removed = len(removed)

        salt = key_salt(model_json, chunk_json)
        segments = list(old.meta.segments) if old is not None else []
        new_names: set[str] = set()
        todo = [item for item in plan if isinstance(item, Embed)]
        if todo:
            if convert:
                pool = _v1_pool(index_dir, root, salt, wopts, model_json)
            else:
                pool = _reuse_pool(old, [i.old for i in todo if i.old] + removed)
            job = WriteJob(
                root,
                index_dir,
                record.dim,
                todo,
                embedder,
                settings,
                salt,
                pool,
                prog,
                stats,
                batch_size,
                wopts,
                len(segments),
                config.window,
                lexical_params,
                defer=segments_writer is None,
                segment_rows=config.pending_rows,
            )
            written = (segments_writer or write_one_segment)(job)
            segments.extend(written)
            new_names = {info.name for info in written}
        # Rows of changed and removed files die: the segments' live counts
        # drop by what they held (the file table no longer points at them).
        dead = [i.old for i in todo if i.old is not None] + removed
        if old is not None and dead:
            segments = _kill_rows(old, segments, dead)
        files = [item.record for item in plan]
        segments, files = _drop_empty(segments, files)
        vocab_cache = _vocab_cache(index_dir, embedder, old)
        meta = Meta(
            root=root_record(index_dir, root),
            model=model_json,
            chunking=chunk_json,
            walk=_walk_json(wopts),
            files=files,
            dim=record.dim,
            segments=segments,
            lexical=lexical_json,
            created=old.meta.created if old is not None else time.time(),
            extra={"skipped": sorted(s.rel for s in stats.skipped)},
            vocab_cache=vocab_cache,
        )
        commit(index_dir, meta)
        stats.searchable_seconds = time.perf_counter() - t0
        new = [i for i, s in enumerate(meta.segments) if s.name in new_names]
        if vectors:
            if meta.waiting:
                vectors_started(prog, meta.waiting)
            done = finish_pending(
                index_dir,
                embedder,
                batch_size=batch_size,
                config=config,
                on_embedded=lambda n: prog.advance(0, 0, n),
                should_stop=should_stop,
                locked=True,
            )
            stats.embedded += done.embedded
            if segments_writer is None:  # (a Ray cluster writes its own segments)
                _rejoin(index_dir, new, config)
        meta = _merge_as_needed(index_dir, compact, say, config)
        stats.pending = meta.waiting
        stats.files = len(meta.files)
        stats.passages = meta.count
        stats.segments = len(meta.segments)
        stats.seconds = time.perf_counter() - t0
        return stats


def _vocab_cache(index_dir: Path, embedder: Embedder, old: IndexReader | None) -> str:
    """The index's cache of the model's vocabulary for cold queries (see
    msearch.encoders.vocab_cache): the previous index's if it is this
    model's and intact, else written now; "" for a model that needs none."""
    from msearch.encoders.vocab_cache import CACHE_FILES, cache_key

    # The same model had one: keep it (asking the model would read its
    # whole tokenizer.json, on every run).
    if old is not None and old.meta.vocab_cache.startswith(
        f"{cache_key(embedder.record.fingerprint)}-"
    ):
        try:
            with open_folder(index_dir, old.meta.vocab_cache) as kept:
                if kept.intact(CACHE_FILES):
                    return old.meta.vocab_cache
        except (OSError, IndexCorrupt):
            pass  # gone or damaged: write a new one; cleanup removes the old
    key = embedder.query_cache_name()
    if not key:
        return ""
    name = f"{key}-{uuid.uuid4().hex[:8]}"
    folder = new_owned_dir(index_dir, name)
    with writing(folder):
        try:
            embedder.write_query_cache(folder)
        except (ValueError, KeyError, IndexError, TypeError):
            return ""  # a tokenizer.json the cache does not read: queries load it whole
        seal(folder)
    return name


def _open_previous(
    index_dir: Path,
    model_json: dict[str, Any],
    chunk_json: dict[str, Any],
    root: Path,
    say: Callable[[str], None],
    stats: IndexStats,
    lexical_json: dict[str, Any],
    verify_all: bool = False,
) -> tuple[IndexReader | None, bool]:
    """The index to update, or None to build anew (with the reason said);
    and whether it is one of schema 1 to convert."""
    try:
        old = load_index(index_dir)
        small = {
            s.name
            for s, seg in zip(old.meta.segments, old.segments, strict=True)
            if seg.rows * (old.meta.dim * 4 + 64) < VERIFY_BYTES
        }
        verify_checksums(index_dir, old.meta, None if verify_all else small)
        check_paths(old)  # a file "outside" would be a removed file: rebuild instead
        # Kept segments' BM25 statistics, every posting: of the small segments
        # at each update (as their checksums), of all at a watcher's first.
        for info, seg in zip(old.meta.segments, old.segments, strict=True):
            if verify_all or info.name in small:
                seg.check_lexical()
    except IndexNotFound:
        return None, False
    except IndexTooNew:
        raise  # never rebuild (and delete) an index a newer msearch made; --full can
    except IndexOutdated:
        say(
            "msearch: this index was made by an older msearch; converting it "
            "(passages whose text is unchanged keep their vectors)"
        )
        stats.full_reason = "the index was made by an older msearch"
        return None, True
    except IndexCorrupt as exc:
        say(f"msearch: the existing index is damaged ({exc}); rebuilding it")
        stats.full_reason = "the previous index was damaged"
        return None, False
    reason = _full_rebuild_reason(old, model_json, chunk_json, root, lexical_json)
    if reason:
        say(f"msearch: {reason}; rebuilding the whole index")
        stats.full_reason = reason
        return None, False
    return old, False


def _plan(
    files: list[FileEntry],
    known: dict[str, FileRecord],
    wopts: WalkOptions,
    stats: IndexStats,
) -> list[Keep | Embed]:
    """Classify every walked file before any work: unchanged (Keep) or to
    embed; what cannot be read or is not text is skipped (in ``stats``).
    Whether a file is unchanged is ``FileRecord.unchanged``'s rule: a
    touched but unchanged file is never re-embedded, an unchanged one never
    read."""
    plan: list[Keep | Embed] = []
    now_ns = time.time_ns()
    data: bytes | None = None

    def content(path: Path) -> bytes:
        nonlocal data
        data = _read(path, wopts)
        return data

    for entry in files:
        prev = known.get(entry.rel)
        data = None
        try:
            if prev is not None and prev.unchanged(
                entry.size, entry.mtime_ns, functools.partial(content, entry.path)
            ):
                if data is not None:  # read to compare: its mtime is recorded anew
                    mtime = settled_mtime(entry.mtime_ns, now_ns)
                    prev = FileRecord(
                        entry.rel, len(data), mtime, prev.sha256, prev.segment, prev.row, prev.rows
                    )
                plan.append(Keep(entry, prev))
                stats.unchanged += 1
                continue
            if data is None:
                data = content(entry.path)
            digest = content_hash(data)
            text_from_bytes(data, wopts.include_noise)  # binary or undecodable: skip it now
        except NotText as exc:
            stats.skipped.append(Skipped(entry.rel, str(exc)))
            continue
        mtime = settled_mtime(entry.mtime_ns, now_ns)
        plan.append(Embed(entry, FileRecord(entry.rel, len(data), mtime, digest), prev))
        if prev is None:
            stats.added += 1
        else:
            stats.changed += 1
    return plan


RACY_NS = 2_000_000_000  # the coarsest common mtime step (FAT); ext4 ticks in ms


def settled_mtime(mtime_ns: int, read_ns: int) -> int:
    """The mtime to record for a file read at ``read_ns``: its own, unless it
    is so recent that a write in the same timestamp step could follow
    unseen (same size, same mtime, other bytes: a save twice within a
    tick under ``msearch watch``). Such a file is recorded with -1, which
    no mtime matches, so the next run reads and hashes it again (git's
    "racily clean" rule)."""
    return -1 if mtime_ns >= read_ns - RACY_NS else mtime_ns


def _reuse_pool(old: IndexReader | None, records: list[FileRecord]) -> dict[bytes, np.ndarray]:
    """Passage key -> vector, for the rows of the files an update replaces or
    removes (a renamed file's passages are found among the removed)."""
    pool: dict[bytes, np.ndarray] = {}
    if old is None:
        return pool
    waiting: dict[int, set[int]] = {}  # a pending segment's rows without a vector
    for rec in records:
        if not rec.rows:
            continue
        seg = old.segments[rec.segment]
        if seg.pending and rec.segment not in waiting:
            waiting[rec.segment] = set(seg.pending_rows().tolist())
        skip = waiting.get(rec.segment, set())
        keys = np.asarray(seg.keys()[rec.row : rec.row + rec.rows])
        vecs = np.asarray(seg.embeddings[rec.row : rec.row + rec.rows])
        for i, (k, v) in enumerate(zip(keys, vecs, strict=True)):
            if rec.row + i not in skip:
                pool[k.tobytes()] = v
    return pool


def _v1_pool(
    index_dir: Path, root: Path, salt: bytes, wopts: WalkOptions, model: dict[str, Any]
) -> dict[bytes, np.ndarray]:
    """The vectors of a schema-1 index to reuse (msearch.storage.migrate),
    its files read as a walk reads them, inside the root."""

    def text_of(path: str, size: int, digest: str) -> str | None:
        try:
            fh, _ = open_beneath(root, path, wopts.follow_symlinks, wopts.max_file_size)
            with fh:
                data = read_limited(fh, wopts.max_file_size, path)
            if len(data) != size or content_hash(data) != digest:
                return None
            return text_from_bytes(data, include_noise=True)
        except (OSError, NotText):
            return None

    return v1_pool(index_dir, model, text_of, lambda texts: passage_keys(texts, salt))


def _kill_rows(
    old: IndexReader, segments: list[SegmentInfo], dead: list[FileRecord]
) -> list[SegmentInfo]:
    """The segments' live counts, less the rows of ``dead`` files (their
    lengths read from the lexical statistics: only those rows)."""
    out = [replace(s) for s in segments]
    for rec in dead:
        if not rec.rows:
            continue
        info = out[rec.segment]
        lengths = old.segments[rec.segment].lexical().lengths[rec.row : rec.row + rec.rows]
        info.live_rows -= rec.rows
        info.live_tokens -= int(np.asarray(lengths, dtype=np.int64).sum())
        if info.live_rows < 0 or info.live_tokens < 0:
            raise IndexCorrupt(f"{old.dir / META_NAME}: live counts went negative")
    return out


def _drop_empty(
    segments: list[SegmentInfo], files: list[FileRecord]
) -> tuple[list[SegmentInfo], list[FileRecord]]:
    """Segments with no live row are dropped (their folders are removed by
    cleanup after the commit); file records are renumbered."""
    position: dict[int, int] = {}
    kept: list[SegmentInfo] = []
    for i, info in enumerate(segments):
        if info.live_rows > 0:
            position[i] = len(kept)
            kept.append(info)
    for rec in files:
        if rec.rows == 0:
            rec.segment = rec.row = 0  # no passages, no rows: recorded as (0, 0, 0)
        else:
            rec.segment = position[rec.segment]
    return kept, files


def _rejoin(index_dir: Path, positions: list[int], config: IndexConfig) -> None:
    """The pending segments one update wrote (a few thousand passages each,
    so that an interruption loses little), once all have their vectors,
    merged into one: what the update would have written in one go, so an
    index has no more segments (files a cold query opens) than before."""
    if len(positions) < 2:
        return
    index = load_index(index_dir)
    if any(index.meta.segments[i].pending for i in positions):
        return  # stopped early: the merge policy takes them later
    commit(index_dir, merge.merge(index, [positions], copy_rows=config.copy_rows))


def _merge_as_needed(
    index_dir: Path, compact: bool, say: Callable[[str], None], config: IndexConfig
) -> Meta:
    """Merge what the policy (or ``compact``) asks for, committing each time."""
    index = load_index(index_dir)
    infos = index.meta.segments
    # A pending segment is merged once its vectors are in (a merge copies them).
    finished = [i for i, s in enumerate(infos) if not s.pending]
    if len(finished) == len(infos):
        groups = merge.compact_groups(index) if compact else config.merge.plan(infos)
    elif compact:
        groups = [finished] if len(finished) > 1 else []
    else:
        groups = [[finished[i] for i in g] for g in config.merge.plan([infos[i] for i in finished])]
    if not groups:
        return index.meta
    meta = merge.merge(index, groups, say if compact else (lambda _m: None), config.copy_rows)
    commit(index_dir, meta)
    if not compact:  # one merge may fill the next tier
        return _merge_as_needed(index_dir, False, say, config)
    return meta


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
            f"the index's walking options are malformed ({exc}); {FIX_HINT}"
        ) from None
    return WalkOptions(**known)


def chunking_from_json(data: Any) -> ChunkSettings:
    """The chunking settings an index records, type-checked (an index of an
    older msearch records no ``structure``: its passages are plain)."""
    sizes = {"max_tokens", "overlap_tokens"}
    if (
        not isinstance(data, dict)
        or set(data) - {"structure"} != sizes
        or not all(type(data[k]) is int for k in sizes)
        or type(data.get("structure", False)) is not bool
    ):
        raise IndexCorrupt(f"the index's chunking settings are malformed; {FIX_HINT}")
    return ChunkSettings(data["max_tokens"], data["overlap_tokens"], data.get("structure", False))
