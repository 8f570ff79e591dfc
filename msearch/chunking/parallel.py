"""Chunking on every core: batches of files chunked in forked worker
processes, handed back in order.

Why: once embedding no longer stands between a fresh index and its first
answer (msearch.vectors), cutting the passages is most of the wait:
parsing syntax trees, counting every line's tokens and walking the trees
are CPU work in Python that one process does on one core.

Why fork, and only sometimes: a forked worker inherits the chunker (its
tokenizer and grammars) at no cost, where a spawned one would load them
again (half a second each). Forking a process that runs other threads
(a watcher's or a server's) could copy a lock held by one of them, so the
workers are used only while the process has a single thread; and only for
enough text to pay for starting them.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from msearch.chunking.lines import Passage

# Characters of text below which the batches are chunked here.
MIN_PARALLEL_CHARS = 512 * 1024

_CHUNKER: Any = None  # the chunker the workers inherit


def _chunk(files: Sequence[tuple[str, str]]) -> list[list[Passage]]:
    return _CHUNKER.chunk(files)  # type: ignore[no-any-return]


def _worker_signals() -> None:
    """Ctrl-C is the parent's to handle (it reaches the whole process
    group): a worker ignores it and dies quietly when the parent
    terminates the pool (not through the CLI's SIGTERM handler, which a
    fork inherits and which would print a worker's traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def workers_for(total_chars: int) -> int:
    """How many worker processes to chunk ``total_chars`` of text with (0:
    chunk in this process)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (
        total_chars < MIN_PARALLEL_CHARS
        or (cores or 1) < 2
        or threading.active_count() > 1
        or not hasattr(os, "fork")
        or os.environ.get("MSEARCH_CHUNK_WORKERS") == "0"
    ):
        return 0
    return min(cores or 1, 4)


def chunk_batches(
    chunker: Any, batches: Iterable[Sequence[tuple[str, str]]], workers: int
) -> Iterator[list[list[Passage]]]:
    """``chunker.chunk(batch)`` for each batch, in order; in ``workers``
    forked processes (0: here). At most two batches a worker are in
    flight, so memory stays bounded by the batches, not by the files."""
    if workers < 1:
        for batch in batches:
            yield chunker.chunk(batch)
        return
    import multiprocessing

    global _CHUNKER
    _CHUNKER = chunker
    # A forked child of a process whose tokenizer ran threads would say so
    # on stderr and run single-threaded anyway: say it should, quietly.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals)
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
        _CHUNKER = None  # the parent's reference; the children have theirs
    try:
        waiting: deque[Any] = deque()
        for batch in batches:
            waiting.append(pool.apply_async(_chunk, (list(batch),)))
            if len(waiting) >= 2 * workers:
                yield waiting.popleft().get()
        while waiting:
            yield waiting.popleft().get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()
