"""MCP server fuzz: malformed frames (random bytes, random JSON, batches,
lone surrogates, nesting up to 200,000 deep, huge strings) and tool calls
with random arguments of every type, to one ``msearch mcp`` process.

Every frame gets exactly one answer (a notification none), each answer is
one line of JSON-RPC with the request's id (``null`` where none can be
read), a tool's error is one sentence, and the server answers a ``ping``
after each: it never hangs, dies or goes silent.

Settings: see ``clihelp.fuzz_settings`` (derandomized for CI).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from clihelp import fuzz_settings
from conftest import FakeEmbedder, write
from mcp_raw import RawServer
from msearch.indexer import build_index

pytest.importorskip("mcp")

TOOLS = {
    "search": ["query", "k", "mode", "paths", "min_score", "context", "exact"],
    "get": ["path", "start_line", "end_line"],
    "status": [],
    "reindex": [],
    "nonesuch": ["x"],
}

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        st.sampled_from(["\ud800", "a\udfffb", "moon", "../../etc/passwd", "*.md", "x" * 5000]),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)


def deep(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def escaped(value: Any) -> bytes:
    """JSON that may carry lone surrogates, written as \\uXXXX escapes."""
    return json.dumps(value, ensure_ascii=True).encode()


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, the frame: bytes as they are sent, or a tool call's message
    without its id, which the test gives it)."""
    kind = draw(st.sampled_from(["bytes", "json", "deep", "batch", "call", "envelope", "huge"]))
    if kind == "bytes":
        raw = draw(st.binary(min_size=1, max_size=200)).replace(b"\n", b" ").replace(b"\r", b" ")
        return kind, raw if raw.strip() else b"x"
    if kind == "json":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict) or "method" not in v))
        return kind, escaped(value)
    if kind == "deep":
        depth = draw(st.integers(65, 200_000))
        return kind, deep(depth, draw(st.sampled_from(["[", "{"])))
    if kind == "batch":
        items = draw(st.lists(st.just({"jsonrpc": "2.0", "id": 1, "method": "ping"}), max_size=3))
        return kind, escaped(items)
    if kind == "envelope":
        msg = draw(
            st.dictionaries(
                st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error"]),
                json_values,
                max_size=5,
            )
        )
        return kind, escaped(msg)
    if kind == "huge":
        size = draw(st.integers(1 << 16, 1 << 21))
        return kind, {"name": "search", "arguments": {"query": "bread " * (size // 6)}}
    tool = draw(st.sampled_from(list(TOOLS)))
    names = TOOLS[tool] + ["extra"]
    arguments = draw(
        st.one_of(
            st.dictionaries(st.sampled_from(names), json_values, max_size=4),
            json_values,
        )
    )
    return kind, {"name": tool, "arguments": arguments}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawServer]:
    root = tmp_path_factory.mktemp("fuzz-mcp") / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough.\nLet the bread rise.\n")
    build_index(root, root / ".msearch", FakeEmbedder(max_seq_length=256))
    s = RawServer("--index", str(root / ".msearch"))
    try:
        yield s
    finally:
        s.kill()


def check_answer(answer: Any) -> None:
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", answer
    assert ("result" in answer) != ("error" in answer), answer
    if "error" in answer:
        assert "\n" not in answer["error"]["message"], answer
    elif isinstance(answer["result"], dict) and answer["result"].get("isError"):
        text = answer["result"]["content"][0]["text"]
        assert len(text.splitlines()) == 1, text


def answers_until(server: RawServer, want: Any) -> list[Any]:
    """Every message up to and including the answer whose id is ``want``."""
    got = []
    while True:
        answer = server.recv(timeout=60)
        assert isinstance(answer, dict), answer
        got.append(answer)
        if answer.get("id") == want and want is not None:
            return got


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(default_examples=150)
@given(frame=frames())
def test_mcp_server_fuzz(server: RawServer, frame: tuple[str, Any]) -> None:
    kind, body = frame
    event(f"frame: {kind}")
    server._id += 1
    ping = f"ping-{server._id}"
    if isinstance(body, bytes):
        # Malformed, or a message of any shape: the transport answers what
        # it refuses at once (id null, or the message's), before the ping.
        server.send_line(body)
        server.send({"jsonrpc": "2.0", "id": ping, "method": "ping"})
        got = answers_until(server, ping)
        refused = [a for a in got if a.get("id") != ping and "error" in a]
        if kind != "envelope":
            assert len(refused) == 1 and refused[0]["id"] is None, (kind, body[:200], got)
    else:
        # A tool call, with an id of its own: exactly one answer, that id.
        call_id = f"call-{server._id}"
        server.send({"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": body})
        got = answers_until(server, call_id)
        assert [a for a in got if a.get("id") == call_id] == got[-1:], got
        server.send({"jsonrpc": "2.0", "id": ping, "method": "ping"})
        got += answers_until(server, ping)
    for answer in got:
        check_answer(answer)
        event(f"answer: {'error' if 'error' in answer else 'result'}")
