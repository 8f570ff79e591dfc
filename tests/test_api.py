"""The facade (msearch.api): the request that checks itself once for every
interface, an index opened with the models handed in (nothing patched),
the one policy for an update's model and settings, the one rule for "is
this file unchanged", and the printers' registry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import FakeEmbedder, FakeModels, write
from msearch import api
from msearch.encoders import ModelRecord
from msearch.errors import ModelUnavailable, UsageError
from msearch.models import EncoderModels, ModelWanted, model_for_update
from msearch.storage.record import FileRecord, content_hash, read_meta


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough.\nLet the bread rise.\nBake it hot.\n")
    write(root, "src/oven.py", "def bake(bread):\n    # an oven for bread\n    return bread\n")
    return root


# ---------------------------------------------------------------- the request


@pytest.mark.parametrize(
    ("kwargs", "cli", "mcp"),
    [
        ({"queries": ("  ",)}, "empty query", "empty query"),
        ({"queries": ()}, "empty query", "empty query"),
        ({"k": 0}, "-k/--top must be at least 1 (got 0)", "k must be at least 1 and at most 1000"),
        ({"k": 1001}, None, "k must be at least 1 and at most 1000 (got 1001)"),
        ({"k": True}, "-k/--top must be at least 1", "k must be at least 1"),
        ({"min_score": float("nan")}, "--min-score must be a number", "min_score must be a number"),
        ({"min_score": float("inf")}, "--min-score must be a number", "min_score must be a number"),
        ({"context": (0, -1)}, "-C/--context must be 0 or more", "context must be 0 or more"),
        ({"context": (101, 0)}, None, "context must be 0 or more and at most 100"),
        ({"mode": "fuzzy"}, "mode must be one of", "mode must be one of"),
        ({"globs": ("[",)}, "--glob", "path glob"),
    ],
)
def test_a_request_refuses_the_same_things_with_each_interfaces_names(
    kwargs: dict[str, Any], cli: str | None, mcp: str
) -> None:
    args = {"queries": ("bread",), **kwargs}
    for spelling, message in ((api.CLI, cli), (api.MCP, mcp)):
        if message is None:
            api.SearchRequest(**args, spelling=spelling)  # within this interface's bounds
            continue
        with pytest.raises(UsageError) as exc:
            api.SearchRequest(**args, spelling=spelling)
        assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_request_takes_a_single_query_and_a_single_glob() -> None:
    request = api.SearchRequest("bread", globs="*.txt", context=(1, 2))  # type: ignore[arg-type]
    assert request.queries == ("bread",) and request.globs == ("*.txt",)
    assert request.paths is not None and request.paths.match("a.txt")
    assert not request.paths.match("a.md")
    assert api.SearchRequest(("bread",)).paths is None


# ---------------------------------------------------------------- the index


def test_an_index_searches_with_the_models_handed_in(notes: Path) -> None:
    fake = FakeEmbedder()
    stats = api.update(notes, models=FakeModels(fake))
    assert stats.added == 3 and fake.embedded == stats.passages
    index = api.open_index(notes / ".msearch", models=FakeModels(fake), cwd=notes)
    calls = fake.calls
    [hits] = index.search(api.SearchRequest(("bread dough",), k=2))
    assert hits[0].path == "bread.txt" and fake.calls == calls + 1
    [lexical] = index.search(api.SearchRequest(("bread",), mode="lexical"))
    assert fake.calls == calls + 1  # no model for BM25 alone
    assert {h.path for h in lexical} == {"bread.txt", "src/oven.py"}
    [files] = index.search(api.SearchRequest(("bread",), k=5, files=True))
    assert len({h.path for h in files}) == len(files)  # one passage a file
    [only] = index.search(api.SearchRequest(("bread",), globs=("*.py",)))
    assert [h.path for h in only] == ["src/oven.py"]


def test_a_new_generation_keeps_the_query_encoder_of_the_same_model(notes: Path) -> None:
    fake = FakeEmbedder()
    models = FakeModels(fake)
    api.update(notes, models=models)
    first = api.open_index(notes / ".msearch", models=models)
    first.search(api.SearchRequest(("moon",)))
    second = api.open_index(notes / ".msearch", models=models, previous=first)
    assert second.encoder() is first.encoder()
    assert second.matcher("moon").stems == first.matcher("moon").stems
    api.update(notes, api.Overrides(model="another"), models=FakeModels(FakeEmbedder("fake-2")))
    third = api.open_index(notes / ".msearch", models=models, previous=second)
    assert third.encoder() is not second.encoder()  # another model built it


def test_read_gives_lines_of_indexed_files_only(notes: Path) -> None:
    write(notes, ".env", "SECRET=1\n")
    api.update(notes, models=FakeModels(FakeEmbedder()))
    index = api.open_index(notes / ".msearch")
    lines = index.read("bread.txt", 2, 3)
    assert (lines.start_line, lines.end_line, lines.total_lines) == (2, 3, 3)
    assert lines.text == "Let the bread rise.\nBake it hot."
    for path, message in ((".env", "not a file of the index"), ("../x", "outside")):
        with pytest.raises(UsageError, match=message):
            index.read(path)


# ---------------------------------------------------------------- updating


def record(fingerprint: str, precision: str = "float32") -> ModelRecord:
    return FakeEmbedder(fingerprint).with_precision(precision).record


class Source:
    """A model source that says what it was asked for, and fails to load
    the models named in ``missing``."""

    def __init__(self, missing: tuple[str, ...] = ()) -> None:
        self.asked: list[tuple[Any, ...]] = []
        self.missing = missing

    def load(self, name: str | None, device: str, precision: str, trust: bool, notice: Any) -> Any:
        self.asked.append(("load", name, precision))
        return FakeEmbedder(name or "default").with_precision(precision)

    def load_recorded(
        self, rec: ModelRecord, device: str, trust: bool, notice: Any, **_: Any
    ) -> Any:
        self.asked.append(("recorded", rec.fingerprint))
        if rec.fingerprint in self.missing:
            raise ModelUnavailable(f"{rec.fingerprint} is not here")
        return FakeEmbedder(rec.fingerprint).with_precision(rec.precision)


def test_the_model_for_an_update_one_policy() -> None:
    bf16 = record("old", "bfloat16")
    cases = [
        # (recorded, wanted, strict) -> what is loaded, and its precision
        (None, ModelWanted(), False, [("load", None, "float32")], "float32"),
        (None, ModelWanted(precision="bfloat16"), False, [("load", None, "bfloat16")], None),
        (bf16, ModelWanted(), False, [("recorded", "old")], "bfloat16"),
        (bf16, ModelWanted(name="new"), False, [("load", "new", "bfloat16")], "bfloat16"),
        (
            bf16,
            ModelWanted(name="new", precision="float32"),
            False,
            [("load", "new", "float32")],
            "float32",
        ),
        (bf16, ModelWanted(precision="float32"), False, [("recorded", "old")], "float32"),
    ]
    for recorded, wanted, strict, asked, precision in cases:
        source = Source()
        model = model_for_update(source, recorded, wanted, strict=strict)
        assert source.asked == asked, (recorded, wanted)
        if precision is not None:
            assert model.precision == precision
    # The recorded model cannot be had here: the default rebuilds, unless strict.
    source = Source(missing=("old",))
    assert model_for_update(source, bf16, ModelWanted()).record.fingerprint == "default"
    assert source.asked == [("recorded", "old"), ("load", None, "bfloat16")]
    with pytest.raises(ModelUnavailable):
        model_for_update(Source(missing=("old",)), bf16, ModelWanted(), strict=True)
    # A model that runs its own code: refused unless allowed, whatever is recorded.
    custom = dataclasses.replace(FakeEmbedder("custom").record, trust_remote_code=True)
    with pytest.raises(ModelUnavailable, match="trust-remote-code"):
        model_for_update(EncoderModels(), custom, ModelWanted())


def test_an_update_keeps_what_is_not_given_and_takes_what_is(notes: Path) -> None:
    models = FakeModels(FakeEmbedder())
    given = api.Overrides(
        walk={"exclude": ("*.md",)}, chunking={"max_tokens": 32, "overlap_tokens": 4}
    )
    api.update(notes, given=given, models=models)
    meta = read_meta(notes / ".msearch")
    assert meta.walk["exclude"] == ["*.md"] and meta.chunking["max_tokens"] == 32
    # As watch gives options: only the overlap; the rest stays as recorded.
    api.update(notes, given=api.Overrides(chunking={"overlap_tokens": 2}), models=models)
    meta = read_meta(notes / ".msearch")
    assert meta.chunking == {"max_tokens": 32, "overlap_tokens": 2, "structure": True}
    assert meta.walk["exclude"] == ["*.md"]
    # As index gives them: every one, the defaults included.
    from dataclasses import asdict

    from msearch.walk import WalkOptions

    api.update(notes, given=api.Overrides(walk=asdict(WalkOptions())), models=models)
    assert read_meta(notes / ".msearch").walk["exclude"] == []
    with pytest.raises(UsageError, match="--chunk-tokens"):
        api.Updater(notes, given=api.Overrides(chunking={"overlap_tokens": 40}), models=models)
    with pytest.raises(UsageError, match="--batch-size"):
        api.Updater(notes, given=api.Overrides(batch_size=0), models=models)
    with pytest.raises(UsageError, match="no such folder"):
        api.Updater(notes / "nowhere", models=models)


def test_an_update_as_recorded_reloads_the_model_only_when_another_built_the_index(
    notes: Path,
) -> None:
    fake = FakeEmbedder()
    api.update(notes, models=FakeModels(fake))
    source = Source()
    updater = api.Updater(None, index_dir=notes / ".msearch", models=source)
    write(notes, "new.txt", "a new note about the moon\n")
    assert updater.run().added == 1
    assert updater.run().added == 0
    assert source.asked == [("recorded", "fake-1")]
    api.update(notes, api.Overrides(model="other"), models=source)
    updater.run()
    assert source.asked[-1] == ("recorded", "other")


# ---------------------------------------------------------------- one rule


def test_is_this_file_unchanged_one_rule() -> None:
    data = b"the moon\n"
    rec = FileRecord("a.txt", len(data), 100, content_hash(data))
    read: list[int] = []

    def content(value: bytes | None) -> Any:
        return lambda: read.append(1) or value

    assert rec.unchanged(len(data), 100, content(data)) and read == []  # not read
    assert not rec.unchanged(len(data) + 1, 100, content(data)) and read == []
    assert rec.unchanged(len(data), 200, content(data)) and read == [1]  # touched only
    assert not rec.unchanged(len(data), 200, content(b"the sun!\n"))
    assert not rec.unchanged(len(data), 200, content(None))  # unreadable: changed
    racy = FileRecord("a.txt", len(data), -1, content_hash(data))
    assert racy.unchanged(len(data), -1, content(data)) and read[-1:] == [1]


def test_the_indexer_the_status_and_queries_agree_on_a_touched_file(notes: Path) -> None:
    """A file touched (new mtime, same bytes) is unchanged for all three; a
    file rewritten to the same size is changed for all three."""
    import os

    models = FakeModels(FakeEmbedder())
    api.update(notes, models=models)
    bread = notes / "bread.txt"
    os.utime(bread, ns=(10**18, 10**18))
    assert api.status(notes / ".msearch").changed == []
    index = api.open_index(notes / ".msearch", models=models, cwd=notes)
    [hits] = index.search(api.SearchRequest(("bread",), mode="lexical"))
    assert hits and not any(h.stale for h in hits)
    assert api.update(notes, models=models).unchanged == 3
    bread.write_text(bread.read_text().replace("Bake", "Cook"))
    assert api.status(notes / ".msearch").changed == ["bread.txt"]
    [hits] = index.search(api.SearchRequest(("bread",), mode="lexical"))
    assert any(h.stale for h in hits if h.path == "bread.txt")
    assert api.update(notes, models=models).changed == 1


# ---------------------------------------------------------------- printers


def test_the_format_choices_come_from_the_registry() -> None:
    from typer.main import get_command

    from msearch.cli import app
    from msearch.formats import FORMATS

    query = get_command(app).commands["query"]  # type: ignore[attr-defined]
    fmt = next(p for p in query.params if p.name == "fmt")
    assert [getattr(c, "value", c) for c in fmt.type.choices] == list(FORMATS)
    assert [name for name, f in FORMATS.items() if f.files] == ["paths"]


def test_jsonl_and_mcp_write_a_hit_with_the_same_function(notes: Path) -> None:
    import io

    from msearch.output import JsonlPrinter, hit_json
    from msearch.printers import PrintOptions, print_results

    models = FakeModels(FakeEmbedder())
    api.update(notes, models=models)
    index = api.open_index(notes / ".msearch", models=models, cwd=notes)
    results = index.search(api.SearchRequest(("bread", "moon"), context=(1, 0)))
    out = io.StringIO()
    printer = JsonlPrinter(PrintOptions(out=out, multi=True, context=True))
    assert print_results(printer, ("bread", "moon"), results)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    hits = [h for found in results for h in found]
    assert lines == [
        {**hit_json(h, context=True), "query": q}
        for q, found in zip(("bread", "moon"), results, strict=True)
        for h in found
    ]
    fixed = hit_json(hits[0], rank=False, fixed=True)
    assert set(fixed) == {
        "path",
        "start_line",
        "end_line",
        "score",
        "text",
        "stale",
        "before",
        "after",
    }
    assert np.isclose(fixed["score"], lines[0]["score"])  # type: ignore[arg-type]
