"""The chunker's token counts (msearch.chunking.tokens) against the model's
own tokenizer, text by text: the word rule must give exactly what
``tokenizers`` gives for the whole text, or passages would change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msearch.chunking import tokens as tokens_mod
from msearch.chunking.tokens import HFTokenCounter, words_add_up


def _bundled_tokenizer() -> Any:
    from msearch.encoders import bundled_model_path
    from msearch.encoders.spec import read_spec
    from msearch.encoders.tokenizer import load_tokenizer

    return load_tokenizer(read_spec(bundled_model_path()), truncate=False)


TOK = _bundled_tokenizer()
COUNTER = HFTokenCounter(_bundled_tokenizer())  # warm: its memory of words serves every example


def _reference(texts: list[str]) -> list[int]:
    """The tokenizer on each whole text, one at a time (no word rule)."""
    return [len(TOK.encode(t, add_special_tokens=False).ids) for t in texts]


# Code-like pieces, the added tokens in several cases, and characters the
# word rule must leave to the tokenizer (accents, CJK, controls, odd spaces).
PIECES = st.sampled_from(
    [
        "getUserName",
        "max_retries",
        "self.x",
        "::",
        "->",
        "{",
        "}",
        "(",
        ");",
        "#include <stdio.h>",
        "[CLS]",
        "[cls]",
        "[SEP]",
        "[Mask]",
        "[PAD]",
        "[UNK]",
        "##ing",
        "naïve",
        "Ünïcödé",
        "中文",
        "\x00",
        "\x01",
        "\x7f",
        "\x0b",
        "\x0c",
        "\u00a0",
        "\u2028",
        "\ufffd",
        "x" * 120,
        "ab" * 60,
        "1234567890",
        "  ",
        "\t",
        "\r\n",
        "\n",
        "\r",
        "'s",
        "`code`",
        "$var",
        "@decorator",
        "~/path",
    ]
)
TEXTS = st.lists(
    st.one_of(PIECES, st.text(alphabet=st.characters(min_codepoint=9, max_codepoint=127))),
    max_size=12,
).map("".join)


@given(st.lists(TEXTS, min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_counts_equal_the_tokenizer_on_each_whole_text(texts: list[str]) -> None:
    assert COUNTER.count(texts) == _reference(texts)


def test_odd_texts_among_plain_ones_are_found() -> None:
    """Texts counted together are joined by NUL: a text holding a NUL, a
    control character or an added token, anywhere among them, goes to the
    tokenizer, and the others still count right."""
    plain = [f"line {i} of code();\n" for i in range(50)]
    for odd in ["a\x00b", "x = '\x1b[0m'", "tok = '[SEP]'", "[cls] first", "last [MASK]"]:
        for at in (0, 25, 50):
            texts = [*plain[:at], odd, *plain[at:]]
            assert COUNTER.count(texts) == _reference(texts)


def test_the_bundled_tokenizer_takes_the_word_rule() -> None:
    # Otherwise the test above would only compare the tokenizer with itself.
    assert words_add_up(TOK)
    counter = HFTokenCounter(_bundled_tokenizer())
    counter.count(["def get_user(self) -> User:  # the user\n"])
    assert {"get", "_", "user", "User", "#"} <= set(counter._word_tokens)


def test_a_source_file_counts_alike_line_by_line() -> None:
    """Every line of real source files (this package's own), counted by a
    fresh counter, then again from its memory of words."""
    lines = [
        line
        for path in sorted(Path(tokens_mod.__file__).parents[1].rglob("*.py"))
        for line in path.read_text(encoding="utf-8").split("\n")
    ]
    expected = _reference(lines)
    counter = HFTokenCounter(_bundled_tokenizer())
    assert counter.count(lines) == expected
    assert counter.count(lines) == expected  # every word now remembered


def test_a_full_memory_of_words_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_mod, "MAX_WORDS", 5)
    counter = HFTokenCounter(_bundled_tokenizer())
    texts = ["alpha beta gamma", "delta epsilon zeta eta theta", "alpha iota kappa"]
    for _ in range(2):
        for text in texts:
            assert counter.count([text]) == _reference([text])
            assert len(counter._word_tokens) <= 6  # the limit, or one call's words; and NUL


def test_long_lines_keep_their_tokens_for_split() -> None:
    counter = HFTokenCounter(_bundled_tokenizer())
    line = "tetraploid_arrest(p53, beta_galactosidase);  " * 20
    (n,) = counter.count([line])
    assert n >= counter.KEEP_TOKENS and line in counter._kept
    assert counter.split(line, 50) == HFTokenCounter(_bundled_tokenizer()).split(line, 50)


def test_other_tokenizers_are_counted_whole(tmp_path: Path) -> None:
    """A Unigram tokenizer (SentencePiece: its pieces hold the spaces) does
    not add up by words: the rule is off and counts come from the tokenizer."""
    from tiny_models import xlmr_tokenizer
    from tokenizers import Tokenizer

    xlmr_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert not words_add_up(tok)
    counter = HFTokenCounter(tok)
    texts = ["def get_user(self):", "the quick brown fox", "x = 1"]
    assert counter.count(texts) == [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    assert list(counter._word_tokens) == ["\x00"]  # the joint alone: no word counted


def test_long_words_are_counted_but_not_remembered() -> None:
    counter = HFTokenCounter(_bundled_tokenizer())
    long_word = "abc" * 50  # 150 characters: never kept
    texts = [f"x = {long_word}\n", f"y = {long_word} + 1\n"]
    for _ in range(2):
        assert counter.count(texts) == _reference(texts)
        assert counter.count([texts[0]]) == _reference([texts[0]])
    assert long_word not in counter._word_tokens and "x" in counter._word_tokens


def test_an_added_token_with_a_space_turns_the_word_rule_off() -> None:
    """Regression (review): a normalized added token "foo bar" matches
    "foo\\tbar" after BertNormalizer made the tab a space, which a search of
    the raw text cannot see: such a tokenizer counts every text whole."""
    from tokenizers import AddedToken

    tok = _bundled_tokenizer()
    tok.add_tokens([AddedToken("foo bar", normalized=True)])
    assert not words_add_up(tok)
    counter = HFTokenCounter(tok)
    texts = ["foo\tbar baz", "call(foo bar)", "plain words"]
    assert counter.count(texts) == [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    assert len(tok.encode("foo\tbar", add_special_tokens=False).ids) == 1  # what it guards
