"""Planned files to segment files: read again, chunked, keyed, embedded or
reused, written.

Who turns the files to embed into segments is a ``SegmentsWriter``: this
process by default (:func:`write_one_segment`, one segment), or a Ray
cluster (msearch.distributed, one segment per block of files). Both
read a file as the plan saw it (:func:`file_text`), chunk it with the
index's chunker (msearch.chunking), key each passage by its text
(:func:`passage_keys`) so that a vector already made is reused, and hand
the rows to the segment codec (msearch.storage.segment).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from msearch.chunking import ChunkSettings, Passage, chunker_for
from msearch.chunking.parallel import chunk_batches, workers_for
from msearch.config import DEFAULT
from msearch.encoders import Embedder, Pending, embed_async
from msearch.lexical import LexicalParams
from msearch.storage.disk import writing
from msearch.storage.ownership import new_segment_dir
from msearch.storage.record import FileRecord, SegmentInfo
from msearch.storage.segment import KEY_BYTES, PASSAGE_COLUMNS, SegmentWriter
from msearch.walk import FileEntry, NotText, Skipped, WalkOptions, read_bytes, text_from_bytes

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

    def vectors(self, total: int) -> None:
        pass


def vectors_started(progress: Progress, total: int) -> None:
    """Tell ``progress`` that the words are committed and ``total``
    passages are left to embed (a progress without ``vectors`` just keeps
    counting passages)."""
    tell = getattr(progress, "vectors", None)
    if tell is not None:
        tell(total)


@dataclass
class IndexStats:
    files: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    passages: int = 0
    embedded: int = 0
    reused: int = 0
    pending: int = 0  # live passages still without a vector (searchable by words)
    # Seconds until the words of every new passage were committed (searchable).
    searchable_seconds: float = 0.0
    segments: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    full_reason: str | None = None
    seconds: float = 0.0


@dataclass
class Embed:
    """An added or changed file: chunked, and its new passages embedded.
    ``old`` is the record it replaces (None when added)."""

    entry: FileEntry
    record: FileRecord
    old: FileRecord | None


@dataclass
class WriteJob:
    """What an update hands its ``SegmentsWriter``: the added and changed
    files (``todo``, in walk order) and everything needed to turn them into
    segments."""

    root: Path  # the folder indexed (resolved); ``todo``'s paths lie under it
    index_dir: Path
    dim: int
    todo: list[Embed]
    embedder: Embedder
    settings: ChunkSettings  # the chunking to apply (see effective_chunking)
    salt: bytes  # of passage_keys
    pool: dict[bytes, np.ndarray]  # passage key -> a vector to reuse
    progress: Progress
    stats: IndexStats
    batch_size: int | None
    walk_options: WalkOptions
    position: int  # the position in the index of the first new segment
    window: int = DEFAULT.window  # passages embedded together (IndexConfig.window)
    # How passages are tokenized for BM25 (None: LexicalParams.default()).
    lexical: LexicalParams | None = None
    # Words first: write pending segments, vectors later (msearch.vectors).
    defer: bool = False
    segment_rows: int = DEFAULT.pending_rows  # rows of a pending segment


class SegmentsWriter(Protocol):
    def __call__(self, job: WriteJob) -> list[SegmentInfo]:
        """Write the passages of ``job.todo`` into new segment folders
        (``new_segment_dir``; the caller holds the writer lock) and
        return them, in order: they take positions ``job.position``,
        ``job.position + 1``, ... Fill in each item's record (segment,
        row, rows; a file unreadable by now: see ``mark_unread``) and count
        ``embedded`` and ``reused`` in ``job.stats``. Raise on failure,
        having removed every folder it made: nothing is committed then."""
        ...


def passage_keys(texts: Sequence[str], salt: bytes) -> np.ndarray:
    """One 16-byte key per passage text: BLAKE2b keyed with ``salt``, a
    digest of what else decides a vector (model fingerprint, precision,
    chunking), so a key matches only a vector that the same text would get
    again."""
    out = np.empty((len(texts), KEY_BYTES), dtype=np.uint8)
    for i, text in enumerate(texts):
        h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES, key=salt)
        out[i] = np.frombuffer(h.digest(), dtype=np.uint8)
    return out


def key_salt(model: dict[str, Any], chunking: dict[str, Any]) -> bytes:
    """The salt of :func:`passage_keys` for an index's model and settings."""
    facts = {
        "fingerprint": model.get("fingerprint"),
        "precision": model.get("precision", "float32"),
        "chunking": chunking,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).digest()[:32]


