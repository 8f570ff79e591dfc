"""msearch.lexical: BM25 statistics (build, save/load, merge), scoring at query
time over segments, and score fusion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from msearch.lexical import (
    LEXICAL_WEIGHT,
    Bm25,
    LexicalBuilder,
    LexicalFormatError,
    LexicalParams,
    LexicalPart,
    LexicalSegment,
    bm25_of,
    build_lexical,
    fuse,
    merge_lexical,
)
from msearch.storage.disk import DataFolder

REPO = Path(__file__).resolve().parent.parent
PARAMS = LexicalParams.default()

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


def bm25(*segments: tuple[LexicalSegment, np.ndarray | None]) -> Bm25:
    """BM25 over segments laid end to end, with their live masks."""
    parts, offset, live, tokens = [], 0, 0, 0
    for seg, mask in segments:
        parts.append(LexicalPart(seg, offset, mask))
        offset += seg.num_rows
        keep = np.ones(seg.num_rows, bool) if mask is None else mask
        live += int(keep.sum())
        tokens += int(np.asarray(seg.lengths)[keep].sum())
    return Bm25(PARAMS, parts, offset, live, tokens)


def of(texts: list[str]) -> Bm25:
    return bm25((build_lexical(texts), None))


def load(folder: Path) -> LexicalSegment:
    with DataFolder(folder) as opened:
        return LexicalSegment.load(opened)


def test_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    texts = TEXTS + sample_texts()
    seg = build_lexical(texts)
    (tmp_path / "lex").mkdir()
    seg.save(tmp_path / "lex")
    loaded = load(tmp_path / "lex")
    assert loaded.num_rows == len(texts) and loaded.num_terms == seg.num_terms
    queries = ["dogs at night", "zebrafish", "café Zürich", "the", "compost smells bad", "moon"]
    for q in queries:
        a, b = bm25((seg, None)).scores(q), bm25((loaded, None)).scores(q)
        assert a.dtype == b.dtype == np.float32
        assert a.shape == (len(texts),)
        assert np.array_equal(a, b)


def test_only_the_passage_with_the_word_scores() -> None:
    s = of(TEXTS).scores("Zebrafish?")
    assert int(np.argmax(s)) == 2
    assert s[2] > 0 and np.count_nonzero(s) == 1


def test_stemming_stopwords_and_case() -> None:
    index = of(TEXTS)
    # "barking" and "Dog" stem to the same terms as "bark" and "Dogs".
    s = index.scores("BARKING Dog")
    assert int(np.argmax(s)) == 1
    assert index.query_terms("the dogs of the night") == ["dog", "night"]
    assert not index.scores("the and of").any()
    assert not index.scores("").any()
    assert not index.scores("xylophonist").any()
    assert int(np.argmax(index.scores("zürich"))) == 4  # non-ASCII terms are found


def _bm25s(texts: list[str] | list[list[str]]):  # type: ignore[no-untyped-def]
    """bm25s itself over ``texts`` (its own tokenization), or over terms
    already made (lists of strings, as bm25s also takes)."""
    import bm25s
    import Stemmer

    if texts and isinstance(texts[0], list):
        tok = texts
    else:
        tok = bm25s.tokenize(
            texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False
        )
    ref = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ref.index(tok, create_empty_token=False, show_progress=False)
    return ref


# bm25s's own tokenization: identifiers are not split (format 2).
PROSE = LexicalParams(stopwords=PARAMS.stopwords)


def test_matches_bm25s() -> None:
    """Scores computed at query time from the statistics are bm25s's own."""
    texts = sample_texts()
    index, ref = bm25_of(build_lexical(texts, PROSE), PROSE), _bm25s(texts)
    for q in [
        "why does the moon change shape",
        "compost smells bad",
        "python virtual env",
        "jet lag",
    ]:
        ids = ref.get_tokens_ids(index.query_terms(q))
        want = ref.get_scores_from_ids(ids) if ids else np.zeros(len(texts))
        assert np.allclose(index.scores(q), want, rtol=1e-6, atol=1e-6)


