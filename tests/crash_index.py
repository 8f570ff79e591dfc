"""Run build_index with a slow fake embedder, for the kill -9 and lock tests.

Usage: python tests/crash_index.py ROOT INDEX_DIR [SECONDS_PER_BATCH] [compact|words-first|slow-read]
(``compact``: update, then merge every segment, slowly: SECONDS_PER_BATCH
before every few rows copied; ``words-first``: small pending segments and
slices, many commits of vectors to die between; ``slow-read``: a tenth of
SECONDS_PER_BATCH before each file is read to be chunked, so that the
commit of the words comes late enough for a kill to land before it: it
came within 0.3 s of the start on 60 small files.)
Not a test module: the crash tests start it as a subprocess and kill it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import SlowFake  # noqa: E402
from msearch.chunking import ChunkSettings  # noqa: E402
from msearch.indexer import build_index  # noqa: E402

if __name__ == "__main__":
    root, index_dir = Path(sys.argv[1]), Path(sys.argv[2])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.05
    compact = len(sys.argv) > 4 and sys.argv[4] == "compact"
    import msearch.storage.segment
    from msearch.config import IndexConfig

    # Many small windows: many moments to die in; a merge copies few rows at a time.
    config = IndexConfig(window=64, copy_rows=8)
    if len(sys.argv) > 4 and sys.argv[4] == "words-first":
        config = IndexConfig(window=4, copy_rows=8, pending_rows=16)
    if len(sys.argv) > 4 and sys.argv[4] == "slow-read":
        import msearch.pipeline

        read = msearch.pipeline.file_text

        def slow_read(*a, **k):  # type: ignore[no-untyped-def]
            time.sleep(delay / 10)
            return read(*a, **k)

        msearch.pipeline.file_text = slow_read  # type: ignore[assignment]
    if compact:
        # A slow merge: each piece copied after a pause.
        real = msearch.storage.segment.SegmentWriter.append

        def slow(self, *a, **k):  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return real(self, *a, **k)

        msearch.storage.segment.SegmentWriter.append = slow  # type: ignore[method-assign]
    stats = build_index(
        root,
        index_dir,
        SlowFake(0.0 if compact else delay),
        chunking=ChunkSettings(max_tokens=24, overlap_tokens=4),
        notice=lambda m: print(m, file=sys.stderr, flush=True),
        compact=compact,
        config=config,
    )
    print(f"done {stats.passages} {stats.segments}", flush=True)