@dataclass
class _Item:
    """Rows of one file (or part of one) waiting to be written: vectors for
    the rows in ``todo`` are still to come from the embedder."""

    rows: np.ndarray  # int32 (n, 5)
    keys: np.ndarray  # uint8 (n, 16)
    vectors: np.ndarray  # float32 (n, dim); rows in ``todo`` filled in later
    todo: list[int]
    texts: list[str] | None  # for the lexical statistics; None for copied rows
    nbytes: int = 0
    symbols: list[tuple[str, ...]] | None = None  # what each passage defines


@dataclass
class _Window:
    items: list[_Item]
    vectors: Pending | None


class EmbedWindow:
    """The passages of a new segment on their way to its writer (the codec,
    msearch.storage.segment): those waiting to be embedded, and the window
    in flight (submitted to the embedder, written once the next is
    submitted, so a GPU computes while the host reads and chunks). Rows
    reach the writer in the order they were added, whatever is embedded
    or reused; memory is bounded by the window, not by the files.

    ``embed(texts)`` starts embedding and returns a callable that waits for
    the vectors (see :func:`msearch.encoders.embed_async`); None where
    every row comes with its vector (a Ray cluster embedded them).
    """

    def __init__(
        self,
        writer: SegmentWriter,
        embed: Callable[[list[str]], Pending] | None = None,
        window: int = DEFAULT.window,
        on_write: Callable[[int, int], None] | None = None,
    ) -> None:
        """``on_write(n, b)`` is told of ``n`` newly embedded passages and
        ``b`` bytes of text written."""
        self.writer = writer
        self.dim = writer.dim
        self.embed = embed
        self.window = window
        self.on_write = on_write or (lambda _n, _b: None)
        self.next_row = 0  # rows added: the row the next one will be
        self.embedded = 0
        self.ordinals = 0
        self._pending: list[_Item] = []
        self._pending_todo = 0
        self._pending_rows = 0
        self._inflight: _Window | None = None

    def add_file(
        self,
        rows: np.ndarray,
        keys: np.ndarray,
        texts: list[str],
        reused: np.ndarray | None = None,
        nbytes: int = 0,
        symbols: list[tuple[str, ...]] | None = None,
    ) -> int:
        """The passages of one file (``rows``: start line, end line, start
        char, end char; the file's ordinal is filled in and returned).
        ``reused`` holds a vector for every passage that need not be
        embedded again and NaN in the first element of the others.
        ``symbols``: what each passage defines (for the lexical side)."""
        ordinal = self.ordinals
        self.ordinals += 1
        n = len(rows)
        full = np.empty((n, len(PASSAGE_COLUMNS)), dtype=np.int32)
        full[:, 0] = ordinal
        full[:, 1:] = np.asarray(rows, dtype=np.int32).reshape(n, 4)
        vectors = (
            np.asarray(reused, dtype=np.float32)
            if reused is not None
            else np.full((n, self.dim), np.nan, dtype=np.float32)
        )
        todo = [i for i in range(n) if np.isnan(vectors[i, 0])] if n else []
        self.next_row += n
        if todo and self.embed is None and not self.writer.deferred:
            raise ValueError("this window has no embedder: every row needs its vector")
        # A long file goes in window-sized parts, so memory is bounded by the
        # window, not by the file (its rows stay contiguous).
        step = max(self.window, 1)
        for s in range(0, max(n, 1), step):
            part = [i - s for i in todo if s <= i < s + step]
            self._pending.append(
                _Item(
                    full[s : s + step],
                    np.asarray(keys[s : s + step], dtype=np.uint8),
                    vectors[s : s + step],
                    part,
                    texts[s : s + step],
                    nbytes if s == 0 else 0,
                    symbols[s : s + step] if symbols is not None else None,
                )
            )
            self._pending_todo += len(part)
            self._pending_rows += len(full[s : s + step])
            # A window of passages to embed, or of rows held (reused vectors
            # and texts): memory stays bounded either way.
            if self._pending_todo >= self.window or self._pending_rows >= 4 * self.window:
                self.flush()
        return ordinal

    def flush(self) -> None:
        """Submit the waiting passages to the embedder; write the window that
        was in flight before them."""
        texts = [it.texts[i] for it in self._pending if it.texts is not None for i in it.todo]
        job = self.embed(texts) if texts and self.embed is not None else None
        if self._inflight is not None:
            self._write(self._inflight)
        self._inflight = _Window(self._pending, job) if self._pending else None
        self._pending, self._pending_todo, self._pending_rows = [], 0, 0

    def _write(self, window: _Window) -> None:
        vecs = window.vectors() if window.vectors is not None else None
        pos = 0
        for it in window.items:
            done = 0
            if it.todo and vecs is not None:
                it.vectors[it.todo] = vecs[pos : pos + len(it.todo)]
                pos += len(it.todo)
                done = len(it.todo)
            # Without an embedder (a deferred writer) they stay NaN: pending.
            self.writer.append(it.rows, it.vectors, it.keys, it.texts, it.symbols)
            self.embedded += done
            self.on_write(done, it.nbytes)

    def close(self) -> SegmentInfo:
        """Write what is left; the segment's record (see SegmentWriter.close)."""
        self.flush()
        if self._inflight is not None:
            self._write(self._inflight)
            self._inflight = None
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def write_one_segment(job: WriteJob) -> list[SegmentInfo]:
    """The default ``SegmentsWriter``: the passages of ``job.todo`` (in walk
    order) into one new segment, embedded here; with ``job.defer``, into
    pending segments of about ``job.segment_rows`` rows each, their vectors
    left for msearch.vectors (the words are searchable as soon as they are
    committed). Files are read again when their turn comes, so a large
    change never holds every text in memory."""
    todo, embedder, prog, stats = job.todo, job.embedder, job.progress, job.stats
    chunker = chunker_for(embedder.counter, job.settings)
    infos: list[SegmentInfo] = []

    def on_write(embedded: int, nbytes: int) -> None:
        prog.advance(0, nbytes, embedded)

    def new_window() -> EmbedWindow:
        folder = new_segment_dir(job.index_dir)
        return EmbedWindow(
            SegmentWriter(
                folder,
                job.dim,
                lexical=job.lexical or LexicalParams.default(),
                deferred=job.defer,
            ),
            embed=None if job.defer else lambda texts: embed_async(embedder, texts, job.batch_size),
            window=job.window,
            on_write=on_write,
        )

    writer = new_window()
    try:
        prog.start(len(todo), sum(item.entry.size for item in todo))
        read: deque[list[tuple[Embed, str]]] = deque()  # batches read, waiting for passages

        def batches() -> Iterator[list[tuple[str, str]]]:
            batch: list[tuple[Embed, str]] = []
            chars = 0
            for item in todo:
                text = file_text(item.entry.path, job.walk_options)
                if text is None:
                    mark_unread(item.record)
                    text = ""
                batch.append((item, text))
                chars += len(text)
                prog.advance(1, 0, 0)
                if chars >= CHUNK_BATCH_CHARS or item is todo[-1]:
                    read.append(batch)
                    yield [(it.entry.rel, t) for it, t in batch]
                    batch, chars = [], 0

        with writing(job.index_dir):
            # Worker processes only while nothing else computes here (words
            # first); an embedding run spends ~2% of its time chunking.
            workers = workers_for(sum(item.entry.size for item in todo)) if job.defer else 0
            for chunked in chunk_batches(chunker, batches(), workers):
                for (item, _), passages in zip(read.popleft(), chunked, strict=True):
                    if job.defer and writer.next_row >= job.segment_rows:
                        # A pending segment is embedded and committed as one:
                        # an interrupted run loses at most one segment's work.
                        infos.append(writer.close())
                        stats.embedded += writer.embedded
                        writer = new_window()
                    rows, keys, texts = passage_arrays(passages, job.salt)
                    add_rows(
                        writer,
                        item,
                        rows,
                        keys,
                        texts,
                        job.pool,
                        stats,
                        job.position + len(infos),
                        symbols=[p.symbols for p in passages],
                    )
            infos.append(writer.close())
        stats.embedded += writer.embedded
        return infos
    except BaseException:
        writer.abort()
        for info in infos:
            shutil.rmtree(job.index_dir / info.name, ignore_errors=True)
        raise