def _same_term_scores(index: Bm25, ref) -> None:  # type: ignore[no-untyped-def]
    data, indices, indptr = (np.asarray(ref.scores[k]) for k in ("data", "indices", "indptr"))
    assert ref.vocab_dict
    for term, col in ref.vocab_dict.items():
        if not term:
            continue
        [(offset, rows, values)] = index.term_scores(term)
        want_rows = indices[indptr[col] : indptr[col + 1]]
        want = data[indptr[col] : indptr[col + 1]]
        order = np.argsort(want_rows)
        assert offset == 0 and np.array_equal(rows, want_rows[order])
        assert values.dtype == np.float32 and np.array_equal(values, want[order]), term


EDGE_TEXTS = ["", "Ünïcödé wörds straße ÄÖ", "don't 123 4567 x1"]


def test_term_scores_are_bm25s_arrays_bit_for_bit() -> None:
    """Each (term, passage) weight is the float32 value bm25s stores, to the
    last bit: on real text and edge cases."""
    texts = sample_texts() + TEXTS + EDGE_TEXTS
    _same_term_scores(bm25_of(build_lexical(texts, PROSE), PROSE), _bm25s(texts))


def test_identifier_terms_score_as_bm25s_scores_them() -> None:
    """With identifiers split (the default), the terms differ from bm25s's
    by design (``parseUserInput`` gives parseuserinput, pars, user, input); what each term scores
    is still bm25s's, given the same terms: the weights bit for bit."""
    code = [
        "def parseUserInput(raw_value): return HTTPClient.get_user(raw_value)",
        "class TypeAdapter: nullSafe = max_retries; os.path.join(a, b)",
        "Rack::Builder builds a max-age header for getHTTPResponse",
    ]
    texts = sample_texts() + TEXTS + EDGE_TEXTS + code
    tok = PARAMS.tokenizer()
    terms = [tok.terms(t) for t in texts]
    index = bm25_of(build_lexical(texts, PARAMS), PARAMS)
    _same_term_scores(index, _bm25s(terms))
    assert index.term_scores("parseuserinput") and index.term_scores("user")


words = st.sampled_from(["moon", "moons", "river", "the", "a", "stone", "cafés", "x9", "rain"])
texts_st = st.lists(st.lists(words, max_size=12).map(" ".join), max_size=30)


def stat_arrays(seg: LexicalSegment) -> list[np.ndarray]:
    return [
        np.asarray(getattr(seg, a))
        for a in ("terms", "term_offsets", "indptr", "rows", "tfs", "lengths")
    ]


@settings(max_examples=60, deadline=None)
@given(texts=texts_st, cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=5))
def test_built_window_by_window_equals_built_at_once(texts: list[str], cuts: list[int]) -> None:
    """The indexer feeds BM25 a window at a time: any split gives the same statistics."""
    builder = LexicalBuilder()
    bounds = sorted({0, len(texts), *(c for c in cuts if c <= len(texts))})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        builder.add(texts[a:b])
    got, want = builder.finish(), build_lexical(texts)
    assert got.num_rows == want.num_rows == len(texts)
    for x, y in zip(stat_arrays(got), stat_arrays(want), strict=True):
        assert np.array_equal(x, y)


@settings(max_examples=80, deadline=None)
@given(
    parts=st.lists(
        st.tuples(texts_st, st.lists(st.booleans(), max_size=30)), min_size=1, max_size=4
    ),
    query=st.lists(words, min_size=1, max_size=4).map(" ".join),
)
def test_segments_with_deleted_rows_score_as_a_fresh_build(
    parts: list[tuple[list[str], list[bool]]], query: str
) -> None:
    """Scores over several segments with dead rows equal those of one segment
    of the live texts (document frequencies and the average length are those
    of the live rows); and merging the segments gives that very segment."""
    segs, live_texts, merge_parts, row = [], [], [], 0
    for texts, alive in parts:
        mask = np.array([alive[i] if i < len(alive) else True for i in range(len(texts))], bool)
        seg = build_lexical(texts)
        segs.append((seg, mask))
        live_texts += [t for t, keep in zip(texts, mask, strict=True) if keep]
        row_map = np.full(len(texts), -1, np.int64)
        row_map[mask] = np.arange(row, row + int(mask.sum()))
        row += int(mask.sum())
        merge_parts.append((seg, row_map))
    got = bm25(*segs).scores(query)
    live = np.concatenate([m for _, m in segs]) if segs else np.zeros(0, bool)
    want = of(live_texts).scores(query)
    assert np.array_equal(got[live], want)
    assert not got[~live].any()
    merged = merge_lexical(merge_parts)
    for x, y in zip(stat_arrays(merged), stat_arrays(build_lexical(live_texts)), strict=True):
        assert np.array_equal(x, y)


