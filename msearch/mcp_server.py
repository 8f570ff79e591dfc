"""``msearch mcp``: the index as a Model Context Protocol server (stdio).

Imported only by ``msearch mcp`` (it needs the ``mcp`` extra; the CLI turns
a missing one into one line).

Built on the official Python SDK (``mcp`` 2.x, ``MCPServer``), installed
with the ``msearch[mcp]`` extra. The tools are thin: checking, searching,
reading and updating live in :class:`msearch.service.SearchService`; this
module turns its results into MCP results and its typed errors into error
results, so a bad call gets one sentence and the server keeps serving.

Tool parameters are plain JSON types with defaults, never unions (some
clients reject ``anyOf``). Everything but the protocol goes to stderr.
The annotations are evaluated (no ``from __future__ import annotations``):
the SDK reads them to build the tools' JSON schemas.
"""

import json
from typing import Annotated, Any

import mcp_types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field, ValidationError

from msearch.api import MCP, MODES
from msearch.errors import MsearchError
from msearch.output import hit_json
from msearch.output import lossy as _lossy
from msearch.service import SearchService

MAX_K, MAX_CONTEXT = MCP.max_k, MCP.max_context

INSTRUCTIONS = (
    "Semantic and keyword search over one folder of the user's text files. "
    "`search` finds passages by meaning and words (mode hybrid, dense or lexical), "
    "`get` reads a file's lines, `status` says what is indexed and what changed since, "
    "`reindex` brings the index up to date."
)
SUMMARY_CHARS = 160


class SearchHit(BaseModel):
    path: str = Field(description="File path relative to the indexed folder.")
    start_line: int
    end_line: int
    score: float
    text: str = Field(description="The passage (empty when stale).")
    stale: bool = Field(description="The file changed or vanished since it was indexed.")
    before: list[str] = Field(description="Context lines above the passage.")
    after: list[str] = Field(description="Context lines below the passage.")


class SearchOutput(BaseModel):
    query: str
    mode: str
    results: list[SearchHit]


class GetOutput(BaseModel):
    path: str
    start_line: int
    end_line: int
    total_lines: int
    text: str


class ReindexOutput(BaseModel):
    files: int
    added: int
    changed: int
    removed: int
    unchanged: int
    skipped: int
    passages: int
    embedded: int
    waiting: int  # passages whose vectors are being embedded (searchable by words)
    seconds: float


_JSON_TYPES: dict[str, tuple[str, Any]] = {
    # JSON Schema type -> (its name in a message, the check, strict: a
    # boolean is not a number, a number not a string, 2.0 not an integer)
    "integer": ("a whole number", lambda v: type(v) is int),
    "number": ("a number", lambda v: type(v) in (int, float)),
    "boolean": ("true or false", lambda v: type(v) is bool),
    "string": ("a string", lambda v: type(v) is str),
    "array": ("a list", lambda v: type(v) is list),
}


