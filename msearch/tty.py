"""Terminal rendering for the CLI: the results table (a printer, see
msearch.printers) and the progress bar.

Part of the CLI layer (it imports rich); the core library never imports it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from msearch.output import escape_controls
from msearch.printers import PrintOptions
from msearch.query import Hit
from msearch.snippet import Matcher, best_window

MAX_LINES = 6
MAX_CHARS = 400


def make_console(file: IO[str], color: str) -> Console:
    """``color`` is auto|never|always; rich itself honours NO_COLOR in auto."""
    if color == "always":
        return Console(file=file, force_terminal=True, highlight=False)
    if color == "never":
        return Console(file=file, no_color=True, highlight=False, color_system=None)
    return Console(file=file, highlight=False)


def _passage(text: str, matcher: Matcher, context: tuple[tuple[str, ...], tuple[str, ...]]) -> Text:
    """The ``MAX_LINES`` lines of the passage that hold most of the query's
    words, those words highlighted, context lines dimmed around them; an
    ellipsis says where lines were left out."""
    lines = [ln.rstrip() for ln in text.strip("\n").split("\n")]
    first = best_window(lines, matcher, MAX_LINES)
    shown = lines[first : first + MAX_LINES]
    out = Text()
    before, after = context
    for line in before:
        out.append(escape_controls(line) + "\n", style="dim")
    if first > 0:
        out.append("…\n", style="dim")
    budget, cut = MAX_CHARS, first + len(shown) < len(lines)
    for n, line in enumerate(shown):
        if budget <= 0:
            cut = True
            break
        if n:
            out.append("\n")
        part = line[:budget]
        cut = cut or len(part) < len(line)
        piece = Text(escape_controls(part))
        # Spans are found in the raw line; escaping only lengthens control
        # characters, so a span is placed by escaping what precedes it.
        for a, b in matcher.spans(part):
            start = len(escape_controls(part[:a]))
            piece.stylize("bold yellow", start, start + len(escape_controls(part[a:b])))
        out.append_text(piece)
        budget -= len(line) + 1
    if cut:
        out.append(" …")
    for line in after:
        out.append("\n" + escape_controls(line), style="dim")
    return out


def render_table(
    console: Console,
    hits: Sequence[Hit],
    query: str,
    title: bool = False,
    lexical_settings: object = None,
) -> None:
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
    matcher: Matcher | None = None
    for h in hits:
        loc = Text(f"{escape_controls(h.path, keep='')}:{h.start_line}-{h.end_line}")
        if h.stale:
            body = Text("[stale: the file changed or vanished since indexing]", style="red")
        else:
            matcher = matcher or Matcher.for_index(query, lexical_settings)
            body = _passage(h.text, matcher, (h.before, h.after))
        table.add_row(str(h.rank), f"{h.score:.3f}", loc, body)
    console.print(table)


class TablePrinter:
    """The ``table`` format: one table per query (titled by its query when
    there are several), on the console ``options.color`` asks for."""

    def __init__(self, options: PrintOptions) -> None:
        self.options = options
        self.console = make_console(options.out, options.color)
        self.query: str | None = None
        self.hits: list[Hit] = []

    def begin(self, query: str) -> None:
        self._render()
        self.query = query

    def hit(self, hit: Hit) -> None:
        self.hits.append(hit)

    def finish(self) -> None:
        self._render()
        self.options.out.flush()

    def _render(self) -> None:
        if self.query is not None and self.hits:
            render_table(
                self.console,
                self.hits,
                self.query,
                title=self.options.multi,
                lexical_settings=self.options.lexical,
            )
        self.query, self.hits = None, []


class BarProgress:
    """The indexing progress bar (stderr): files, passages, passages/s, ETA.

    The ETA is computed from bytes of files still to read, since the
    number of passages is only known once every file has been chunked;
    once the words are committed (``vectors``), from passages still to embed.
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
        self.by_passages = False
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
        if self.by_passages and passages:
            self.progress.update(self.task, advance=passages)

    def vectors(self, total: int) -> None:
        """The words are searchable; ``total`` passages are left to embed."""
        if self.task is None:
            self.start(0, 0)
        self.by_passages = True
        self.t0 = time.perf_counter()
        self.passages = 0
        self.progress.update(self.task, total=max(total, 1), completed=0, passages=0, rate="")
