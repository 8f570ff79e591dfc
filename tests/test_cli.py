"""CLI behaviour through typer's CliRunner, with the fake embedder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clihelp import invoke
from conftest import FakeEmbedder, deny_reading, snapshot, write

KEYS = ["rank", "score", "path", "start_line", "end_line", "text"]


def run(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return invoke(*args, input=input)


@pytest.fixture
def corpus(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "corpus"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough and let the bread rise.\n")
    write(root, "space name.md", "rivers and stones by the river\n")
    write(root, "ünï/cødé.txt", "unicode folder moon notes\n")
    write(root, "new\nline.txt", "a file name with a newline about bread\n")
    r = run("index", str(root), "--chunk-tokens", "32", "--overlap-tokens", "4")
    assert r.exit_code == 0, r.output
    return root


def idx(root: Path) -> str:
    return str(root / ".msearch")


def hits(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


def test_help_lists_commands() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("index", "query", "status"):
        assert cmd in r.output


def test_index_summary_on_stderr(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    write(tmp_path, "a.txt", "hello world\n")
    write(tmp_path, "b.bin", b"\x00\x01")
    r = run("index", str(tmp_path))
    assert r.exit_code == 0
    assert "indexed 1 files (1 added" in r.stderr and "1 binary" in r.stderr
    assert r.stdout == ""


def test_query_jsonl_when_piped(corpus: Path) -> None:
    r = run("query", "moon phases crescent full", "--index", idx(corpus), "-k", "3")
    assert r.exit_code == 0, r.output
    out = hits(r.stdout)
    assert list(out[0]) == KEYS
    assert out[0]["path"].endswith("moon.md")  # type: ignore[union-attr]
    assert [h["rank"] for h in out] == [1, 2, 3]
    assert "\x1b[" not in r.stdout


def test_query_finds_nearest_index_upwards(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(corpus / "ünï")
    r = run("query", "bread dough", "-k", "1")
    assert r.exit_code == 0, r.output
    assert hits(r.stdout)[0]["path"] == "../bread.txt" or hits(r.stdout)[0]["path"].endswith(
        "bread.txt"
    )


def test_env_index(corpus: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MSEARCH_INDEX", idx(corpus))
    assert run("query", "bread").exit_code == 0


def test_tsv_and_paths_formats(corpus: Path) -> None:
    r = run("query", "bread", "--index", idx(corpus), "-f", "tsv", "-k", "2")
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    score, loc, first = lines[0].split("\t")
    assert float(score) > 0 and ":1-1" in loc
    r = run("query", "bread", "--index", idx(corpus), "-l")
    paths = r.stdout.splitlines()
    assert len(paths) == len(set(paths)) == 5
    assert "new\\nline.txt" in " ".join(paths)  # escaped, one path per line
    r = run("query", "bread", "--index", idx(corpus), "-l", "-0")
    assert r.stdout.endswith("\0") and "new\nline.txt\0" in r.stdout


def test_special_file_names_round_trip(corpus: Path) -> None:
    r = run("query", "rivers stones", "--index", idx(corpus), "-k", "1")
    assert hits(r.stdout)[0]["path"].endswith("space name.md")  # type: ignore[union-attr]
    r = run("query", "unicode folder", "--index", idx(corpus), "-k", "1")
    assert hits(r.stdout)[0]["path"].endswith("ünï/cødé.txt")  # type: ignore[union-attr]
    assert hits(r.stdout)[0]["text"] == "unicode folder moon notes"


def test_stdin_queries_carry_query_key(corpus: Path) -> None:
    r = run("query", "-", "--index", idx(corpus), "-k", "1", input="moon\n\nbread dough\n")
    assert r.exit_code == 0, r.output
    out = hits(r.stdout)
    assert [h["query"] for h in out] == ["moon", "bread dough"]


def test_exit_1_when_nothing_matches(corpus: Path) -> None:
    r = run("query", "moon", "--index", idx(corpus), "--min-score", "1.5")
    assert r.exit_code == 1 and r.stdout == ""


def test_empty_index_exit_1(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    (tmp_path / "e").mkdir()
    assert run("index", str(tmp_path / "e")).exit_code == 0
    r = run("query", "anything", "--index", str(tmp_path / "e" / ".msearch"))
    assert r.exit_code == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", "   "], "empty query"),
        (["query", "x", "-k", "0"], "at least 1"),
        (["query", "x", "-k", "-3"], "at least 1"),
    ],
)
def test_bad_query_arguments(corpus: Path, args: list[str], message: str) -> None:
    r = run(*args, "--index", idx(corpus))
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.output


def test_no_index_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("query", "x")
    assert r.exit_code == 2 and "msearch index" in r.stderr


def test_bad_index_dirs(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    r = run("index", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "no such folder" in r.stderr
    write(tmp_path, "f.txt", "x")
    r = run("index", str(tmp_path / "f.txt"))
    assert r.exit_code == 2 and "not a folder" in r.stderr


def test_corrupt_index_is_a_clear_error(corpus: Path) -> None:
    meta = corpus / ".msearch" / "meta.json"
    data = json.loads(meta.read_text())
    npy = corpus / ".msearch" / data["segments"][0]["name"] / "embeddings.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    r = run("query", "moon", "--index", idx(corpus))
    assert r.exit_code == 2
    assert "embeddings.npy" in r.stderr and "msearch index --full" in r.stderr
    assert "Traceback" not in r.output


def test_other_model_is_refused(corpus: Path) -> None:
    r = run("query", "moon", "--index", idx(corpus), "--model", "all-MiniLM-L6-v2")
    assert r.exit_code == 2
    assert "built with fake-model" in r.stderr


def test_unreadable_file_is_reported_and_skipped(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "ok.txt", "fine text\n")
    write(tmp_path, "locked.txt", "secret\n")
    deny_reading(monkeypatch, "locked.txt")
    r = run("index", str(tmp_path))
    assert r.exit_code == 0
    assert "skipped locked.txt: unreadable (Permission denied)" in r.stderr


def test_invalid_utf8_and_huge_line(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    write(tmp_path, "bad.txt", b"caf\xe9 latin-1 is fine\n")
    write(tmp_path, "worse.txt", b"undefined \x81\x8d bytes\n")
    write(tmp_path, "oneline.txt", b"x" * (10 * 1024 * 1024))
    r = run("index", str(tmp_path))
    assert r.exit_code == 0
    assert "worse.txt: not valid UTF-8" in r.stderr
    assert "oneline.txt: over the size limit" in r.stderr
    r = run("index", str(tmp_path), "--max-file-size", "20M", "--full")
    assert "oneline.txt: minified or data file" in r.stderr
    r = run("query", "cafe latin", "--index", str(tmp_path / ".msearch"), "-k", "1")
    assert hits(r.stdout)[0]["text"] == "café latin-1 is fine"


def test_symlink_loop_with_follow(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    write(tmp_path, "d/a.txt", "text\n")
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    r = run("index", str(tmp_path), "--follow")
    assert r.exit_code == 0 and "symlink loop" in r.stderr


def test_stale_hits_are_marked(corpus: Path) -> None:
    (corpus / "moon.md").write_text("completely different now\n")
    r = run("query", "moon phases", "--index", idx(corpus), "-k", "5")
    moon = [h for h in hits(r.stdout) if str(h["path"]).endswith("moon.md")]
    assert moon and moon[0]["stale"] is True and moon[0]["text"] == ""


def test_status_reports_changes(corpus: Path) -> None:
    (corpus / "bread.txt").write_text("changed\n")
    write(corpus, "added.md", "new\n")
    (corpus / "moon.md").unlink()
    r = run("status", "--index", idx(corpus), "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert (st["changed"], st["added"], st["deleted"]) == (["bread.txt"], ["added.md"], ["moon.md"])
    assert st["files"] == 5
    r = run("status", "--index", idx(corpus))
    assert "1 changed, 1 added, 1 deleted" in r.stdout


def test_refresh_reindexes_before_query(corpus: Path) -> None:
    (corpus / "moon.md").write_text("the lunar cycle: waxing and waning moon\n")
    r = run("query", "waxing waning", "--index", idx(corpus), "--refresh", "-k", "1")
    assert r.exit_code == 0, r.output
    top = hits(r.stdout)[0]
    assert str(top["path"]).endswith("moon.md") and "stale" not in top
    assert "1 changed" in r.stderr


def test_writes_only_inside_index_folder(corpus: Path) -> None:
    before = snapshot(corpus)
    run("index", str(corpus), "--chunk-tokens", "32", "--overlap-tokens", "4")
    run("query", "moon", "--index", idx(corpus))
    run("status", "--index", idx(corpus))
    assert snapshot(corpus) == before


def test_color_never_and_table_format(corpus: Path) -> None:
    r = run("query", "moon", "--index", idx(corpus), "-f", "table", "--color", "never")
    assert r.exit_code == 0 and "moon.md" in r.stdout and "\x1b[" not in r.stdout
    r = run("query", "moon", "--index", idx(corpus), "-f", "table", "--color", "always")
    assert "\x1b[" in r.stdout


def test_table_highlights_query_words(corpus: Path) -> None:
    """Regression: a single query's words were not passed to the table."""
    r = run("query", "bread dough", "--index", idx(corpus), "-f", "table", "--color", "always")
    assert "\x1b[1;33mbread" in r.stdout


