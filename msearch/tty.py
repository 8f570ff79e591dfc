"""Terminal rendering for the CLI: the results table and the progress bar.

Part of the CLI layer (it imports rich); the core library never imports it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from msearch.output import escape_controls
from msearch.query import Hit

MAX_LINES = 6
MAX_CHARS = 400
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
    ]
)


def make_console(file: IO[str], color: str) -> Console:
    """``color`` is auto|never|always; rich itself honours NO_COLOR in auto."""
    if color == "always":
        return Console(file=file, force_terminal=True, highlight=False)
    if color == "never":
        return Console(file=file, no_color=True, highlight=False, color_system=None)
    return Console(file=file, highlight=False)


def _trim(text: str) -> str:
    lines = [ln.rstrip() for ln in text.strip("\n").splitlines()]
    cut = len(lines) > MAX_LINES
    out = "\n".join(lines[:MAX_LINES])
    if len(out) > MAX_CHARS:
        out, cut = out[:MAX_CHARS].rstrip(), True
    return out + (" …" if cut else "")


def _highlight(text: str, query: str) -> Text:
    rich_text = Text(text)
    words = {w for w in re.findall(r"\w+", query.lower()) if len(w) > 2 and w not in STOPWORDS}
    for w in words:
        rich_text.highlight_regex(rf"(?i)\b{re.escape(w)}\w*", "bold yellow")
    return rich_text


def render_table(console: Console, hits: Sequence[Hit], query: str, title: bool = False) -> None:
    """File names and passages are shown with their control characters
    escaped (``\\x1b``): a file must never drive the user's terminal, and
    neither is read as rich markup."""
    table = Table(
        title=Text(escape_controls(query, keep=""), style="bold") if title else None,
        show_lines=True,
        expand=False,
    )
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("location", style="cyan", overflow="fold")
    table.add_column("passage", overflow="fold")
    for h in hits:
        loc = Text(f"{escape_controls(h.path, keep='')}:{h.start_line}-{h.end_line}")
        if h.stale:
            body = Text("[stale: the file changed or vanished since indexing]", style="red")
        else:
            body = _highlight(escape_controls(_trim(h.text)), query)
        table.add_row(str(h.rank), f"{h.score:.3f}", loc, body)
    console.print(table)


class BarProgress:
    """The indexing progress bar (stderr): files, passages, passages/s, ETA.

    The ETA is computed from bytes of files still to read, since the
    number of passages is only known once every file has been chunked.
    """

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]indexing"),
            BarColumn(),
            TextColumn("{task.fields[files]} files"),
            TextColumn("{task.fields[passages]} passages"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: Any = None
        self.files = 0
        self.total_files = 0
        self.passages = 0
        self.t0 = time.perf_counter()

    def __enter__(self) -> BarProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, files: int, total_bytes: int) -> None:
        self.total_files = files
        self.t0 = time.perf_counter()
        self.task = self.progress.add_task(
            "index", total=max(total_bytes, 1), files=f"0/{files}", passages=0, rate=""
        )

    def advance(self, files: int, nbytes: int, passages: int) -> None:
        if self.task is None:
            return
        self.files += files
        self.passages += passages
        elapsed = time.perf_counter() - self.t0
        rate = f"{self.passages / elapsed:,.0f} passages/s" if elapsed > 0 and self.passages else ""
        self.progress.update(
            self.task,
            advance=nbytes,
            files=f"{self.files}/{self.total_files}",
            passages=self.passages,
            rate=rate,
        )
