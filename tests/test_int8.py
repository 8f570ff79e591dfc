"""The int8 codes of a large search's second stage (msearch.int8): the
file is faiss's own format, faiss maps it only after it passes a check,
and the estimates are the cosines to within the codes' precision."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from msearch import int8
from msearch.coarse import ScanIndex, pack, sign_bits
from msearch.int8 import CODES_NAME, SCALE_NAME, Int8Codes
from msearch.lexical import build_lexical
from msearch.storage.disk import DataFolder
from msearch.storage.segment import SegmentWriter


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v[:, 0] *= 4  # one component wider than the rest, as in real embeddings
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def written(folder: Path, vectors: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    assert int8.write(folder, vectors, np.abs(vectors).max(axis=0))
    return folder


def opened(folder: Path, rows: int, dim: int) -> Int8Codes | None:
    with DataFolder(folder) as f:
        return Int8Codes.open(f, rows, dim)


def test_the_file_is_what_faiss_itself_writes(tmp_path: Path) -> None:
    """Parity with faiss's own encoder and serializer: the same values
    added to an ``IndexScalarQuantizer`` and serialized by faiss give the
    same bytes (so faiss reads the file as it would its own)."""
    import faiss

    vectors = unit(np.random.default_rng(0), 333, 64)
    folder = written(tmp_path / "seg", vectors)
    scale = np.load(folder / SCALE_NAME)
    assert scale == pytest.approx(127 / np.abs(vectors).max(axis=0))
    ref = faiss.IndexScalarQuantizer(
        64, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
    )
    ref.add(np.rint(vectors * scale).astype(np.float32))
    assert (folder / CODES_NAME).read_bytes() == faiss.serialize_index(ref).tobytes()


@pytest.mark.parametrize(("rows", "dim"), [(2000, 64), (777, 384)])
def test_estimates_are_the_cosines(tmp_path: Path, rows: int, dim: int) -> None:
    rng = np.random.default_rng(rows)
    vectors = unit(rng, rows, dim)
    codes = opened(written(tmp_path / "seg", vectors), rows, dim)
    assert codes is not None
    codes.populate()  # touches every page of the mapping; changes nothing
    scan = ScanIndex.open(sign_bits(vectors), None)
    q = unit(rng, 1, dim)[0]
    found, est = codes.nearest(scan, q, 300, 300)
    assert len(found) == len(set(found.tolist())) == 300
    assert np.all(np.diff(est) <= 0)  # best first
    stored = np.frombuffer((tmp_path / "seg" / CODES_NAME).read_bytes()[-rows * dim :], np.uint8)
    values = stored.reshape(rows, dim).astype(np.float64) - 128
    query = q / codes.scale
    stretch = 127 / np.abs(query).max()
    # Within the rounding of the codes (half a step of each component) and
    # of the query (half a step of its stretched components).
    bound = 0.5 * np.abs(query).sum() + 0.5 * np.abs(values[found]).sum(axis=1) / stretch
    assert np.all(np.abs(est - vectors[found] @ q) <= bound + 1e-5)
    assert np.abs(est - vectors[found] @ q).mean() < 0.005
    # Exactly the integer dot product of the codes with the rounded,
    # stretched query (what faiss computes, whichever way it multiplies).
    assert est == pytest.approx(values[found] @ np.rint(query * stretch) / stretch, abs=1e-5)
    assert codes.estimate(q, found) == pytest.approx(est, abs=1e-5)
    # keep < want: the best of the same candidates by the estimate.
    few, few_est = codes.nearest(scan, q, 300, 20)
    assert few_est == pytest.approx(est[:20], abs=1e-6)
    assert set(few.tolist()) <= set(found.tolist())


def test_candidates_are_those_of_the_sign_bits(tmp_path: Path) -> None:
    """The first stage inside the refinement sees the query the sign-bit
    scan sees (up to the query's rounding): nearly the same candidates."""
    rng = np.random.default_rng(5)
    vectors = unit(rng, 5000, 384)
    codes = opened(written(tmp_path / "seg", vectors), 5000, 384)
    assert codes is not None
    scan = ScanIndex.open(sign_bits(vectors), pack(sign_bits(vectors)))
    for q in unit(rng, 5, 384):
        found, _ = codes.nearest(scan, q, 500, 500)
        plain = scan.nearest(q, 500)
        assert len(set(found.tolist()) & set(plain.tolist())) >= 0.95 * 500


DAMAGE = [
    "missing codes",
    "missing scale",
    "truncated",
    "padded",
    "header",
    "scale nan",
    "scale zero",
    "scale shape",
    "scale dtype",
    "link",
    "folder",
]


def damage(folder: Path, how: str, outside: Path) -> None:
    codes, scale = folder / CODES_NAME, folder / SCALE_NAME
    data = codes.read_bytes()
    good = np.load(scale)
    if how == "missing codes":
        codes.unlink()
    elif how == "missing scale":
        scale.unlink()
    elif how == "truncated":
        codes.write_bytes(data[:-1])
    elif how == "padded":
        codes.write_bytes(data + b"\0")
    elif how == "header":
        codes.write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    elif how == "scale nan":
        np.save(scale, np.where(np.arange(len(good)) == 3, np.nan, good).astype(np.float32))
    elif how == "scale zero":
        np.save(scale, np.zeros_like(good))
    elif how == "scale shape":
        np.save(scale, good[:-1])
    elif how == "scale dtype":
        np.save(scale, good.astype(np.float64))
    elif how == "link":
        target = outside / CODES_NAME
        codes.rename(target)
        os.symlink(target, codes)
    else:
        codes.unlink()
        codes.mkdir()


@pytest.mark.parametrize("how", DAMAGE)
def test_files_that_fail_the_check_are_not_used(tmp_path: Path, how: str) -> None:
    """An index may come from elsewhere: faiss never reads a codes file
    that is not exactly what this msearch would write for the segment."""
    vectors = unit(np.random.default_rng(1), 500, 64)
    folder = written(tmp_path / "seg", vectors)
    assert opened(folder, 500, 64) is not None
    assert opened(folder, 499, 64) is None  # the segment's row count is part of the check
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    damage(folder, how, outside)
    assert opened(folder, 500, 64) is None


def test_a_nan_vector_does_not_spoil_the_scales(tmp_path: Path) -> None:
    """The writer's per-component maximum ignores NaN (msearch never
    stores one; a damaged embedder might)."""
    vectors = unit(np.random.default_rng(2), 100, 64)
    vectors[7] = np.nan
    folder = tmp_path / "seg"
    folder.mkdir()
    writer = SegmentWriter(folder, 64)
    rows = np.zeros((100, 5), np.int32)
    writer.append(rows, vectors, np.zeros((100, 16), np.uint8))
    writer.close(build_lexical(["x"] * 100))
    scale = np.load(folder / SCALE_NAME)
    assert np.isfinite(scale).all()
    assert opened(folder, 100, 64) is not None


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 20), st.integers(1, 12)),
        elements=st.floats(-1, 1, width=32),
    )
)
def test_codes_round_trip_within_half_a_step(values: np.ndarray) -> None:
    scale = int8.scales(np.abs(values).max(axis=0))
    decoded = int8.encode(values, scale).astype(np.int16) - 128
    assert np.all(np.abs(decoded) <= 127)
    # Half a step, where the component is not below the floor.
    assert np.all(np.abs(decoded / scale - values) <= 0.5 / scale + 1e-6)
