from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msearch.lexical import LexicalParams, build_lexical
from msearch.query import Searcher
from msearch.search import top_k
from msearch.storage import ownership, reader, record
from msearch.storage.segment import SegmentWriter


def brute_force(scores: np.ndarray, k: int, min_score: float | None) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if min_score is not None:
        order = [i for i in order if scores[i] >= min_score]
    return order[:k]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 300),
    k=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
    ties=st.booleans(),
    min_score=st.one_of(st.none(), st.floats(-1, 1)),
)
def test_top_k_matches_brute_force(
    n: int, k: int, seed: int, ties: bool, min_score: float | None
) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(n).astype(np.float32)
    if ties:
        scores = np.round(scores, 1)
    idx, vals = top_k(scores, k, min_score)
    assert idx.tolist() == brute_force(scores, k, min_score)
    assert np.array_equal(vals, scores[idx])


def test_a_dense_search_ranks_rows_by_cosine(tmp_path: Path) -> None:
    """Cosine over normalized rows, one matrix product a segment: the scores
    of every row (two segments of awkward sizes) are the cosines, and a
    dense query's hits are the rows nearest to it, best first."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((1000, 24)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    index_dir = tmp_path / "idx"
    ownership.claim(index_dir)
    infos, files = [], []
    for part, (a, b) in enumerate(((0, 613), (613, 1000))):
        w = SegmentWriter(ownership.new_segment_dir(index_dir), 24)
        rows = np.zeros((b - a, 5), np.int32)
        rows[:, 0] = np.arange(b - a)
        rows[:, 1:3], rows[:, 4] = 1, 1  # lines 1-1, characters 0-1
        w.append(rows, m[a:b], np.zeros((b - a, 16), np.uint8))
        infos.append(w.close(build_lexical(["word"] * (b - a))))
        files += [record.FileRecord(f"f{i}.txt", 1, 0, "", part, i - a, 1) for i in range(a, b)]
    meta = record.Meta(
        root=str(tmp_path),
        model={"name": "m", "dim": 24, "fingerprint": "x"},
        chunking={"max_tokens": 10, "overlap_tokens": 2},
        walk={},
        files=files,
        dim=24,
        segments=infos,
        lexical=LexicalParams.default().to_json(),
    )
    ownership.commit(index_dir, meta)
    index = reader.load_index(index_dir)
    q = m[123] + 0.01
    q /= np.linalg.norm(q)
    searcher = Searcher(index, lambda texts: np.stack([q] * len(texts)), None, "dense", tmp_path)
    assert np.allclose(searcher.dense_scores(q[None, :])[:, 0], m @ q, atol=1e-6)
    hits = searcher.query("near row 123", 5)
    best = np.argsort(-(m @ q), kind="stable")[:5]
    assert [h.path for h in hits] == [f"f{i}.txt" for i in best]
    assert np.allclose([h.score for h in hits], (m @ q)[best], atol=1e-6)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError):
        top_k(np.zeros(3, dtype=np.float32), 0)
