from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import write
from msearch.walk import NotText, WalkOptions, decode, walk


def rels(root: Path, **opts: object) -> list[str]:
    return [f.rel for f in walk(root, WalkOptions(**opts)).files]  # type: ignore[arg-type]


def test_walks_recursively_in_a_stable_order(tmp_path: Path) -> None:
    for rel in ("b.txt", "a/z.md", "a/b/c.rst", "notes"):
        write(tmp_path, rel, "hello\n")
    assert rels(tmp_path) == ["a/b/c.rst", "a/z.md", "b.txt", "notes"]


def test_hidden_skipped_unless_asked(tmp_path: Path) -> None:
    write(tmp_path, ".secret.txt", "x")
    write(tmp_path, ".config/a.txt", "x")
    write(tmp_path, "seen.txt", "x")
    assert rels(tmp_path) == ["seen.txt"]
    assert rels(tmp_path, hidden=True) == [".config/a.txt", ".secret.txt", "seen.txt"]


def test_gitignore_and_ignore_files(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\nbuild/\n!keep.log\n")
    write(tmp_path, "sub/.ignore", "private.md\n")
    for rel in ("a.log", "keep.log", "build/out.txt", "sub/private.md", "sub/public.md", "x.txt"):
        write(tmp_path, rel, "x")
    assert rels(tmp_path) == ["keep.log", "sub/public.md", "x.txt"]
    assert "a.log" in rels(tmp_path, use_ignore_files=False)


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    for rel in ("a.md", "b.txt", "docs/c.md", "docs/old/d.md"):
        write(tmp_path, rel, "x")
    assert rels(tmp_path, include=("*.md",)) == ["a.md", "docs/c.md", "docs/old/d.md"]
    assert rels(tmp_path, exclude=("old",)) == ["a.md", "b.txt", "docs/c.md"]
    assert rels(tmp_path, include=("docs/*.md",)) == ["docs/c.md"]


def test_noise_skipped_by_default(tmp_path: Path) -> None:
    for rel in (
        "package-lock.json",
        "poetry.lock",
        "app.min.js",
        "node_modules/x/readme.md",
        ".git/config",
        "env/pyvenv.cfg",
        "env/lib/site.py",
        "real.md",
    ):
        write(tmp_path, rel, "x")
    result = walk(tmp_path, WalkOptions())
    assert [f.rel for f in result.files] == ["real.md"]
    assert {s.rel for s in result.skipped} == {"package-lock.json", "poetry.lock", "app.min.js"}
    with_noise = rels(tmp_path, include_noise=True)
    assert "node_modules/x/readme.md" in with_noise and "poetry.lock" in with_noise


def test_size_limit_reports_the_file(tmp_path: Path) -> None:
    write(tmp_path, "big.txt", "x" * 2000)
    write(tmp_path, "small.txt", "x")
    result = walk(tmp_path, WalkOptions(max_file_size=1000))
    assert [f.rel for f in result.files] == ["small.txt"]
    assert result.skipped[0].rel == "big.txt" and "size limit" in result.skipped[0].reason


def test_symlinks_not_followed_by_default_and_loops_survive(tmp_path: Path) -> None:
    write(tmp_path, "real/a.txt", "x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path, tmp_path / "real" / "loop")
    assert rels(tmp_path) == ["real/a.txt"]
    followed = walk(tmp_path, WalkOptions(follow_symlinks=True))
    # Each folder is entered once however many links lead to it.
    assert [f.rel for f in followed.files] == ["link/a.txt"]
    assert any("symlink loop" in s.reason for s in followed.skipped)


def test_index_folder_never_walked(tmp_path: Path) -> None:
    write(tmp_path, ".msearch/meta.json", "{}")
    write(tmp_path, "elsewhere/meta.json", "{}")
    res = walk(tmp_path, WalkOptions(hidden=True), exclude_dirs=[tmp_path / "elsewhere"])
    assert res.files == []


def test_decode_utf8_bom_and_fallback() -> None:
    assert decode("héllo".encode()) == "héllo"
    assert decode(b"\xef\xbb\xbfbom") == "bom"
    assert decode("café".encode("cp1252")) == "café"
    with pytest.raises(NotText, match="not valid UTF-8"):
        decode(b"bad \x81\x8d\x90 bytes")
    with pytest.raises(NotText, match="binary"):
        decode(b"\x00\x01\x02binary")
    with pytest.raises(NotText, match="binary"):
        decode(bytes(range(1, 32)) * 20)


def test_decode_control_share_threshold() -> None:
    """Up to 5% stray control characters is still text; whitespace controls never count."""
    assert decode(b"\x01" * 5 + b"a" * 95)  # exactly 5%
    with pytest.raises(NotText, match="binary"):
        decode(b"\x01" * 6 + b"a" * 94)
    assert decode(b"\t\n\r\f\v" * 100 + b"x")
    # Only the first BINARY_SNIFF_BYTES characters are looked at.
    assert decode(b"a" * 8192 + b"\x02" * 1000)


def test_control_share_is_counted_in_characters_of_any_text() -> None:
    """Regression guard: control characters are counted in the text's UTF-8
    (fast on accented text too), yet the share is of the first 8,192
    characters, as before: multibyte characters before them change nothing."""
    for head in ("é" * 8000, "日本語" * 2000, "a" * 8000):
        ok = (head + "\x01" * (len(head) // 20) + "b" * 8192).encode()
        assert decode(ok)  # 5% of the sample, give or take the tail's letters
        bad = (head[:4000] + "\x01" * 1000).encode()
        with pytest.raises(NotText, match="binary"):
            decode(bad)
        # Controls within the first 8,192 characters count wherever their
        # bytes lie (past byte 8,192 here).
        with pytest.raises(NotText, match="binary"):
            decode((head[:6000] + "\x01" * 600).encode())
        # The controls past the first 8,192 characters are not looked at,
        # however many bytes the characters before them take.
        assert decode((head + "x" * (8192 - len(head)) + "\x02" * 1000).encode())


def test_long_prose_line_is_not_minified() -> None:
    """Regression (eval): a paragraph on one line over 5,000 characters was skipped."""
    from msearch.walk import text_from_bytes

    prose = ("Word after word makes a long paragraph. " * 200).encode()
    assert text_from_bytes(prose).startswith("Word after")
    with pytest.raises(NotText, match="minified"):
        text_from_bytes(b"a=1;b=2;" * 1000)
