from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msearch.search import search, top_k


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


def test_search_is_cosine_over_normalized_rows() -> None:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((1000, 24)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = m[123] + 0.01
    q /= np.linalg.norm(q)
    idx, vals = search(m, q, 5)
    assert idx[0] == 123
    assert np.allclose(vals, (m @ q)[idx], atol=1e-6)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError):
        top_k(np.zeros(3, dtype=np.float32), 0)
