"""Shared by the benchmark scripts: one section of bench/RESULTS.md per run."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def table(
    rows: Sequence[Sequence[str]], header: Sequence[str] = ("figure", "measured", "target")
) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
    ]


def report(title: str, note: str, lines: Sequence[str], write: bool) -> str:
    """Print a section (title, date, machine, the exact command, the table) and,
    with ``write``, append it to RESULTS.md."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    script = Path(sys.argv[0]).name
    cmd = " ".join(["python", f"bench/{script}", *sys.argv[1:]])
    text = "\n".join(
        [
            f"\n### {title} ({time.strftime('%Y-%m-%d')}, {machine})\n",
            f"Command: `{cmd}` ({note})\n",
            *lines,
            "",
        ]
    )
    print(text)
    if write:
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write(text)
    return text
