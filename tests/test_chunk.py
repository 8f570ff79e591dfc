from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from msearch.chunking import (
    SPECIAL_TOKENS,
    ChunkSettings,
    WhitespaceCounter,
    chunk_text,
    chunk_texts,
)

COUNTER = WhitespaceCounter()


def test_small_file_is_one_passage() -> None:
    text = "alpha beta\n\ngamma delta\n"
    ps = chunk_text(text, COUNTER, ChunkSettings(max_tokens=64, overlap_tokens=4))
    assert [(p.start_line, p.end_line) for p in ps] == [(1, 3)]
    assert ps[0].text == "alpha beta\n\ngamma delta"


def test_blank_file_has_no_passages() -> None:
    assert chunk_text("\n \n\t\n", COUNTER, ChunkSettings()) == []
    assert chunk_text("", COUNTER, ChunkSettings()) == []


def test_front_matter_is_not_embedded() -> None:
    text = "---\ntitle: x\ntags: [a, b]\n---\n# Heading\nbody words here\n"
    ps = chunk_text(text, COUNTER, ChunkSettings())
    assert ps[0].start_line == 5
    assert "title" not in "".join(p.text for p in ps)


def test_line_ranges_and_offsets_agree() -> None:
    lines = [f"line {i} " + "w " * (i % 7) for i in range(60)]
    text = "\n".join(lines) + "\n"
    for p in chunk_text(text, COUNTER, ChunkSettings(max_tokens=20, overlap_tokens=5)):
        assert text[p.start : p.end] == p.text
        assert p.text.split("\n")[0] == lines[p.start_line - 1]
        assert p.text.split("\n")[-1] == lines[p.end_line - 1]


def test_overlap_repeats_trailing_lines() -> None:
    text = "\n".join(f"a{i} b{i} c{i}" for i in range(20))
    ps = chunk_text(text, COUNTER, ChunkSettings(max_tokens=14, overlap_tokens=3))
    assert len(ps) > 2
    for prev, nxt in zip(ps, ps[1:], strict=False):
        assert nxt.start_line == prev.end_line  # one 3-token line carried over


def test_one_huge_line_is_split_within_the_line() -> None:
    text = "intro\n" + " ".join(f"w{i}" for i in range(1000)) + "\noutro\n"
    ps = chunk_text(text, COUNTER, ChunkSettings(max_tokens=50, overlap_tokens=0))
    # "intro" plus the first 47 words, then 48 words a passage on line 2 alone
    assert (ps[0].start_line, ps[0].end_line) == (1, 2) and len(ps[0].text.split()) == 48
    middle = [p for p in ps if p.start_line == 2]
    assert len(middle) == 20  # the other 953 words
    assert all(p.end_line == 2 and len(p.text.split()) <= 48 for p in middle)
    assert " ".join(p.text for p in ps[:-1]) == "intro\n" + text.splitlines()[1]


line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(line_text, max_size=80),
    max_tokens=st.integers(min_value=3, max_value=40),
    overlap=st.integers(min_value=0, max_value=10),
)
def test_passages_cover_every_non_blank_line_in_order(
    lines: list[str], max_tokens: int, overlap: int
) -> None:
    text = "\n".join(lines)
    ps = chunk_text(text, COUNTER, ChunkSettings(max_tokens=max_tokens, overlap_tokens=overlap))
    budget = max_tokens - SPECIAL_TOKENS
    covered: set[int] = set()
    prev_start = (0, 0)
    for p in ps:
        assert 1 <= p.start_line <= p.end_line <= len(lines)
        assert (p.start_line, p.start) >= prev_start  # in order
        prev_start = (p.start_line, p.start)
        assert text[p.start : p.end] == p.text
        assert len(p.text.split()) <= budget  # never over the model's limit
        assert p.text.strip()
        covered.update(range(p.start_line, p.end_line + 1))
    non_blank = {i + 1 for i, line in enumerate(lines) if line.strip()}
    assert non_blank <= covered


def test_line_numbers_count_newlines_only() -> None:
    """Regression: form feeds and U+2028 are not line breaks for grep or editors."""
    text = "one\x0ctwo\nthree\u2028four\nfive\n"
    ps = chunk_text(text, COUNTER, ChunkSettings(max_tokens=4, overlap_tokens=0))
    assert [(p.start_line, p.end_line) for p in ps] == [(1, 1), (2, 2), (3, 3)]