def test_lexical_only_dense_only_and_hybrid(corpus: Path) -> None:
    r = run("query", "knead", "--index", idx(corpus), "--lexical-only")
    assert r.exit_code == 0, r.output
    out = hits(r.stdout)
    assert len(out) == 1 and str(out[0]["path"]).endswith("bread.txt")  # only exact-word hits
    r = run("query", "zebra", "--index", idx(corpus), "--lexical-only")
    assert r.exit_code == 1
    assert run("query", "knead", "--index", idx(corpus), "--dense-only").exit_code == 0
    r = run("query", "knead", "--index", idx(corpus), "--dense-only", "--lexical-only")
    assert r.exit_code == 2 and "exclude each other" in r.stderr


def test_refresh_with_both_modes_is_refused_before_the_index_is_written(corpus: Path) -> None:
    """Regression: `query --refresh --dense-only --lexical-only` updated the
    index first and refused the flags after (the checks were scattered)."""
    write(corpus, "moon.md", "# Moon\n\nThe moon has no light of its own.\n")
    meta = corpus / ".msearch" / "meta.json"
    before = meta.read_bytes()
    args = ("--refresh", "--dense-only", "--lexical-only")
    r = run("query", "moon", "--index", idx(corpus), *args)
    assert r.exit_code == 2 and "exclude each other" in r.stderr
    assert meta.read_bytes() == before
    r = run("query", "moon", "--index", idx(corpus), "--refresh", "-k", "0")
    assert r.exit_code == 2 and meta.read_bytes() == before


def test_index_with_its_lexical_side_missing(corpus: Path) -> None:
    meta = json.loads((corpus / ".msearch" / "meta.json").read_text())
    data = corpus / ".msearch" / meta["segments"][0]["name"]
    for f in data.glob("lex_*"):
        f.unlink()
    assert run("query", "bread", "--index", idx(corpus), "--dense-only").exit_code == 0
    for mode in ((), ("--lexical-only",)):
        r = run("query", "bread", "--index", idx(corpus), *mode)
        assert r.exit_code == 2 and "lex_" in r.stderr and "--full" in r.stderr


def test_help_does_not_import_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom msearch.cli import main\nsys.argv = ['msearch', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'sentence_transformers', 'numpy') if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().endswith("[]"), r.stdout
