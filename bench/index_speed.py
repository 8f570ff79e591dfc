"""End-to-end indexing speed: ``build_index`` on a folder of real documents.

  python bench/index_speed.py [--files 1500] [--precision float32|bfloat16]
                              [--device cpu|cuda] [--host-only] [--write]

Writes SciFact and NFCorpus abstracts as files (title on the first line,
then the text), indexes them from scratch with msearch's indexer, and
reports passages/s, the time spent in the embedder and the rest: walking,
reading, decoding, chunking, writing and the BM25 side, which is what a
GPU waits on.

With --host-only the model is replaced by an embedder that tokenizes each
window as torch_bert does and returns zero vectors: the rate at which this
machine's host side can feed any accelerator.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _results import report, table
from embed_speed import passages

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_corpus(folder: Path, files: int) -> None:
    """``files`` abstracts (embed_speed's passages: half SciFact, half
    NFCorpus, title first), one file each."""
    for i, text in enumerate(passages(files)):
        (folder / f"doc-{i}.txt").write_text(text + "\n")


class Timed:
    """The indexer's embedder, with the time spent inside it counted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.record = inner.record
        self.counter = inner.counter
        self.document_prompt_tokens = inner.document_prompt_tokens
        self.query_cache_name = inner.query_cache_name
        self.write_query_cache = inner.write_query_cache
        self.seconds = 0.0

    def submit(self, texts: Sequence[str], batch_size: int = 32) -> Callable[[], np.ndarray]:
        import msearch.encoders

        t = time.perf_counter()
        if hasattr(msearch.encoders, "embed_async"):
            pending = msearch.encoders.embed_async(self.inner, texts, batch_size)
        else:  # --src: an msearch from before embed_async
            vecs = self.inner.encode(texts, batch_size)
            pending = lambda: vecs  # noqa: E731
        self.seconds += time.perf_counter() - t

        def result() -> np.ndarray:
            t = time.perf_counter()
            vecs = pending()
            self.seconds += time.perf_counter() - t
            return vecs

        return result

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self.submit(texts, batch_size)()


class TokenizeOnly:
    """Does the host's share of embedding (tokenizing, as the torch encoder does)
    and returns zero vectors."""

    def __init__(self, model: Any) -> None:
        self.spec = model._numpy_encoder()
        self.record = model.record
        self.counter = model.counter
        self.document_prompt_tokens = model.document_prompt_tokens
        self.query_cache_name = model.query_cache_name
        self.write_query_cache = model.write_query_cache

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self.spec.tokenizer.encode_batch(list(texts))
        return np.zeros((len(texts), self.record.dim), dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--host-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--write", action="store_true")
    ap.add_argument(
        "--src", help="import msearch from this checkout instead (e.g. a git worktree of a commit)"
    )
    args = ap.parse_args()
    if args.src:
        import sys

        sys.path.insert(0, args.src)

    from msearch.encoders import load_model
    from msearch.indexer import build_index

    work = Path(tempfile.mkdtemp(prefix="msearch-index-speed-"))
    docs = work / "docs"
    docs.mkdir()
    write_corpus(docs, args.files)
    model = load_model(None, device=args.device, precision=args.precision, notice=lambda _m: None)
    inner: Any = TokenizeOnly(model) if args.host_only else model
    inner.encode(["warm up"] * 8)
    rows = []
    for r in range(args.rounds):
        emb = Timed(inner)
        t0 = time.perf_counter()
        stats = build_index(docs, work / f"index-{r}", emb, full=True)
        total = time.perf_counter() - t0
        host = total - emb.seconds
        rows.append(
            [
                str(r + 1),
                f"{stats.passages}",
                f"{total:.1f}",
                f"{stats.passages / total:,.0f}",
                f"{emb.seconds:.1f}",
                f"{host:.2f} ({host / total:.1%})",
                f"{stats.passages / host:,.0f}",
            ]
        )
    import msearch

    what = "tokenize-only embedder" if args.host_only else f"{args.precision} on {args.device}"
    src = Path(msearch.__file__).parent.parent
    commit = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "msearch"], capture_output=True, text=True
    ).stdout.strip()
    what += f", msearch at {commit}{' + changes' if dirty else ''}"
    report(
        "Indexing speed, end to end",
        f"{args.files} SciFact+NFCorpus abstracts as files, bundled all-MiniLM-L6-v2, {what}",
        table(
            rows,
            (
                "round",
                "passages",
                "seconds",
                "passages/s",
                "in the embedder (s)",
                "host side (s, share)",
                "host passages/s",
            ),
        ),
        args.write,
    )


if __name__ == "__main__":
    main()
