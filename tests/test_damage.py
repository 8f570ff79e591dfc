"""Damaged data is refused or repaired, never used silently.

- Every lexical array is checked for structure before use (lengths never
  negative, offsets and pointers rising and in range, rows in range, a
  term no more frequent than its passage is long): one line and exit 2,
  and plain ``msearch index`` repairs it.
- A file table naming a path twice: ``status`` says so, queries refuse it,
  plain ``index`` rebuilds.
- ``index --full`` starts over whatever ``meta.json`` holds (100,000
  nested ``[``, a model record claiming ``trust_remote_code``); a deeply
  nested ``meta.json`` is the usual damaged-index line, not
  "internal error: RecursionError".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import conftest
from clihelp import cli
from conftest import FakeEmbedder, FakeModels, write
from msearch.errors import UsageError
from msearch.lexical import UNCOUNTED_PREFIX, LexicalSegment, build_lexical
from msearch.storage import layout, record

QUERY = ("query", "moon bread river", "--format", "jsonl", "--lexical-only", "-k", "5")


@pytest.fixture
def notes(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full moon.\n")
    write(root, "bread.txt", "Knead the bread dough and let the bread rise.\n")
    write(root, "river.txt", "Rivers carry stones to the sea; the river bends.\n")
    assert cli("index", str(root), "-q").code == 0
    return root


def rewrite_array(index_dir: Path, name: str, change: Any) -> None:
    """Change one .npy array of the first segment in place (as a flipped
    bit would: the header stays valid, only values change)."""
    moon = moon_posting(index_dir)
    path = index_dir / record.read_meta(index_dir).segments[0].name / name
    arr = np.load(path)
    change(arr, moon)
    path.unlink()
    np.save(path, arr)


def set_at(i: int, value: int) -> Any:
    def change(arr: np.ndarray, _moon: int) -> None:
        arr[i] = value

    return change


def at_moon(value: int) -> Any:
    """Change the first posting of the term "moon", which the query reads."""

    def change(arr: np.ndarray, moon: int) -> None:
        arr[moon] = value

    return change


def moon_posting(index_dir: Path) -> int:
    folder = index_dir / record.read_meta(index_dir).segments[0].name
    blob = np.load(folder / "lex_terms.npy").tobytes()
    offsets = np.load(folder / "lex_term_offsets.npy")
    words = [blob[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    return int(np.load(folder / "lex_indptr.npy")[words.index(b"moon")])


LEXICAL_DAMAGE = {
    "negative passage length": ("lex_lengths.npy", set_at(0, -2147483637)),
    "passage length too large": ("lex_lengths.npy", set_at(1, 1 << 20)),
    "term offset past the end": ("lex_term_offsets.npy", set_at(1, 1 << 40)),
    "term offsets going down": ("lex_term_offsets.npy", set_at(2, 0)),
    "posting pointer going down": ("lex_indptr.npy", set_at(1, 0)),
    "posting pointer past the end": ("lex_indptr.npy", set_at(1, 1 << 40)),
    "row out of range": ("lex_rows.npy", at_moon(1000)),
    "negative row": ("lex_rows.npy", at_moon(-1)),
    "term counted more often than its passage is long": ("lex_tfs.npy", at_moon(1000)),
    "term counted zero times": ("lex_tfs.npy", at_moon(0)),
}


@pytest.mark.parametrize("damage", list(LEXICAL_DAMAGE), ids=list(LEXICAL_DAMAGE))
def test_a_damaged_lexical_array_is_refused_and_index_repairs_it(notes: Path, damage: str) -> None:
    index_dir = notes / ".msearch"
    reference = cli(*QUERY, "--index", str(index_dir))
    assert reference.code == 0
    name, change = LEXICAL_DAMAGE[damage]
    rewrite_array(index_dir, name, change)
    for args in (QUERY, ("status",)):
        r = cli(*args, "--index", str(index_dir))
        r.one_line_error("damaged", "msearch index")
    r = cli("index", str(notes), "-q")
    assert r.code == 0, r.stderr
    assert cli("status", "--index", str(index_dir)).code == 0
    again = cli(*QUERY, "--index", str(index_dir))
    assert (again.code, again.stdout) == (reference.code, reference.stdout)


def test_posting_checks_skip_terms_that_do_not_count_toward_a_length() -> None:
    """Terms that start with UNCOUNTED_PREFIX (symbol names) are not part of
    any passage's length: a posting of one may exceed it."""
    seg = build_lexical(["moon phases", "bread rise"])
    seg.check_postings()
    term = UNCOUNTED_PREFIX.decode() + "moonPhase"
    words = sorted([*seg.term_list(), term.encode()])
    blob = b"".join(words)
    offsets = np.cumsum([0] + [len(w) for w in words]).astype(np.int64)
    postings = {w: (list(r), list(t)) for w, r, t in _postings_of(seg)}
    postings[term.encode()] = ([0], [9])  # more often than row 0 is long
    rows = [r for w in words for r in postings[w][0]]
    tfs = [t for w in words for t in postings[w][1]]
    indptr = np.cumsum([0] + [len(postings[w][0]) for w in words]).astype(np.int64)
    crafted = LexicalSegment(
        np.frombuffer(blob, np.uint8).copy(),
        offsets,
        indptr,
        np.array(rows, np.int32),
        np.array(tfs, np.int32),
        np.asarray(seg.lengths),
    )
    crafted.check_postings()
    assert crafted.postings(term)[1].tolist() == [9]


