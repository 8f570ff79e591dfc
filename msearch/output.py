"""Hits to machine-readable text: JSON Lines, TSV and path lists.

These formats are a contract with scripts, so they are plain, uncoloured and
stable; the rich table for terminals lives in :mod:`msearch.tty`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from msearch.query import Hit

FORMATS = ("table", "jsonl", "tsv", "paths")


def _escape(field: str) -> str:
    """Keep one record per line whatever a file name or line contains."""
    return (
        field.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def jsonl(hits: Sequence[Hit], query: str | None = None) -> Iterator[str]:
    for h in hits:
        obj: dict[str, object] = {
            "rank": h.rank,
            "score": round(h.score, 6),
            "path": h.path,
            "start_line": h.start_line,
            "end_line": h.end_line,
            "text": h.text,
        }
        if h.stale:
            obj["stale"] = True
        if query is not None:
            obj["query"] = query
        yield json.dumps(obj, ensure_ascii=False) + "\n"


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def tsv(hits: Sequence[Hit], query: str | None = None) -> Iterator[str]:
    for h in hits:
        cols = [f"{h.score:.4f}", f"{_escape(h.path)}:{h.start_line}-{h.end_line}"]
        cols.append("[stale]" if h.stale else _escape(first_line(h.text)))
        if query is not None:
            cols.insert(0, _escape(query))
        yield "\t".join(cols) + "\n"


def unique_paths(hits: Iterable[Hit]) -> list[str]:
    """Each file once, in the order of its best passage (hits come best first)."""
    seen: dict[str, None] = {}
    for h in hits:
        seen.setdefault(h.path, None)
    return list(seen)


def paths(hits: Sequence[Hit], null: bool = False) -> Iterator[str]:
    end = "\0" if null else "\n"
    for p in unique_paths(hits):
        yield (p if null else _escape(p)) + end
