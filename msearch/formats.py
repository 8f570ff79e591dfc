"""The output formats ``msearch query --format`` offers: each one's name,
its printer (msearch.printers), and whether it shows each file once.

A new format is a printer class (machine formats in msearch.output, the
terminal's table in msearch.tty) and one entry here. Nothing heavy is
imported: ``msearch --help`` reads this registry; a printer's module is
imported when its format is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from msearch.printers import Printer, PrintOptions


@dataclass(frozen=True)
class Format:
    """An output format: its name, how to make its printer (the printer's
    module is imported only then), and whether it shows each file once
    (the search then returns each file's best passage)."""

    name: str
    make: Callable[[PrintOptions], Printer]
    files: bool = False


def _table(options: PrintOptions) -> Printer:
    from msearch.tty import TablePrinter

    return TablePrinter(options)


def _jsonl(options: PrintOptions) -> Printer:
    from msearch.output import JsonlPrinter

    return JsonlPrinter(options)


def _tsv(options: PrintOptions) -> Printer:
    from msearch.output import TsvPrinter

    return TsvPrinter(options)


def _paths(options: PrintOptions) -> Printer:
    from msearch.output import PathsPrinter

    return PathsPrinter(options)


def _vimgrep(options: PrintOptions) -> Printer:
    from msearch.output import VimgrepPrinter

    return VimgrepPrinter(options)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("table", _table),
        Format("jsonl", _jsonl),
        Format("tsv", _tsv),
        Format("paths", _paths, files=True),
        Format("vimgrep", _vimgrep),
    )
}