def type_problem(schema: dict[str, Any], arguments: Any) -> str | None:
    """What is wrong with the types of ``arguments`` for a tool of input
    ``schema`` (one clause), or None. Strict, unlike the SDK's pydantic
    (which takes ``k: true`` as 1 and ``exact: "yes"`` as true)."""
    if not isinstance(arguments, dict):
        return "arguments must be an object"
    props = schema.get("properties", {})
    for name, value in arguments.items():
        spec = props.get(name)
        if not isinstance(spec, dict) or spec.get("type") not in _JSON_TYPES:
            continue  # unknown arguments: the SDK's to judge
        what, ok = _JSON_TYPES[spec["type"]]
        if not ok(value):
            shown = json.dumps(value, ensure_ascii=True, default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"{name} must be {what} (got {shown})"
        items = spec.get("items")
        if spec["type"] == "array" and isinstance(items, dict) and items.get("type") in _JSON_TYPES:
            item_what, item_ok = _JSON_TYPES[items["type"]]
            if not all(item_ok(v) for v in value):
                return f"{name} must be a list of {item_what.removeprefix('a ')}s"
    return None


class _Server(MCPServer):
    """Arguments that do not fit a tool's schema (a missing query, a string
    for ``k``, ``true`` for ``k``) are one sentence too, not pydantic's
    multi-line report, and types are strict (see :func:`type_problem`)."""

    _schemas: dict[str, dict[str, Any]] | None = None

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if self._schemas is None:
            self._schemas = {t.name: t.input_schema for t in await self.list_tools()}
        schema = self._schemas.get(name)
        if schema is not None:
            problem = type_problem(schema, arguments)
            if problem is not None:
                raise ToolError(f"bad arguments for {name}: {problem}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg'].lower()}"
                for e in cause.errors()
            )
            raise ToolError(f"bad arguments for {name}: {problems}") from None


def build_server(service: SearchService, version: str = "") -> MCPServer:
    """An MCP server over ``service``'s index (not yet running)."""
    server = _Server(
        name="msearch",
        version=version,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MsearchError as exc:
            raise ToolError(str(exc)) from None

    def text_result(text: str, structured: BaseModel | dict[str, Any]) -> Any:
        data = structured if isinstance(structured, dict) else structured.model_dump(mode="json")
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=text)], structured_content=data
        )

    @server.tool()
    async def search(
        query: Annotated[str, Field(description="What to look for: a question or some words.")],
        k: Annotated[int, Field(description=f"Number of results, 1 to {MAX_K}.")] = 10,
        mode: Annotated[str, Field(description=f"Ranking: one of {', '.join(MODES)}.")] = "hybrid",
        paths: Annotated[
            list[str],
            Field(
                description="Only files matching these globs (gitignore syntax, relative "
                "to the indexed folder; a leading '!' excludes)."
            ),
        ] = [],  # noqa: B006 - a JSON default, never mutated
        min_score: Annotated[
            float, Field(description="Drop results scoring below this (-1: keep all).")
        ] = -1.0,
        context: Annotated[
            int, Field(description=f"Lines of context around each result, 0 to {MAX_CONTEXT}.")
        ] = 0,
        exact: Annotated[
            bool,
            Field(description="Score every passage (large indexes are searched in two stages)."),
        ] = False,
        priors: Annotated[
            bool,
            Field(
                description="Rank tests, examples, vendored, generated and docs files lower "
                "unless the query asks for them (false: like any other file)."
            ),
        ] = True,
    ) -> mcp_types.CallToolResult:
        """Search the indexed folder for passages that answer a query, best first.

        Returns `results`: objects with path, start_line, end_line, score,
        text, stale, before and after; and a text summary."""
        # The hot tool: run in the event loop (no hop to a worker thread; a
        # stdio server has one client), and without a declared output
        # schema: validating ten results against it cost the SDK's client
        # 1-2 ms a call (bench/mcp_latency.py), a tenth of the whole call.
        # The shape is SearchOutput's, checked by the tests.
        # No score is below -1 (cosine, and the hybrid blend of it), so the
        # default keeps every result without a union type for "no limit".
        hits = call(service.search, query, k, mode, paths, min_score, context, exact, priors)
        # A plain dict of SearchOutput's shape (the tests check it against
        # the model): building models to dump them again cost a call 0.3 ms.
        # hit_json: the JSON Lines shape, every string valid UTF-8 (a file
        # name that is not UTF-8 shows U+FFFD for its bad bytes), every key
        # always there (fixed), without the rank.
        out = {
            "query": query,
            "mode": mode,
            "results": [hit_json(h, rank=False, fixed=True) for h in hits],
        }
        return text_result(lossy(summary(query, hits, service.matcher(query))), out)

    @server.tool()
    def get(
        path: Annotated[
            str, Field(description="A file inside the indexed folder (relative to it).")
        ],
        start_line: Annotated[int, Field(description="First line, from 1.")] = 1,
        end_line: Annotated[int, Field(description="Last line, inclusive (0: to the end).")] = 0,
    ) -> Annotated[mcp_types.CallToolResult, GetOutput]:
        """Read lines of a file inside the indexed folder (at most 2,000 at a time)."""
        got = call(service.get, path, start_line, end_line or None)
        out = GetOutput(
            path=lossy(got.path),
            start_line=got.start_line,
            end_line=got.end_line,
            total_lines=got.total_lines,
            text=lossy(got.text),
        )
        head = f"{lossy(got.path)}:{got.start_line}-{got.end_line} of {got.total_lines} lines"
        return text_result(head + "\n" + lossy(got.text), out)

    @server.tool()
    def status() -> dict[str, Any]:
        """What the index holds, and which files changed since it was built."""
        out: dict[str, Any] = call(service.status)
        return out

    @server.tool()
    def reindex() -> Annotated[mcp_types.CallToolResult, ReindexOutput]:
        """Bring the index up to date with the folder (only what changed is re-read).
        New passages are searchable by their words at once; their vectors follow in the
        background (status's "embedded")."""
        stats = call(service.reindex)
        out = ReindexOutput(
            files=stats.files,
            added=stats.added,
            changed=stats.changed,
            removed=stats.removed,
            unchanged=stats.unchanged,
            skipped=len(stats.skipped),
            passages=stats.passages,
            embedded=stats.embedded,
            waiting=stats.pending,
            seconds=round(stats.seconds, 3),
        )
        text = (
            f"{stats.files} files ({stats.added} added, {stats.changed} changed, "
            f"{stats.removed} removed); {stats.passages} passages ({stats.embedded} embedded)"
            + (
                f"; {stats.pending} are searchable by their words while their vectors "
                "are embedded in the background"
                if stats.pending
                else ""
            )
        )
        return text_result(text, out)

    return server


def lossy(value: Any) -> Any:
    """``value`` with every string valid UTF-8: a file name that is not
    (kept as lone surrogates) would stop the server's JSON writer."""
    return _lossy(value)


def summary(query: str, hits: list[Any], matcher: Any) -> str:
    """What an agent reads first: one line per hit, the passage's best line."""
    from msearch.snippet import best_line

    if not hits:
        return f"no results for {query!r}"
    lines = [f"{len(hits)} results for {query!r}:"]
    for h in hits:
        where = f"{h.rank}. {h.path}:{h.start_line}-{h.end_line} ({h.score:.3f})"
        if h.stale:
            lines.append(where + " [stale: changed since indexing]")
            continue
        i, _ = best_line(h.text, matcher)
        line = h.text.split("\n")[i].strip()
        if len(line) > SUMMARY_CHARS:
            line = line[:SUMMARY_CHARS].rstrip() + " …"
        lines.append(f"{where} {line}")
    return "\n".join(lines)


def serve(service: SearchService, version: str = "") -> None:
    """Serve over stdin/stdout until the client closes the connection; every
    message is answered, a malformed one with a JSON-RPC error
    (msearch.mcp_stdio)."""
    import anyio

    from msearch.mcp_stdio import serve_stdio

    anyio.run(serve_stdio, build_server(service, version))