def _postings_of(seg: LexicalSegment) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
    out = []
    for i, w in enumerate(seg.term_list()):
        a, b = int(seg.indptr[i]), int(seg.indptr[i + 1])
        out.append((w, seg.rows[a:b], seg.tfs[a:b]))
    return out


def test_a_file_table_naming_a_path_twice_is_reported_and_rebuilt(notes: Path) -> None:
    index_dir = notes / ".msearch"
    reference = cli(*QUERY, "--index", str(index_dir))
    path = index_dir / layout.META_NAME
    meta = json.loads(path.read_text())
    files = meta["files"]
    # The second file's entry names the first file's path.
    files["path"][1] = files["path"][0]
    path.write_text(json.dumps(meta))
    cli("status", "--index", str(index_dir)).one_line_error("names a file twice")
    cli(*QUERY, "--index", str(index_dir)).one_line_error("names a file twice")
    r = cli("index", str(notes))
    assert r.code == 0, r.stderr
    assert "damaged" in r.stderr and "rebuilding" in r.stderr
    again = cli(*QUERY, "--index", str(index_dir))
    assert (again.code, again.stdout) == (reference.code, reference.stdout)


def test_deeply_nested_meta_json_is_one_line_and_full_starts_over(notes: Path) -> None:
    index_dir = notes / ".msearch"
    (index_dir / layout.META_NAME).write_bytes(b"[" * 100_000)
    for args in (("query", "moon"), ("status",)):
        r = cli(*args, "--index", str(index_dir))
        r.one_line_error("not valid JSON")
        assert "RecursionError" not in r.stderr
    r = cli("index", str(notes), "--full")
    assert r.code == 0, r.stderr
    assert cli(*QUERY, "--index", str(index_dir)).code == 0
    # Plain index repairs it too.
    (index_dir / layout.META_NAME).write_bytes(b"[" * 100_000)
    r = cli("index", str(notes))
    assert r.code == 0, r.stderr
    assert "internal error" not in r.stderr


class RefusingModels(FakeModels):
    """Refuses a recorded model that runs its own code, as the real source
    does without --trust-remote-code."""

    def load_recorded(self, recorded: Any, device: str, trust: bool, *a: Any, **k: Any) -> Any:
        if recorded.trust_remote_code and not trust:
            raise UsageError("this model runs its own code; give --trust-remote-code")
        return self.fake


def test_full_starts_over_whatever_the_recorded_model_claims(
    notes: Path, fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = notes / ".msearch"
    path = index_dir / layout.META_NAME
    meta = json.loads(path.read_text())
    meta["model"]["trust_remote_code"] = True
    path.write_text(json.dumps(meta))
    monkeypatch.setattr(conftest, "_models", RefusingModels(fake))
    assert cli("index", str(notes)).code == 2  # refused, as before: not starting over
    r = cli("index", str(notes), "--full")
    assert r.code == 0, r.stderr
    assert "runs its own code; starting over" in r.stderr
    assert json.loads(path.read_text())["model"].get("trust_remote_code") is not True


def flip_a_vector_bit(index_dir: Path) -> None:
    """One flipped bit inside the vectors: the structure is intact, only a
    checksum can tell."""
    path = index_dir / record.read_meta(index_dir).segments[0].name / "embeddings.npy"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.unlink()
    path.write_bytes(bytes(raw))


def test_the_server_verifies_a_generation_once_and_refuses_a_damaged_one(notes: Path) -> None:
    from msearch.errors import IndexCorrupt
    from msearch.service import SearchService

    index_dir = notes / ".msearch"
    said: list[str] = []
    service = SearchService(index_dir, models=conftest.current_models(), notice=said.append)
    service.search("moon", mode="lexical")
    service.wait_verified(60)
    assert service.search("moon", mode="lexical") and not said
    flip_a_vector_bit(index_dir)
    assert cli("status", "--index", str(index_dir)).code == 2  # status finds it by checksum
    damaged = SearchService(index_dir, models=conftest.current_models(), notice=said.append)
    damaged.index()
    damaged.wait_verified(60)
    with pytest.raises(IndexCorrupt, match="checksum"):
        damaged.search("moon", mode="lexical")
    assert len(said) == 1 and "checksum" in said[0]
    # A reindex (the first of this server: every checksum) rebuilds it.
    damaged.reindex()
    assert damaged.search("moon", mode="lexical")


def test_watch_compares_every_checksum_at_its_first_update(notes: Path) -> None:
    from msearch import api

    index_dir = notes / ".msearch"
    flip_a_vector_bit(index_dir)
    said: list[str] = []
    plain = api.Updater(
        notes, api.Overrides(), models=conftest.current_models(), notice=said.append
    )
    watcher = api.Updater(
        notes,
        api.Overrides(),
        models=conftest.current_models(),
        notice=said.append,
        verify_first=True,
    )
    import msearch.indexer

    # A small segment is checked by every update; make this one count as large.
    orig = msearch.indexer.VERIFY_BYTES
    msearch.indexer.VERIFY_BYTES = 0
    try:
        plain.run()
        assert not any("damaged" in s for s in said)
        watcher.run()
        assert any("damaged" in s and "checksum" in s for s in said)
    finally:
        msearch.indexer.VERIFY_BYTES = orig
    assert cli("status", "--index", str(index_dir)).code == 0
