from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeEmbedder, snapshot, write
from msearch.chunking import ChunkSettings
from msearch.config import IndexConfig
from msearch.errors import UsageError
from msearch.indexer import build_index
from msearch.storage import layout, reader, record

SMALL = ChunkSettings(max_tokens=12, overlap_tokens=3)


def para(seed: int, lines: int = 6) -> str:
    words = ["alpha", "beta", "gamma", "delta", "moon", "bread", "river", "stone", "cloud"]
    return (
        "\n".join(
            " ".join(words[(seed * 7 + i * 3 + j) % len(words)] for j in range(1 + (seed + i) % 5))
            for i in range(lines)
        )
        + "\n"
    )


def build(root: Path, emb: FakeEmbedder | None = None, **kw: object):  # type: ignore[no-untyped-def]
    emb = emb or FakeEmbedder()
    return build_index(root, root / ".msearch", emb, chunking=SMALL, **kw)  # type: ignore[arg-type]


def rows_by_file(index_dir: Path) -> dict[str, list[tuple[tuple[int, ...], list[float]]]]:
    idx = reader.load_index(index_dir)
    out: dict[str, list[tuple[tuple[int, ...], list[float]]]] = {}
    passages, vectors = idx.table()
    for row, vec in zip(passages, vectors, strict=True):
        path = idx.meta.files[int(row[0])].path
        out.setdefault(path, []).append((tuple(int(v) for v in row[1:]), vec.round(5).tolist()))
    return out


def test_first_build_and_noop_rebuild(tmp_path: Path) -> None:
    for i in range(5):
        write(tmp_path, f"d/f{i}.txt", para(i))
    emb = FakeEmbedder()
    s1 = build(tmp_path, emb)
    assert (s1.files, s1.added, s1.changed, s1.removed) == (5, 5, 0, 0)
    assert s1.embedded == s1.passages > 5
    embedded_before = emb.embedded
    s2 = build(tmp_path, emb)
    assert (s2.added, s2.changed, s2.removed, s2.unchanged, s2.embedded) == (0, 0, 0, 5, 0)
    assert emb.embedded == embedded_before  # nothing re-embedded
    assert s2.passages == s1.passages


def test_incremental_changes(tmp_path: Path) -> None:
    for i in range(4):
        write(tmp_path, f"f{i}.txt", para(i))
    build(tmp_path)
    write(tmp_path, "f1.txt", para(10))  # changed
    (tmp_path / "f2.txt").unlink()  # removed
    write(tmp_path, "new.txt", para(11))  # added
    os.utime(tmp_path / "f3.txt", ns=(1, 1))  # touched, same content
    emb = FakeEmbedder()
    s = build(tmp_path, emb)
    assert (s.added, s.changed, s.removed, s.unchanged) == (1, 1, 1, 2)
    assert s.embedded == emb.embedded and 0 < s.embedded < s.passages
    assert set(rows_by_file(tmp_path / ".msearch")) == {"f0.txt", "f1.txt", "f3.txt", "new.txt"}


