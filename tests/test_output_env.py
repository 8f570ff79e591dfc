"""Output and environment: one line and the documented exit status, never
"internal error", and messages that name the cause.

- stdout on a full disk (``>/dev/full``) or closed (``>&-``) for ``query``,
  ``status`` and ``completion``: one line, exit 2.
- A table under an ASCII-only locale: characters the encoding lacks
  become ``?``, never ``UnicodeEncodeError``.
- ``watch --debounce`` too large: refused when it is parsed.
- ``index .`` in a current folder that was deleted: "cannot tell the
  current folder"; in one without permission: "permission denied".
- A first index on a full disk: "no space left on device".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clihelp import cli
from conftest import FakeEmbedder, write

FAKE_CLI = Path(__file__).parent / "fake_cli.py"


@pytest.fixture
def notes(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon café: phases — new, crescent, “full”.\n")
    write(root, "bread.txt", "Knead the bread dough and let the bread rise.\n")
    assert cli("index", str(root), "-q").code == 0
    return root


def run(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}
    return subprocess.run(
        [sys.executable, str(FAKE_CLI), *args],
        cwd=cwd,
        env=env,
        capture_output=kwargs.pop("capture_output", "stdout" not in kwargs),
        stderr=subprocess.PIPE if "stdout" in kwargs else None,
        text=True,
        errors="replace",
        timeout=120,
        **kwargs,
    )


def one_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = r.stderr.splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("msearch: "), r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


COMMANDS = [
    ["query", "moon"],
    ["query", "moon", "--format", "table"],
    ["status"],
    ["status", "--json"],
    ["completion", "bash"],
]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_stdout_on_a_full_disk_is_one_line_and_exit_2(notes: Path, args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        r = run(args, notes, stdout=full)
    one_line(r, "no space left on device")


def _close_stdout() -> None:
    os.close(1)


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_closed_stdout_is_one_line_and_exit_2(notes: Path, args: list[str]) -> None:
    r = run(args, notes, stdout=subprocess.DEVNULL, preexec_fn=_close_stdout)
    one_line(r, "standard output is closed")


def test_index_with_stdout_closed_still_works(notes: Path) -> None:
    write(notes, "new.txt", "a new note about the moon\n")
    r = run(["index", ".", "-q"], notes, stdout=subprocess.DEVNULL, preexec_fn=_close_stdout)
    assert r.returncode == 0, r.stderr


def test_a_closed_pipe_stays_quiet(notes: Path) -> None:
    """``| head``: the reader goes away; no line, exit 0 (unchanged)."""
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_CLI), "query", "-", "--format", "jsonl"],
        cwd=notes,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(b"moon\n" * 2000, timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"internal error" not in err


@pytest.mark.parametrize(
    "env",
    [{"LC_ALL": "C", "PYTHONIOENCODING": "ascii"}, {"PYTHONIOENCODING": "latin-1"}],
    ids=["ascii", "latin-1"],
)
def test_the_table_under_a_narrow_locale_replaces_what_it_cannot_encode(
    notes: Path, env: dict[str, str]
) -> None:
    for args in (["query", "moon café", "--format", "table"], ["status"]):
        r = run(args, notes, env=env)
        assert r.returncode == 0, r.stderr
        assert "UnicodeEncodeError" not in r.stderr and "internal error" not in r.stderr
    r = run(["query", "moon café", "--format", "table"], notes, env=env)
    assert "moon caf" in r.stdout


@pytest.mark.parametrize("value", ["1180591620717411303424", "86400001", "0", "-5"])
def test_watch_debounce_out_of_range_is_refused_when_parsed(notes: Path, value: str) -> None:
    for command in (["watch", str(notes)], ["mcp", str(notes), "--watch"]):
        r = cli(*command, "--debounce", value)
        r.one_line_error("--debounce")


def test_index_dot_in_a_deleted_current_folder(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    for args in (("index", "."), ("watch", "."), ("mcp", "."), ("query", "moon"), ("status",)):
        cli(*args).one_line_error("cannot tell the current folder")


def test_index_dot_without_permission_says_permission_denied(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import msearch.indexer

    folder = tmp_path / "locked"
    write(folder, "a.txt", "text\n")
    real_stat = os.stat

    def denied(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(path) == ".":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), ".")
        return real_stat(path, *args, **kwargs)

    monkeypatch.chdir(folder)
    for command in ("index", "watch", "mcp"):
        with monkeypatch.context() as m:
            m.setattr(msearch.indexer.os, "stat", denied)
            r = cli(command, ".")
        r.one_line_error("Permission denied")
        assert "no such folder" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not apply to root")
def test_index_dot_without_permission_for_real(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    folder = tmp_path / "locked"
    write(folder, "a.txt", "text\n")
    folder.chmod(0)
    try:
        r = run(["index", "."], folder)
    finally:
        folder.chmod(0o755)
    one_line(r, "ermission denied")


def test_a_first_index_on_a_full_disk_says_no_space_left(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data reach the disk through Python's file objects, whose failure
    carries the cause (numpy's own writer said "N requested and M
    written"); a file object that fails as a full disk does stands in for
    one."""
    import errno

    from msearch.storage import disk

    root = tmp_path / "notes"
    for i in range(20):
        write(root, f"n{i}.txt", f"note {i} " + "words " * 100 + "\n")
    real = disk.create_new

    class Full:
        def __init__(self, fh: Any) -> None:
            self.fh = fh
            self.room = 300

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: Any) -> int:
            n = len(memoryview(data).cast("B"))
            if n > self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.room -= n
            return int(self.fh.write(data))

    monkeypatch.setattr(disk, "create_new", lambda path: Full(real(path)))
    r = cli("index", str(root))
    r.one_line_error("No space left on device")
    assert "requested and" not in r.stderr


def test_a_short_write_without_a_cause_on_a_full_file_system_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msearch.errors import IndexWriteError
    from msearch.storage import disk

    class Statvfs:
        f_bavail = 0
        f_frsize = 4096

    monkeypatch.setattr(disk.os, "statvfs", lambda path: Statvfs())
    with (
        pytest.raises(IndexWriteError, match="No space left on device"),
        disk.writing(tmp_path),
    ):
        raise OSError("30522 requested and 23520 written")


def _close_stderr() -> None:
    os.close(2)


def test_closed_stderr_keeps_messages_out_of_the_results(notes: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(FAKE_CLI), "index", "/nonexistent"],
        cwd=notes,
        capture_output=False,
        stdout=subprocess.PIPE,
        preexec_fn=_close_stderr,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == b""
    write(notes, "new.txt", "a new note about the moon\n")
    for args in (["index", "."], ["query", "moon", "--format", "jsonl"]):
        r = subprocess.run(
            [sys.executable, str(FAKE_CLI), *args],
            cwd=notes,
            stdout=subprocess.PIPE,
            preexec_fn=_close_stderr,
            timeout=120,
        )
        assert r.returncode == 0, args
        assert b"msearch:" not in r.stdout


def _close_stdin() -> None:
    os.close(0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["query", "-"], "no queries on standard input"), (["mcp"], "standard input is closed")],
)
def test_closed_stdin_is_one_line_and_exit_2(notes: Path, args: list[str], needle: str) -> None:
    r = run(args, notes, stdin=subprocess.DEVNULL, preexec_fn=_close_stdin)
    one_line(r, needle)
