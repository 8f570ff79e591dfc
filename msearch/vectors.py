"""The second half of ``msearch index``: vectors for the passages whose
words are already committed.

Why in two halves: on a CPU, embedding is nearly all of an index's cost
(3,000 code passages take two minutes on 2 cores), while the walk, the
passages and their BM25 statistics take a second or two. So an update
first commits every new passage's words in *pending* segments (see
msearch.storage.segment), and a search answers at once, ranking the
passages without a vector by their words (msearch.ranking.fusion). Then
each pending segment is embedded and the finished segment committed in
its place, one at a time: an interrupted run (Ctrl-C, kill -9, a full
disk) leaves a searchable index, and the next run embeds only what is
still pending.

A pending segment's finished copy holds the same rows in the same order
(passages, keys and BM25 statistics copied, the vectors it kept filled
in), so the file table and every other segment stay as they are.

Why the embedding runs outside the writer lock (for a watcher or a
server): an update must not wait for it. Only writing the finished copy
and committing it take the lock (milliseconds); by then an update may
have killed some of the segment's rows (their vectors are simply not
used), never revived one, so what was embedded still covers every live
row that needs a vector.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from msearch.config import DEFAULT, IndexConfig
from msearch.encoders import Embedder, embed_async
from msearch.errors import IndexCorrupt
from msearch.storage.disk import writing
from msearch.storage.ownership import commit, new_segment_dir, write_lock
from msearch.storage.reader import load_index
from msearch.storage.record import read_meta
from msearch.storage.segment import SegmentWriter

# Passages embedded between two looks at ``should_stop`` (a watcher's
# update waits at most this long for the embedding to give way), unless the
# configured window is smaller.
STEP = 256


@dataclass
class VectorStats:
    """What one run of the vector half did."""

    segments: int = 0  # pending segments finished and committed
    embedded: int = 0  # passages embedded
    left: int = 0  # live passages still without a vector (stopped early)
    seconds: float = 0.0

    def done_line(self) -> str:
        """What a watcher or a server says once every passage has its vector."""
        return (
            f"msearch: embedded {self.embedded:,} passages in {self.seconds:.1f}s; "
            "every passage has its vector"
        )


def finish_pending(
    index_dir: Path,
    embedder: Embedder,
    *,
    batch_size: int | None = None,
    config: IndexConfig = DEFAULT,
    on_embedded: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    locked: bool = False,
    notice: Callable[[str], None] | None = None,
    limit: int | None = None,
    turn: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> VectorStats:
    """Embed the pending segments of the index at ``index_dir`` one by one,
    committing each as it is done; return early (the segment under way
    dropped) when ``should_stop()`` says so. ``locked``: the caller holds
    the writer lock (``msearch index``); otherwise it is taken to commit
    each segment. ``turn()``: held while a segment is written and committed
    (:class:`Background`: never during an update of the same process).
    ``on_embedded(n)`` hears of every ``n`` passages embedded; ``limit``:
    at most this many segments."""
    t0 = time.perf_counter()
    stats = VectorStats()
    stop = should_stop or (lambda: False)
    while not stop() and (limit is None or stats.segments < limit):
        seen = None if locked else read_meta(index_dir).updated
        try:
            work = _embed_next(index_dir, embedder, batch_size, config, on_embedded, stop, stats)
        except IndexCorrupt:
            # Without the lock, a writer may have committed and removed the
            # segment being read: look again; damage stays an error.
            if locked or read_meta(index_dir).updated == seen:
                raise
            continue
        if work is None:
            break
        with turn():
            if locked:
                _commit_finished(index_dir, work, config, stats)
            else:
                with write_lock(index_dir, notice=notice):
                    _commit_finished(index_dir, work, config, stats)
    try:
        stats.left = read_meta(index_dir).waiting
    except Exception:  # gone or damaged meanwhile: the next search says so
        stats.left = 0
    stats.seconds = time.perf_counter() - t0
    return stats


class Background:
    """Embeds an index's pending segments in a thread of its own, one
    segment at a time, beside the updates of a watcher or a server: an
    update commits the words of what changed within a second, whatever is
    being embedded, and the embedding goes on after it.

    ``finish(should_stop, turn)`` embeds (``finish_pending`` with the
    index's model). An update runs inside :meth:`paused`, which only keeps
    it apart from the moment a finished segment is written and committed.
    """

    def __init__(
        self,
        finish: Callable[
            [Callable[[], bool], Callable[[], contextlib.AbstractContextManager[Any]]],
            VectorStats,
        ],
        notice: Callable[[str], None],
        on_done: Callable[[VectorStats], None] | None = None,
    ) -> None:
        import threading

        self._finish = finish
        self._say = notice
        self._on_done = on_done
        self._turn = threading.Lock()  # a commit of vectors or an update, never both
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="msearch-vectors", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Look for pending segments (after an update committed some)."""
        self._idle.clear()
        self._wake.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run an update, then look for what it left pending."""
        try:
            with self._turn:
                yield
        finally:
            self.kick()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing is pending (or the embedding failed); False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Stop at the next slice; what was not committed is embedded by
        the next update or watcher (the process may exit meanwhile: an
        uncommitted folder is removed by the next writer)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                done = self._finish(self._stop.is_set, lambda: self._turn)
            except Exception as exc:  # said; the next update tries again
                self._say(f"msearch: embedding stopped: {exc} (the words stay searchable)")
                self._idle.set()
                continue
            finished = done.embedded and done.left == 0 and not self._stop.is_set()
            if finished and self._on_done is not None:
                self._on_done(done)
            if not self._wake.is_set():
                self._idle.set()


@dataclass
class _Work:
    """A pending segment's vectors, made outside the lock."""

    name: str
    rows: np.ndarray  # its rows embedded (ascending)
    vectors: np.ndarray  # their vectors


def _embed_next(
    index_dir: Path,
    embedder: Embedder,
    batch_size: int | None,
    config: IndexConfig,
    on_embedded: Callable[[int], None] | None,
    stop: Callable[[], bool],
    stats: VectorStats,
) -> _Work | None:
    """The vectors of the live pending rows of the first pending segment;
    None when there is none (or the index is another model's now, or
    ``stop`` said so)."""
    index = load_index(index_dir)
    record = embedder.record
    if (
        index.meta.model.get("fingerprint") != record.fingerprint
        or index.meta.model.get("precision", "float32") != record.precision
    ):
        return None  # rebuilt with another model meanwhile: its own run embeds it
    position = next((i for i, s in enumerate(index.meta.segments) if s.pending), None)
    if position is None:
        return None
    seg = index.segments[position]
    rows, texts = seg.pending_texts()
    live = index.live_mask(position)
    if live is not None:
        keep = live[rows]
        texts = [t for t, k in zip(texts, keep.tolist(), strict=True) if k]
        rows = rows[keep]
    fresh = np.empty((len(rows), index.meta.dim), dtype=np.float32)
    # Slices, each submitted before the previous is collected (a GPU
    # computes while the host prepares the next); ``stop`` is asked between.
    waiting = None
    done = 0
    step = max(1, min(STEP, config.window))
    for start in range(0, len(texts), step):
        if stop():
            return None
        job = embed_async(embedder, texts[start : start + step], batch_size)
        if waiting is not None:
            done = _collect(waiting, fresh, done, on_embedded)
        waiting = job
    if waiting is not None:
        done = _collect(waiting, fresh, done, on_embedded)
    stats.embedded += done
    return None if stop() else _Work(seg.info.name, rows, fresh)


def _commit_finished(index_dir: Path, work: _Work, config: IndexConfig, stats: VectorStats) -> None:
    """Write the finished copy of the pending segment ``work`` was made for
    and commit it in its place (the caller holds the writer lock); nothing
    when that segment is gone (all its files changed meanwhile)."""
    index = load_index(index_dir)
    position = next(
        (i for i, s in enumerate(index.meta.segments) if s.name == work.name and s.pending), None
    )
    if position is None:
        return
    seg = index.segments[position]
    rows, fresh = work.rows, work.vectors
    live = index.live_mask(position)
    waiting = seg.pending_rows()
    needed = waiting if live is None else waiting[live[waiting]]
    if not np.isin(needed, rows).all():  # rows never come back to life
        raise RuntimeError(f"{seg.path}: a live row was not embedded")
    folder = new_segment_dir(index.dir)
    writer = SegmentWriter(folder, index.meta.dim)
    try:
        with writing(folder):
            step = max(config.copy_rows, 1)
            for a in range(0, seg.rows, step):
                b = min(a + step, seg.rows)
                vectors = np.array(seg.embeddings[a:b], dtype=np.float32)
                sel = slice(*np.searchsorted(rows, [a, b]))
                vectors[rows[sel] - a] = fresh[sel]
                writer.append(np.asarray(seg.passages[a:b]), vectors, np.asarray(seg.keys()[a:b]))
            info = writer.close(seg.lexical())
    except BaseException:
        writer.abort()
        raise
    meta = index.meta
    old = meta.segments[position]
    segments = list(meta.segments)
    segments[position] = replace(
        info, live_rows=old.live_rows, live_tokens=old.live_tokens, pending=0
    )
    meta.segments = segments
    commit(index_dir, meta)  # the pending folder is removed with the commit's cleanup
    stats.segments += 1


def _collect(
    job: Callable[[], np.ndarray],
    out: np.ndarray,
    at: int,
    on_embedded: Callable[[int], None] | None,
) -> int:
    vecs = job()
    out[at : at + len(vecs)] = vecs
    if on_embedded is not None:
        on_embedded(len(vecs))
    return at + len(vecs)
