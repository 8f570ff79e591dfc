"""A 50 MB one-line prose file (issue 11, case 16): peak memory and Ctrl-C.

Indexes one file that is a single 50 MB line of prose with
``--max-file-size 100M``, chunked by the bundled model's real tokenizer,
in a child process per run:

- peak RSS of ``build_index`` with a random-vector embedder (what msearch
  itself holds: the tokenizer's work and the windows, not a model);
- seconds from SIGINT to exit, sent 5 s into ``msearch index`` with the
  real bundled model (while the line is being chunked) and 60 s in (while
  passages are being embedded).

Each is measured twice: as built (long lines tokenized a 16 KB piece at a
time, at most 1 MB of text per tokenizer call) and with those bounds lifted
(``--whole``: one tokenizer call on the whole line, the behaviour the issue
measured at 6 GB and 35 s).

  python bench/huge_line.py [--mb 50] [--write]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _results import report, table

BENCH = Path(__file__).resolve().parent
WORDS = "the river carried stones past the garden where the moon rose over bread and coffee"
WORDS += " while travellers slept under stars and dreamed of tomatoes growing in warm soil"

UNBOUNDED = (
    "import msearch.chunking.lines as c; c.PIECE_CHARS = 1 << 40; c.COUNT_GROUP_CHARS = 1 << 40\n"
)

MEMORY_CHILD = """
import sys, numpy as np
{patch}
from msearch.chunking import ChunkSettings
from msearch.encoders import ModelRecord, bundled_model_path, token_counter
from msearch.indexer import build_index

class Fake:
    def __init__(self):
        self.record = ModelRecord("fake", "fake", 384, 256, True, "fake")
        self.counter = token_counter(bundled_model_path())
        self.rng = np.random.default_rng(0)
        self.document_prompt_tokens = 0
    def query_cache_name(self):
        return None
    def encode(self, texts, batch_size=32):
        v = self.rng.standard_normal((len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

from msearch.walk import WalkOptions
stats = build_index(sys.argv[1], sys.argv[2], Fake(), WalkOptions(max_file_size=200 << 20),
                    ChunkSettings(256, 32), full=True)
print(stats.passages)
"""

CLI_CHILD = """
import sys
{patch}
from msearch.cli import main
main(sys.argv[1:])
"""


def make_corpus(mb: int) -> Path:
    root = BENCH / ".work" / f"huge-line-{mb}"
    path = root / "huge.txt"
    if path.exists() and path.stat().st_size >= mb << 20:
        return root
    root.mkdir(parents=True, exist_ok=True)
    words = WORDS.split()
    n = len(words)
    out: list[str] = []
    size = 0
    i = 0
    while size < mb << 20:
        word = words[(i * 7 + i // n) % n]
        out.append(word)
        size += len(word) + 1
        i += 1
    path.write_text(" ".join(out) + "\n", encoding="utf-8")
    return root


def peak_rss(root: Path, whole: bool) -> tuple[float, float, str]:
    """(peak RSS MB, seconds, passages) of one child indexing ``root``."""
    index_dir = root.parent / (root.name + ("-whole" if whole else "-pieces") + ".idx")
    code = MEMORY_CHILD.format(patch=UNBOUNDED if whole else "")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(index_dir)], stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out = proc.stdout.read().strip() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"memory child failed ({status})")
    return usage.ru_maxrss / 1024, seconds, out


def ctrl_c(root: Path, whole: bool, after: float) -> float:
    """Seconds from SIGINT, sent ``after`` seconds in, to the end of ``msearch index``."""
    index_dir = root.parent / (root.name + "-cli.idx")
    code = CLI_CHILD.format(patch=UNBOUNDED if whole else "")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-c", code, "index", str(root), "--index", str(index_dir)]
    proc = subprocess.Popen(
        [*cmd, "--max-file-size", "100M", "-q", "--full"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(after)
    if proc.poll() is not None:
        raise SystemExit(f"msearch index ended before {after} s: {proc.stderr.read()}")
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=600)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    root = make_corpus(args.mb)
    rows = []
    for whole in (False, True):
        label = "one tokenizer call per line (before)" if whole else "pieces (as built)"
        mb, seconds, passages = peak_rss(root, whole)
        rows.append([f"peak RSS, chunk + index, {label}", f"{mb:,.0f} MB", ""])
        rows.append(["  time, passages", f"{seconds:.1f} s, {int(passages):,}", ""])
        for after in (5.0, 60.0):
            wait = ctrl_c(root, whole, after)
            rows.append([f"Ctrl-C {after:.0f} s in, {label}", f"{wait:.2f} s to exit", "≤ 1 s"])
    report(
        f"A {args.mb} MB one-line file",
        "bundled tokenizer; random vectors for memory, the bundled model for Ctrl-C",
        table(rows),
        args.write,
    )


if __name__ == "__main__":
    main()
