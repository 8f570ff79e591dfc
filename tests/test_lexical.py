"""msearch.lexical: BM25 over passages (build, save/load, score) and score fusion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msearch.lexical import (
    LEXICAL_WEIGHT,
    META_NAME,
    LexicalBuilder,
    LexicalFormatError,
    build_lexical,
    fuse,
    load_lexical,
)

REPO = Path(__file__).resolve().parent.parent

TEXTS = [
    "The cat sat on the mat.",
    "Dogs bark loudly at night, and the neighbours complain.",
    "Zebrafish embryos develop quickly and are transparent.",
    "A quiet night: no dogs, no cats, only rain.",
    "Café culture in Zürich: espresso, croissants and naïve tourists.",
    "the of and a",  # stopwords and one-letter words only: no terms at all
]


def sample_texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((REPO / "sample_corpus").rglob("*.md"))]


def test_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    texts = TEXTS + sample_texts()
    index = build_lexical(texts)
    index.save(tmp_path / "lex")
    queries = ["dogs at night", "zebrafish", "café Zürich", "the", "compost smells bad", "moon"]
    for mmap in (True, False):
        loaded = load_lexical(tmp_path / "lex", mmap=mmap)
        assert loaded.num_passages == len(texts)
        assert loaded.num_terms == index.num_terms
        for q in queries:
            a, b = index.scores(q), loaded.scores(q)
            assert a.dtype == b.dtype == np.float32
            assert a.shape == (len(texts),)
            assert np.array_equal(a, b)


def test_only_the_passage_with_the_word_scores() -> None:
    index = build_lexical(TEXTS)
    s = index.scores("Zebrafish?")
    assert int(np.argmax(s)) == 2
    assert s[2] > 0 and np.count_nonzero(s) == 1


def test_stemming_stopwords_and_case() -> None:
    index = build_lexical(TEXTS)
    # "barking" and "Dog" stem to the same terms as "bark" and "Dogs".
    s = index.scores("BARKING Dog")
    assert int(np.argmax(s)) == 1
    assert index.query_terms("the dogs of the night") == ["dog", "night"]
    assert not index.scores("the and of").any()
    assert not index.scores("").any()
    assert not index.scores("xylophonist").any()
    assert int(np.argmax(index.scores("zürich"))) == 4  # non-ASCII terms are found


def test_matches_bm25s() -> None:
    """Our numpy scorer over the saved arrays gives bm25s's own scores."""
    import bm25s
    import Stemmer

    texts = sample_texts()
    index = build_lexical(texts)
    stemmer = Stemmer.Stemmer("english")
    ref = bm25s.BM25(k1=1.5, b=0.75)
    ref.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    for q in [
        "why does the moon change shape",
        "compost smells bad",
        "python virtual env",
        "jet lag",
    ]:
        ids = ref.get_tokens_ids(index.query_terms(q))
        want = ref.get_scores_from_ids(ids) if ids else np.zeros(len(texts))
        assert np.allclose(index.scores(q), want, rtol=1e-6, atol=1e-6)


def _bm25s_arrays(texts: list[str]) -> tuple[np.ndarray, ...]:
    """bm25s's own index of ``texts``, columns reordered bytewise as msearch stores them."""
    import bm25s
    import Stemmer

    tok = bm25s.tokenize(
        texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False
    )
    ref = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ref.index(tok, create_empty_token=False, show_progress=False)
    data, indices, indptr = (np.asarray(ref.scores[k]) for k in ("data", "indices", "indptr"))
    cols = sorted((t.encode(), c) for t, c in ref.vocab_dict.items() if t)
    parts = [(data[indptr[c] : indptr[c + 1]], indices[indptr[c] : indptr[c + 1]]) for _, c in cols]
    return (
        np.concatenate([d for d, _ in parts]),
        np.concatenate([i for _, i in parts]),
        np.cumsum([0] + [len(d) for d, _ in parts]),
        b"".join(t for t, _ in cols),
    )


def test_same_arrays_as_bm25s_bit_for_bit() -> None:
    """msearch scores BM25 itself (streaming, see LexicalBuilder): the stored
    arrays are bm25s's, to the last bit, on real text and edge cases."""
    texts = sample_texts() + TEXTS + ["", "Ünïcödé wörds straße ÄÖ", "don't 123 4567 x1"]
    got = build_lexical(texts)
    data, indices, indptr, terms = _bm25s_arrays(texts)
    assert np.array_equal(got.data, data) and got.data.dtype == np.float32
    assert np.array_equal(got.indices, indices)
    assert np.array_equal(got.indptr, indptr)
    assert got.terms.tobytes() == terms


