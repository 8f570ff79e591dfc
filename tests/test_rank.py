"""The ranking stage (msearch.ranking) and the lexical side's identifiers and
symbols (msearch.lexical)."""

from __future__ import annotations

import numpy as np
import pytest

from msearch import ranking as R
from msearch.config import RankConfig
from msearch.lexical import LexicalParams, bm25_of, build_lexical, identifier_parts, merge_lexical
from msearch.ranking import paths as P


def test_identifiers_split_into_parts_and_stay_whole() -> None:
    assert identifier_parts("getHTTPResponse") == ["get", "HTTP", "Response"]
    assert identifier_parts("max_retries") == ["max", "retries"]
    assert identifier_parts("Rack::Builder") == ["Rack", "Builder"]
    assert identifier_parts("os.path.join") == ["os", "path", "join"]
    assert identifier_parts("max-age") == ["max", "age"]
    assert identifier_parts("XMLParser") == ["XML", "Parser"]
    assert identifier_parts("word") == ["word"]
    tok = LexicalParams.default().tokenizer()
    assert tok.words("getUser") == ["getuser", "get", "user"]
    assert tok.words("the quick fox") == ["quick", "fox"]  # prose as bm25s makes it
    assert tok.words("café naïve") == ["café", "naïve"]


def test_a_query_word_finds_the_part_of_an_identifier() -> None:
    params = LexicalParams.default()
    seg = build_lexical(["def parseUserInput(raw): pass", "the weather today"], params)
    scores = bm25_of(seg, params).scores("parse the user input")
    assert scores[0] > 0 and scores[1] == 0
    exact = bm25_of(seg, params).scores("parseUserInput")
    assert exact[0] > scores[0] / 2  # the whole identifier matches as well as its parts


def test_symbols_are_terms_of_their_own_that_survive_a_merge() -> None:
    params = LexicalParams.default()
    a = build_lexical(["class TypeAdapter:", "x = TypeAdapter()"], params, [["TypeAdapter"], []])
    b = build_lexical(["def other(): pass"], params, [["other"]])
    assert np.array_equal(
        a.lengths, build_lexical(["class TypeAdapter:", "x = TypeAdapter()"]).lengths
    )
    bm = bm25_of(a, params)
    rows, which = bm.symbol_rows(["TypeAdapter"])
    assert rows.tolist() == [0] and which.tolist() == [0]
    # Any case finds it through the lower-case term; the query's own
    # spelling comes first, so its position says how it matched.
    assert bm.symbol_rows(["Typeadapter", "typeadapter"])[1].tolist() == [1]
    merged = merge_lexical([(a, np.array([0, -1])), (b, np.array([1]))])
    rows, _ = bm25_of(merged, params).symbol_rows(["typeadapter", "other"])
    assert rows.tolist() == [0, 1]
    # A symbol term is never a word: no query reads it as one.
    assert not any(t.startswith("\x01") for t in bm.query_terms("\x01typeadapter x\x01y"))


def test_older_lexical_settings_still_read() -> None:
    old = LexicalParams(stopwords=LexicalParams.default().stopwords)
    data = old.to_json()
    assert data["format_version"] == 2
    assert LexicalParams.from_json(data) == old
    new = LexicalParams.default()
    assert LexicalParams.from_json(new.to_json()) == new
    bad = {**new.to_json(), "identifiers": False}
    with pytest.raises(ValueError):
        LexicalParams.from_json(bad)


@pytest.mark.parametrize(
    ("query", "kind", "symbols"),
    [
        ("TypeAdapter", "identifier", ("TypeAdapter", "typeadapter")),
        ("safeParse", "identifier", ("safeParse", "safeparse")),
        ("Sinatra::Base", "identifier", ("Sinatra.Base", "sinatra.base", "Base", "base")),
        ("get_user", "identifier", ("get_user",)),
        ("Router", "identifier", ("Router", "router")),
        ("router", "natural", ()),
        ("how does the Router dispatch requests", "natural", ()),
        ("where is parseUserInput called", "natural", ("parseUserInput", "parseuserinput")),
        (
            "what does Sinatra::Base#call do",
            "natural",
            ("Sinatra.Base.call", "sinatra.base.call", "call"),
        ),
    ],
)
def test_query_kinds_and_symbols(query: str, kind: str, symbols: tuple[str, ...]) -> None:
    info = R.analyze(query)
    assert info.kind == kind
    assert info.symbols == symbols