def file_text(path: Path, wopts: WalkOptions) -> str | None:
    """The text of a planned file, read again to be chunked; None when it
    vanished or changed under us since planning (see ``mark_unread``)."""
    try:
        return text_from_bytes(_read(path, wopts), True)
    except NotText:
        return None


def mark_unread(record: FileRecord) -> None:
    """A planned file that could not be read any more is indexed as empty,
    recorded so that the next run reads it again (no content hash, no
    mtime can match these)."""
    record.sha256, record.mtime_ns = "", -1


def passage_arrays(
    passages: list[Passage], salt: bytes
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A file's passages as a segment stores them: rows (start line, end
    line, start char, end char), keys (see passage_keys) and the texts
    embedded and indexed (each passage's context, then its text)."""
    texts = [p.indexed for p in passages]
    keys = passage_keys(texts, salt) if texts else np.zeros((0, KEY_BYTES), np.uint8)
    rows = np.array([(p.start_line, p.end_line, p.start, p.end) for p in passages], dtype=np.int32)
    return rows.reshape(-1, 4), keys, texts


def add_rows(
    writer: EmbedWindow,
    item: Embed,
    rows: np.ndarray,
    keys: np.ndarray,
    texts: list[str],
    pool: dict[bytes, np.ndarray],
    stats: IndexStats,
    position: int,
    fresh: np.ndarray | None = None,
    symbols: list[tuple[str, ...]] | None = None,
) -> int:
    """One file's passages into ``writer`` (the segment at ``position``),
    its record pointed at them. A passage whose key is in ``pool`` gets the
    vector found there; the others are embedded by the writer or, given
    ``fresh`` (the vectors of exactly those passages, in order, made
    elsewhere: a Ray worker), take theirs from it. Returns how many of
    ``fresh`` it took."""
    vectors = np.full((len(texts), writer.dim), np.nan, dtype=np.float32)
    taken = 0
    for i, key in enumerate(keys):
        vec = pool.get(key.tobytes())
        if vec is not None:
            vectors[i] = vec
            stats.reused += 1
        elif fresh is not None:
            vectors[i] = fresh[taken]
            taken += 1
    first = writer.next_row
    writer.add_file(rows, keys, texts, vectors, item.entry.size, symbols)
    item.record.segment, item.record.row, item.record.rows = position, first, len(texts)
    return taken


def _read(path: Path, wopts: WalkOptions) -> bytes:
    """A planned file's bytes, within the size limit, never through a link
    that appeared since the walk unless links are followed."""
    return read_bytes(path, wopts.max_file_size, follow=wopts.follow_symlinks)
