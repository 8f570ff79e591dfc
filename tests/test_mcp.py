"""`msearch mcp`: the MCP server, driven by the official SDK's own client,
in process (fake embedder) and as a subprocess over stdio."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import FakeEmbedder, current_models, write
from msearch.indexer import build_index
from msearch.query import Searcher, open_lexical
from msearch.service import SearchService
from msearch.storage.reader import load_index

pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, get_default_environment  # noqa: E402

from msearch.mcp_server import build_server  # noqa: E402


@pytest.fixture
def folder(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough.\nLet the bread rise.\nBake it hot.\n")
    write(root, "src/oven.py", "def bake(bread):\n    # an oven for bread\n    return bread\n")
    write(root, "notes/long.txt", "".join(f"line {i} filler\n" for i in range(1, 40)))
    build_index(root, root / ".msearch", use_fake)
    return root


def served(root: Path, body: Callable[[Client], Awaitable[Any]]) -> Any:
    service = SearchService(root / ".msearch", models=current_models())

    async def main() -> Any:
        async with Client(build_server(service)) as client:
            return await body(client)

    return anyio.run(main)


def call(root: Path, tool: str, args: dict[str, Any]) -> Any:
    async def body(client: Client) -> Any:
        return await client.call_tool(tool, args)

    return served(root, body)


def no_unions(schema: Any) -> bool:
    """No anyOf/oneOf/allOf and no list-valued "type" anywhere."""
    if isinstance(schema, dict):
        if {"anyOf", "oneOf", "allOf"} & set(schema) or isinstance(schema.get("type"), list):
            return False
        return all(no_unions(v) for v in schema.values())
    if isinstance(schema, list):
        return all(no_unions(v) for v in schema)
    return True


def test_tools_have_plain_json_schemas(folder: Path) -> None:
    async def body(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in served(folder, body)}
    assert set(tools) == {"search", "get", "status", "reindex"}
    for tool in tools.values():
        assert no_unions(tool.input_schema), (tool.name, tool.input_schema)
        assert tool.description
    props = tools["search"].input_schema["properties"]
    assert {"query", "k", "mode", "paths", "min_score", "context"} <= set(props)
    assert tools["search"].input_schema["required"] == ["query"]
    assert no_unions(["anyOf"]) and not no_unions({"a": {"anyOf": []}})  # the check can fail


def test_search_gives_structured_results_like_the_library(folder: Path) -> None:
    result = call(folder, "search", {"query": "bread dough", "k": 3})
    assert not result.is_error
    from msearch.mcp_server import SearchOutput

    SearchOutput.model_validate(result.structured_content, strict=True)  # the documented shape
    got = result.structured_content["results"]
    index = load_index(folder / ".msearch")
    from msearch.models import query_encoder

    encode = query_encoder(index, models=current_models())
    want = Searcher(index, encode, open_lexical(index), "hybrid", cwd=folder).query(
        "bread dough", 3
    )
    assert [(h["path"], h["start_line"], h["end_line"]) for h in got] == [
        (h.path, h.start_line, h.end_line) for h in want
    ]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert set(got[0]) == {
        "path", "start_line", "end_line", "score", "text", "stale", "before", "after"
    }  # fmt: skip
    assert got[0]["path"] == "bread.txt" and "Knead" in got[0]["text"]
    summary = result.content[0].text
    assert summary.startswith("3 results for 'bread dough'") and "bread.txt:1-" in summary


def test_search_modes_paths_and_context(folder: Path) -> None:
    async def body(client: Client) -> Any:
        lexical = await client.call_tool("search", {"query": "bread", "mode": "lexical"})
        only_py = await client.call_tool("search", {"query": "bread", "paths": ["*.py"]})
        not_txt = await client.call_tool("search", {"query": "bread", "paths": ["!*.txt"]})
        ctx = await client.call_tool(
            "search", {"query": "line 20 filler", "mode": "lexical", "k": 1, "context": 2}
        )
        return lexical, only_py, not_txt, ctx

    lexical, only_py, not_txt, ctx = served(folder, body)
    assert {h["path"] for h in lexical.structured_content["results"]} == {
        "bread.txt",
        "src/oven.py",
    }
    assert [h["path"] for h in only_py.structured_content["results"]] == ["src/oven.py"]
    paths = {h["path"] for h in not_txt.structured_content["results"]}
    assert paths and not any(p.endswith(".txt") for p in paths)
    hit = ctx.structured_content["results"][0]
    assert hit["path"] == "notes/long.txt"
    if hit["start_line"] > 2:
        n = hit["start_line"]
        assert hit["before"] == [f"line {n - 2} filler", f"line {n - 1} filler"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"query": ""}, "empty query"),
        ({"query": "   "}, "empty query"),
        ({"query": "bread", "k": 0}, "k must be"),
        ({"query": "bread", "k": 100000}, "k must be"),
        ({"query": "bread", "mode": "fuzzy"}, "mode must be one of"),
        ({"query": "bread", "paths": ["["]}, "never closed"),
        ({"query": "bread", "context": -1}, "context must be"),
        ({"query": "bread", "min_score": float("nan")}, "min_score"),
        ({"k": 3}, "query"),
    ],
)
def test_bad_search_calls_get_one_sentence_and_the_server_keeps_serving(
    folder: Path, args: dict[str, Any], message: str
) -> None:
    async def body(client: Client) -> Any:
        bad = await client.call_tool("search", args)
        good = await client.call_tool("search", {"query": "bread"})
        return bad, good

    bad, good = served(folder, body)
    assert bad.is_error
    text = bad.content[0].text
    assert message in text and "Traceback" not in text and len(text.splitlines()) == 1
    assert not good.is_error and good.structured_content["results"]


def test_get_reads_lines_inside_the_root_only(folder: Path, tmp_path: Path) -> None:
    secret = write(tmp_path, "secret.txt", "password\n")
    os.symlink(secret, folder / "link.txt")
    write(folder, ".env", "API_KEY=hunter2\n")  # hidden: never indexed, never served

    async def body(client: Client) -> Any:
        calls = [
            {"path": "notes/long.txt", "start_line": 3, "end_line": 4},
            {"path": str(folder / "bread.txt")},
            {"path": "../secret.txt"},
            {"path": str(secret)},
            {"path": "link.txt"},
            {"path": "nope.txt"},
            {"path": "bread.txt", "start_line": 0},
            {"path": "bread.txt", "start_line": 3, "end_line": 2},
            {"path": ".env"},
            {"path": "bread.txt", "start_line": 9},
        ]
        return [await client.call_tool("get", c) for c in calls]

    results = served(folder, body)
    ok, whole, up, absolute, link, missing, zero, backwards, hidden, past = results
    assert not ok.is_error and ok.structured_content["text"] == "line 3 filler\nline 4 filler"
    assert ok.structured_content["total_lines"] == 39
    assert whole.structured_content["text"].startswith("Knead") and not whole.is_error
    for result in (up, absolute):
        assert result.is_error and "outside the indexed folder" in result.content[0].text
    assert link.is_error and "password" not in link.content[0].text
    assert missing.is_error and "not a file of the index" in missing.content[0].text
    assert zero.is_error and backwards.is_error
    assert hidden.is_error and "hunter2" not in hidden.content[0].text
    assert past.is_error and "past its end" in past.content[0].text


def test_a_file_name_that_is_not_utf8_does_not_stop_the_server(
    tmp_path: Path, use_fake: FakeEmbedder
) -> None:
    """Regression (review): a hit on such a name reached the SDK's JSON
    writer as lone surrogates and ended the server."""
    root = tmp_path / "odd"
    write(root, "plain.txt", "some other words\n")
    (root / os.fsdecode(b"caf\xe9.txt")).write_text("zebra crossing notes\n")
    build_index(root, root / ".msearch", use_fake)

    params = StdioServerParameters(  # over stdio: the JSON writer is what failed
        command=sys.executable,
        args=["-m", "msearch", "mcp", "--index", str(root / ".msearch")],
        env={**get_default_environment(), "HF_HUB_OFFLINE": "1"},
    )

    async def main() -> Any:
        async with Client(params, read_timeout_seconds=60) as client:
            found = await client.call_tool("search", {"query": "zebra", "mode": "lexical"})
            after = await client.call_tool("search", {"query": "words", "mode": "lexical"})
            return found, after

    found, after = anyio.run(main)
    assert not found.is_error
    assert found.structured_content["results"][0]["path"] == "caf\ufffd.txt"
    assert "caf\ufffd.txt" in found.content[0].text
    assert not after.is_error and after.structured_content["results"]


def test_the_server_reopens_a_newer_index_generation(folder: Path, fake: FakeEmbedder) -> None:
    async def body(client: Client) -> Any:
        before = await client.call_tool("search", {"query": "zebra", "mode": "lexical"})
        write(folder, "zoo.txt", "a zebra at the zoo\n")
        build_index(folder, folder / ".msearch", fake)  # another process's update
        after = await client.call_tool("search", {"query": "zebra", "mode": "lexical"})
        (folder / "zoo.txt").write_text("a lion now\n")
        reindexed = await client.call_tool("reindex", {})
        gone = await client.call_tool("search", {"query": "zebra", "mode": "lexical"})
        status = await client.call_tool("status", {})
        return before, after, reindexed, gone, status

    before, after, reindexed, gone, status = served(folder, body)
    assert before.structured_content["results"] == []
    assert [h["path"] for h in after.structured_content["results"]] == ["zoo.txt"]
    assert reindexed.structured_content["changed"] == 1
    assert gone.structured_content["results"] == []
    assert status.structured_content["files"] == 5 and status.structured_content["changed"] == []


def test_mcp_over_stdio_as_a_subprocess(folder: Path) -> None:
    """The real command, over stdio: lexical search needs no model, so the
    index made with the fake embedder serves as is; a dense search then
    fails as one sentence (its model cannot load) and the server goes on."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "msearch", "mcp", "--index", str(folder / ".msearch")],
        env={**get_default_environment(), "HF_HUB_OFFLINE": "1"},
        cwd=str(folder.parent),
    )

    async def main() -> Any:
        async with Client(params, read_timeout_seconds=60) as client:
            found = await client.call_tool("search", {"query": "bread", "mode": "lexical"})
            dense = await client.call_tool("search", {"query": "bread", "mode": "dense"})
            got = await client.call_tool("get", {"path": "moon.md"})
            return found, dense, got

    found, dense, got = anyio.run(main)
    assert {h["path"] for h in found.structured_content["results"]} == {"bread.txt", "src/oven.py"}
    assert dense.is_error and len(dense.content[0].text.splitlines()) == 1
    assert got.structured_content["text"].startswith("# Moon")


def test_mcp_without_an_index_is_one_line(tmp_path: Path) -> None:
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "msearch", "mcp"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        input="",
        timeout=60,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no index found" in r.stderr
    assert json.dumps  # the stdout stays clean for the protocol
