from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msearch import store
from msearch.errors import IndexCorrupt, IndexLocked, IndexNotFound, IndexTooNew


def make_meta(n_files: int, count: int, dim: int, data: str) -> store.Meta:
    files = [store.FileRecord(f"f{i}.txt", i, i * 10, "0" * 64) for i in range(n_files)]
    return store.Meta(
        root="/r",
        model={"name": "m", "dim": dim, "fingerprint": "x"},
        chunking={"max_tokens": 10, "overlap_tokens": 2},
        walk={},
        files=files,
        count=count,
        dim=dim,
        data=data,
    )


def write_index(index_dir: Path, vecs: np.ndarray, rows: np.ndarray, n_files: int) -> None:
    store.claim(index_dir)
    w = store.DataWriter(index_dir, vecs.shape[1])
    for s in range(0, len(vecs), 7):  # awkward chunk size: streaming in pieces
        w.append(vecs[s : s + 7], rows[s : s + 7])
    name = w.finish()
    store.commit(index_dir, make_meta(n_files, len(vecs), vecs.shape[1], name))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(0, 60), dim=st.integers(1, 20), seed=st.integers(0, 1000))
def test_round_trip(tmp_path: Path, n: int, dim: int, seed: int) -> None:
    index_dir = tmp_path / f"idx-{n}-{dim}-{seed}"
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    n_files = max(1, n // 3)
    rows = np.stack(
        [np.sort(rng.integers(0, n_files, n))] + [rng.integers(1, 1000, n) for _ in range(4)],
        axis=1,
    ).astype(np.int32)
    write_index(index_dir, vecs, rows, n_files)
    idx = store.load_index(index_dir)
    assert np.array_equal(np.asarray(idx.embeddings), vecs)
    assert np.array_equal(idx.passages, rows)
    assert idx.meta.files == make_meta(n_files, n, dim, "").files
    # The streamed header is a valid .npy for plain numpy too.
    assert np.load(index_dir / idx.meta.data / store.EMBEDDINGS_NAME).shape == (n, dim)


def good_index(tmp_path: Path) -> Path:
    index_dir = tmp_path / "idx"
    vecs = np.eye(4, 8, dtype=np.float32)
    rows = np.array([[0, 1, 1, 0, 1]] * 4, dtype=np.int32)
    write_index(index_dir, vecs, rows, 1)
    return index_dir


def data_file(index_dir: Path, name: str) -> Path:
    return index_dir / store.read_meta(index_dir).data / name


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound, match="msearch index"):
        store.load_index(tmp_path)


def test_truncated_embeddings(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    f = data_file(index_dir, store.EMBEDDINGS_NAME)
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(IndexCorrupt, match=r"embeddings\.npy.*--full"):
        store.load_index(index_dir)


def test_invalid_json(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    (index_dir / store.META_NAME).write_text("{not json")
    with pytest.raises(IndexCorrupt, match=r"meta\.json is not valid JSON.*--full"):
        store.load_index(index_dir)


def test_row_count_mismatch(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / store.META_NAME).read_text())
    meta["count"] = 5
    (index_dir / store.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt, match="4 rows but .* lists 5 passages"):
        store.load_index(index_dir)


def test_newer_schema(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / store.META_NAME).read_text())
    meta["schema_version"] = store.SCHEMA_VERSION + 1
    (index_dir / store.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(IndexTooNew, match="newer than this msearch"):
        store.load_index(index_dir)


def test_wrong_dimension(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    meta = json.loads((index_dir / store.META_NAME).read_text())
    meta["dim"] = 16
    meta["model"]["dim"] = 16
    (index_dir / store.META_NAME).write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt, match="dimension 8, the model makes 16"):
        store.load_index(index_dir)


def test_missing_data_folder(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    data_file(index_dir, store.PASSAGES_NAME).unlink()
    with pytest.raises(IndexCorrupt, match="passages.npy is missing"):
        store.load_index(index_dir)


def test_commit_removes_old_generations(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    first = store.read_meta(index_dir).data
    write_index(index_dir, np.ones((2, 8), np.float32), np.zeros((2, 5), np.int32), 1)
    assert not (index_dir / first).exists()
    assert sorted(p.name for p in index_dir.iterdir() if p.name.startswith("data-")) == [
        store.read_meta(index_dir).data
    ]


def test_abandoned_writer_leaves_old_index(tmp_path: Path) -> None:
    index_dir = good_index(tmp_path)
    w = store.DataWriter(index_dir, 8)
    w.append(np.ones((3, 8), np.float32), np.zeros((3, 5), np.int32))
    # never finished nor committed: a crash at this point
    assert store.load_index(index_dir).meta.count == 4


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    import subprocess
    import sys

    index_dir = tmp_path / "idx"
    with store.write_lock(index_dir):
        code = (
            "import sys; from pathlib import Path; from msearch import store\n"
            "from msearch.errors import IndexLocked\n"
            "try:\n"
            f"    with store.write_lock(Path({str(index_dir)!r}), wait=False): sys.exit(0)\n"
            "except IndexLocked as e: print(e); sys.exit(3)\n"
        )
        busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert busy.returncode == 3 and "another msearch" in busy.stdout
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert free.returncode == 0
    with store.write_lock(index_dir, wait=False):
        pass
    _ = IndexLocked
