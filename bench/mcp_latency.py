"""Warm `search` latency of `msearch mcp` (issue 14), through the official
SDK's client over stdio, as an agent's client would see it.

Starts `msearch mcp --index X` as a subprocess on the synthetic indexes of
bench/query_latency.py (random unit vectors and Zipf texts over real files,
with the bundled model's record, so the real query encoder runs), waits
until it answers, then times `search` calls (hybrid, k=10, a different
query each time) one after another:

  python bench/mcp_latency.py [--calls 200] [--sizes 100000,1000000] [--write]

Figures: p50 and p90 per index size; --write appends them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import anyio
from _results import report, table
from query_latency import QUERIES, WORK, compile_package, make_index, msearch_exe

from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path

TARGETS_MS = {100_000: 15.0, 1_000_000: 30.0}


async def time_server(index_dir: Path, calls: int, env: dict[str, str]) -> list[float]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    exe = msearch_exe()
    params = StdioServerParameters(
        command=exe[0],
        args=[*exe[1:], "mcp", "--index", str(index_dir)],
        # This machine's environment, as for every other figure here (it sets
        # OpenBLAS's kernel: the SDK's default environment would drop it).
        env={**os.environ, **env},
    )
    async with Client(params, read_timeout_seconds=120) as client:
        for q in QUERIES:  # warm up: model, index pages, lexical tables
            result = await client.call_tool("search", {"query": q})
            if result.is_error:
                raise SystemExit(f"search failed: {result.content}")
        out = []
        for i in range(calls):
            query = f"{QUERIES[i % len(QUERIES)]} {i}"
            t = time.perf_counter()
            result = await client.call_tool("search", {"query": query, "k": 10})
            out.append(time.perf_counter() - t)
            if result.is_error or not result.structured_content["results"]:
                raise SystemExit(f"search {query!r} failed: {result.content}")
        return out


def in_process(index_dir: Path, calls: int) -> tuple[float, float]:
    """Reference figures from this run, in this process: (p50 of the same
    search through SearchService, p50 of encoding the query alone), in ms.
    The machine's speed drifts from run to run; these say how fast it was."""
    from msearch.service import SearchService

    service = SearchService(index_dir)
    for q in QUERIES:
        service.search(q)
    encode = service.index().encoder()
    search_t, encode_t = [], []
    for i in range(calls):
        query = f"{QUERIES[i % len(QUERIES)]} {i}"
        t = time.perf_counter()
        service.search(query)
        search_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        encode([query])
        encode_t.append(time.perf_counter() - t)
    return statistics.median(search_t) * 1000, statistics.median(encode_t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    compile_package()
    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    record = model.record.to_json()
    corpus = WORK / "corpus"
    env = dict(e.split("=", 1) for e in args.env)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        name = {100_000: "idx-100k", 1_000_000: "idx-1m"}.get(size, f"idx-{size}")
        index_dir = make_index(WORK / name, corpus, size, record)
        times = sorted(anyio.run(time_server, index_dir, args.calls, env))
        p50 = statistics.median(times) * 1000
        p90 = times[int(len(times) * 0.9)] * 1000
        target = TARGETS_MS.get(size)
        search_ms, encode_ms = in_process(index_dir, min(args.calls, 100))
        rows.append(
            (
                f"MCP search p50 / p90, {size:,} passages ({args.calls} calls)",
                f"{p50:.1f} / {p90:.1f} ms",
                f"p50 ≤ {target:.0f} ms" if target else "",
            )
        )
        rows.append(
            (
                "  same search in process (SearchService) / query encoding alone, p50",
                f"{search_ms:.1f} / {encode_ms:.1f} ms",
                "",
            )
        )
        print(rows[-1], file=sys.stderr)
    report(
        "Warm MCP search over stdio",
        "hybrid, k=10, the SDK's Client over stdio to `msearch mcp --index`; "
        "synthetic index with the bundled model's real query encoder",
        table(rows),
        args.write,
    )


if __name__ == "__main__":
    main()
