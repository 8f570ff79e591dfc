"""What the storage benchmarks share: an embedder of random unit vectors
(the cheapest possible model, so that what is timed is msearch's own work)
and a synthetic corpus writer."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from msearch.chunking import WhitespaceCounter
from msearch.encoders import ModelRecord


class RandomEmbedder:
    """Random unit vectors (384 wide); counts what it embeds and the time it
    takes, so a benchmark can report the cost beyond embedding."""

    def __init__(self) -> None:
        self.record = ModelRecord("fake", "fake", 384, 16, True, "fake")
        self.counter = WhitespaceCounter()
        self.rng = np.random.default_rng(0)
        self.document_prompt_tokens = 0
        self.embedded = 0
        self.seconds = 0.0

    def query_cache_name(self) -> None:
        return None

    def write_query_cache(self, folder: Path) -> None:
        raise AssertionError("random vectors need no query cache")

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        t = time.perf_counter()
        v = self.rng.standard_normal((len(texts), 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        self.embedded += len(texts)
        self.seconds += time.perf_counter() - t
        return v


def write_corpus(root: Path, files: int, text_of: Callable[[int], str]) -> Path:
    """``files`` text files under ``root`` (1,000 a folder), made once: a
    ``.ok`` file beside the folder says the corpus is complete."""
    marker = root.with_suffix(".ok")
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        for f in range(files):
            d = root / f"d{f // 1000:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{f:06d}.txt").write_text(text_of(f))
        marker.write_text("")
    return root
