"""Crash safety and concurrency (issue 4): kill -9 mid-index, two writers, readers."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FakeEmbedder, snapshot, write
from msearch.query import Searcher, open_lexical
from msearch.storage import layout, ownership, reader, record

HELPER = Path(__file__).parent / "crash_index.py"


def make_corpus(root: Path, version: int, files: int = 60) -> None:
    for i in range(files):
        words = " ".join(f"w{(i * 13 + j * version) % 97}" for j in range(12))
        write(root, f"d{i % 6}/f{i}.txt", "\n".join([words] * (8 + version)) + "\n")


def start(
    root: Path,
    index_dir: Path,
    delay: float = 0.05,
    compact: bool = False,
    slow_read: bool = False,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPER), str(root), str(index_dir), str(delay)]
        + (["compact"] if compact else [])
        + (["slow-read"] if slow_read else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> int:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return int(out.split()[1])


def query_ok(index_dir: Path) -> int:
    # Hybrid, the default: a kill while vectors are embedded leaves passages
    # that only their words find (a dense search finds those with vectors).
    idx = reader.load_index(index_dir, lexical=True)
    hits = Searcher(idx, FakeEmbedder().encode, open_lexical(idx), "hybrid").query("w5 w18", k=3)
    assert len(hits) == min(3, idx.meta.count)
    return idx.meta.count


def test_kill_9_at_random_moments_leaves_a_usable_index(tmp_path: Path) -> None:
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    # The passage count of a full index of each corpus version tells the
    # versions apart after a crash.
    expected = {}
    for version in (1, 2, 3):
        make_corpus(root, version)
        expected[version] = finish(start(root, tmp_path / f"ref{version}", 0.0))
    assert len(set(expected.values())) == 3
    make_corpus(root, 1)
    finish(start(root, index_dir, 0.0))
    current = 1
    rng = random.Random(1234)
    outcomes = []
    for trial in range(20):
        target = 2 + trial % 2 if current == 1 else (3 if current == 2 else 2)
        make_corpus(root, target)
        before = snapshot(root)
        proc = start(root, index_dir, 0.15, slow_read=True)  # words commit after ~1 s
        time.sleep(rng.uniform(0.3, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        count = query_ok(index_dir)  # loads and answers, whatever the moment
        assert count in (expected[current], expected[target])  # old or new, never a mix
        if count == expected[target]:
            current = target
        outcomes.append(count == expected[target])
        assert snapshot(root) == before
    assert False in outcomes  # some kills landed before the commit
    final = finish(start(root, index_dir, 0.0))
    assert query_ok(index_dir) == final == expected[target]
    leftovers = {p.name for p in index_dir.iterdir() if p.name.startswith(("seg-", ".meta"))}
    assert leftovers == {s.name for s in record.read_meta(index_dir).segments}


def answers(index_dir: Path) -> list[tuple[str, int, float]]:
    idx = reader.load_index(index_dir)
    hits = Searcher(idx, FakeEmbedder().encode).query("w5 w18 w40", k=idx.meta.count)
    return sorted((h.path, h.start_line, round(h.score, 5)) for h in hits)


def test_kill_9_during_a_merge_leaves_a_usable_index(tmp_path: Path) -> None:
    """Merges (here ``--compact``, slowed down) are killed at random moments:
    the index always answers exactly as before, whichever side of the
    merge's commit the kill landed on."""
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    make_corpus(root, 1, files=24)
    finish(start(root, index_dir, 0.0))
    for i in range(5):  # five updates of a few files each: six segments
        for f in range(i * 4, i * 4 + 4):
            write(root, f"d{f % 6}/f{f}.txt", f"edited {i} w{f} w5 w18 " * 6 + "\n")
        finish(start(root, index_dir, 0.0))
    assert len(record.read_meta(index_dir).segments) == 6
    want = answers(index_dir)
    saved = tmp_path / "six-segments"
    shutil.copytree(index_dir, saved)
    rng = random.Random(99)
    merged = []
    for _ in range(8):
        if len(record.read_meta(index_dir).segments) == 1:  # merged: start again
            shutil.rmtree(index_dir)
            shutil.copytree(saved, index_dir)
        proc = start(root, index_dir, 0.05, compact=True)
        time.sleep(rng.uniform(0.5, 3.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert answers(index_dir) == want
        merged.append(len(record.read_meta(index_dir).segments) == 1)
    assert False in merged  # some kills landed inside the merge
    out = start(root, index_dir, 0.0, compact=True).communicate(timeout=120)[0]
    assert out.split()[-1] == "1" and answers(index_dir) == want
    leftovers = {p.name for p in index_dir.iterdir() if p.name.startswith(("seg-", ".meta"))}
    assert leftovers == {s.name for s in record.read_meta(index_dir).segments}


def test_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    make_corpus(root, 1)
    first = start(root, index_dir, 0.5)
    deadline = time.time() + 30
    while not (index_dir / layout.LOCK_NAME).exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    second = start(root, index_dir, 0.0)
    out2, err2 = second.communicate(timeout=120)
    assert "waiting for another msearch" in err2
    finish(first)
    assert second.returncode == 0 and out2.startswith("done")


def test_lock_does_not_outlive_a_killed_writer(tmp_path: Path) -> None:
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    make_corpus(root, 1, files=30)
    proc = start(root, index_dir, 0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with ownership.write_lock(index_dir, wait=False):
        pass


def test_queries_during_a_rebuild_always_answer(tmp_path: Path) -> None:
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    make_corpus(root, 1)
    finish(start(root, index_dir, 0.0))
    counts = set()
    for version in (2, 3):
        make_corpus(root, version)
        proc = start(root, index_dir, 0.01)
        while proc.poll() is None:
            counts.add(query_ok(index_dir))
        assert proc.returncode == 0
    counts.add(query_ok(index_dir))
    assert len(counts) >= 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_previous_index(tmp_path: Path, sig: signal.Signals) -> None:
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    make_corpus(root, 1)
    old = finish(start(root, index_dir, 0.0))
    make_corpus(root, 2)
    new = finish(start(root, tmp_path / "ref", 0.0))
    proc = start(root, index_dir, 0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    # The previous index, or the new one whose words were committed first
    # (its vectors then partly pending), never a mix.
    assert query_ok(index_dir) in (old, new)
    data_dirs = {p.name for p in index_dir.iterdir() if p.name.startswith("seg-")}
    if sig == signal.SIGINT:  # the writer removes its half-written folder itself
        assert data_dirs == {s.name for s in record.read_meta(index_dir).segments}
    finish(start(root, index_dir, 0.0))  # the next writer removes any leftovers
    assert {p.name for p in index_dir.iterdir() if p.name.startswith("seg-")} == {
        s.name for s in record.read_meta(index_dir).segments
    }
