"""Hits to machine-readable text: JSON Lines, TSV, path lists, vimgrep lines.

These formats are a contract with scripts, so they are plain, uncoloured and
stable; the rich table for terminals lives in :mod:`msearch.tty`. Each is a
printer (msearch.printers); :func:`hit_json` is the one JSON shape of a hit,
for JSON Lines and the MCP ``search`` tool.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable

from msearch.printers import PrintOptions
from msearch.query import Hit
from msearch.snippet import best_line

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


def escape(field: str) -> str:
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


def hit_json(
    hit: Hit, *, rank: bool = True, context: bool = False, fixed: bool = False
) -> dict[str, object]:
    """One hit as a JSON object, every string valid UTF-8: ``rank`` (unless
    left out), ``score`` (6 decimals), ``path`` (undecodable name bytes as
    U+FFFD; ``path_bytes``, the exact bytes in base64, where it is not
    UTF-8), ``start_line``, ``end_line``, ``text``; ``before`` and
    ``after`` with ``context``; ``stale: true`` when the file changed or
    vanished since indexing. ``fixed``: one shape for every hit (``stale``,
    ``before`` and ``after`` always; no ``path_bytes``), for a schema."""
    path, raw = text_and_bytes(hit.path)
    obj: dict[str, object] = {"rank": hit.rank} if rank else {}
    obj["score"] = round(hit.score, 6)
    obj["path"] = path
    obj["start_line"] = hit.start_line
    obj["end_line"] = hit.end_line
    obj["text"] = lossy(hit.text)
    if raw is not None and not fixed:
        obj["path_bytes"] = raw
    if context or fixed:
        obj["before"], obj["after"] = lossy(list(hit.before)), lossy(list(hit.after))
    if hit.stale or fixed:
        obj["stale"] = hit.stale
    return obj


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def to_bytes(line: str) -> bytes:
    """A line for stdout's byte stream: a name that is not UTF-8 goes out as
    its own bytes."""
    return line.encode("utf-8", "surrogateescape")


class LinePrinter:
    """A printer of lines of text: each hit's lines go to stdout's byte
    stream (a name that is not UTF-8 as its own bytes)."""

    def __init__(self, options: PrintOptions) -> None:
        self.options = options
        self.query = ""
        out = options.out
        self._buffer = getattr(out, "buffer", None)
        out.flush()

    def begin(self, query: str) -> None:
        self.query = query

    def hit(self, hit: Hit) -> None:
        self.write(self.lines(hit))

    def lines(self, hit: Hit) -> Iterable[str]:
        """The lines of one hit, each ending with its newline (or NUL)."""
        raise NotImplementedError

    def write(self, lines: Iterable[str]) -> None:
        if self._buffer is None:  # a text-only stream (tests): names that are not UTF-8 escaped
            self.options.out.writelines(
                line.encode("utf-8", "backslashreplace").decode() for line in lines
            )
        else:
            self._buffer.write(b"".join(to_bytes(line) for line in lines))

    def finish(self) -> None:
        if self._buffer is not None:
            self._buffer.flush()
        self.options.out.flush()


class JsonlPrinter(LinePrinter):
    """One JSON object per hit (:func:`hit_json`); with several queries, each
    names its ``query``."""

    def lines(self, hit: Hit) -> Iterable[str]:
        obj = hit_json(hit, context=self.options.context)
        if self.options.multi:
            obj["query"] = self.query
        yield json.dumps(obj, ensure_ascii=False) + "\n"


class TsvPrinter(LinePrinter):
    """``score<TAB>path:start-end<TAB>first line`` (a leading query column
    with several queries), fields escaped."""

    def lines(self, hit: Hit) -> Iterable[str]:
        cols = [f"{hit.score:.4f}", f"{escape(hit.path)}:{hit.start_line}-{hit.end_line}"]
        cols.append("[stale]" if hit.stale else escape(first_line(hit.text)))
        if self.options.multi:
            cols.insert(0, escape(self.query))
        yield "\t".join(cols) + "\n"


class PathsPrinter(LinePrinter):
    """Each hit's file (the search returns one hit per file, best first).
    With ``null`` the names are exact (for ``xargs -0``); otherwise escaped."""

    def lines(self, hit: Hit) -> Iterable[str]:
        if self.options.null:
            yield hit.path + "\0"
        else:
            yield escape(hit.path) + "\n"


class VimgrepPrinter(LinePrinter):
    """``path:line:column:text``, one line per hit, as ``rg --vimgrep``
    writes it (for Vim's quickfix list, fzf, an editor's "go to"): the line
    of the passage that holds most of the query's words, the column (in
    bytes, from 1) of the first one."""

    def begin(self, query: str) -> None:
        from msearch.snippet import Matcher

        super().begin(query)
        self.matcher = Matcher.for_index(query, self.options.lexical)

    def lines(self, hit: Hit) -> Iterable[str]:
        if hit.stale:
            yield f"{escape(hit.path)}:{hit.start_line}:1:[stale]\n"
            return
        i, col = best_line(hit.text, self.matcher)
        line = hit.text.split("\n")[i].rstrip("\r")
        if i == 0 and hit.lead:  # the passage starts inside a long line: the whole line
            line, col = hit.lead + line, col + len(hit.lead)
        col_bytes = len(line[:col].encode("utf-8", "surrogatepass")) + 1
        yield f"{escape(hit.path)}:{hit.start_line + i}:{col_bytes}:{escape(line)}\n"
