"""How soon `msearch watch` makes a saved change searchable.

Starts `msearch watch DIR` (the installed console script, the real bundled
model) on sample_corpus/ plus --files synthetic documents (built in
bench/.work/), waits for its first update, then --edits times appends a
short paragraph with a unique word to one file (one or two changed
passages) and measures the time from the write until the change is
searchable: the committed meta.json (polled every 15 ms) records the file's
new content (its SHA-256; a just-saved file's mtime is recorded as -1,
see msearch.indexer.settled_mtime). Each change is then confirmed once with an in-process
lexical query, which must find the word in that file. The baseline, in the
same run: a one-shot `msearch index DIR` after the same kind of edit (what
the change costs without a watcher: a process, the model, the update).

  python bench/watch_latency.py [--edits 15] [--files 300] [--quick] [--write]

--quick: 3 edits and one baseline run, for a smoke test. --write appends the
table to bench/RESULTS.md. Target: median at most 2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

from _results import report, table

from msearch.errors import MsearchError
from msearch.storage import layout, reader, record

BENCH = Path(__file__).resolve().parent
SAMPLE = BENCH.parent / "sample_corpus"
MODEL = "all-MiniLM-L6-v2"  # the bundled model: no network needed
POLL_S = 0.015
WORDS = ["river", "stone", "garden", "bread", "moon", "orbit", "kettle", "pepper", "lantern"]


def msearch_exe() -> list[str]:
    """The installed console script next to this interpreter (no pyenv shim)."""
    exe = Path(sys.executable).parent / "msearch"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "msearch"]


def make_corpus(root: Path, files: int) -> None:
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(SAMPLE, root)
    rng = random.Random(7)
    for i in range(files):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(6, 14))) + "." for _ in range(30)]
        path = root / "synthetic" / f"doc{i:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Document {i}\n\n" + "\n".join(lines) + "\n")


def unique_word(rng: random.Random) -> str:
    return "zq" + "".join(rng.choices(string.ascii_lowercase, k=10))


class Watcher:
    """`msearch watch ROOT` as a subprocess, its stderr lines collected."""

    def __init__(self, root: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cmd = [*msearch_exe(), "watch", str(root), "--model", MODEL]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(" for changes (Ctrl-C stops)" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("msearch watch did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(60)
        self.reader.join(10)
        if code != 0 or self.lines[-1:] != ["msearch: stopped watching"]:
            raise SystemExit(f"msearch watch ended badly ({code}):\n" + "\n".join(self.lines))
        return code


def append_paragraph(path: Path, word: str) -> os.stat_result:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"\nA note on {word}: the lantern by the river, the kettle on the stone.\n")
    return path.stat()


def wait_committed(index_dir: Path, rel: str, st: os.stat_result, timeout: float = 60) -> None:
    """Until the committed meta.json records ``rel`` with its current content."""
    import hashlib

    digest = hashlib.sha256((index_dir.parent / rel).read_bytes()).hexdigest()
    deadline = time.monotonic() + timeout
    while True:
        try:
            rec = next((f for f in record.read_meta(index_dir).files if f.path == rel), None)
        except MsearchError:  # not expected (meta.json is replaced atomically): wait on
            rec = None
        if rec is not None and rec.size == st.st_size and rec.sha256 == digest:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{rel}: not committed after {timeout} s")
        time.sleep(POLL_S)


def confirm_searchable(index_dir: Path, path: Path, word: str) -> None:
    from msearch.query import Searcher, open_lexical

    idx = reader.load_index(index_dir, lexical=True)
    searcher = Searcher(idx, None, open_lexical(idx), "lexical")
    hits = searcher.query_many([word], 10, None)[0]
    if not any(os.path.realpath(h.abs_path or h.path) == os.path.realpath(path) for h in hits):
        raise SystemExit(f"{word!r} is not found in {path} by a lexical query")


def edits_under_watch(root: Path, edits: int, rng: random.Random) -> tuple[list[float], int]:
    """(seconds from each write to its commit, updates the watcher printed)."""
    index_dir = root / layout.INDEX_DIR_NAME
    targets = sorted((root / "synthetic").glob("*.md")) or sorted(root.rglob("*.md"))
    watcher = Watcher(root)
    try:
        watcher.wait_ready(timeout=900)
        before = len(watcher.lines)
        times = []
        for i in range(edits):
            path = targets[(i * 37) % len(targets)]
            rel = path.relative_to(root).as_posix()
            word = unique_word(rng)
            t0 = time.perf_counter()
            st = append_paragraph(path, word)
            wait_committed(index_dir, rel, st)
            times.append(time.perf_counter() - t0)
            confirm_searchable(index_dir, path, word)
            time.sleep(0.3)  # edits a person makes are apart
        updates = sum(line.startswith("msearch: indexed ") for line in watcher.lines[before:])
    finally:
        if watcher.proc.poll() is None:
            watcher.stop()
    return times, updates


def one_shot_index(root: Path, runs: int, rng: random.Random) -> list[float]:
    """The baseline: an edit, then `msearch index DIR` in a new process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    path = sorted((root / "synthetic").glob("*.md"))[0]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        append_paragraph(path, unique_word(rng))
        r = subprocess.run(
            [*msearch_exe(), "index", str(root), "-q", "--model", MODEL],
            capture_output=True,
            text=True,
            env=env,
        )
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edits", type=int, default=15)
    ap.add_argument("--files", type=int, default=300, help="synthetic files besides the sample")
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3 edits, 1 baseline run")
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.edits, args.baseline_runs = 3, 1

    root = BENCH / ".work" / "watch-latency"
    make_corpus(root, args.files)
    rng = random.Random(11)
    times, updates = edits_under_watch(root, args.edits, rng)
    baseline = one_shot_index(root, args.baseline_runs, rng)
    meta = record.read_meta(root / layout.INDEX_DIR_NAME)

    med, base = statistics.median(times), statistics.median(baseline)
    rows = [
        ("save -> searchable under `msearch watch`, median", f"{med:.2f} s", "<= 2 s"),
        ("save -> searchable, max", f"{max(times):.2f} s", ""),
        ("updates for the edits", f"{updates} for {len(times)} edits", "one each"),
        ("baseline: edit, then one-shot `msearch index DIR`, median", f"{base:.2f} s", ""),
        ("watch / one-shot index", f"{med / base:.2f}", "< 1"),
    ]
    note = (
        f"{len(meta.files)} files ({args.files} synthetic + sample_corpus), {meta.count} "
        f"passages, bundled {MODEL}; {len(times)} edits, each a paragraph appended to one file, "
        f"timed from the write until meta.json records it, then found by a lexical query; "
        f"baseline {len(baseline)} runs"
    )
    report("Watch latency", note, table(rows), args.write)


if __name__ == "__main__":
    main()
