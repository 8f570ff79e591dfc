"""``msearch mcp``'s stdio transport: every message gets an answer.

The SDK's stdio transport hands a message it cannot parse to the session as
an exception, and the session answers nothing: a client that sent a
lone-surrogate escape (``"\\ud800"``), JSON nested 100,000 deep or a
JSON-RPC batch waited forever. Here each line is checked before the SDK
sees it (:func:`check_frame`), and a malformed one is answered with a
JSON-RPC error (its ``id`` where one can be read, else ``null``) while the
server goes on serving:

- not JSON, or nested deeper than :data:`MAX_DEPTH`: -32700, parse error;
- a batch (a JSON array): -32600, one message per line is all MCP allows;
- a string holding a lone surrogate (no valid Unicode, which no JSON writer
  can send back): -32600;
- not a JSON-RPC message: -32600.

Everything else is the SDK's: the session, the tools, their errors. As the
SDK does, standard input and output are moved off descriptors 0 and 1
while serving (stray reads see EOF, stray prints go to stderr), and put
back after.

When the client closes standard input, the server stops reading, lets the
requests in flight finish (a ``reindex`` commits or leaves the previous
index as it was: an update is atomic) and returns quietly; answers that
can no longer be delivered are dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

MAX_DEPTH = 64  # MCP messages are shallow; a tool's arguments are plain JSON
MAX_LINE = 64 << 20

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _error(code: int, message: str, id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}


def check_frame(line: str) -> tuple[Any, dict[str, Any] | None]:
    """One line from the client: (the message for the SDK, None), or (None,
    the JSON-RPC error that answers it); (None, None) for a blank line."""
    import mcp_types
    from pydantic import ValidationError

    from msearch import jsonsafe

    if not line.strip():
        return None, None
    try:
        data = jsonsafe.loads(line, max_depth=MAX_DEPTH)
    except ValueError as exc:
        return None, _error(PARSE_ERROR, f"Parse error: {_short(exc)}")
    if isinstance(data, list):
        return None, _error(
            INVALID_REQUEST,
            "Invalid Request: JSON-RPC batches are not supported by MCP; send one message per line",
        )
    if not isinstance(data, dict):
        return None, _error(INVALID_REQUEST, "Invalid Request: not a JSON-RPC message")
    raw_id = data.get("id")
    id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if "id" in data and id is None and "result" not in data and "error" not in data:
        return None, _error(INVALID_REQUEST, "Invalid Request: an id is a string or a number")
    if _has_lone_surrogate(data):
        return None, _error(
            INVALID_REQUEST,
            "Invalid Request: a string holds a lone surrogate escape (such as \\ud800), "
            "which is not Unicode text",
            id,
        )
    try:
        message = mcp_types.jsonrpc_message_adapter.validate_python(data, by_name=False)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"msg": "not a JSON-RPC message"}
        return None, _error(INVALID_REQUEST, f"Invalid Request: {first['msg'].lower()}", id)
    return message, None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


@contextlib.contextmanager
def _claimed_stdio() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """The wire: private copies of descriptors 0 and 1, which point at the
    null device and at stderr meanwhile; both restored after."""
    sys.stdout.flush()
    saved_in, saved_out = os.dup(0), os.dup(1)
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        with (
            os.fdopen(os.dup(saved_in), "rb") as fin,
            os.fdopen(os.dup(saved_out), "wb") as fout,
        ):
            yield fin, fout
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


async def serve_stdio(
    server: Any, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> None:
    """Run ``server`` (an ``MCPServer``) over ``stdin``/``stdout`` (binary;
    default: the process's own, claimed) until the client closes its side."""
    if stdin is not None and stdout is not None:
        await _serve(server, stdin, stdout)
        return
    with _claimed_stdio() as (fin, fout):
        await _serve(server, fin, fout)


async def _serve(server: Any, fin: BinaryIO, fout: BinaryIO) -> None:
    import anyio
    from mcp.shared._context_streams import create_context_streams
    from mcp.shared.message import SessionMessage

    read_send, read_recv = create_context_streams[Any](0)
    write_send, write_recv = create_context_streams[Any](0)
    out_lock = anyio.Lock()
    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs

    async def write_line(text: str) -> None:
        data = (text + "\n").encode("utf-8", "replace")
        async with out_lock:
            with contextlib.suppress(OSError):  # the client is gone: nothing to tell it
                await anyio.to_thread.run_sync(_write_all, fout, data)

    async def reader() -> None:
        async with read_send:
            while True:
                # abandon_on_cancel: a server that stops for another reason
                # does not wait for the client's next line.
                line = await anyio.to_thread.run_sync(
                    fin.readline, MAX_LINE + 1, abandon_on_cancel=True
                )
                if not line:
                    return  # the client closed its side
                if len(line) > MAX_LINE:
                    await _skip_rest(fin, line)
                    await write_line(_dump(_error(INVALID_REQUEST, "Invalid Request: too long")))
                    continue
                message, error = check_frame(line.decode("utf-8", "replace"))
                if error is not None:
                    await write_line(_dump(error))
                elif message is not None:
                    await read_send.send(SessionMessage(message))

    async def writer() -> None:
        async with write_recv:
            async for session_message in write_recv:
                msg = session_message.message
                try:
                    text = msg.model_dump_json(by_alias=True, exclude_unset=True)
                except ValueError:  # a string that is not Unicode: say so instead
                    id = getattr(msg, "id", None)
                    text = _dump(_error(-32603, "Internal error: the answer is not Unicode", id))
                await write_line(text)

    gone = (
        anyio.ClosedResourceError,
        anyio.BrokenResourceError,
        anyio.EndOfStream,
        BrokenPipeError,
    )
    with contextlib.suppress(*gone):
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(writer)
                await lowlevel.run(read_recv, write_send, lowlevel.create_initialization_options())
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Answers to a client that has gone (stdin closed during a
            # reindex): nothing to deliver, nothing to report.
            rest = group.split(gone)[1]
            if rest is not None:
                raise rest from None


def _dump(obj: dict[str, Any]) -> str:
    import json

    return json.dumps(obj, ensure_ascii=True)


def _write_all(fout: BinaryIO, data: bytes) -> None:
    fout.write(data)  # buffered: writes it all
    fout.flush()


async def _skip_rest(fin: BinaryIO, line: bytes) -> None:
    import anyio

    while line and not line.endswith(b"\n"):
        line = await anyio.to_thread.run_sync(fin.readline, MAX_LINE)
