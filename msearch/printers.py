"""Search results to stdout: one interface for every output format.

As ripgrep's printers sit behind one interface, the command line hands
each query's hits to a :class:`Printer` and never knows how they are
shown. The printers: the machine formats in msearch.output, the
terminal's table in msearch.tty; msearch.formats names them (``--format``).

Part of the command-line layer; nothing heavy is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from msearch.query import Hit


@dataclass(frozen=True)
class PrintOptions:
    """What every printer may need to know."""

    out: TextIO  # stdout (its byte stream is written where it has one)
    multi: bool = False  # several queries (``query -``): each hit names its query
    context: bool = False  # context lines were asked for (-C/-A/-B)
    null: bool = False  # -0: paths end with NUL and are written as their exact bytes
    color: str = "auto"  # auto|never|always (NO_COLOR already applied)
    lexical: object = None  # the index's lexical settings: which words a line matches


class Printer(Protocol):
    """Receives the hits of a search, query by query."""

    def begin(self, query: str) -> None:
        """The hits of ``query`` follow, best first (called only for a
        query that has hits)."""
        ...

    def hit(self, hit: Hit) -> None:
        """One hit of the query begun last."""
        ...

    def finish(self) -> None:
        """Every query is done: write what is held back and flush."""
        ...


def print_results(
    printer: Printer, queries: Sequence[str], results: Sequence[Sequence[Hit]]
) -> bool:
    """Each query's hits through ``printer``; whether any query had a hit."""
    any_hits = False
    for query, hits in zip(queries, results, strict=True):
        if not hits:
            continue
        any_hits = True
        printer.begin(query)
        for hit in hits:
            printer.hit(hit)
    printer.finish()
    return any_hits
