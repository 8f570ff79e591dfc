"""Shared fixtures: a fake deterministic embedder and isolated environments."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from msearch.chunking import WhitespaceCounter
from msearch.encoders import ModelRecord

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_corpus"
CODE_SAMPLE = Path(__file__).resolve().parent / "data" / "coderepo"
# tests/data holds corpora (a small code repository among them), not tests.
collect_ignore_glob = ["data/*"]
FAKE_DIM = 32


class FakeEmbedder:
    """Bag-of-words vectors: texts sharing words are close, and it is exact and instant."""

    def __init__(self, fingerprint: str = "fake-1", max_seq_length: int = 64) -> None:
        self.record = ModelRecord(
            name="fake-model",
            source="fake",
            dim=FAKE_DIM,
            max_seq_length=max_seq_length,
            normalized=True,
            fingerprint=fingerprint,
        )
        self.counter = WhitespaceCounter()
        self.precision = "float32"
        self.document_prompt_tokens = 0
        self.calls = 0
        self.embedded = 0

    def query_cache_name(self) -> str | None:
        return None

    def write_query_cache(self, folder: Path) -> None:
        raise AssertionError("the fake model caches nothing")

    def with_precision(self, precision: str) -> FakeEmbedder:
        self.precision = precision
        self.record = dataclasses.replace(self.record, precision=precision)
        return self

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def query_token_count(self, text: str) -> int:
        return self.counter.count([text])[0] + 2

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.calls += 1
        self.embedded += len(texts)
        out = np.zeros((len(texts), FAKE_DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % FAKE_DIM] += 1.0
            out[i, 0] += 0.01  # never the zero vector
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


class SlowFake(FakeEmbedder):
    """The fake, taking ``delay`` seconds a call (a model embedding on a CPU)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        time.sleep(self.delay)
        return super().encode(texts, batch_size)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the user's environment variables or writes outside tmp_path."""
    for var in ("MSEARCH_INDEX", "MSEARCH_MODEL", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def fake() -> FakeEmbedder:
    return FakeEmbedder()


class FakeModels:
    """A model source (msearch.models.Models) that hands out one fake for
    every model asked for: what the tests give the facade, the CLI
    (``main(models=...)``, typer's ``obj``) and the MCP service."""

    def __init__(self, fake: FakeEmbedder) -> None:
        self.fake = fake

    def load(self, *args: Any, **kwargs: Any) -> FakeEmbedder:
        return self.fake

    def load_recorded(self, *args: Any, **kwargs: Any) -> FakeEmbedder:
        return self.fake


# The models the CLI and the MCP service get in this test (see use_fake);
# None: the real ones.
_models: FakeModels | None = None


def current_models() -> FakeModels | None:
    """What the test helpers (clihelp.cli, the tests' run and served) hand
    the CLI and the service as their model source."""
    return _models


@pytest.fixture
def use_fake(fake: FakeEmbedder) -> Iterator[FakeEmbedder]:
    """The CLI and the MCP service, as the tests call them, index and query
    with the fake embedder (handed to them, nothing patched)."""
    global _models
    _models = FakeModels(fake)
    try:
        yield fake
    finally:
        _models = None


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def deny_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The indexer's reads of files called ``name`` fail as chmod 000 makes
    them fail (the tests may run as root, who reads whatever the mode)."""
    import msearch.pipeline
    import msearch.walk

    real = msearch.walk.read_bytes

    def deny(path: Path, *args: Any, **kwargs: Any) -> bytes:
        if path.name == name:
            raise msearch.walk.NotText("unreadable (Permission denied)")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(msearch.pipeline, "read_bytes", deny)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root except the index, with its bytes and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        if ".msearch" in p.parts or not p.is_file() or p.is_symlink():
            continue
        out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out