def test_model_or_chunking_change_forces_full(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", para(1))
    build(tmp_path)
    notes: list[str] = []
    s = build(tmp_path, FakeEmbedder(fingerprint="fake-2"), notice=notes.append)
    assert s.full_reason and "model changed" in s.full_reason and s.added == 1
    s = build_index(
        tmp_path,
        tmp_path / ".msearch",
        FakeEmbedder(fingerprint="fake-2"),
        chunking=ChunkSettings(max_tokens=20, overlap_tokens=0),
        notice=notes.append,
    )
    assert s.full_reason == "the chunking settings changed"
    assert any("rebuilding" in n for n in notes)


def test_damaged_previous_index_is_rebuilt(tmp_path: Path) -> None:
    write(tmp_path, "a.txt", para(1))
    build(tmp_path)
    (tmp_path / ".msearch" / "meta.json").write_text("garbage")
    s = build(tmp_path)
    assert s.full_reason == "the previous index was damaged"
    assert reader.load_index(tmp_path / ".msearch").meta.count == s.passages


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        build_index(tmp_path / "nope", tmp_path / "i", FakeEmbedder())
    write(tmp_path, "file.txt", "x")
    with pytest.raises(UsageError, match="not a folder"):
        build_index(tmp_path / "file.txt", tmp_path / "i", FakeEmbedder())


def test_empty_and_binary_only_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    s = build_index(tmp_path / "empty", tmp_path / "i1", FakeEmbedder())
    assert (s.files, s.passages) == (0, 0)
    assert reader.load_index(tmp_path / "i1").meta.count == 0
    write(tmp_path, "bin/a.bin", b"\x00\x01\x02" * 100)
    write(tmp_path, "bin/b.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    s = build_index(tmp_path / "bin", tmp_path / "i2", FakeEmbedder())
    assert s.files == 0 and [k.reason for k in s.skipped] == ["binary", "binary"]


def test_corpus_is_never_modified(tmp_path: Path) -> None:
    for i in range(6):
        write(tmp_path, f"sub/f {i} é.md", para(i))
    write(tmp_path, "bin.dat", b"\x00" * 10)
    before = snapshot(tmp_path)
    build(tmp_path)
    write(tmp_path, "sub/f 0 é.md", para(20))
    before = snapshot(tmp_path)
    build(tmp_path)
    build(tmp_path, full=True)
    assert snapshot(tmp_path) == before
    assert {p.name for p in tmp_path.iterdir()} == {"sub", "bin.dat", ".msearch"}


# --- incremental == full, over random sequences of file operations -----------

ops = st.lists(
    st.tuples(
        st.sampled_from(["write", "edit", "delete", "rename", "touch"]),
        st.integers(0, 7),
        st.integers(0, 50),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(ops, min_size=1, max_size=3))
def test_incremental_equals_full_rebuild(
    tmp_path: Path, steps: list[list[tuple[str, int, int]]]
) -> None:
    root = tmp_path / f"case{abs(hash(str(steps))) % 10**9}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for i in range(4):
        write(root, f"f{i}.txt", para(i))
    build(root)
    for batch in steps:
        for op, a, seed in batch:
            path = root / f"f{a}.txt"
            if op == "write":
                write(root, f"f{a}.txt", para(seed, 1 + seed % 9))
            elif op == "edit" and path.exists():
                path.write_text(path.read_text() + para(seed, 2))
            elif op == "delete" and path.exists():
                path.unlink()
            elif op == "rename" and path.exists():
                path.rename(root / f"f{(a + 3) % 8}.txt")
            elif op == "touch" and path.exists():
                os.utime(path, ns=(seed * 10**9, seed * 10**9))
        build(root)
    incremental = rows_by_file(root / ".msearch")
    fresh = tmp_path / "fresh"
    build_index(root, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    assert incremental == rows_by_file(fresh)
    assert file_table(root / ".msearch") == file_table(fresh)


def file_table(index_dir: Path) -> list[tuple[str, int, int, str, int]]:
    """What each file is and how many passages it has (not where they are)."""
    return [
        (f.path, f.size, f.mtime_ns, f.sha256, f.rows)
        for f in reader.load_index(index_dir).meta.files
    ]


def test_files_pointing_outside_their_segment_force_a_rebuild(tmp_path: Path) -> None:
    import json

    write(tmp_path, "a.txt", para(1))
    build(tmp_path)
    meta_path = tmp_path / ".msearch" / layout.META_NAME
    meta = json.loads(meta_path.read_text())
    meta["files"]["row"] = [7]
    meta_path.write_text(json.dumps(meta))
    s = build(tmp_path)
    assert s.full_reason == "the previous index was damaged" and s.added == 1


def test_an_update_rebuilds_an_index_that_names_a_file_outside_its_root(tmp_path: Path) -> None:
    """Regression (the damaged-index fuzz test, with a new seed): a file
    table naming ``../elsewhere/a.md`` made the update count that record as
    removed and its real file as added, moving its rows to a new segment;
    the index is damaged, and is rebuilt as a fresh build would make it."""
    for i in range(3):
        write(tmp_path, f"f{i}.txt", para(i, 2))
    build(tmp_path)
    fresh = reader.load_index(tmp_path / ".msearch").table()
    meta_path = tmp_path / ".msearch" / layout.META_NAME
    meta = json.loads(meta_path.read_text())
    meta["files"]["path"][0] = "../elsewhere/f0.txt"
    meta_path.write_text(json.dumps(meta))
    s = build(tmp_path)
    assert s.full_reason == "the previous index was damaged" and s.added == 3
    again = reader.load_index(tmp_path / ".msearch")
    assert len(again.segments) == 1
    assert all(np.array_equal(a, b) for a, b in zip(again.table(), fresh, strict=True))


def test_texts_are_embedded_window_by_window(tmp_path: Path) -> None:
    """Indexing streams: the embedder never sees more than one window of texts."""
    for i in range(30):
        write(tmp_path, f"f{i:02d}.txt", para(i, 8))
    sizes: list[int] = []
    emb = FakeEmbedder()
    real = emb.encode
    emb.encode = lambda texts, batch_size=32: sizes.append(len(texts)) or real(texts)  # type: ignore[method-assign]
    stats = build(tmp_path, emb, config=IndexConfig(window=10))
    assert len(sizes) > 5 and max(sizes) < 10 + 8  # a window plus at most one file
    assert sum(sizes) == stats.passages


class AsyncFake(FakeEmbedder):
    """An embedder that runs ahead of the host, as torch_bert does on a GPU:
    ``submit`` returns at once and the vectors are asked for later."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []

    def submit(self, texts, batch_size=32):  # type: ignore[no-untyped-def]
        k = len([e for e in self.log if e[0] == "submit"])
        self.log.append(("submit", k))
        vecs = self.encode(texts, batch_size)

        def result() -> np.ndarray:
            self.log.append(("result", k))
            return vecs

        return result


def test_one_window_in_flight_rows_in_order(tmp_path: Path) -> None:
    """A window's vectors are asked for only after the next window was
    submitted (the device works while the host chunks), and the index is the
    same as one built window by window, including kept rows of unchanged files."""
    for i in range(30):
        write(tmp_path, f"f{i:02d}.txt", para(i, 8))
    plain = tmp_path.parent / (tmp_path.name + "-plain")
    for rnd in range(2):  # a full build, then an update that keeps most rows
        if rnd:
            for i in range(0, 30, 3):
                write(tmp_path, f"f{i:02d}.txt", para(40 + i, 8))
        emb = AsyncFake()
        build(tmp_path, emb, config=IndexConfig(window=10))
        build_index(tmp_path, plain, FakeEmbedder(), chunking=SMALL, config=IndexConfig(window=10))
        windows = len(emb.log) // 2
        assert windows >= (2 if rnd else 5)
        expected = [("submit", 0)]
        for k in range(1, windows):
            expected += [("submit", k), ("result", k - 1)]
        assert emb.log == expected + [("result", windows - 1)]
        assert rows_by_file(tmp_path / ".msearch") == rows_by_file(plain)


def lexical_by_passage(index_dir: Path, query: str) -> dict[tuple[str, int, int], float]:
    """BM25 score of every live passage, keyed by (path, start line, start char)."""
    from msearch.query import open_lexical

    idx = reader.load_index(index_dir)
    scores = open_lexical(idx).scores(query)
    out = {}
    for f, rec in enumerate(idx.meta.files):
        seg, a, b = idx.file_rows(f)
        if seg is None:
            continue
        for r in range(a, b):
            _, line, _, start, _ = (int(v) for v in seg.passages[r])
            out[(rec.path, line, start)] = float(scores[seg.offset + r])
    return out


def test_incremental_lexical_side_equals_full_rebuild(tmp_path: Path) -> None:
    for i in range(6):
        write(tmp_path, f"f{i}.txt", para(i))
    build(tmp_path)
    write(tmp_path, "f2.txt", para(30))
    (tmp_path / "f4.txt").unlink()
    write(tmp_path, "g.txt", para(31))
    build(tmp_path)
    fresh = tmp_path.parent / (tmp_path.name + "-fresh")
    build_index(tmp_path, fresh, FakeEmbedder(), chunking=SMALL, full=True)
    for q in ("alpha", "moon bread", "river stones", "delta gamma beta"):
        inc = lexical_by_passage(tmp_path / ".msearch", q)
        assert inc == lexical_by_passage(fresh, q)


def test_a_rewrite_within_one_mtime_step_is_not_missed(tmp_path: Path) -> None:
    """Regression: a file rewritten with the same size within the same
    timestamp step (a save twice in a tick under `msearch watch`) looked
    unchanged by size and mtime, and its old passages stayed. A file read
    while its mtime is that recent is recorded so that the next run hashes it."""
    fake = FakeEmbedder()
    path = write(tmp_path, "a.txt", "apple banana\n")
    build_index(tmp_path, tmp_path / ".msearch", fake)
    st = path.stat()
    path.write_text("cherry grape\n")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, as in one tick
    stats = build_index(tmp_path, tmp_path / ".msearch", fake)
    assert stats.changed == 1
    index = reader.load_index(tmp_path / ".msearch")
    assert index.meta.files[0].sha256 == __import__("hashlib").sha256(b"cherry grape\n").hexdigest()
    # Once the file is older than the step, it is recorded as it is, and a
    # later run neither reads nor re-embeds it.
    old = st.st_mtime_ns - 10 * 10**9
    os.utime(path, ns=(old, old))
    build_index(tmp_path, tmp_path / ".msearch", fake)
    assert record.read_meta(tmp_path / ".msearch").files[0].mtime_ns == old
    embedded = fake.embedded
    assert build_index(tmp_path, tmp_path / ".msearch", fake).unchanged == 1
    assert fake.embedded == embedded
