"""Running the real ``msearch`` entry point in process, for tests that care
about exactly what a user sees: exit status, stdout bytes, stderr lines."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from conftest import current_models
from msearch.cli import app, main

_runner = CliRunner()


@dataclass
class Out:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8")

    def one_line_error(self, *needles: str) -> None:
        """Exit 2 with exactly one line on stderr (no traceback), naming ``needles``."""
        lines = self.stderr.splitlines()
        assert self.code == 2, (self.code, self.stderr)
        assert len(lines) == 1 and lines[0].startswith("msearch: "), self.stderr
        assert "Traceback" not in self.stderr
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])


def cli(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Out:
    """``msearch ARGS`` through :func:`msearch.cli.main`, the console script,
    with the test's models (conftest.use_fake)."""
    with _runner.isolation(input=input, env=env) as streams:
        try:
            main(list(args), models=current_models())
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = streams[0].getvalue(), streams[1].getvalue()
    return Out(code, out, err.decode("utf-8", "replace"))


def invoke(*args: str, input: str | None = None) -> Any:
    """``msearch ARGS`` through typer's CliRunner (``Result``), with the
    test's models (conftest.use_fake)."""
    return _runner.invoke(app, list(args), input=input, obj=current_models())


def fuzz_settings(default_examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings of the fuzz tests: derandomized, so that CI runs
    the same examples every time; ``FUZZ_EXAMPLES=N`` runs more, and
    ``FUZZ_RANDOM=1`` draws new ones."""
    return settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", default_examples)),
        deadline=None,
        derandomize="FUZZ_RANDOM" not in os.environ,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