@pytest.mark.parametrize(
    ("path", "kinds"),
    [
        ("src/app.py", set()),
        ("tests/test_app.py", {"test"}),
        ("lib/foo_test.go", {"test"}),
        ("src/__tests__/x.test.ts", {"test"}),
        ("src/main/java/FooTest.java", {"test"}),
        ("spec/models/user_spec.rb", {"test"}),
        ("examples/basic/main.go", {"example"}),
        ("benches/speed.rs", {"benchmark"}),
        ("vendor/github.com/x/y.go", {"vendor"}),
        ("api/service.pb.go", {"generated"}),
        ("docs/guide.md", {"docs"}),
        ("src/docs/routing.md", {"docs"}),
        ("README.md", {"docs"}),
        ("src/contest.py", set()),
        ("src/attestation.py", set()),
    ],
)
def test_path_kinds(path: str, kinds: set[str]) -> None:
    assert P.path_kinds(path) == frozenset(kinds)


def test_priors_step_aside_when_the_query_asks_for_them() -> None:
    plain = R.analyze("how are sessions stored")
    asks = R.analyze("tests for session storage")
    assert P.prior(plain, "tests/test_session.py", True) < 1
    assert P.prior(asks, "tests/test_session.py", True) == 1
    assert P.prior(plain, "docs/sessions.md", True) < 1
    assert P.prior(plain, "docs/sessions.md", False) == 1  # a folder of documents


def test_path_words_match_query_words() -> None:
    info = R.analyze("how does the router group routes")
    assert P.path_match(info, "routing/RouterGroup.go") > P.path_match(info, "context.go")
    assert P.path_match(R.analyze("the"), "the.py") == 0  # no content words


def _cand(dense: list[float], lex: list[float], files: list[int], defines=None) -> R.Candidates:  # type: ignore[no-untyped-def]
    n = len(dense)
    return R.Candidates(
        np.arange(n),
        np.array(files),
        np.array(dense, dtype=np.float32),
        np.array(lex, dtype=np.float32),
        np.zeros(n) if defines is None else np.array(defines, dtype=np.float64),
        1.0,
    )


def test_a_definition_ranks_first_for_a_symbol_query() -> None:
    info = R.analyze("TypeAdapter")
    cand = _cand([0.5, 0.4, 0.3], [3.0, 2.0, 1.0], [0, 1, 2], defines=[0, 0, 1])
    paths = ["a.java", "b.java", "adapters.java"]
    rows, _ = R.rank(info, cand, paths, 3)
    assert rows[0] == 2
    rows, _ = R.rank(info, cand, paths, 3, RankConfig(definitions=False))
    assert rows[0] == 0


def test_the_file_named_after_the_symbol_is_lifted() -> None:
    info = R.analyze("Args")
    cand = _cand([0.5, 0.4], [3.0, 2.0], [0, 1])
    paths = ["command.go", "args.go"]
    assert R.rank(info, cand, paths, 2)[0].tolist() == [1, 0]
    assert R.rank(info, cand, paths, 2, RankConfig(paths=False))[0].tolist() == [0, 1]


def test_a_file_waits_while_others_get_their_turn() -> None:
    info = R.analyze("parse the config")
    # Four passages of file 0 score a little above one of file 1.
    cand = _cand([0.6, 0.59, 0.58, 0.57, 0.55], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1])
    paths = ["a.py", "b.py"]
    rows, scores = R.rank(info, cand, paths, 3)
    assert 4 in rows.tolist()[:2]
    assert list(scores) == sorted(scores, reverse=True)
    rows, _ = R.rank(info, cand, paths, 3, RankConfig(diversity=False))
    assert rows.tolist() == [0, 1, 2]


def test_tests_rank_below_the_code_they_test() -> None:
    info = R.analyze("how is the cache evicted")
    cand = _cand([0.6, 0.5], [2.0, 1.5], [0, 1])
    paths = ["tests/test_cache.py", "cache.py"]
    assert R.rank(info, cand, paths, 2)[0].tolist() == [1, 0]
    assert R.rank(info, cand, paths, 2, RankConfig(priors=False))[0].tolist() == [0, 1]
    asks = R.analyze("how is the cache eviction tested")
    assert R.rank(asks, cand, paths, 2)[0].tolist() == [0, 1]


def test_plain_config_is_the_fixed_mix() -> None:
    info = R.analyze("anything here")
    cand = _cand([0.5, 0.2], [1.0, 4.0], [0, 1])
    _, scores = R.rank(info, cand, ["a", "b"], 2, RankConfig.plain())
    assert sorted(scores.tolist(), reverse=True) == pytest.approx(
        sorted([0.7 * 0.5 + 0.3 * 0.25, 0.7 * 0.2 + 0.3 * 1.0], reverse=True)
    )
