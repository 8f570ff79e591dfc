"""`msearch mcp` answers every request: a malformed frame (a lone-surrogate
escape, nesting 100,000 deep, a JSON-RPC batch, no JSON at all) gets a
JSON-RPC error and the server goes on serving; argument types are strict;
a client that closes stdin during `reindex` leaves a usable index and a
server that exits quietly."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FakeEmbedder, write
from mcp_raw import RawServer
from msearch.indexer import build_index
from msearch.mcp_stdio import check_frame

pytest.importorskip("mcp")


@pytest.fixture
def folder(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough.\nLet the bread rise.\nBake it hot.\n")
    build_index(root, root / ".msearch", use_fake)
    return root


@pytest.fixture
def server(folder: Path) -> Iterator[RawServer]:
    s = RawServer("--index", str(folder / ".msearch"))
    try:
        yield s
    finally:
        s.kill()


MALFORMED = {
    "lone surrogate in a request": (
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search",'
        b'"arguments":{"query":"\\ud800"}}}',
        7,
        -32600,
    ),
    "lone surrogate in a method name": (
        b'{"jsonrpc":"2.0","id":"s","method":"\\udfff"}',
        "s",
        -32600,
    ),
    "nesting 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, None, -32700),
    "nesting 100,000 deep inside a request": (
        b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        None,
        -32700,
    ),
    "a batch": (
        b'[{"jsonrpc":"2.0","id":9,"method":"ping"},{"jsonrpc":"2.0","id":10,"method":"ping"}]',
        None,
        -32600,
    ),
    "an empty batch": (b"[]", None, -32600),
    "not JSON": (b"{this is not json", None, -32700),
    "invalid UTF-8": (b'{"jsonrpc":"2.0","id":11,"method":"\xff\xfe"}', 11, None),
    "a number": (b"42", None, -32600),
    "no jsonrpc field": (b'{"id":12,"method":"ping"}', 12, -32600),
    "an id that is an object": (b'{"jsonrpc":"2.0","id":{},"method":"ping"}', None, -32600),
}


def test_a_malformed_frame_gets_an_error_and_the_server_goes_on(server: RawServer) -> None:
    """Each case in turn, to one server (starting one costs seconds)."""
    for frame, (line, want_id, code) in MALFORMED.items():
        server.send_line(line)
        answer = server.recv()
        assert answer.get("jsonrpc") == "2.0", frame
        assert answer.get("id") == want_id, (frame, answer)
        assert "error" in answer, (frame, answer)
        if code is not None:
            assert answer["error"]["code"] == code, (frame, answer)
        assert "\n" not in answer["error"]["message"]
        assert server.alive(), frame


def test_check_frame_passes_good_messages_on() -> None:
    message, error = check_frame(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
    assert error is None and message is not None
    assert check_frame("   ") == (None, None)
    _, error = check_frame(
        '{"jsonrpc":"2.0","id":1,"method":"x","params":' + "[" * 70 + "]" * 70 + "}"
    )
    assert error is not None and error["error"]["code"] == -32700


BAD_ARGUMENTS = [
    ("search", {"query": "bread", "k": True}, "k"),
    ("search", {"query": "bread", "k": 2.0}, "k"),
    ("search", {"query": "bread", "k": "3"}, "k"),
    ("search", {"query": "bread", "exact": "yes"}, "exact"),
    ("search", {"query": "bread", "exact": 1}, "exact"),
    ("search", {"query": "bread", "context": False}, "context"),
    ("search", {"query": "bread", "min_score": True}, "min_score"),
    ("search", {"query": "bread", "min_score": "0.5"}, "min_score"),
    ("search", {"query": 5}, "query"),
    ("search", {"query": "bread", "paths": "*.md"}, "paths"),
    ("search", {"query": "bread", "paths": [1]}, "paths"),
    ("search", {"query": "bread", "mode": 1}, "mode"),
    ("get", {"path": "moon.md", "start_line": True}, "start_line"),
    ("get", {"path": "moon.md", "end_line": "2"}, "end_line"),
    ("get", {"path": ["moon.md"]}, "path"),
]


def test_argument_types_are_strict(server: RawServer) -> None:
    """``k: true`` is not 1 and ``exact: "yes"`` is not true: each wrong
    type is refused with one sentence naming the argument."""
    for tool, arguments, name in BAD_ARGUMENTS:
        answer = server.call(tool, arguments)
        result = answer["result"]
        assert result["isError"], (arguments, answer)
        text = result["content"][0]["text"]
        assert len(text.splitlines()) == 1 and name in text, (arguments, text)
    assert server.alive()


def test_closing_stdin_during_reindex_exits_quietly(folder: Path) -> None:
    server = RawServer("--index", str(folder / ".msearch"), embed_delay=0.5)
    for i in range(4):
        write(folder, f"more/{i}.txt", f"file {i} about bread and moons\n" * 40)
    server.send(
        {
            "jsonrpc": "2.0",
            "id": 99,
            "method": "tools/call",
            "params": {"name": "reindex", "arguments": {}},
        }
    )
    time.sleep(0.3)  # the update has begun
    assert server.proc.stdout is not None
    server.proc.stdout.close()  # a client that exits closes both ends
    code = server.close()
    err = server.stderr()
    assert code == 0, err
    assert "internal error" not in err and "Traceback" not in err, err
    # The index is usable: the update committed or left the previous one.
    again = RawServer("--index", str(folder / ".msearch"))
    try:
        assert again.alive()
    finally:
        again.kill()


def test_a_segment_file_cut_short_under_the_server_is_an_error_not_sigbus(
    folder: Path, fake: FakeEmbedder
) -> None:
    from msearch.storage import record

    # Files of several pages: a read past the end of the last page is SIGBUS.
    for i in range(900):
        write(folder, f"more/{i}.txt", f"bread number {i} and its crust, flour {i}, yeast {i}\n")
    build_index(folder, folder / ".msearch", fake, full=True)
    server = RawServer("--index", str(folder / ".msearch"))
    assert server.alive()
    dense = server.call("search", {"query": "bread", "mode": "hybrid"})
    assert not dense["result"].get("isError"), dense
    seg = folder / ".msearch" / record.read_meta(folder / ".msearch").segments[0].name
    for name in ("embeddings.npy", "lex_rows.npy"):
        assert (seg / name).stat().st_size > 3 * 4096
        os.truncate(seg / name, 4096)
    for mode in ("hybrid", "lexical", "dense"):
        answer = server.call("search", {"query": "bread", "mode": mode})
        result = answer["result"]
        assert result["isError"], answer
        text = result["content"][0]["text"]
        assert len(text.splitlines()) == 1 and "cut short" in text, text
    assert server.proc.poll() is None  # still serving
    server.kill()
