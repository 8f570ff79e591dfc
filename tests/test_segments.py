"""The segmented index (issue 12): updates write one new segment, reuse the
vectors of unchanged passages, merge by policy, and answer exactly as a
fresh full build would."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeEmbedder, write
from msearch.chunking import ChunkSettings
from msearch.config import IndexConfig
from msearch.indexer import build_index
from msearch.merge import TieredMergePolicy
from msearch.query import Searcher, open_lexical
from msearch.storage import layout, reader, record
from msearch.storage.record import SegmentInfo

SMALL = ChunkSettings(max_tokens=24, overlap_tokens=4)
WORDS = ["alpha", "beta", "gamma", "delta", "moon", "bread", "river", "stone", "cloud", "rain"]
VOCAB = WORDS + [f"w{i}" for i in range(300)]


def paragraph(seed: int, lines: int = 3) -> str:
    """Lines of words drawn by a generator seeded with ``seed``: paragraphs
    of different seeds differ, as real paragraphs do."""
    import random

    rng = random.Random(seed)
    return "\n".join(
        " ".join(rng.choice(VOCAB) for _ in range(3 + rng.randrange(6))) for _ in range(lines)
    )


def document(seeds: list[int]) -> str:
    """Paragraphs separated by blank lines, a heading now and then."""
    parts = []
    for k, s in enumerate(seeds):
        if k % 5 == 0:
            parts.append(f"# Part {s}")
        parts.append(paragraph(s, 1 + s % 4))
    return "\n\n".join(parts) + "\n"


def build(root: Path, emb: FakeEmbedder | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return build_index(root, root / ".msearch", emb or FakeEmbedder(), chunking=SMALL, **kw)  # type: ignore[arg-type]


def ranking(index_dir: Path, query: str, mode: str) -> list[tuple[float, str, int, int]]:
    """Every hit (k = all passages) as (score, path, start, end), ties in a
    fixed order: the row order of two indexes may differ, not their answers."""
    idx = reader.load_index(index_dir)
    if idx.count == 0:
        return []
    lexical = open_lexical(idx) if mode != "dense" else None
    fake = FakeEmbedder()
    hits = Searcher(idx, fake.encode, lexical, mode).query(query, k=idx.count)
    return sorted((round(h.score, 5), h.path, h.start_line, h.end_line) for h in hits)


def same_answers(a: Path, b: Path) -> None:
    for mode in ("dense", "lexical", "hybrid"):
        for q in ("moon river", "bread tea salt", "alpha", "gamma delta cloud rain"):
            ra, rb = ranking(a, q, mode), ranking(b, q, mode)
            assert len(ra) == len(rb), (mode, q)
            for x, y in zip(ra, rb, strict=True):
                assert x[1:] == y[1:] and abs(x[0] - y[0]) <= 1e-5, (mode, q, x, y)


ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["write", "insert", "append", "delete", "rename", "touch", "merge", "compact"]
        ),
        st.integers(0, 7),
        st.integers(0, 60),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, min_size=1, max_size=5))
def test_any_history_answers_as_a_fresh_build(
    tmp_path: Path, steps: list[list[tuple[str, int, int]]]
) -> None:
    """Writes, edits (insertions, appends), deletes and renames, with updates,
    policy merges and compactions in between: the same hits and scores
    (within 1e-5) as a fresh full build, for dense, lexical and hybrid."""
    # Tiny tiers, so that the policy merges within a few updates.
    config = IndexConfig(merge=TieredMergePolicy(factor=3, floor_rows=4))
    root = tmp_path / f"case{abs(hash(str(steps))) % 10**9}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for i in range(4):
        write(root, f"f{i}.md", document([i, i + 1, i + 2]))
    build(root, config=config)
    for batch in steps:
        compact = False
        for op, a, seed in batch:
            path = root / f"f{a}.md"
            if op == "write":
                write(root, f"f{a}.md", document([seed, seed + 3]))
            elif op == "insert" and path.exists():
                path.write_text(paragraph(seed) + "\n\n" + path.read_text())
            elif op == "append" and path.exists():
                path.write_text(path.read_text() + "\n" + paragraph(seed) + "\n")
            elif op == "delete" and path.exists():
                path.unlink()
            elif op == "rename" and path.exists():
                path.rename(root / f"f{(a + 3) % 8}.md")
            elif op == "touch" and path.exists():
                os.utime(path, ns=(seed * 10**9, seed * 10**9))
            elif op == "compact":
                compact = True
        build(root, compact=compact, config=config)
    fresh = tmp_path / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    build_index(root, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    same_answers(root / ".msearch", fresh)


def test_an_update_writes_one_segment_and_touches_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        path = write(tmp_path, f"f{i}.md", document([i, i + 10, i + 20]))
        os.utime(path, ns=(10**18, 10**18))  # settled: older than the index (see settled_mtime)
    build(tmp_path)
    index_dir = tmp_path / ".msearch"
    first = record.read_meta(index_dir).segments[0]
    old_rows = {f.path: f.rows for f in record.read_meta(index_dir).files}
    before = {
        p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (index_dir / first.name).iterdir()
    }

    import msearch.pipeline

    read: list[str] = []
    real = msearch.pipeline.read_bytes

    def spy(path: Path, *a, **k):  # type: ignore[no-untyped-def]
        read.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(msearch.pipeline, "read_bytes", spy)
    write(tmp_path, "f2.md", document([2, 12, 99]))
    (tmp_path / "f4.md").unlink()
    stats = build(tmp_path)
    assert set(read) == {"f2.md"}  # no unchanged file is read
    meta = record.read_meta(index_dir)
    assert [s.name for s in meta.segments][0] == first.name and len(meta.segments) == 2
    after = {
        p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (index_dir / first.name).iterdir()
    }
    assert after == before  # the old segment is not rewritten
    old, new = meta.segments
    assert new.rows == new.live_rows == meta.files[2].rows
    assert old.live_rows == old.rows - old_rows["f2.md"] - old_rows["f4.md"]
    assert stats.passages == meta.count == old.live_rows + new.live_rows


def long_document() -> str:
    return document(list(range(80)))


def test_appending_a_paragraph_embeds_at_most_three_passages(tmp_path: Path) -> None:
    write(tmp_path, "long.md", long_document())
    s = build(tmp_path)
    assert s.passages >= 50
    path = tmp_path / "long.md"
    path.write_text(path.read_text() + "\n" + paragraph(999, 3) + "\n")
    emb = FakeEmbedder()
    s = build(tmp_path, emb)
    assert s.changed == 1 and 1 <= s.embedded <= 3 and emb.embedded == s.embedded
    fresh = tmp_path.parent / (tmp_path.name + "-fresh")
    build_index(tmp_path, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    same_answers(tmp_path / ".msearch", fresh)


def test_inserting_near_the_top_does_not_shift_every_passage(tmp_path: Path) -> None:
    write(tmp_path, "long.md", long_document())
    s = build(tmp_path)
    path = tmp_path / "long.md"
    lines = path.read_text().split("\n\n")
    path.write_text("\n\n".join([lines[0], paragraph(777, 2), *lines[1:]]))
    s = build(tmp_path)
    assert s.embedded <= 8, s.embedded  # of about 70: the boundaries meet again
    assert s.reused >= s.passages - 8


def test_a_renamed_file_is_not_embedded_again(tmp_path: Path) -> None:
    """Plain text: its passages are its text alone. (Code and Markdown
    passages carry their file's path in what is embedded: renaming such a
    file embeds it again, by design.)"""
    write(tmp_path, "a.txt", long_document())
    build(tmp_path)
    (tmp_path / "a.txt").rename(tmp_path / "b.txt")
    s = build(tmp_path)
    assert (s.added, s.removed, s.embedded) == (1, 1, 0)


def test_dead_segments_are_dropped_and_compaction_gives_the_fresh_layout(
    tmp_path: Path,
) -> None:
    for i in range(5):
        write(tmp_path, f"f{i}.md", document([i, 2 * i]))
    build(tmp_path)
    first = record.read_meta(tmp_path / ".msearch").segments[0].name
    for i in range(5):  # every file changes: the first segment has no live row left
        write(tmp_path, f"f{i}.md", document([i + 30, 2 * i]))
        build(tmp_path)
    meta = record.read_meta(tmp_path / ".msearch")
    assert first not in {s.name for s in meta.segments}
    assert not (tmp_path / ".msearch" / first).exists()
    assert len(meta.segments) > 1
    s = build(tmp_path, compact=True)
    assert s.segments == 1 and s.embedded == 0
    fresh = tmp_path.parent / (tmp_path.name + "-fresh")
    build_index(tmp_path, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    got, want = reader.load_index(tmp_path / ".msearch"), reader.load_index(fresh)
    assert [(f.path, f.row, f.rows) for f in got.meta.files] == [
        (f.path, f.row, f.rows) for f in want.meta.files
    ]
    for a, b in zip(got.table(), want.table(), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(got.segments[0].passages, want.segments[0].passages)
    for name in ("lex_terms.npy", "lex_rows.npy", "lex_tfs.npy", "lex_lengths.npy", "keys.npy"):
        assert (got.segments[0].path / name).read_bytes() == (
            want.segments[0].path / name
        ).read_bytes()


def test_merge_policy() -> None:
    def seg(rows: int, live: int | None = None) -> SegmentInfo:
        live = rows if live is None else live
        return SegmentInfo(f"seg-{rows:012x}", rows, rows, live, live)

    policy = TieredMergePolicy()
    f = policy.factor
    assert policy.plan([seg(10**6)] + [seg(5)] * (f - 1)) == []
    groups = policy.plan([seg(10**6)] + [seg(5 + i) for i in range(f)])
    assert groups == [list(range(1, f + 1))]  # the small ones, never the big one
    # A segment with many dead rows is rewritten with its live rows alone.
    assert policy.plan([seg(10**5, 10**4), seg(10**6)]) == [[0]]
    # Tiers: ten segments of 10,000 make one of 100,000; a lone tier stays.
    assert policy.plan([seg(10**4)] * f) == [list(range(f))]
    assert policy.plan([seg(10**4)] * (f - 1) + [seg(10**5)]) == []


def test_many_small_updates_keep_few_segments(tmp_path: Path) -> None:
    config = IndexConfig(merge=TieredMergePolicy(factor=4, floor_rows=8))
    for i in range(8):
        write(tmp_path, f"f{i}.md", document([i]))
    build(tmp_path, config=config)
    counts = []
    for step in range(60):
        write(tmp_path, f"f{step % 8}.md", document([step + 100]))
        counts.append(build(tmp_path, config=config).segments)
    assert max(counts) <= 3 * 4  # about (factor - 1) a tier, a few tiers
    fresh = tmp_path.parent / (tmp_path.name + "-fresh")
    build_index(tmp_path, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    same_answers(tmp_path / ".msearch", fresh)


def make_v1_index(tmp_path: Path) -> Path:
    """An index as schema 1 stored it (one data folder), of four one-passage
    files (plain text: passages without a context, as schema 1 had them)."""
    for i in range(4):
        write(tmp_path, f"f{i}.txt", paragraph(i, 1) + "\n")  # one short passage each
    build(tmp_path)
    index_dir = tmp_path / ".msearch"
    idx = reader.load_index(index_dir)
    passages, vectors = idx.table()
    old = index_dir / "data-0123456789ab"
    old.mkdir()
    np.save(old / "embeddings.npy", vectors)
    np.save(old / "passages.npy", passages)
    meta = json.loads((index_dir / layout.META_NAME).read_text())
    v1 = {k: v for k, v in meta.items() if k not in ("segments", "lexical")}
    v1.update(schema_version=1, data=old.name, count=len(vectors), root=str(tmp_path))
    for k in ("segment", "row", "rows"):
        del v1["files"][k]
    (index_dir / layout.META_NAME).write_text(json.dumps(v1))
    for s in meta["segments"]:
        shutil.rmtree(index_dir / s["name"])
    marker = json.loads((index_dir / layout.MARKER_NAME).read_text())
    marker["generations"] = [old.name]
    (index_dir / layout.MARKER_NAME).write_text(json.dumps(marker))
    return index_dir


def test_an_index_of_schema_1_is_converted(tmp_path: Path) -> None:
    """An index made before segments (schema 1: one data folder) is converted
    by the next `msearch index`, with a notice; passages whose text the new
    chunking keeps are not embedded again."""
    index_dir = make_v1_index(tmp_path)
    old = index_dir / "data-0123456789ab"
    from clihelp import cli

    r = cli("query", "moon", "--index", str(index_dir))
    r.one_line_error("older msearch", "msearch index DIR")
    notes: list[str] = []
    emb = FakeEmbedder()
    s = build(tmp_path, emb, notice=notes.append)
    assert any("older msearch" in n and "converting" in n for n in notes)
    assert s.embedded == emb.embedded == 0 and s.passages == 4
    assert not old.exists()  # the old data folder was msearch's: removed
    assert reader.load_index(index_dir).meta.schema_version == layout.SCHEMA_VERSION


def test_cli_compact_and_status(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    from clihelp import cli

    for i in range(3):
        write(tmp_path, f"f{i}.md", document([i, i + 5]))
    assert cli("index", str(tmp_path)).code == 0
    write(tmp_path, "f1.md", document([40, 41]))
    r = cli("index", str(tmp_path))
    assert r.code == 0 and "1 changed" in r.stderr
    status = cli("status", "--index", str(tmp_path / ".msearch"))
    assert b"segments:  2 (" in status.stdout
    r = cli("index", str(tmp_path), "--compact")
    assert r.code == 0 and "merged 2 segments into 1" in r.stderr and "(0 embedded)" in r.stderr
    status = cli("status", "--index", str(tmp_path / ".msearch"))
    assert b"segments:  1 (0 dead rows)" in status.stdout
    st = json.loads(cli("status", "--json", "--index", str(tmp_path / ".msearch")).stdout)
    assert st["segments"] == 1 and st["dead"] == 0


@pytest.mark.parametrize("missing", ["scan.npy", "int8.faiss", "int8_scale.npy"])
def test_compact_adds_the_files_an_older_segment_lacks(
    tmp_path: Path, use_fake: FakeEmbedder, missing: str
) -> None:
    """A segment written before ``scan.npy`` or the int8 codes existed
    searches (its bits are reordered in memory, its candidates scored from
    float32); ``--compact`` rewrites it with the files."""
    from clihelp import cli
    from msearch.coarse import SCAN_NAME
    from msearch.int8 import CODES_NAME, SCALE_NAME

    write(tmp_path, "f0.md", document([1, 2]))
    assert cli("index", str(tmp_path)).code == 0
    index_dir = tmp_path / ".msearch"
    seg = reader.load_index(index_dir).segments[0].path
    assert cli("index", str(tmp_path), "--compact").code == 0
    assert reader.load_index(index_dir).segments[0].path == seg  # nothing to do
    (seg / missing).unlink()
    r = cli("index", str(tmp_path), "--compact")
    assert r.code == 0, r.stderr
    index = reader.load_index(index_dir)
    assert index.segments[0].path != seg
    for name in (SCAN_NAME, CODES_NAME, SCALE_NAME):
        assert (index.segments[0].path / name).exists()
    assert index.segments[0].int8() is not None


def test_compact_leaves_a_segment_alone_where_faiss_cannot_map_codes(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (review): with a faiss that cannot map int8 codes none are
    written, and ``--compact`` must not count them missing (it rewrote the
    segment at every run)."""
    import msearch.int8
    from clihelp import cli
    from msearch.int8 import CODES_NAME

    monkeypatch.setattr(msearch.int8, "_faiss", lambda: None)
    write(tmp_path, "f0.md", document([1, 2]))
    assert cli("index", str(tmp_path)).code == 0
    index_dir = tmp_path / ".msearch"
    seg = reader.load_index(index_dir).segments[0].path
    assert not (seg / CODES_NAME).exists() and (seg / "scan.npy").exists()
    assert cli("index", str(tmp_path), "--compact").code == 0
    assert reader.load_index(index_dir).segments[0].path == seg


