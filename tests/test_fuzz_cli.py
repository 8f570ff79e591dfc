"""CLI fuzz (issue 11): random option values, random bytes as queries, random
file names and contents. Every run ends with exit 0, 1 or 2, never a
traceback; an exit 2 is one line; and nothing outside an index folder is
ever created, changed or removed.

Settings: see ``clihelp.fuzz_settings`` (derandomized for CI).
"""

from __future__ import annotations

import os
import shutil
import string
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from clihelp import Out, cli, fuzz_settings
from conftest import FakeEmbedder
from msearch.storage import layout

name_chars = st.sampled_from(
    list(string.ascii_letters + string.digits + " .-_[]*?!#$'\"\\\t\n")
    + ["é", "日", "\x1b", "\x7f", "\u202e", "\udcff", "\udc80"]
)
file_names = st.text(name_chars, min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and "/" not in n and "\0" not in n
)
contents = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogateescape")),
    st.lists(st.sampled_from(["moon", "bread", "river", "the", "\n", " ", "\x1b[2J"]), max_size=60)
    .map(" ".join)
    .map(str.encode),
)
queries = st.one_of(
    st.binary(min_size=0, max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(max_size=40),
    st.sampled_from(["moon", "bread rise", "-", "", " ", "--", "-k"]),
)
values = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "3",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "0.5",
            "",
            "abc",
            "4M",
            "1k",
            "[",
            "***/!/[z-a]",
            "*.md",
            "!*.txt",
            "**",
            "jsonl",
            "tsv",
            "paths",
            "table",
            "cpu",
            "auto",
            "never",
            "always",
            "256",
            "8",
            "100000",
            "300",
            "\udcff",
        ]
    ),
    st.integers(-(10**6), 10**6).map(str),
    st.text(max_size=8),
)
INDEX_OPTS = [
    "--max-file-size",
    "--chunk-tokens",
    "--overlap-tokens",
    "--include",
    "-g",
    "--exclude",
    "--batch-size",
    "--precision",
    "--device",
    "--model",
]
INDEX_FLAGS = ["--full", "--hidden", "-L", "--no-ignore", "--include-noise", "-q", "--fast"]
QUERY_OPTS = ["-k", "--min-score", "--format", "--color", "--device", "--model"]
QUERY_FLAGS = ["--json", "-l", "-0", "--dense-only", "--lexical-only", "--refresh"]


def options(opts: list[str], flags: list[str]) -> st.SearchStrategy[list[str]]:
    pair = st.tuples(st.sampled_from(opts), values).map(list)
    flag = st.sampled_from(flags).map(lambda f: [f])
    return st.lists(st.one_of(pair, flag), max_size=4).map(lambda xs: [a for x in xs for a in x])


index_dirs = st.sampled_from(
    [None, None, None, "../idx", ".", "sub", "../file.txt", "../empty", ".msearch", "../new/deep"]
)


def command() -> st.SearchStrategy[list[str]]:
    index = st.tuples(
        st.sampled_from([".", ".", "sub", "../missing", "../file.txt"]),
        options(INDEX_OPTS, INDEX_FLAGS),
    )
    query = st.tuples(queries, options(QUERY_OPTS, QUERY_FLAGS))
    return st.one_of(
        index.map(lambda t: ["index", t[0], *t[1]]),
        query.map(lambda t: ["query", t[0], *t[1]]),
        st.sampled_from([["status"], ["status", "--json"], ["query"], ["index"], ["bogus"]]),
    )


def user_files(base: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the workspace that is not inside an index folder."""
    out: dict[str, tuple[bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if (Path(dirpath) / layout.MARKER_NAME).exists():
            dirnames[:] = []
            continue
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            out[str(p.relative_to(base))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def check(r: Out, args: list[str]) -> None:
    assert r.code in (0, 1, 2, 130), (args, r.code, r.stderr)
    assert "Traceback" not in r.stderr, (args, r.stderr)
    if r.code == 2 and args[0] != "bogus" and len(args) > 1:
        # Notices may come first (a fallback model, say); the error is one last line.
        lines = r.stderr.splitlines()
        assert lines and lines[-1].startswith("msearch: "), (args, r.stderr)
        assert "internal error" not in r.stderr, (args, r.stderr)
    for line in r.stderr.splitlines():
        assert "\x1b" not in line, (args, line)  # file names never drive the terminal


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(default_examples=120)
@given(
    files=st.lists(st.tuples(file_names, contents), min_size=0, max_size=6),
    commands=st.lists(st.tuples(command(), index_dirs), min_size=1, max_size=4),
)
def test_cli_fuzz(
    tmp_path_factory: pytest.TempPathFactory,
    use_fake: FakeEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    files: list[tuple[str, bytes]],
    commands: list[tuple[list[str], str | None]],
) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    corpus = base / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (base / "empty").mkdir()
    (base / "file.txt").write_text("a file of the user's\n")
    for i, (name, data) in enumerate(files):
        folder = corpus / "sub" if i % 2 else corpus
        path = os.fsencode(folder) + b"/" + os.fsencode(name)
        if os.path.lexists(path):
            continue
        with open(path, "wb") as fh:
            fh.write(data)
    monkeypatch.chdir(corpus)
    assert cli("index", ".", "-q").code == 0  # an index to query, then random commands
    before = user_files(base)
    try:
        for args, index_dir in commands:
            full = [*args]
            if index_dir is not None and args[0] in ("index", "query", "status"):
                full += ["--index", index_dir]
            r = cli(*full, input=b"moon\n\xff bread\n")
            event(f"{args[0]} exit {r.code}")
            check(r, full)
        after = user_files(base)
        # Nothing of the user's changed or vanished, and no file appeared
        # outside a folder that msearch marked as its own index.
        assert {k: v for k, v in after.items() if k in before} == before
        assert set(after) <= set(before), sorted(set(after) - set(before))
    finally:
        os.chdir(base.parent)  # never leave the process in a removed folder
        shutil.rmtree(base, ignore_errors=True)
