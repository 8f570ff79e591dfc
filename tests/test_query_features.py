"""Query-time path filters, context lines, the vimgrep format, the table's
best lines, --version and shell completion (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clihelp import invoke
from conftest import FakeEmbedder, write
from msearch.filters import PathFilter
from msearch.indexer import build_index
from msearch.lexical import LexicalParams
from msearch.query import Searcher, context_lines, open_lexical
from msearch.snippet import Matcher, best_line, best_window
from msearch.storage.reader import load_index


def run(*args: str):  # type: ignore[no-untyped-def]
    return invoke(*args)


@pytest.fixture
def notes(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "notes"
    write(root, "a/bread.txt", "".join(f"filler line {i}\n" for i in range(1, 10)))
    (root / "a/bread.txt").write_text(
        (root / "a/bread.txt").read_text() + "knead the bread dough well\n" + "tail line\n"
    )
    write(root, "b/bread.md", "# Bread\n\nbread rises in a warm oven\n")
    write(root, "b/deep/bread.py", "bread = 'dough'  # bread\n")
    r = run("index", str(root), "--chunk-tokens", "16", "--overlap-tokens", "0")
    assert r.exit_code == 0, r.output
    return root


def paths_of(out: str) -> list[str]:
    return [str(json.loads(line)["path"]) for line in out.splitlines()]


def q(root: Path, *args: str):  # type: ignore[no-untyped-def]
    return run("query", "bread dough", "--index", str(root / ".msearch"), "--json", *args)


def test_glob_filters_before_ranking(notes: Path) -> None:
    every = paths_of(q(notes, "-k", "50").stdout)
    assert {Path(p).suffix for p in every} == {".txt", ".md", ".py"}
    only_md = paths_of(q(notes, "-g", "*.md").stdout)
    assert only_md and all(p.endswith(".md") for p in only_md)
    no_txt = paths_of(q(notes, "-g", "!*.txt", "-k", "50").stdout)
    assert no_txt and not any(p.endswith(".txt") for p in no_txt)
    # A folder glob, anchored at the index root, and two globs together.
    under_b = paths_of(q(notes, "-g", "/b/", "-g", "!*.py", "-k", "50").stdout)
    assert under_b and all("/b/" in p and p.endswith(".md") for p in under_b)
    # Ranking happens among the files that pass: -k 1 still finds one.
    assert len(paths_of(q(notes, "-g", "*.py", "-k", "1").stdout)) == 1
    r = q(notes, "-g", "*.rs")
    assert r.exit_code == 1 and r.stdout == ""
    r = q(notes, "-g", "[")
    assert r.exit_code == 2 and "never closed" in r.stderr


def test_filters_rank_among_the_files_that_pass(
    notes: Path, tmp_path: Path, fake: FakeEmbedder
) -> None:
    """Before ranking means: dense and lexical hits are those of an index
    holding only the files that pass, and hybrid scales BM25 by the best
    lexical score among them (computed here on the rows that pass alone)."""
    from msearch.config import RankConfig
    from msearch.lexical import fuse

    only = tmp_path / "only"
    for p in (notes / "b").rglob("*"):
        if p.is_file():
            write(only, str(p.relative_to(notes)), p.read_text())
    build_index(only, only / ".msearch", fake, chunking=_chunking(notes))
    full = load_index(notes / ".msearch")
    part = load_index(only / ".msearch")
    keep = PathFilter(["b/"])
    for mode in ("dense", "lexical"):
        got = Searcher(full, fake.encode, open_lexical(full), mode, cwd=notes).query(
            "bread dough", 10, paths=keep
        )
        want = Searcher(part, fake.encode, open_lexical(part), mode, cwd=only).query(
            "bread dough", 10
        )
        assert [h.path for h in got] == [h.path for h in want], mode
        if mode == "dense":
            assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    # The fixed mix (no ranking stage): its scores are known in closed form.
    plain = RankConfig.plain()
    searcher = Searcher(
        full, fake.encode, open_lexical(full), "hybrid", cwd=notes, rank_config=plain
    )
    rows = np.flatnonzero(keep.row_mask(full))
    dense = searcher.dense_scores(fake.encode(["bread dough"]))[rows, 0]
    lexical = open_lexical(full).scores("bread dough")[rows]
    want_scores = sorted(fuse(dense, lexical).tolist(), reverse=True)
    got = searcher.query("bread dough", 10, paths=keep)
    assert [h.score for h in got] == pytest.approx(want_scores[: len(got)], abs=1e-6)
    assert {h.path.split("/")[-2] for h in got} <= {"b", "deep"}


def _chunking(root: Path):  # type: ignore[no-untyped-def]
    from msearch.chunking import ChunkSettings

    meta = json.loads((root / ".msearch" / "meta.json").read_text())
    return ChunkSettings(**meta["chunking"])


def test_context_lines_like_grep(notes: Path) -> None:
    r = run(
        "query", "knead", "--lexical-only", "--index", str(notes / ".msearch"), "--json", "-C", "2"
    )
    hit = json.loads(r.stdout.splitlines()[0])
    assert hit["path"].endswith("bread.txt")
    lines = (notes / "a/bread.txt").read_text().split("\n")
    first, last = hit["start_line"], hit["end_line"]
    assert hit["before"] == lines[max(first - 3, 0) : first - 1]
    assert hit["after"] == [ln for ln in lines[last : last + 2] if ln or last + 1 < len(lines)]
    r2 = run(
        "query", "knead", "--lexical-only", "--index", str(notes / ".msearch"), "--json",
        "-C", "2", "-A", "0",
    )  # fmt: skip
    hit2 = json.loads(r2.stdout.splitlines()[0])
    assert hit2["before"] == hit["before"] and hit2["after"] == []
    plain = json.loads(q(notes).stdout.splitlines()[0])
    assert "before" not in plain  # only when asked for
    assert run("query", "x", "--index", str(notes / ".msearch"), "-C", "-1").exit_code == 2


@settings(max_examples=200, deadline=None)
@given(
    # Passages never end on an empty line (chunks are stripped): lines hold text.
    lines=st.lists(st.text(alphabet="ab \r", min_size=1, max_size=5), min_size=1, max_size=12),
    data=st.data(),
)
def test_context_lines_are_the_lines_around_the_passage(
    lines: list[str], data: st.DataObject
) -> None:
    text = "\n".join(lines) + data.draw(st.sampled_from(["", "\n"]))
    all_lines = text.split("\n")
    if text.endswith("\n"):
        all_lines.pop()
    first = data.draw(st.integers(0, len(all_lines) - 1))
    last = data.draw(st.integers(first, len(all_lines) - 1))
    start = sum(len(x) + 1 for x in all_lines[:first])
    end = sum(len(x) + 1 for x in all_lines[: last + 1]) - 1  # without the last newline
    end = min(end + data.draw(st.integers(0, 1)), len(text))
    b, a = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    before, after = context_lines(text, start, end, b, a)
    assert list(before) == [x.rstrip("\r") for x in all_lines[max(first - b, 0) : first]]
    assert list(after) == [x.rstrip("\r") for x in all_lines[last + 1 : last + 1 + a]]


def test_vimgrep_points_at_the_best_line(notes: Path) -> None:
    r = run("query", "knead dough", "--index", str(notes / ".msearch"), "--vimgrep", "-k", "20")
    assert r.exit_code == 0, r.output
    for line in r.stdout.splitlines():
        path, lineno, col, text = line.split(":", 3)
        source = (notes / path).read_text().split("\n") if not os.path.isabs(path) else None
        if source is None:
            source = Path(path).read_text().split("\n")
        assert source[int(lineno) - 1] == text
        if path.endswith("bread.txt") and "knead" in text:
            assert int(col) == 1  # "knead" is the line's first word
    assert any("knead the bread dough" in line for line in r.stdout.splitlines())
    r = run("query", "x", "--index", str(notes / ".msearch"), "--vimgrep", "--json")
    assert r.exit_code == 2


def test_best_window_and_line() -> None:
    m = Matcher.for_query("baking bread at home", LexicalParams())
    lines = ["intro", "nothing here", "we bake", "bread at home", "more", "end"]
    assert best_window(lines, m, 2) == 2  # "bake" + "bread", "home": three terms
    assert best_window(["x", "y"], m, 6) == 0
    assert best_line("intro\n\n  Bread is baked\n", m) == (2, 2)
    assert best_line("\n  nothing\n", m) == (1, 2)  # no query word: the first line with text
    # Words are matched as BM25 sees them: stems, not substrings.
    assert [w for w in ("breads", "breadth", "homes") if m.spans(w)] == ["breads", "homes"]


def test_table_shows_the_lines_that_answer(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    root = tmp_path / "t"
    body = "".join(f"padding {i}\n" for i in range(20)) + "the sourdough starter recipe\n"
    write(root, "long.txt", body)
    assert run("index", str(root), "--chunk-tokens", "200", "--overlap-tokens", "0").exit_code == 0
    r = run(
        "query", "sourdough starter", "--index", str(root / ".msearch"), "-f", "table",
        "--color", "always",
    )  # fmt: skip
    assert "\x1b[1;33msourdough" in r.stdout and "starter" in r.stdout
    assert "padding 0" not in r.stdout  # not the passage's first lines


def test_version() -> None:
    from msearch import __version__

    for flag in ("--version", "-V"):
        r = run(flag)
        assert r.exit_code == 0 and r.stdout.strip() == f"msearch {__version__}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_and_answers(shell: str) -> None:
    r = run("completion", shell)
    assert r.exit_code == 0 and "_MSEARCH_COMPLETE" in r.stdout
    env = {**os.environ, "_MSEARCH_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env |= {"COMP_WORDS": "msearch qu", "COMP_CWORD": "1"}
    else:
        env |= {"_TYPER_COMPLETE_ARGS": "msearch qu", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    out = subprocess.run(
        [sys.executable, "-m", "msearch"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "query" in out.stdout, (out.stdout, out.stderr)


def test_path_filter_rules() -> None:
    f = PathFilter(["*.md", "!drafts/"])
    assert f.match("a/b.md") and not f.match("drafts/x.md") and not f.match("a.txt")
    assert PathFilter(["!*.txt"]).match("a.md") and not PathFilter(["!*.txt"]).match("a.txt")
    assert not PathFilter([])


def test_exact_and_status_say_how_search_runs(notes: Path) -> None:
    idx = str(notes / ".msearch")
    plain = q(notes, "-k", "5")
    exact = q(notes, "-k", "5", "--exact")
    assert exact.exit_code == 0 and exact.stdout == plain.stdout  # small: exact either way
    r = run("status", "--index", idx)
    assert "search:    exact (two-stage from 500,000 passages)" in r.stdout
    r = run("status", "--index", idx, "--json")
    assert json.loads(r.stdout)["search"].startswith("exact")


def test_vimgrep_columns_count_from_the_start_of_a_split_line(
    tmp_path: Path, use_fake: FakeEmbedder
) -> None:
    """Regression (review): a passage that starts inside a long line (split
    into pieces) had its column counted from the passage, not the line."""
    root = tmp_path / "long"
    words = " ".join(f"w{i}" for i in range(400))
    write(root, "one.txt", words + " pineapple tail\n")
    assert run("index", str(root), "--chunk-tokens", "64", "--overlap-tokens", "0").exit_code == 0
    r = run("query", "pineapple", "--lexical-only", "--index", str(root / ".msearch"), "--vimgrep")
    path, lineno, col, text = r.stdout.splitlines()[0].split(":", 3)
    line = (root / "one.txt").read_text().split("\n")[0]
    assert lineno == "1" and text == line
    assert line.encode()[int(col) - 1 :].startswith(b"pineapple")
