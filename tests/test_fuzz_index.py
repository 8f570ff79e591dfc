"""Damaged-index fuzz (issue 11): random changes to every ``meta.json``
field, and truncations, bit flips and replacements of every index file.

``query``, ``status`` and the MCP server's tools must answer correctly (hits are real passages of
the indexed files) or say what is wrong in one line with exit 2; they never
open anything outside the index and its root (an audit hook watches every
open, listing and removal); and ``msearch index`` repairs the index, after
which queries answer exactly as before the damage.

Settings: see ``clihelp.fuzz_settings`` (derandomized for CI).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from clihelp import Out, cli, fuzz_settings
from conftest import FakeEmbedder, write
from msearch.storage import layout

SECRET = "SECRETDIR"
CORPUS = {
    "moon.md": "# Moon\n\nThe moon has phases: new, crescent, full.\n",
    "bread.txt": "Knead the bread dough and let the bread rise.\n",
    "sub/river.txt": "Rivers carry stones to the sea; the river bends.\n",
}


class Watch:
    """An audit hook (there is no removing one, so it is armed and disarmed)
    that records every file-system event naming the secret folder."""

    armed = False
    seen: list[tuple[str, str]] = []
    installed = False

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return
        events = {"open", "os.scandir", "os.listdir", "os.remove", "os.rename", "shutil.rmtree"}

        def hook(name: str, args: tuple[Any, ...]) -> None:
            if cls.armed and name in events and args:
                path = args[0]
                if isinstance(path, bytes):
                    path = path.decode("utf-8", "replace")
                if isinstance(path, str | os.PathLike) and SECRET in os.fspath(path):
                    cls.seen.append((name, os.fspath(path)))

        sys.addaudithook(hook)
        cls.installed = True


def leaf_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field of the metadata, containers included, as key paths."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += leaf_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += leaf_paths(v, (*prefix, i))
    return out


def adversarial(base: Path) -> list[Any]:
    secret = base / SECRET
    return [
        "../" + SECRET + "/moon.md",
        str(secret / "moon.md"),
        str(secret),
        str(base),
        "/",
        "..",
        "../" + SECRET,
        "data-000000000000",
        "moon.md/../../" + SECRET,
        "",
        -1,
        2**40,
        1e308,
        None,
        True,
        [],
        {},
        "\udcff",
        "x" * 300,
    ]


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def set_path(obj: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    target = obj
    for key in path[:-1]:
        target = target[key]
    if delete and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value


def index_files(index_dir: Path) -> list[Path]:
    return sorted(p for p in index_dir.rglob("*") if p.is_file() and not p.is_symlink())


def check_answer(r: Out, base: Path) -> None:
    assert r.code in (0, 1, 2), (r.code, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    if r.code == 2:
        r.one_line_error()
        return
    for line in r.stdout.splitlines():
        hit = json.loads(line)
        if hit.get("stale"):
            continue
        rel = os.path.relpath(os.path.join(base / "corpus", hit["path"]), base / "corpus")
        assert rel in CORPUS and hit["text"] in CORPUS[rel], hit


def run_checked(base: Path, mode: str) -> tuple[Out, Out]:
    Watch.seen.clear()
    Watch.armed = True
    try:
        q = cli("query", "moon river bread", "--format", "jsonl", "-k", "5", *mode.split())
        s = cli("status", "--json")
        serve_checked(base / "corpus" / ".msearch", mode)
    finally:
        Watch.armed = False
    assert not Watch.seen, Watch.seen
    return q, s


MCP_MODES = {"": "hybrid", "--dense-only": "dense", "--lexical-only": "lexical"}


def serve_checked(index_dir: Path, mode: str) -> None:
    """What the MCP server makes of the damaged index: each tool answers, or
    refuses with one line (an ``MsearchError``, which the server turns into
    an error result); hits are real passages of the indexed files."""
    from conftest import current_models
    from msearch.errors import MsearchError
    from msearch.service import SearchService

    try:
        service = SearchService(index_dir, models=current_models())
    except MsearchError:
        return
    calls = {
        "search": lambda: service.search("moon river bread", k=5, mode=MCP_MODES[mode]),
        "get": lambda: service.get("moon.md"),
        "status": service.status,
    }
    for name, call in calls.items():
        try:
            got = call()
        except MsearchError as exc:
            assert "\n" not in str(exc), (name, str(exc))
            continue
        if name == "search":
            for hit in got:
                rel = (
                    os.path.relpath(hit.path, index_dir.parent)
                    if os.path.isabs(hit.path)
                    else hit.path
                )
                assert hit.stale or hit.text in CORPUS.get(rel, ""), (rel, hit.text)
    service.wait_verified(60)


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(default_examples=150)
@given(data=st.data())
def test_damaged_index_fuzz(
    tmp_path_factory: pytest.TempPathFactory,
    use_fake: FakeEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    data: st.DataObject,
) -> None:
    Watch.install()
    base = tmp_path_factory.mktemp("damage")
    corpus = base / "corpus"
    for rel, text in CORPUS.items():
        write(corpus, rel, text)
        write(base / SECRET, rel, text)  # same names, sizes and hashes as the corpus
    monkeypatch.chdir(corpus)
    try:
        assert cli("index", ".", "-q").code == 0
        mode = data.draw(st.sampled_from(["", "--dense-only", "--lexical-only"]), label="mode")
        reference = cli("query", "moon river bread", "--format", "jsonl", "-k", "5", *mode.split())
        index_dir = corpus / ".msearch"
        kind = data.draw(st.sampled_from(["field", "file", "replace"]), label="kind")
        event(f"damage: {kind}")
        refusal_ok = False
        if kind == "field":
            meta = json.loads((index_dir / layout.META_NAME).read_text())
            path = data.draw(st.sampled_from(leaf_paths(meta)), label="field")
            value = data.draw(
                st.one_of(st.sampled_from(adversarial(base)), json_values), label="value"
            )
            delete = data.draw(st.booleans(), label="delete")
            set_path(meta, path, value, delete)
            (index_dir / layout.META_NAME).write_text(json.dumps(meta))
        else:
            target = data.draw(st.sampled_from(index_files(index_dir)), label="file")
            raw = target.read_bytes()
            if kind == "file":
                how = data.draw(st.sampled_from(["truncate", "flip", "append"]), label="how")
                # Offsets drawn independently of the file's size, which varies
                # from run to run (timestamps): hypothesis needs the same draws.
                at = data.draw(st.integers(0, 1 << 20), label="at") % max(len(raw), 1)
                if how == "truncate":
                    raw = raw[:at]
                elif how == "flip" and raw:
                    bit = data.draw(st.integers(0, 7), label="bit")
                    raw = raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]
                else:
                    raw += data.draw(st.binary(min_size=1, max_size=64), label="tail")
                target.write_bytes(raw)
            else:
                how = data.draw(st.sampled_from(["symlink", "folder", "fifo"]), label="how")
                target.unlink()
                if how == "symlink":
                    target.symlink_to(base / SECRET / "moon.md")
                elif how == "folder":
                    target.mkdir()
                else:
                    os.mkfifo(target)
                # A link or a folder in the place of the lock or the marker is
                # refused (the user removes it); everything else is repaired.
                refusal_ok = target.name in (layout.LOCK_NAME, layout.MARKER_NAME) or (
                    how == "symlink" and target.name == layout.META_NAME
                )
        secret_before = {p: p.read_bytes() for p in (base / SECRET).rglob("*") if p.is_file()}

        q, s = run_checked(base, mode)
        check_answer(q, base)
        assert s.code in (0, 2) and "Traceback" not in s.stderr, s.stderr
        if s.code == 0:
            json.loads(s.stdout)
        else:
            s.one_line_error()

        r = cli("index", ".", "-q")
        event(f"repair exit {r.code}")
        # An index that says it is of a newer schema may be one: msearch
        # must not rebuild over a newer msearch's work unasked (--full does).
        refusal_ok = refusal_ok or "newer than this msearch understands" in r.stderr
        if refusal_ok and r.code == 2:
            r.one_line_error()
        else:
            assert r.code == 0, (kind, r.stderr)
            again = cli("query", "moon river bread", "--format", "jsonl", "-k", "5", *mode.split())
            assert (again.code, again.stdout) == (reference.code, reference.stdout)
        assert {
            p: p.read_bytes() for p in (base / SECRET).rglob("*") if p.is_file()
        } == secret_before
    finally:
        os.chdir(base.parent)
        shutil.rmtree(base, ignore_errors=True)