def test_empty_corpus(tmp_path: Path) -> None:
    seg = build_lexical([])
    assert bm25((seg, None)).scores("anything").shape == (0,)
    (tmp_path / "lex").mkdir()
    seg.save(tmp_path / "lex")
    assert bm25((load(tmp_path / "lex"), None)).scores("anything").shape == (0,)


def test_corpus_without_terms(tmp_path: Path) -> None:
    seg = build_lexical(["the a", "", "of"])
    assert seg.num_terms == 0
    (tmp_path / "lex").mkdir()
    seg.save(tmp_path / "lex")
    s = bm25((load(tmp_path / "lex"), None)).scores("the cat")
    assert s.shape == (3,) and not s.any()


def test_damaged_statistics_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "lex"
    folder.mkdir()
    build_lexical(TEXTS).save(folder)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")
    (folder / "lex_rows.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(LexicalFormatError):
        load(folder)
    with pytest.raises(LexicalFormatError):
        LexicalParams.from_json({"format_version": 99})
    with pytest.raises(LexicalFormatError):
        LexicalParams.from_json({**PARAMS.to_json(), "stemmer": "klingon"})
    with pytest.raises(LexicalFormatError):
        LexicalParams.from_json({**PARAMS.to_json(), "token_pattern": "("})


def test_query_path_imports_neither_bm25s_nor_scipy(tmp_path: Path) -> None:
    (tmp_path / "lex").mkdir()
    build_lexical(TEXTS).save(tmp_path / "lex")
    (tmp_path / "params.json").write_text(json.dumps(PARAMS.to_json()))
    code = (
        "import sys, json; from pathlib import Path; import msearch.lexical as lx\n"
        "from msearch.storage.disk import DataFolder\n"
        f"params = lx.LexicalParams.from_json(json.loads(Path({str(tmp_path / 'params.json')!r}).read_text()))\n"
        f"seg = lx.LexicalSegment.load(DataFolder(Path({str(tmp_path / 'lex')!r})))\n"
        "n = seg.num_rows; t = int(seg.lengths.sum())\n"
        "s = lx.Bm25(params, [lx.LexicalPart(seg, 0, None)], n, n, t).scores('dogs at night')\n"
        "assert s.argmax() == 1, s\n"
        "bad = [m for m in ('bm25s', 'scipy', 'tqdm') if m in sys.modules]\n"
        "assert not bad, bad\n"
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


CODE_TEXTS = [
    "def parseUserInput(raw_value): return HTTPClient.get_user(raw_value)",
    "class TypeAdapter: nullSafe = max_retries; os.path.join(a, b)",
    "Rack::Builder builds a max-age header for getHTTPResponse",
]


@pytest.mark.parametrize("params", [PARAMS, PROSE], ids=["identifiers", "prose"])
def test_term_ids_are_the_terms_of_each_text(
    params: LexicalParams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build takes each text's terms as ids from the tokenizer's memory of
    tokens (Tokenizer.term_ids); they name the terms ``terms`` gives, in
    order, whether the tokens are new, remembered, or forgotten because the
    memory was full."""
    from msearch import lexical

    texts = sample_texts()[:40] + TEXTS + EDGE_TEXTS + CODE_TEXTS

    def terms_of(tok: lexical.Tokenizer) -> list[list[str]]:
        ids, lengths = tok.term_ids(texts)
        assert len(lengths) == len(texts) and int(lengths.sum()) == len(ids)
        names = [tok.term_names[i] for i in ids.tolist()]
        ends = np.cumsum(lengths).tolist()
        return [names[e - n : e] for e, n in zip(ends, lengths.tolist(), strict=True)]

    for limit in (lexical.MAX_TOKENS, 5):
        monkeypatch.setattr(lexical, "MAX_TOKENS", limit)
        tok = lexical.Tokenizer(params)
        for _ in range(2):  # new tokens, then remembered ones
            assert terms_of(tok) == [tok.terms(t) for t in texts]
            assert len(tok._token_ids) <= max(limit, 1)
        assert len(tok.term_names) == len(set(tok.term_names))
    assert lexical.Tokenizer(params).term_ids([])[1].tolist() == []


def test_two_builds_at_once_share_the_tokenizer_safely() -> None:
    """A watcher's update and a server's other work may tokenize in two
    threads with the one tokenizer of the process: each build still gets
    its own statistics."""
    import threading

    texts = sample_texts() + CODE_TEXTS
    halves = [texts[::2], texts[1::2]]
    want = [stat_arrays(build_lexical(h, PARAMS)) for h in halves]
    params = LexicalParams(stopwords=PARAMS.stopwords, identifiers=True, k1=1.2001)
    got: list[list[np.ndarray]] = [[], []]
    shared = params.tokenizer()  # a fresh one (new parameters), made before the threads

    def build(i: int) -> None:
        builder = LexicalBuilder(params)
        assert builder.tok is shared
        for k in range(0, len(halves[i]), 3):
            builder.add(halves[i][k : k + 3])
        got[i] = stat_arrays(builder.finish())

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(g, w, strict=True))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZ9_é.:->- \n(")), max_size=40))
def test_the_compound_pattern_matches_as_the_backtracking_one(text: str) -> None:
    import re

    from msearch.lexical import COMPOUND_PATTERN

    plain = r"(?u)\w+(?:(?:\.|::|->|-)\w+)*"
    assert re.findall(COMPOUND_PATTERN, text) == re.findall(plain, text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZé É_.-:>9²ßİǅ")), min_size=1, max_size=12))
@example("9Z")
@example("HTTPResponse")
@example("getUser2")
@example("x2Y")
def test_identifier_parts_of_plain_words_skip_the_regexes_alike(token: str) -> None:
    """identifier_parts answers a lowercase or digit-only word without its
    regular expressions: what they would give."""
    from msearch.lexical import _CAMEL, _JOINERS, identifier_parts

    want = [p for piece in _JOINERS.split(token) if piece for p in _CAMEL.split(piece) if p]
    assert identifier_parts(token) == want


def test_the_table_of_terms_starts_afresh_when_no_build_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watcher or a server builds segment after segment with one tokenizer:
    its table of terms is started afresh past MAX_TERMS, only while no build
    holds ids from it, and every segment's statistics stay a fresh build's."""
    from msearch import lexical

    monkeypatch.setattr(lexical, "MAX_TERMS", 10)
    params = LexicalParams(stopwords=PARAMS.stopwords, identifiers=True, k1=1.2003)
    texts = sample_texts()[:30] + CODE_TEXTS
    want = stat_arrays(build_lexical(texts, PARAMS))
    first, second = LexicalBuilder(params), LexicalBuilder(params)
    tok = first.tok
    first.add(texts)
    second.add(texts[:5])
    table = tok.term_names
    assert all(np.array_equal(x, y) for x, y in zip(stat_arrays(first.finish()), want, strict=True))
    assert tok.term_names is table  # the second build still holds it
    second.add(texts[5:])
    assert all(
        np.array_equal(x, y) for x, y in zip(stat_arrays(second.finish()), want, strict=True)
    )
    assert tok.term_names is not table and not tok.term_names  # let go: afresh
    third = LexicalBuilder(params)
    third.add(texts)
    assert all(np.array_equal(x, y) for x, y in zip(stat_arrays(third.finish()), want, strict=True))
    # A builder dropped unfinished lets go too.
    dropped = LexicalBuilder(params)
    dropped.add(texts)
    table = tok.term_names
    del dropped
    import gc

    gc.collect()
    assert tok.term_names is not table


def test_long_tokens_are_learned_but_not_remembered() -> None:
    from msearch import lexical

    tok = lexical.Tokenizer(PARAMS)
    long_token = "segment_" * 20  # 160 characters
    ids, lengths = tok.term_ids([f"{long_token} short_name", long_token])
    names = [tok.term_names[i] for i in ids.tolist()]
    assert names == tok.terms(f"{long_token} short_name") + tok.terms(long_token)
    assert long_token not in tok._token_ids and "short_name" in tok._token_ids