def test_title_shares_a_passage_with_a_long_paragraph() -> None:
    """Regression (eval): a title before a one-line abstract became a passage of its own."""
    text = "A Title Line\n" + " ".join(f"w{i}" for i in range(100)) + "\n"
    ps = chunk_text(text, COUNTER, ChunkSettings(max_tokens=42, overlap_tokens=0))
    assert ps[0].text.startswith("A Title Line\nw0 w1")
    assert (ps[0].start_line, ps[0].end_line) == (1, 2)
    assert len(ps[0].text.split()) == 40
    assert " ".join(p.text for p in ps).split() == text.split()


@settings(max_examples=100, deadline=None)
@given(
    files=st.lists(st.lists(line_text, max_size=20).map("\n".join), max_size=6),
    max_tokens=st.integers(min_value=3, max_value=30),
    overlap=st.integers(min_value=0, max_value=8),
)
def test_chunking_files_together_changes_nothing(
    files: list[str], max_tokens: int, overlap: int
) -> None:
    cfg = ChunkSettings(max_tokens=max_tokens, overlap_tokens=overlap)
    assert chunk_texts(files, COUNTER, cfg) == [chunk_text(f, COUNTER, cfg) for f in files]


def _hf_counter():  # type: ignore[no-untyped-def]
    from msearch.encoders import bundled_model_path, token_counter

    return token_counter(bundled_model_path())


def test_filling_a_passage_never_cuts_a_word() -> None:
    """Regression: when the open passage had room for less than the long
    line's first word, it was filled with part of that word ("... cells\nTe"
    and "tetraploid" began the next passage)."""
    hf = _hf_counter()
    title = "Common variants of risk genes\n"
    t = hf.count([title])[0]
    budget = 4 * t  # a title of a quarter of the budget may share its passage
    giant = "Hypospadias" * 4  # one word: more tokens than the room left, fewer than a passage
    assert budget - t < hf.count([giant])[0] <= budget
    body = giant + " is a common congenital malformation. " * 10 + "\n"
    ps = chunk_text(title + body, hf, ChunkSettings(max_tokens=budget + SPECIAL_TOKENS))
    assert ps[0].text == title.rstrip("\n") and (ps[0].start_line, ps[0].end_line) == (1, 1)
    assert ps[1].text.startswith(giant[:40])
    # With room for whole words, the title shares its passage.
    body = "Hypospadias is a common congenital malformation. " * 10 + "\n"
    ps = chunk_text(title + body, hf, ChunkSettings(max_tokens=budget + SPECIAL_TOKENS))
    assert ps[0].text.startswith(title + "Hypospadias is")
    # A longer open passage closes instead: the long line's passages then
    # start with the line, whatever came before it.
    ps = chunk_text(title + body, hf, ChunkSettings(max_tokens=3 * t + SPECIAL_TOKENS))
    assert ps[0].text == title.rstrip("\n") and ps[1].text.startswith("Hypospadias is")


def test_hf_split_reuses_counted_tokens_and_matches_a_fresh_tokenizer() -> None:
    hf, fresh = _hf_counter(), _hf_counter()
    line = "Tetraploid arrest is dependent on p53 and beta-galactosidase activity. " * 12
    (n,) = hf.count([line])
    assert n >= hf.KEEP_TOKENS and line in hf._kept
    for first in (None, 1, 3, 40):
        spans = hf.split(line, 50, first=first)
        assert spans == fresh.split(line, 50, first=first)
        assert " ".join(line[a:b] for a, b in spans).split() == line.split()  # no word cut
        for k, (a, b) in enumerate(spans):
            limit = first if (k == 0 and first is not None) else 50
            assert fresh.count([line[a:b]])[0] <= limit
    assert hf.split(line, 50, first=1)[0] == (0, 0)  # "Tetraploid" is more than one token
    for counter in (hf, COUNTER):
        assert counter.split(line, 50, first=0)[0] == (0, 0)
        assert counter.split(line, 50, first=0)[1:] == counter.split(line, 50)
