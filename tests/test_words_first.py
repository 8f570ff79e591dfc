"""Words first, vectors as they come (issue 25): ``msearch index`` commits
every new passage's words in pending segments, answers queries at once
(passages without a vector ranked by their words), then embeds and commits
the vectors segment by segment; an interrupted run leaves a searchable
index and the next embeds only what is missing; the finished index equals
a build that embeds as it goes."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeEmbedder, SlowFake, write
from msearch.chunking import ChunkSettings
from msearch.config import IndexConfig
from msearch.indexer import build_index
from msearch.merge import TieredMergePolicy
from msearch.pipeline import write_one_segment
from msearch.query import Searcher, open_lexical
from msearch.ranking.fusion import impute_cosines
from msearch.storage import reader, record
from msearch.storage.segment import BITS_NAME, PENDING_ROWS_NAME
from msearch.vectors import finish_pending

SMALL = ChunkSettings(max_tokens=24, overlap_tokens=4)
VOCAB = ["alpha", "beta", "gamma", "moon", "river", "stone"] + [f"w{i}" for i in range(200)]
HELPER = Path(__file__).parent / "crash_index.py"


def text(seed: int, lines: int = 6) -> str:
    rng = random.Random(seed)
    return (
        "\n".join(
            " ".join(rng.choice(VOCAB) for _ in range(4 + rng.randrange(5))) for _ in range(lines)
        )
        + "\n"
    )


def corpus(root: Path, files: int = 12) -> None:
    for i in range(files):
        write(root, f"d{i % 3}/f{i}.txt", text(i, 4 + i % 7))


def by_file(index_dir: Path) -> dict[str, list[tuple[tuple[int, ...], bytes, tuple[float, ...]]]]:
    """Each file's passages (ranges, key, vector rounded): what an index says
    of a file, wherever its rows are."""
    idx = reader.load_index(index_dir)
    out = {}
    for rec in idx.meta.files:
        seg = idx.segments[rec.segment]
        rows = []
        for r in range(rec.row, rec.row + rec.rows):
            rows.append(
                (
                    tuple(int(x) for x in seg.passages[r][1:]),
                    bytes(seg.keys()[r]),
                    tuple(np.round(np.asarray(seg.embeddings[r]), 5).tolist()),
                )
            )
        out[rec.path] = rows
    return out


def reference(root: Path, where: Path) -> Path:
    """The index as msearch built it before words came first: every passage
    embedded as it is written (``write_one_segment`` handed in explicitly
    does not defer)."""
    shutil.rmtree(where, ignore_errors=True)
    build_index(
        root, where, FakeEmbedder(), chunking=SMALL, full=True, segments_writer=write_one_segment
    )
    return where


def hybrid(index_dir: Path, query: str, k: int = 5) -> list[tuple[float, str, int]]:
    """The best ``k`` hits as (score, path, line), ties in a fixed order (two
    indexes may order their rows differently, not their answers)."""
    idx = reader.load_index(index_dir)
    fake = FakeEmbedder()
    hits = Searcher(idx, fake.encode, open_lexical(idx), "hybrid").query(query, k=k)
    return sorted((round(h.score, 5), h.path, h.start_line) for h in hits)


def test_words_are_committed_first_and_answer_without_the_model(tmp_path: Path) -> None:
    corpus(tmp_path)
    emb = FakeEmbedder()
    stats = build_index(tmp_path, tmp_path / ".msearch", emb, chunking=SMALL, vectors=False)
    assert emb.embedded == 0 and stats.pending == stats.passages > 0
    meta = record.read_meta(tmp_path / ".msearch")
    assert meta.waiting == meta.count and all(s.pending for s in meta.segments)
    seg_dir = tmp_path / ".msearch" / meta.segments[0].name
    assert (seg_dir / PENDING_ROWS_NAME).exists() and not (seg_dir / BITS_NAME).exists()
    idx = reader.load_index(tmp_path / ".msearch")
    reader.verify(idx)  # status's row-by-row check accepts the pending rows' zeros
    query_model = FakeEmbedder()
    searcher = Searcher(idx, query_model.encode, open_lexical(idx), "hybrid")
    hits = searcher.query("moon river", k=5)
    assert hits and query_model.calls == 0  # no vector anywhere: the query is not encoded
    # Ranked by words alone: the same order as a lexical search.
    lexical = Searcher(idx, None, open_lexical(idx), "lexical").query("moon river", k=5)
    assert [(h.path, h.start_line) for h in hits] == [(h.path, h.start_line) for h in lexical]
    # A dense search finds nothing yet: no passage has a vector.
    assert Searcher(idx, query_model.encode).query("moon river", k=5) == []


def test_vectors_then_equal_a_build_that_embeds_as_it_goes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    corpus(root, 20)
    emb = FakeEmbedder()
    config = IndexConfig(pending_rows=10)
    build_index(root, root / ".msearch", emb, chunking=SMALL, vectors=False, config=config)
    n = record.read_meta(root / ".msearch").count
    assert len(record.read_meta(root / ".msearch").segments) > 2  # pending segments of ~10 rows
    done = finish_pending(root / ".msearch", emb, config=config)
    assert done.embedded == n == emb.embedded and done.left == 0
    meta = record.read_meta(root / ".msearch")
    assert meta.waiting == 0 and not any(s.pending for s in meta.segments)
    ref = reference(root, tmp_path / "ref")
    assert by_file(root / ".msearch") == by_file(ref)
    for q in ("moon river", "alpha w3", "stone"):
        assert hybrid(root / ".msearch", q, n) == hybrid(ref, q, n)


def test_a_stopped_run_leaves_a_searchable_index_and_the_next_embeds_only_the_rest(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    corpus(root, 20)
    config = IndexConfig(pending_rows=10, window=4)
    emb = FakeEmbedder()
    calls = iter(range(10**6))
    stats = build_index(
        root,
        root / ".msearch",
        emb,
        chunking=SMALL,
        config=config,
        should_stop=lambda: next(calls) >= 6,  # a few slices in: one segment done, maybe two
    )
    meta = record.read_meta(root / ".msearch")
    assert 0 < stats.pending == meta.waiting < meta.count
    assert any(not s.pending for s in meta.segments)  # some vectors were committed
    assert len(hybrid(root / ".msearch", "moon river")) == 5  # both kinds rank together
    first = emb.embedded
    again = FakeEmbedder()
    stats = build_index(root, root / ".msearch", again, chunking=SMALL, config=config)
    assert stats.pending == 0 and again.embedded == meta.waiting  # only what was missing
    assert first + again.embedded >= meta.count
    assert by_file(root / ".msearch") == by_file(reference(root, tmp_path / "ref"))


def test_pending_segments_are_not_merged_and_their_zeros_are_never_reused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    corpus(root, 12)
    config = IndexConfig(merge=TieredMergePolicy(factor=2, floor_rows=2), pending_rows=8)
    build_index(
        root, root / ".msearch", FakeEmbedder(), chunking=SMALL, vectors=False, config=config
    )
    pending = {s.name for s in record.read_meta(root / ".msearch").segments}
    # An update while everything is pending: a renamed file's rows are in a
    # pending segment, with zeros for vectors; they must be embedded, not reused.
    (root / "d0/f0.txt").rename(root / "d0/renamed.txt")
    write(root, "new.txt", text(99))
    build_index(
        root, root / ".msearch", FakeEmbedder(), chunking=SMALL, vectors=False, config=config
    )
    meta = record.read_meta(root / ".msearch")
    assert pending <= {s.name for s in meta.segments}  # no merge took a pending segment
    finish_pending(root / ".msearch", FakeEmbedder(), config=config)
    build_index(
        root, root / ".msearch", FakeEmbedder(), chunking=SMALL, config=config
    )  # merges now
    reader.verify(reader.load_index(root / ".msearch"))  # every live vector is a unit vector
    assert by_file(root / ".msearch") == by_file(reference(root, tmp_path / "ref"))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(
                st.tuples(
                    st.sampled_from(["write", "append", "delete", "rename"]),
                    st.integers(0, 9),
                    st.integers(0, 50),
                ),
                max_size=4,
            ),
            st.integers(0, 12),  # slices embedded before the run is stopped (12: all)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_interrupted_history_finishes_as_a_build_that_embeds_as_it_goes(
    tmp_path: Path, steps: list[tuple[list[tuple[str, int, int]], int]]
) -> None:
    """Edits, each update stopped after a random number of embedded slices
    (or not), then one run to the end: the same passages, keys and vectors
    per file, and the same answers, as a build that embeds as it goes."""
    root = tmp_path / f"case{abs(hash(str(steps))) % 10**9}"
    shutil.rmtree(root, ignore_errors=True)
    corpus(root, 8)
    config = IndexConfig(merge=TieredMergePolicy(factor=3, floor_rows=4), pending_rows=6, window=3)
    for edits, slices in steps:
        for op, a, seed in edits:
            path = root / f"d{a % 3}/f{a}.txt"
            if op == "write":
                write(root, f"d{a % 3}/f{a}.txt", text(seed, 2 + seed % 5))
            elif op == "append" and path.exists():
                path.write_text(path.read_text() + text(seed, 2))
            elif op == "delete" and path.exists():
                path.unlink()
            elif op == "rename" and path.exists():
                path.rename(root / f"d{a % 3}/g{seed}.txt")
        counter = iter(range(10**6))
        build_index(
            root,
            root / ".msearch",
            FakeEmbedder(),
            chunking=SMALL,
            config=config,
            should_stop=None if slices == 12 else (lambda c=counter, s=slices: next(c) >= s),
        )
        hybrid(root / ".msearch", "moon w7")  # searchable at every step
    build_index(root, root / ".msearch", FakeEmbedder(), chunking=SMALL, config=config)
    assert record.read_meta(root / ".msearch").waiting == 0
    ref = reference(root, tmp_path / "ref")
    assert by_file(root / ".msearch") == by_file(ref)
    everything = record.read_meta(ref).count
    for q in ("moon river", "w7 w8 w9"):
        assert hybrid(root / ".msearch", q, everything) == hybrid(ref, q, everything)


def test_kill_9_while_embedding_leaves_a_searchable_index(tmp_path: Path) -> None:
    """Killed at random moments of the vector half (slow embedding, small
    pending segments): the index always loads and answers, and the next run
    embeds only what is still pending and ends as a full build."""
    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    corpus(root, 30)
    rng = random.Random(25)
    killed_pending = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(root), str(index_dir), "0.1", "words-first"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.8, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (index_dir / "meta.json").exists():
            continue  # killed before the words' commit
        meta = record.read_meta(index_dir)
        killed_pending += meta.waiting > 0
        idx = reader.load_index(index_dir)
        hits = Searcher(idx, FakeEmbedder().encode, open_lexical(idx), "hybrid").query(
            "w5 w18", k=3
        )
        assert len(hits) == 3
        reader.verify(idx)
    assert killed_pending  # some kills landed while vectors were pending
    emb = FakeEmbedder()
    waiting = record.read_meta(index_dir).waiting
    build_index(root, index_dir, emb, chunking=SMALL, config=IndexConfig(pending_rows=16))
    assert emb.embedded <= waiting  # nothing embedded twice
    assert by_file(index_dir) == by_file(reference(root, tmp_path / "ref"))
    leftovers = {p.name for p in index_dir.iterdir() if p.name.startswith("seg-")}
    assert leftovers == {s.name for s in record.read_meta(index_dir).segments}


def test_imputed_cosines_follow_the_words_on_the_cosines_scale() -> None:
    dense = np.array([0.9, 0.5, np.nan, 0.2, np.nan, np.nan], dtype=np.float32)
    lex = np.array([1.0, 3.0, 5.0, 0.5, 2.0, 0.0], dtype=np.float32)
    out = impute_cosines(dense, lex)
    assert out is not None and not np.isnan(out).any()
    known = ~np.isnan(dense)
    assert np.array_equal(out[known], dense[known])  # cosines that exist are kept
    # The best by words gets the best cosine; lower words, lower cosines.
    assert out[2] == pytest.approx(0.9) and out[5] <= out[4] <= out[2]
    assert out[4] >= 0.2 and out[5] == pytest.approx(0.2)
    assert impute_cosines(np.full(3, np.nan, np.float32), lex[:3]) is None
    complete = dense[:2].copy()
    assert impute_cosines(complete, lex[:2]) is complete


def test_status_tells_how_much_is_embedded(tmp_path: Path) -> None:
    from msearch.status import index_status

    corpus(tmp_path)
    build_index(tmp_path, tmp_path / ".msearch", FakeEmbedder(), chunking=SMALL, vectors=False)
    st = index_status(tmp_path / ".msearch")
    assert st.embedded == 0 < st.passages
    assert "no vector yet" in st.search and "--compact" not in st.search
    finish_pending(tmp_path / ".msearch", FakeEmbedder())
    st = index_status(tmp_path / ".msearch")
    assert st.embedded == st.passages


def test_a_server_update_commits_words_at_once_and_does_not_wait_for_the_embedding(
    tmp_path: Path,
) -> None:
    from conftest import FakeModels
    from msearch.service import SearchService

    root = tmp_path / "root"
    corpus(root, 30)
    slow = SlowFake(0.4)
    build_index(root, root / ".msearch", slow, chunking=SMALL, vectors=False)
    service = SearchService(
        root / ".msearch", models=FakeModels(slow), config=IndexConfig(window=4)
    )
    try:
        service.embed_pending()  # dozens of slices of 0.4 s each, in the background
        write(root, "zebra.txt", "zebra crossing stripes\n")
        stats = service.reindex()  # the words of zebra.txt, committed beside the embedding
        assert stats.added == 1 and stats.pending > 0
        hits = service.search("zebra stripes", k=3)
        assert hits and hits[0].path.endswith("zebra.txt")
        assert service.status()["embedded"] < service.status()["passages"]  # still embedding
        assert service.wait_embedded(120)
        st = service.status()
        assert st["embedded"] == st["passages"] > 0
        assert record.read_meta(root / ".msearch").waiting == 0
    finally:
        service.close()
    assert by_file(root / ".msearch") == by_file(reference(root, tmp_path / "ref"))


def test_mcp_on_a_folder_without_an_index_serves_at_once_and_embeds_behind(tmp_path: Path) -> None:
    """The real command (with the fake model, slowed): its first answers
    come before any vector, status says how much is embedded, and the
    vectors all arrive while it serves."""
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, get_default_environment

    root = tmp_path / "root"
    corpus(root, 30)
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(Path(__file__).parent / "fake_cli.py"), "mcp", str(root)],
        env={**get_default_environment(), "HF_HUB_OFFLINE": "1", "FAKE_EMBED_DELAY": "3"},
        cwd=str(tmp_path),
    )

    async def main() -> tuple[object, object, object]:
        async with Client(params, read_timeout_seconds=60) as client:
            first = await client.call_tool("status", {})
            found = await client.call_tool("search", {"query": "moon river"})
            for _ in range(120):
                last = await client.call_tool("status", {})
                got = last.structured_content
                if got["embedded"] == got["passages"]:
                    break
                await anyio.sleep(0.5)
            return first, found, last

    first, found, last = anyio.run(main)
    early = first.structured_content  # type: ignore[attr-defined]
    assert early["embedded"] < early["passages"]
    assert found.structured_content["results"]  # type: ignore[attr-defined]
    late = last.structured_content  # type: ignore[attr-defined]
    assert late["embedded"] == late["passages"] == early["passages"]


def test_an_uninterrupted_update_ends_as_one_new_segment(tmp_path: Path) -> None:
    """Pending segments of ~10 rows while it runs, one segment at the end:
    no more segments (files for a cold query to open) than before."""
    corpus(tmp_path, 20)
    config = IndexConfig(pending_rows=10)
    stats = build_index(
        tmp_path, tmp_path / ".msearch", FakeEmbedder(), chunking=SMALL, config=config
    )
    meta = record.read_meta(tmp_path / ".msearch")
    assert stats.passages > 30 and len(meta.segments) == 1 and meta.waiting == 0
    write(tmp_path, "more.txt", text(77, 30))
    build_index(tmp_path, tmp_path / ".msearch", FakeEmbedder(), chunking=SMALL, config=config)
    assert len(record.read_meta(tmp_path / ".msearch").segments) == 2


def test_watch_commits_a_new_files_words_while_the_first_vectors_are_embedded(
    tmp_path: Path,
) -> None:
    """`msearch watch` (the fake model, 4 s a slice) on a folder without an
    index: its words are committed at once, and a file written meanwhile
    is searchable by its words before the first slice of vectors is done;
    then every vector arrives."""
    root = tmp_path / "root"
    corpus(root, 30)
    index_dir = root / ".msearch"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "fake_cli.py"), "watch", str(root)]
        + ["--debounce", "100"],
        env={**os.environ, "FAKE_EMBED_DELAY": "4", "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (index_dir / "meta.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        first = record.read_meta(index_dir)
        assert first.waiting == first.count > 0
        write(root, "zebra.txt", "zebra crossing stripes\n")
        meta = first
        while "zebra.txt" not in {f.path for f in meta.files} and time.monotonic() < deadline:
            time.sleep(0.05)
            meta = record.read_meta(index_dir)
        assert "zebra.txt" in {f.path for f in meta.files}
        assert meta.waiting > 0  # the first slice of vectors is still being embedded
        idx = reader.load_index(index_dir)
        hits = Searcher(idx, None, open_lexical(idx), "lexical").query("zebra", k=1)
        assert hits and hits[0].path.endswith("zebra.txt")
        while record.read_meta(index_dir).waiting and time.monotonic() < deadline + 60:
            time.sleep(0.2)
        assert record.read_meta(index_dir).waiting == 0
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ref = tmp_path / "ref"  # the same command line's chunking and model
    subprocess.run(
        [sys.executable, str(Path(__file__).parent / "fake_cli.py"), "index", str(root)]
        + ["--index", str(ref), "-q"],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert by_file(index_dir) == by_file(ref)


def test_chunking_in_worker_processes_gives_the_same_passages(tmp_path: Path) -> None:
    """Batches chunked in forked workers come back in order and equal to
    chunking them here (words first chunks large updates on every core)."""
    from msearch.chunking import ChunkSettings as CS
    from msearch.chunking import chunker_for
    from msearch.chunking.parallel import chunk_batches

    chunker = chunker_for(FakeEmbedder().counter, CS(max_tokens=40, overlap_tokens=4))
    code = "def f{i}(x):\n    return x + {i}\n\nclass C{i}:\n    def m(self):\n        pass\n"
    batches = [
        [(f"f{b}_{i}.py", code.format(i=i) * (1 + i % 3)) for i in range(5)]
        + [(f"n{b}.md", f"# Title {b}\n\n" + text(b, 12))]
        for b in range(7)
    ]
    here = [chunker.chunk(b) for b in batches]
    there = list(chunk_batches(chunker, iter(batches), 2))
    assert there == here and sum(len(p) for b in there for p in b) > 50


def test_a_large_update_chunked_on_every_core_equals_one_chunked_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process (one thread: workers allowed) indexes 600 KB of text
    with its chunking workers; the same in this process without them gives
    the same passages, keys and vectors."""
    from msearch.chunking.parallel import MIN_PARALLEL_CHARS, workers_for

    root = tmp_path / "root"
    for i in range(60):
        write(root, f"d{i % 4}/f{i}.txt", text(i, 360))
    size = sum(p.stat().st_size for p in root.rglob("*.txt"))
    assert size > MIN_PARALLEL_CHARS
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no workers")
    subprocess.run(
        [sys.executable, str(HELPER), str(root), str(tmp_path / "parallel"), "0"],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("MSEARCH_CHUNK_WORKERS", "0")
    assert workers_for(size) == 0
    build_index(root, tmp_path / "here", FakeEmbedder(), chunking=SMALL)
    assert by_file(tmp_path / "parallel") == by_file(tmp_path / "here")


def test_a_query_says_on_a_terminal_how_much_is_embedded(tmp_path: Path) -> None:
    """On a terminal (stderr a pty) a query of a partly embedded index says
    how many passages have their vectors; in a pipeline it says nothing."""
    import pty

    root = tmp_path / "root"
    corpus(root)
    build_index(root, root / ".msearch", FakeEmbedder(), chunking=SMALL, vectors=False)
    total = record.read_meta(root / ".msearch").count
    cmd = [sys.executable, str(Path(__file__).parent / "fake_cli.py"), "query", "moon river"]
    cmd += ["--index", str(root / ".msearch"), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    master, slave = pty.openpty()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, env=env, timeout=60)
        os.close(slave)
        said = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(master)
    assert r.returncode == 0 and r.stdout
    assert f"0 of {total} passages have their vectors so far".encode() in said
    piped = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert piped.returncode == 0 and "vectors" not in piped.stderr


def test_a_full_disk_while_embedding_leaves_the_words_searchable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while a finished segment is written: one error, the
    words stay committed and searchable, nothing half-written is left, and
    the next run embeds what is missing."""
    import errno

    from msearch.errors import IndexWriteError
    from msearch.storage import segment

    root = tmp_path / "root"
    corpus(root, 20)
    real = segment.SegmentWriter.close
    calls = {"n": 0}

    def full(self, lexical=None):  # type: ignore[no-untyped-def]
        if lexical is not None:  # a finished copy (the words' segments build their own)
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.dir))
        return real(self, lexical)

    monkeypatch.setattr(segment.SegmentWriter, "close", full)
    config = IndexConfig(pending_rows=10)
    with pytest.raises(IndexWriteError, match="No space left on device"):
        build_index(root, root / ".msearch", FakeEmbedder(), chunking=SMALL, config=config)
    meta = record.read_meta(root / ".msearch")
    assert 0 < meta.waiting < meta.count  # one segment finished, the rest by words
    assert len(hybrid(root / ".msearch", "moon river")) == 5
    leftovers = {p.name for p in (root / ".msearch").iterdir() if p.name.startswith("seg-")}
    assert leftovers == {s.name for s in meta.segments}
    monkeypatch.setattr(segment.SegmentWriter, "close", real)
    again = FakeEmbedder()
    build_index(root, root / ".msearch", again, chunking=SMALL, config=config)
    assert again.embedded == meta.waiting
    assert by_file(root / ".msearch") == by_file(reference(root, tmp_path / "ref"))
