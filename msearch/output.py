"""Hits to machine-readable text: JSON Lines, TSV and path lists.

These formats are a contract with scripts, so they are plain, uncoloured and
stable; the rich table for terminals lives in :mod:`msearch.tty`.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence

from msearch.query import Hit
from msearch.snippet import Matcher, best_line

FORMATS = ("table", "jsonl", "tsv", "paths", "vimgrep")

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Control characters (C0, DEL, C1) and the lone surrogates that stand for
# the bytes of a file name that is not UTF-8.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FIELD = re.compile(r"[\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _char_escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _escape(field: str) -> str:
    """Keep one record per line whatever a file name or line contains, and
    never let a file's bytes reach the terminal as control sequences:
    backslash, tab, newline and CR as ``\\\\ \\t \\n \\r``; other control
    characters and the bytes of a name that is not UTF-8 as ``\\xNN``."""
    return _FIELD.sub(lambda m: _char_escape(m.group()), field)


def escape_controls(text: str, keep: str = "\n\t") -> str:
    """Human-facing text with control characters shown, not obeyed (an
    ``ESC[2J`` inside a file must not clear the user's screen); ``keep``
    (newline and tab) stay as they are."""
    return _CONTROLS.sub(
        lambda m: m.group() if m.group() in keep else _char_escape(m.group()), text
    )


def text_and_bytes(name: str) -> tuple[str, str | None]:
    """A file name for JSON: its text (undecodable bytes as U+FFFD) and, only
    when it is not valid UTF-8, its exact bytes in base64 (as ripgrep's JSON
    does), so that a script can still open it."""
    try:
        name.encode("utf-8")
        return name, None
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def lossy(obj: object) -> object:
    """``obj`` with every string valid UTF-8 (undecodable name bytes as
    U+FFFD), for JSON that any parser accepts (``status --json``)."""
    if isinstance(obj, str):
        return text_and_bytes(obj)[0]
    if isinstance(obj, list | tuple):
        return [lossy(v) for v in obj]
    if isinstance(obj, dict):
        return {lossy(k): lossy(v) for k, v in obj.items()}
    return obj


def jsonl(hits: Sequence[Hit], query: str | None = None, context: bool = False) -> Iterator[str]:
    """One JSON object per hit; with ``context``, the lines around it as
    ``before`` and ``after`` lists (empty at a file's edge)."""
    for h in hits:
        path, raw = text_and_bytes(h.path)
        obj: dict[str, object] = {
            "rank": h.rank,
            "score": round(h.score, 6),
            "path": path,
            "start_line": h.start_line,
            "end_line": h.end_line,
            "text": h.text,
        }
        if raw is not None:
            obj["path_bytes"] = raw
        if context:
            obj["before"], obj["after"] = list(h.before), list(h.after)
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


def vimgrep(hits: Sequence[Hit], matcher: Matcher) -> Iterator[str]:
    """``path:line:column:text``, one line per hit, as ``rg --vimgrep``
    writes it (for Vim's quickfix list, fzf, an editor's "go to"): the line
    of the passage that holds most of the query's words, the column (in
    bytes, from 1) of the first one."""
    for h in hits:
        if h.stale:
            yield f"{_escape(h.path)}:{h.start_line}:1:[stale]\n"
            continue
        i, col = best_line(h.text, matcher)
        line = h.text.split("\n")[i].rstrip("\r")
        if i == 0 and h.lead:  # the passage starts inside a long line: the whole line
            line, col = h.lead + line, col + len(h.lead)
        col_bytes = len(line[:col].encode("utf-8", "surrogatepass")) + 1
        yield f"{_escape(h.path)}:{h.start_line + i}:{col_bytes}:{_escape(line)}\n"


def unique_paths(hits: Iterable[Hit]) -> list[str]:
    """Each file once, in the order of its best passage (hits come best first)."""
    seen: dict[str, None] = {}
    for h in hits:
        seen.setdefault(h.path, None)
    return list(seen)


def paths(hits: Sequence[Hit], null: bool = False) -> Iterator[str]:
    """Each file once. With ``null`` the names are exact (for ``xargs -0``:
    the caller writes them as bytes, see :func:`to_bytes`); otherwise escaped."""
    end = "\0" if null else "\n"
    for p in unique_paths(hits):
        yield (p if null else _escape(p)) + end


def to_bytes(line: str) -> bytes:
    """A line for stdout's byte stream: a name that is not UTF-8 goes out as
    its own bytes."""
    return line.encode("utf-8", "surrogateescape")