words = st.sampled_from(["moon", "moons", "river", "the", "a", "stone", "cafés", "x9", "rain"])


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.lists(words, max_size=12).map(" ".join), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=5),
)
def test_built_window_by_window_equals_built_at_once(texts: list[str], cuts: list[int]) -> None:
    """The indexer feeds BM25 a window at a time: any split gives the same index."""
    builder = LexicalBuilder()
    bounds = sorted({0, len(texts), *(c for c in cuts if c <= len(texts))})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        builder.add(texts[a:b])
    got, want = builder.finish(), build_lexical(texts)
    assert got.num_passages == want.num_passages == len(texts)
    for name in ("data", "indices", "indptr", "terms", "term_offsets"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    if texts and any(want.indptr):
        assert np.array_equal(want.data, _bm25s_arrays(texts)[0])


def test_empty_corpus(tmp_path: Path) -> None:
    index = build_lexical([])
    assert index.scores("anything").shape == (0,)
    index.save(tmp_path / "lex")
    assert load_lexical(tmp_path / "lex").scores("anything").shape == (0,)


def test_corpus_without_terms(tmp_path: Path) -> None:
    index = build_lexical(["the a", "", "of"])
    assert index.num_terms == 0
    index.save(tmp_path / "lex")
    s = load_lexical(tmp_path / "lex").scores("the cat")
    assert s.shape == (3,) and not s.any()


def test_damaged_index_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "lex"
    build_lexical(TEXTS).save(folder)
    with pytest.raises(FileNotFoundError):
        load_lexical(tmp_path / "missing")
    (folder / "lexical_indices.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(LexicalFormatError):
        load_lexical(folder)
    (folder / META_NAME).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(LexicalFormatError):
        load_lexical(folder)
    (folder / META_NAME).write_text("{not json")
    with pytest.raises(LexicalFormatError):
        load_lexical(folder)


def test_query_path_imports_neither_bm25s_nor_scipy(tmp_path: Path) -> None:
    build_lexical(TEXTS).save(tmp_path / "lex")
    code = (
        "import sys; from pathlib import Path; import msearch.lexical as lx; "
        f"s = lx.load_lexical(Path({str(tmp_path / 'lex')!r})).scores('dogs at night'); "
        "assert s.argmax() == 1, s; "
        "bad = [m for m in ('bm25s', 'scipy', 'tqdm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- fusion


def test_fuse_empty_and_shapes() -> None:
    out = fuse(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32))
    assert out.shape == (0,) and out.dtype == np.float32
    with pytest.raises(ValueError):
        fuse(np.zeros(3), np.zeros(4))


def test_fuse_without_lexical_evidence_keeps_the_dense_order() -> None:
    rng = np.random.default_rng(1)
    dense = rng.uniform(-0.2, 0.9, 5000).astype(np.float32)
    out = fuse(dense, np.zeros_like(dense))
    assert out.dtype == np.float32
    assert np.array_equal(np.argsort(-out, kind="stable"), np.argsort(-dense, kind="stable"))


def test_fuse_constant_inputs() -> None:
    out = fuse(np.full(4, 0.5, dtype=np.float32), np.zeros(4, dtype=np.float32))
    assert np.all(out == out[0]) and np.all(np.isfinite(out))
    lex = np.array([0.0, 3.0, 0.0, 1.0], dtype=np.float32)
    out = fuse(np.full(4, 0.5, dtype=np.float32), lex)
    assert np.array_equal(np.argsort(-out, kind="stable"), np.argsort(-lex, kind="stable"))


def test_fuse_weights_both_sides() -> None:
    dense = np.array([0.9, 0.1, 0.5], dtype=np.float32)
    lex = np.array([0.0, 10.0, 5.0], dtype=np.float32)
    assert fuse(dense, lex, weight=0.0).argmax() == 0
    assert fuse(dense, lex, weight=1.0).argmax() == 1
    assert 0 < LEXICAL_WEIGHT < 1


arrays = st.integers(1, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-1, 1, width=32), min_size=n, max_size=n),
        st.lists(st.floats(0, 50, width=32), min_size=n, max_size=n),
        st.integers(0, n - 1),
        st.floats(0.001, 2.0),
        st.booleans(),
    )
)


@settings(max_examples=150, deadline=None)
@given(arrays)
def test_fuse_is_monotone_in_each_input(case: tuple) -> None:
    """Raising one passage's dense or lexical score never moves it below a
    passage it was level with or above (min-max renormalization included)."""
    dense_l, lex_l, i, delta, raise_dense = case
    dense = np.array(dense_l, dtype=np.float32)
    lex = np.array(lex_l, dtype=np.float32)
    before = fuse(dense, lex).astype(np.float64)
    if raise_dense:
        dense[i] += np.float32(delta)
    else:
        lex[i] += np.float32(delta)
    after = fuse(dense, lex).astype(np.float64)
    assert np.all(np.isfinite(after))
    gap_before = before[i] - before
    gap_after = after[i] - after
    assert np.all(gap_after >= gap_before - 1e-5)


@settings(max_examples=100, deadline=None)
@given(arrays)
def test_fuse_respects_dominance(case: tuple) -> None:
    dense_l, lex_l, _, _, _ = case
    dense = np.array(dense_l, dtype=np.float32)
    lex = np.array(lex_l, dtype=np.float32)
    out = fuse(dense, lex)
    dominates = (dense[:, None] >= dense[None, :]) & (lex[:, None] >= lex[None, :])
    assert np.all(out[:, None] >= out[None, :] - 1e-6, where=dominates)
