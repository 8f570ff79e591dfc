"""``msearch watch``: the loop of msearch.watch with real file events
(watchfiles on a temporary folder) and the fake embedder, the CLI's report,
and the command itself, in process and as a subprocess with the real model."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clihelp import cli
from conftest import FakeEmbedder, deny_reading, write
from msearch.chunking import ChunkSettings
from msearch.errors import IndexWriteError, MsearchError, UsageError, WatchStopped
from msearch.indexer import IndexStats, build_index
from msearch.storage import record
from msearch.walk import Skipped
from msearch.watch import watch

SMALL = ChunkSettings(max_tokens=12, overlap_tokens=3)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TIMEOUT = 10.0


def wait_for(what: Callable[[], object], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.02)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def committed(index_dir: Path) -> dict[str, str]:
    """Path -> content hash of each file the committed index holds."""
    try:
        meta = record.read_meta(index_dir)
    except MsearchError:
        return {}
    return {f.path: f.sha256 for f in meta.files}


def fresh(root: Path, where: Path) -> dict[str, str]:
    """What a fresh build of ``root`` holds."""
    build_index(root, where, FakeEmbedder(), chunking=SMALL)
    return committed(where)


class Watching:
    """``watch`` on a thread: the fake embedder, a stop event, and a record
    of every update, notice and error."""

    def __init__(self, root: Path, index_dir: Path | None = None, **kw: Any) -> None:
        self.root = root
        self.index_dir = index_dir or root / ".msearch"
        self.kw = {"debounce_ms": 400, "check_ms": 200, **kw}
        self.stop = threading.Event()
        self.updates = 0
        self.stats: list[IndexStats] = []
        self.notices: list[str] = []
        self.error: BaseException | None = None
        self.fail_next = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def update(self) -> IndexStats:
        self.updates += 1
        if self.fail_next:
            self.fail_next = False
            raise IndexWriteError("cannot write the index (No space left on device)")
        return build_index(self.root, self.index_dir, FakeEmbedder(), chunking=SMALL)

    def _run(self) -> None:
        try:
            watch(
                self.root,
                self.index_dir,
                self.update,
                self.notices.append,
                stop=self.stop,
                on_update=self.stats.append,
                **self.kw,
            )
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Watching:
        self.thread.start()
        # The first update, then the one once the watches are in place.
        wait_for(lambda: len(self.stats) >= 2 or self.error)
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the watcher did not stop"

    def index(self) -> dict[str, str]:
        return committed(self.index_dir)

    def quiet_updates(self, seconds: float = 1.0) -> int:
        """Updates during ``seconds`` in which nothing else happens."""
        before = self.updates
        time.sleep(seconds)
        return self.updates - before


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "The moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough and let it rise.\n")
    return root


def test_add_edit_delete_follow_the_folder(root: Path, tmp_path: Path) -> None:
    with Watching(root) as w:
        assert set(w.index()) == {"moon.md", "bread.txt"}
        write(root, "sub/river.txt", "the river runs over stones\n")
        wait_for(lambda: w.index().get("sub/river.txt") == sha("the river runs over stones\n"))
        edited = "the moon is a rock\nand it has no light of its own\n"
        write(root, "moon.md", edited)
        wait_for(lambda: w.index().get("moon.md") == sha(edited))
        (root / "bread.txt").unlink()
        wait_for(lambda: "bread.txt" not in w.index())
        assert w.quiet_updates(0.5) == 0
        assert w.index() == fresh(root, tmp_path / "fresh")
        assert w.notices == [] and w.error is None


def test_a_change_before_the_watches_are_in_place_is_caught(root: Path) -> None:
    class Late(Watching):
        def update(self) -> IndexStats:
            stats = super().update()
            if self.updates == 1:  # after the first update's walk, before any watch
                write(self.root, "late.txt", "written while the watcher started\n")
            return stats

    with Late(root) as w:
        wait_for(lambda: "late.txt" in w.index())


def test_a_burst_of_a_thousand_changes_is_a_few_updates(root: Path, tmp_path: Path) -> None:
    with Watching(root, debounce_ms=1600) as w:
        before = w.updates
        for i in range(1000):
            write(root, f"burst/f{i:04d}.txt", f"note {i} about the moon and bread {i % 7}\n")
        wait_for(lambda: len(w.index()) == 1002, timeout=60)
        assert w.quiet_updates(0.5) == 0
        assert w.updates - before <= 5, w.updates - before
        assert w.index() == fresh(root, tmp_path / "fresh")
        assert w.error is None


@pytest.mark.parametrize("how", ["deleted", "renamed", "replaced"])
def test_the_folder_vanishing_stops_the_watch(root: Path, tmp_path: Path, how: str) -> None:
    w = Watching(root)
    with w:
        if how == "deleted":
            shutil.rmtree(root)
        elif how == "renamed":
            root.rename(tmp_path / "elsewhere")
        else:  # another folder takes its name: no watch covers it
            root.rename(tmp_path / "elsewhere")
            write(root, "other.txt", "another folder\n")
        w.thread.join(TIMEOUT)
        assert not w.thread.is_alive()
    assert isinstance(w.error, WatchStopped)
    assert str(w.error) == f"{root} vanished; stopped watching"


def test_a_failed_update_is_said_and_the_watch_goes_on(root: Path) -> None:
    with Watching(root) as w:
        w.fail_next = True
        write(root, "one.txt", "first change\n")
        wait_for(lambda: w.notices)
        assert w.notices == [
            "msearch: update failed: cannot write the index (No space left on device) "
            "(still watching)"
        ]
        assert "one.txt" not in w.index()
        write(root, "two.txt", "second change\n")
        wait_for(lambda: {"one.txt", "two.txt"} <= set(w.index()))
        assert w.error is None


def test_the_first_update_failing_is_raised(root: Path) -> None:
    def update() -> None:
        raise IndexWriteError("read-only file system")

    stop = threading.Event()
    stop.set()  # were it only said, the watch would end here
    with pytest.raises(IndexWriteError):
        watch(root, root / ".msearch", update, print, stop=stop)


@pytest.mark.parametrize("how", ["chmod", "denied"])
def test_an_unreadable_file_is_skipped_and_the_watch_goes_on(
    root: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "chmod" and IS_ROOT:
        pytest.skip("root reads files whatever their mode")
    if how == "denied":  # what chmod 000 does, where the tests run as root
        deny_reading(monkeypatch, "locked.txt")
    with Watching(root) as w:
        locked = write(root, "locked.txt", "secret\n")
        if how == "chmod":
            locked.chmod(0)
        wait_for(lambda: any(s.rel == "locked.txt" for s in w.stats[-1].skipped))
        assert [s.reason for s in w.stats[-1].skipped] == ["unreadable (Permission denied)"]
        write(root, "after.txt", "still watching\n")
        wait_for(lambda: "after.txt" in w.index())
        assert "locked.txt" not in w.index()
        assert w.error is None and w.notices == []
        locked.chmod(0o644)


@pytest.mark.skipif(IS_ROOT, reason="root reads folders whatever their mode")
def test_an_unreadable_folder_does_not_stop_the_watch(root: Path) -> None:
    write(root, "private/diary.txt", "dear diary\n")
    (root / "private").chmod(0)
    try:
        with Watching(root) as w:
            assert [s.rel for s in w.stats[-1].skipped] == ["private"]
            write(root, "after.txt", "still watching\n")
            wait_for(lambda: "after.txt" in w.index())
            assert w.error is None and w.notices == []
    finally:
        (root / "private").chmod(0o755)


def test_changes_in_the_index_folder_trigger_no_update(root: Path) -> None:
    with Watching(root) as w:
        assert w.quiet_updates() == 0  # its own commits trigger nothing
        for i in range(20):
            write(w.index_dir, f"junk{i}.tmp", "x")
            write(root, f".git/objects/o{i}", "git writes here on every command")
        assert w.quiet_updates() == 0
        write(root, "real.txt", "a real change\n")
        wait_for(lambda: "real.txt" in w.index())
        assert w.quiet_updates() == 0
        # The index folder itself deleted: built again.
        shutil.rmtree(w.index_dir)
        wait_for(lambda: set(w.index()) == {"moon.md", "bread.txt", "real.txt"})
        assert w.error is None


def test_an_index_folder_elsewhere_inside_the_root_is_ignored_too(root: Path) -> None:
    with Watching(root, root / "my-index") as w:
        assert "my-index" not in str(w.index())
        assert w.quiet_updates() == 0
        write(root, "real.txt", "a real change\n")
        wait_for(lambda: "real.txt" in w.index())
        assert w.quiet_updates() == 0


def test_a_missing_watchfiles_says_how_to_install_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import fails
    with pytest.raises(UsageError, match=r"pip install 'msearch\[watch\]'"):
        watch(root, root / ".msearch", lambda: None, print)
    r = cli("watch", str(root))
    r.one_line_error("needs the watch extra")


# ------------------------------------------------------------------ the CLI


def test_report_says_a_skipped_file_once_and_quiet_updates_not_at_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from msearch.cli import _WatchReport

    report = _WatchReport(Path("notes"))
    locked = Skipped("locked.txt", "unreadable (Permission denied)")
    report(IndexStats(files=2, unchanged=2))
    first = capsys.readouterr().err.splitlines()
    assert first[0].startswith("msearch: indexed 2 files (0 added")
    assert first[1:] == ["msearch: watching notes for changes (Ctrl-C stops)"]
    report(IndexStats(files=2, unchanged=2))  # nothing changed: nothing said
    assert capsys.readouterr().err == ""
    report(IndexStats(files=2, removed=1, unchanged=1, skipped=[locked]))
    said = capsys.readouterr().err.splitlines()
    assert said[0] == "msearch: skipped locked.txt: unreadable (Permission denied)"
    assert said[1].startswith("msearch: indexed 2 files (0 added, 0 changed, 1 removed")
    report(IndexStats(files=3, added=1, unchanged=1, skipped=[locked]))  # still skipped
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith("msearch: indexed 3 files (1 added")


def watch_cli_until_gone(root: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    """``msearch watch ROOT ARGS -q`` in process; once its first update is
    committed, what the index records, and then ROOT deleted."""
    index_dir = Path(args[args.index("--index") + 1])
    seen: dict[str, Any] = {}
    before = record.read_meta(index_dir).updated if index_dir.exists() else None

    def then_delete() -> None:
        def updated() -> bool:
            try:
                return record.read_meta(index_dir).updated != before
            except MsearchError:
                return False

        wait_for(updated)
        meta = record.read_meta(index_dir)
        seen.update(walk=meta.walk, chunking=meta.chunking)
        shutil.rmtree(root)
        if not done.wait(TIMEOUT):  # still watching: Ctrl-C, so that the test fails, not hangs
            os.kill(os.getpid(), signal.SIGINT)

    done = threading.Event()
    t = threading.Thread(target=then_delete, daemon=True)
    t.start()
    try:
        r = cli("watch", str(root), *args, "-q")
    finally:
        done.set()
    t.join(TIMEOUT)
    return r, seen


def test_cli_a_vanished_folder_is_one_line_and_exit_2(
    root: Path, tmp_path: Path, use_fake: FakeEmbedder
) -> None:
    cli("watch", str(tmp_path / "nowhere")).one_line_error("nowhere: no such folder")
    r, _ = watch_cli_until_gone(root, "--index", str(tmp_path / "index"))
    r.one_line_error(f"{root} vanished; stopped watching")


@pytest.mark.parametrize("given", [[], ["--chunk-tokens", "40", "--hidden"]])
def test_cli_keeps_the_options_the_index_records_unless_given(
    root: Path, tmp_path: Path, use_fake: FakeEmbedder, given: list[str]
) -> None:
    index_dir = tmp_path / "index"
    made_with = ["--chunk-tokens", "32", "--overlap-tokens", "4", "--exclude", "*.md"]
    r = cli("index", str(root), "--index", str(index_dir), *made_with, "-q")
    assert r.code == 0, r.stderr
    r, seen = watch_cli_until_gone(root, "--index", str(index_dir), *given)
    r.one_line_error("vanished")  # no "rebuilding the whole index" before it
    # --overlap-tokens not given: the index's 4, not the default 32.
    assert seen["chunking"] == {
        "max_tokens": 40 if given else 32,
        "overlap_tokens": 4,
        "structure": True,
    }
    assert seen["walk"]["hidden"] is bool(given)
    assert seen["walk"]["exclude"] == ["*.md"]


@pytest.mark.model
def test_cli_ctrl_c_stops_cleanly_with_the_real_model(tmp_path: Path) -> None:
    from conftest import SAMPLE

    root = tmp_path / "notes"
    root.mkdir()
    for name in ("astronomy", "cooking"):
        shutil.copytree(SAMPLE / name, root / name)
    index_dir = root / ".msearch"
    proc = subprocess.Popen(
        [sys.executable, "-m", "msearch", "watch", str(root), "--model", "all-MiniLM-L6-v2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    # stderr is read as it comes: the update's report line is printed just
    # after its commit, so a Ctrl-C sent on seeing the commit could land
    # between the two (CI once caught that race).
    lines: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    stderr = proc.stderr

    def read_stderr() -> None:
        for line in stderr:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()

    def reported() -> bool:
        return any(ln.startswith("msearch: indexed ") and "(1 added" in ln for ln in lines)

    try:
        wait_for(lambda: committed(index_dir) or proc.poll() is not None, timeout=120)
        write(root, "new.txt", "the zyxwv is a rare bird\n")
        wait_for(lambda: "new.txt" in committed(index_dir), timeout=30)
        wait_for(lambda: reported() or proc.poll() is not None, timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        out = proc.stdout.read()
    finally:
        proc.kill()
        reader.join(timeout=30)
    err = "\n".join(lines)
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err
    assert lines[-1] == "msearch: stopped watching"
    assert f"msearch: watching {root} for changes (Ctrl-C stops)" in lines
    assert reported()
