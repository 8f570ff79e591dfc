from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msearch.errors import IndexCorrupt, IndexLocked, IndexNotFound, IndexTooNew
from msearch.lexical import LexicalParams, build_lexical
from msearch.storage import layout, ownership, reader, record, segment
from msearch.storage.segment import SegmentWriter


def make_meta(n_files: int, infos: list[record.SegmentInfo], dim: int) -> record.Meta:
    rows = infos[0].rows if infos else 0
    per = rows // n_files if n_files else 0
    files = [
        record.FileRecord(
            f"f{i}.txt",
            i,
            i * 10,
            "0" * 64,
            0,
            i * per,
            (rows - i * per) if i == n_files - 1 else per,
        )
        for i in range(n_files)
    ]
    files = [
        f if f.rows else record.FileRecord(f.path, f.size, f.mtime_ns, f.sha256) for f in files
    ]
    return record.Meta(
        root="/r",
        model={"name": "m", "dim": dim, "fingerprint": "x"},
        chunking={"max_tokens": 10, "overlap_tokens": 2},
        walk={},
        files=files,
        dim=dim,
        segments=infos,
        lexical=LexicalParams.default().to_json(),
    )


def write_index(index_dir: Path, vecs: np.ndarray, rows: np.ndarray, n_files: int) -> None:
    ownership.claim(index_dir)
    w = SegmentWriter(ownership.new_segment_dir(index_dir), vecs.shape[1])
    keys = np.zeros((len(vecs), 16), np.uint8)
    for s in range(0, len(vecs), 7):  # awkward chunk size: streaming in pieces
        w.append(rows[s : s + 7], vecs[s : s + 7], keys[s : s + 7])
    info = w.close(build_lexical(["word"] * len(vecs)))
    ownership.commit(index_dir, make_meta(n_files, [info] if len(vecs) else [], vecs.shape[1]))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(0, 60), dim=st.integers(1, 20), seed=st.integers(0, 1000))
def test_round_trip(tmp_path: Path, n: int, dim: int, seed: int) -> None:
    index_dir = tmp_path / f"idx-{n}-{dim}-{seed}"
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    n_files = max(1, n // 3) if n else 1
    rows = np.stack(
        [np.zeros(n, np.int64)] + [rng.integers(1, 1000, n) for _ in range(4)], axis=1
    ).astype(np.int32)
    write_index(index_dir, vecs, rows, n_files)
    idx = reader.load_index(index_dir)
    assert len(idx.segments) == (1 if n else 0)
    if n:
        seg = idx.segments[0]
        assert np.array_equal(np.asarray(seg.embeddings), vecs)
        assert np.array_equal(seg.passages, rows)
        # The streamed header is a valid .npy for plain numpy too.
        assert np.load(seg.path / segment.EMBEDDINGS_NAME).shape == (n, dim)
    infos = record.read_meta(index_dir).segments
    assert idx.meta.files == make_meta(n_files, infos, dim).files


def good_index(tmp_path: Path) -> Path:
    index_dir = tmp_path / "idx"
    vecs = np.eye(4, 8, dtype=np.float32)
    rows = np.array([[0, 1, 1, 0, 1]] * 4, dtype=np.int32)
    write_index(index_dir, vecs, rows, 1)
    return index_dir


def data_file(index_dir: Path, name: str) -> Path:
    return index_dir / record.read_meta(index_dir).segments[0].name / name


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound, match="msearch index"):
        reader.load_index(tmp_path)


def test_truncated_embeddings(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    f = data_file(index_dir, segment.EMBEDDINGS_NAME)
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(IndexCorrupt, match=r"embeddings\.npy.*--full"):
        reader.load_index(index_dir)


def test_invalid_json(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    (index_dir / layout.META_NAME).write_text("{not json")
    with pytest.raises(IndexCorrupt, match=r"meta\.json is not valid JSON.*--full"):
        reader.load_index(index_dir)


def test_row_count_mismatch(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / layout.META_NAME).read_text())
    meta["segments"][0]["rows"] = 5
    meta["segments"][0]["live_rows"] = 5
    (index_dir / layout.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt, match="4 rows, meta.json says 5"):
        reader.load_index(index_dir)


def test_newer_schema(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / layout.META_NAME).read_text())
    meta["schema_version"] = layout.SCHEMA_VERSION + 1
    (index_dir / layout.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(IndexTooNew, match="newer than this msearch"):
        reader.load_index(index_dir)


def test_older_schema_says_how_to_convert(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / layout.META_NAME).read_text())
    meta["schema_version"] = 1
    (index_dir / layout.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(record.IndexOutdated, match="older msearch.*msearch index DIR"):
        reader.load_index(index_dir)


def test_wrong_dimension(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / layout.META_NAME).read_text())
    meta["dim"] = 16
    meta["model"]["dim"] = 16
    (index_dir / layout.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt, match="not float32 rows of dimension 16"):
        reader.load_index(index_dir)


def test_missing_data_folder(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    data_file(index_dir, segment.PASSAGES_NAME).unlink()
    with pytest.raises(IndexCorrupt, match="passages.npy is missing"):
        reader.load_index(index_dir)


def test_commit_removes_old_segments(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    first = record.read_meta(index_dir).segments[0].name
    write_index(index_dir, np.ones((2, 8), np.float32), np.zeros((2, 5), np.int32), 1)
    assert not (index_dir / first).exists()
    assert sorted(p.name for p in index_dir.iterdir() if p.name.startswith("seg-")) == [
        record.read_meta(index_dir).segments[0].name
    ]


def test_abandoned_writer_leaves_old_index(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    w = SegmentWriter(ownership.new_segment_dir(index_dir), 8)
    w.append(np.zeros((3, 5), np.int32), np.ones((3, 8), np.float32), np.zeros((3, 16), np.uint8))
    # never closed nor committed: a crash at this point
    assert reader.load_index(index_dir).meta.count == 4


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    import subprocess
    import sys

    index_dir = tmp_path / "idx"
    with ownership.write_lock(index_dir):
        code = (
            "import sys; from pathlib import Path; from msearch.storage import ownership\n"
            "from msearch.errors import IndexLocked\n"
            "try:\n"
            f"    with ownership.write_lock(Path({str(index_dir)!r}), wait=False): sys.exit(0)\n"
            "except IndexLocked as e: print(e); sys.exit(3)\n"
        )
        busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert busy.returncode == 3 and "another msearch" in busy.stdout
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert free.returncode == 0
    with ownership.write_lock(index_dir, wait=False):
        pass
    _ = IndexLocked