def test_files_without_passages_survive_updates_and_merges(tmp_path: Path) -> None:
    """Regression (review): a merge gave an empty file a row; an update of an
    index with no segment at all raised IndexError."""
    config = IndexConfig(merge=TieredMergePolicy(factor=2, floor_rows=4))
    write(tmp_path, "empty.md", "")
    write(tmp_path, "blank.md", "\n  \n")
    build(tmp_path, config=config)  # files, no passage, no segment
    write(tmp_path, "blank.md", document([1, 2]))
    write(tmp_path, "new.md", document([3]))
    build(tmp_path, config=config)
    for k in range(4):
        write(tmp_path, "new.md", document([10 + k]))
        build(tmp_path, config=config)  # policy merges every other update
    build(tmp_path, compact=True, config=config)
    fresh = tmp_path.parent / (tmp_path.name + "-fresh")
    build_index(tmp_path, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    same_answers(tmp_path / ".msearch", fresh)
    assert [f.rows for f in reader.load_index(tmp_path / ".msearch").meta.files][1] == 0


def test_converting_keeps_only_the_same_models_vectors(tmp_path: Path) -> None:
    """Regression (review): a schema-1 index of another model must not lend
    its vectors to the new one."""
    make_v1_index(tmp_path)
    emb = FakeEmbedder(fingerprint="another-model")
    s = build(tmp_path, emb)
    assert s.embedded == emb.embedded == s.passages == 4


def test_rows_of_a_mapped_matrix_are_located_in_their_mapping(tmp_path: Path) -> None:
    """What prefetching the rows a large search rescores relies on: where a
    memory-mapped matrix (or a slice of it) starts in its mapping."""
    from msearch.storage.segment import _mapping, prefetch_rows, read_rows_at_random

    matrix = np.arange(300 * 24, dtype=np.float32).reshape(300, 24)
    np.save(tmp_path / "m.npy", matrix)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    header = (tmp_path / "m.npy").stat().st_size - matrix.nbytes
    mm, start = _mapping(mapped)
    assert mm is not None and start == header
    assert bytes(mm[start : start + 96]) == matrix[0].tobytes()
    assert _mapping(mapped[10:])[1] == header + 10 * 96
    assert _mapping(matrix) == (None, 0)  # ordinary memory: nothing to advise
    prefetch_rows(mapped, np.array([0, 299, 150]))  # the last row's range ends the map
    prefetch_rows(matrix, np.array([0]))
    read_rows_at_random(mapped)
    assert np.array_equal(mapped, matrix)
    with pytest.raises(ValueError):  # a row beyond the map is refused, never read
        prefetch_rows(mapped, np.array([300 + 4096]))
