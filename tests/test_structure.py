"""Structure-aware passages: code by its syntax tree, Markdown and
reStructuredText by sections (msearch.syntax, msearch.structure)."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msearch.chunking import (
    ChunkSettings,
    WhitespaceCounter,
    chunk_files,
    chunk_texts,
    structure,
    syntax,
)

W = WhitespaceCounter()


def _chunk(path: str, text: str, tokens: int = 40) -> list:  # type: ignore[type-arg]
    return chunk_files([(path, text)], W, ChunkSettings(tokens, 4))[0]


PYTHON = textwrap.dedent(
    '''\
    """A module."""
    import os


    class Store:
        """Keeps things."""

        def __init__(self, root):
            self.root = root
            self.items = {}

        def put(self, key, value):
            """Store value under key in the root folder given at start."""
            path = os.path.join(self.root, key)
            with open(path, "w") as fh:
                fh.write(value)
            self.items[key] = path

        def get(self, key):
            with open(self.items[key]) as fh:
                return fh.read()


    def helper(x):
        return x * 2
    '''
)


def test_languages_by_file_name() -> None:
    assert syntax.language_of("a/b/c.py") == "python"
    assert syntax.language_of("x.TSX") == "tsx"
    assert syntax.language_of("lib/rack/builder.rb") == "ruby"
    assert syntax.language_of("notes.md") is None
    assert syntax.language_of("Makefile.txt") is None
    assert syntax.is_code_path("src/Main.java") and not syntax.is_code_path("README")


@pytest.mark.parametrize(
    ("path", "source", "names"),
    [
        ("a.py", "class A:\n    def f(self):\n        pass\n", ["A", "f"]),
        (
            "a.go",
            "package x\nfunc (r *T) Name() int { return 1 }\ntype T struct{}\n",
            ["Name", "T"],
        ),
        (
            "A.java",
            "class TypeAdapter<T> {\n  public T read(String s) { return null; }\n}\n",
            ["TypeAdapter", "read"],
        ),
        ("a.rb", "module Sinatra\n  class Base\n    def call(env); end\n  end\nend\n", None),
        ("a.rs", "struct S;\nimpl S { fn go(&self) {} }\ntrait T {}\n", ["S", "S", "go", "T"]),
        ("a.ts", "export function safeParse(x: string) {}\nconst run = () => 1;\n", None),
        ("a.c", "static int *make_buf(int n) { return 0; }\n", ["make_buf"]),
        ("a.ex", "defmodule Ecto.Repo do\n  def get(a, b) when is_nil(a), do: 1\nend\n", None),
    ],
)
def test_definitions_are_named(path: str, source: str, names: list[str] | None) -> None:
    lang = syntax.language_of(path)
    assert lang is not None
    tree = syntax.parse(source, lang)
    assert tree is not None
    got = [d.name for d in tree.definitions]
    if names is not None:
        assert got == names
    if path == "a.rb":
        assert got == ["Sinatra", "Base", "call"]
        assert tree.definitions[1].qualified() == ["Base", "Sinatra.Base"]
    if path == "a.ts":
        assert got == ["safeParse", "run"]
    if path == "a.ex":
        assert got == ["Ecto.Repo", "get"]


def test_code_passages_follow_definitions_and_carry_context() -> None:
    got = _chunk("pkg/store.py", PYTHON, tokens=40)
    assert len(got) > 1
    starts = {p.start_line for p in got}
    put = PYTHON.split("\n").index("    def put(self, key, value):") + 1
    assert put in starts  # the method opens a passage of its own
    in_put = next(p for p in got if p.start_line == put)
    assert in_put.context.split("\n") == ["pkg/store.py", "class Store:"]
    assert in_put.indexed == in_put.context + "\n" + in_put.text
    assert "put" in in_put.symbols and "Store.put" in in_put.symbols
    # Every passage fits the budget with its context in front.
    assert all(W.count([p.indexed])[0] <= 40 - 2 for p in got)


def test_a_small_file_is_one_passage_with_every_symbol() -> None:
    got = _chunk("h.py", "def a():\n    return 1\n\n\ndef b():\n    return 2\n", tokens=200)
    assert len(got) == 1
    assert got[0].symbols == ("a", "b")
    assert (got[0].start_line, got[0].end_line) == (1, 6)


def test_a_long_function_is_cut_at_its_statements() -> None:
    body = "".join(f"    x{i} = compute(alpha, beta, gamma, {i})\n" for i in range(60))
    source = "def long_one():\n" + body + "\n\ndef short():\n    pass\n"
    got = _chunk("l.py", source, tokens=60)
    assert len(got) > 2
    assert got[0].start_line == 1 and "long_one" in got[0].symbols
    # The later pieces say which function they are in.
    assert all(p.context.endswith("def long_one():") for p in got[1:-1])
    assert got[-1].symbols == ("short",)


def test_comments_and_decorators_stay_with_their_definition() -> None:
    source = (
        "x = 1\n" * 12 + "\n# Explains f.\n# More about f.\n@decorate\ndef f():\n    return 1\n"
    )
    got = _chunk("d.py", source, tokens=30)
    f_passage = next(p for p in got if "f" in p.symbols)
    assert "# Explains f.\n# More about f.\n@decorate\ndef f():" in f_passage.text
    assert not any(p.text.endswith("@decorate") for p in got)


def test_a_file_that_does_not_parse_is_still_covered() -> None:
    source = "def broken(:\n    ((( \n" + "word " * 50 + "\n"
    got = _chunk("b.py", source, tokens=30)
    lines = {i for p in got for i in range(p.start_line, p.end_line + 1)}
    assert {1, 2, 3} <= lines


def test_markdown_sections_merge_up_to_the_budget_with_their_heading_path() -> None:
    doc = textwrap.dedent(
        """\
        # Guide

        Intro words here.

        ## Install

        Run the installer and wait.

        ## Configure

        ### Linux

        Edit the file in your home folder and restart the service afterwards.

        ```sh
        # not a heading
        echo hi
        ```

        ### Windows

        Use the settings dialog.
        """
    )
    got = _chunk("docs/guide.md", doc, tokens=32)
    heads = structure.headings(doc.split("\n"), "markdown")
    assert [h[3] for h in heads] == ["Guide", "Install", "Configure", "Linux", "Windows"]
    linux = next(p for p in got if "Edit the file" in p.text)
    assert linux.context.startswith("docs/guide.md\nGuide")
    assert "Configure" in linux.context
    # Small sections share passages: fewer passages than sections.
    assert len(got) < len(heads)


def test_rst_headings_by_their_underlines() -> None:
    doc = "=====\nTitle\n=====\n\nText.\n\nPart one\n--------\n\nMore.\n\nSub\n~~~\n\nLast.\n"
    heads = structure.headings(doc.split("\n"), "rst")
    assert [(h[0], h[2], h[3]) for h in heads] == [
        (0, 1, "Title"),
        (6, 2, "Part one"),
        (11, 3, "Sub"),
    ]


def test_plain_text_is_chunked_as_before() -> None:
    text = "para one line\n\npara two line\n" * 20
    s = ChunkSettings(20, 4)
    assert chunk_files([("notes.txt", text)], W, s)[0] == chunk_texts([text], W, s)[0]


_code_lines = st.lists(
    st.sampled_from(
        [
            "def f(a, b):",
            "    return a + b",
            "class K:",
            "    x = 1",
            "    def m(self):",
            "        pass",
            "# a comment line",
            "",
            "value = compute(one, two, three)",
            "@decorator",
            "if x:",
            "    y = [1, 2,",
            "         3]",
        ]
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(_code_lines, st.integers(min_value=12, max_value=80))
def test_code_passages_cover_every_line_in_order_within_the_budget(
    lines: list[str], tokens: int
) -> None:
    text = "\n".join(lines) + "\n"
    got = _chunk("p.py", text, tokens=tokens)
    content = {i + 1 for i, line in enumerate(lines) if line.strip()}
    covered = {i for p in got for i in range(p.start_line, p.end_line + 1)}
    assert content <= covered
    assert [p.start_line for p in got] == sorted(p.start_line for p in got)
    for p in got:
        assert text.split("\n")[p.start_line - 1].strip()  # starts on a line with text
        assert p.text == text[p.start : p.end]
        assert W.count([p.indexed])[0] <= tokens - 2 or p.start_line == p.end_line
