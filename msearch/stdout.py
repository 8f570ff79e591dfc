"""Standard output as the command line writes results to it: a failed
write is an :class:`~msearch.errors.OutputError` (one line, exit 2), not
an "internal error".

Why a module: ``msearch query x >/dev/full`` raised ``OSError`` from deep
inside a printer, or at the interpreter's last flush; ``>&-`` (stdout
closed) left ``sys.stdout`` None; a stdout that encodes ASCII only
(``PYTHONIOENCODING=ascii``) raised ``UnicodeEncodeError`` at the first
accented letter of a table. :func:`prepare` fixes all three once, at the
start of :func:`msearch.cli.main`; a closed pipe (``| head``) stays the
quiet ``BrokenPipeError`` the CLI already handles.
"""

from __future__ import annotations

import codecs
import io
import os
import sys
from typing import Any

from msearch.errors import OutputError

# Whether standard output, and standard input, were closed when msearch
# started (``>&-``, ``<&-``).
closed = False
stdin_closed = False


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower() if exc.strerror else str(exc)


class _Raw(io.RawIOBase):
    """fd 1, with a failed write as an ``OutputError`` once; later writes
    are dropped (the interpreter's last flush must not fail again)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.failed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.failed:
            return len(data)
        try:
            return os.write(self.fd, data)
        except BrokenPipeError:
            raise  # the reader went away: the CLI stops quietly
        except OSError as exc:
            self.failed = True
            raise OutputError(f"cannot write the results: {_reason(exc)}") from None


def _encodes_unicode(encoding: str | None) -> bool:
    try:
        return codecs.lookup(encoding or "ascii").name.startswith("utf")
    except LookupError:
        return False


def prepare() -> None:
    """Make ``sys.stdout`` what the commands expect (see the module's doc):
    an open stream (``/dev/null`` in place of a closed fd 1, noted in
    :data:`closed`; likewise for a closed stderr, whose messages are lost
    rather than mixed into the results), writes that fail as ``OutputError``, and characters the
    encoding lacks written as "?" instead of failing (a table keeps its columns). Only the real
    standard output is replaced (a test's captured stream is left alone)."""
    global closed, stdin_closed
    stdin_closed = sys.stdin is None
    if sys.stdin is None:
        # ``<&-``: reading finds nothing (``query -`` says so); fd 0 is held.
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115
    out: Any = sys.stdout
    closed = out is None
    if out is None:
        # Hold fd 1, so that no file opened later lands there.
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stderr is None:
        # ``2>&-``: messages go nowhere (the exit status still tells), never
        # to stdout, where print(file=None) would send them.
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if out is None:
        return
    if out is not sys.__stdout__:
        return
    stream: Any = out
    try:
        fd = stream.fileno()
        stream.flush()
    except (OSError, ValueError):
        return
    encoding = stream.encoding or "utf-8"
    errors = stream.errors if _encodes_unicode(encoding) else "replace"
    buffered = io.BufferedWriter(_Raw(fd))  # type: ignore[type-var]
    sys.stdout = io.TextIOWrapper(
        buffered, encoding=encoding, errors=errors, line_buffering=stream.line_buffering
    )


def require() -> None:
    """For a command whose results go to stdout: a closed one is an
    ``OutputError`` before any work."""
    if closed:
        raise OutputError("standard output is closed; there is nowhere to print the results")


def require_stdin() -> None:
    """For a command that serves what arrives on stdin (``mcp``)."""
    if stdin_closed:
        raise OutputError("standard input is closed; there is no client to serve")


def finish() -> None:
    """Flush the results; a failure is an ``OutputError`` (the caller says
    it), never an error at the interpreter's exit."""
    if sys.stdout is not None:
        sys.stdout.flush()
