"""Safety with the user's files and with an index from elsewhere: never
lose, overwrite or leak a user's data, and never answer with a traceback.
Each test is named for the behaviour it checks (docs/safety.md lists the
rules)."""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clihelp import cli
from conftest import FakeEmbedder, snapshot, write
from msearch.storage import disk, layout, ownership, record, segment

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def notes(tmp_path: Path, use_fake: FakeEmbedder) -> Path:
    root = tmp_path / "notes"
    write(root, "moon.md", "# Moon\n\nThe moon has phases: new, crescent, full.\n")
    write(root, "bread.txt", "Knead the bread dough and let the bread rise.\n")
    return root


def indexed(root: Path, *extra: str) -> Path:
    r = cli("index", str(root), *extra)
    assert r.code == 0, r.stderr
    return root / ".msearch"


def edit_meta(index_dir: Path, change: dict[str, object]) -> None:
    path = index_dir / layout.META_NAME
    data = json.loads(path.read_text())
    for key, value in change.items():
        target = data
        *parents, last = key.split(".")
        for p in parents:
            target = target[int(p) if p.isdigit() else p]
        target[int(last) if last.isdigit() else last] = value
    path.write_text(json.dumps(data))


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging forever (the FIFO cases)."""

    def boom(signum: int, frame: object) -> None:
        raise TimeoutError("msearch blocked")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------- data loss and leaks


def test_index_aimed_at_an_ordinary_folder_is_refused(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    notes, myidx = tmp_path / "notes", tmp_path / "myidx"
    write(notes, "a.txt", "lemon\n")
    write(notes, "data-2024/h.txt", "harvest\n")
    write(notes, "meta.json", "mine\n")
    write(myidx, "data-old/x.txt", "keep\n")
    before = snapshot(tmp_path)

    r = cli("index", "notes", env={"MSEARCH_INDEX": str(myidx)})
    r.one_line_error("myidx", "not an msearch index")
    r = cli("index", "notes", "--index", "notes")
    r.one_line_error("not an msearch index")
    r = cli("index", "notes", "--index", "notes", "--full")
    r.one_line_error("not an msearch index")
    assert snapshot(tmp_path) == before
    assert not (notes / "lock").exists() and not (myidx / "lock").exists()


def test_index_writes_only_into_a_new_empty_or_marked_folder(
    tmp_path: Path, use_fake: FakeEmbedder
) -> None:
    root = tmp_path / "notes"
    write(root, "a.txt", "lemon tree\n")
    # A new or empty folder is fine, and gets msearch's marker.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("index", str(root), "--index", str(empty)).code == 0
    assert (empty / layout.MARKER_NAME).is_file()
    assert cli("index", str(root), "--index", str(tmp_path / "new" / "idx")).code == 0
    # A file is not a folder.
    write(tmp_path, "file", "x")
    cli("index", str(root), "--index", str(tmp_path / "file")).one_line_error("not a folder")
    # A folder named .msearch belongs in the folder it indexes.
    r = cli("index", str(root), "--index", str(tmp_path / "elsewhere" / ".msearch"))
    r.one_line_error(".msearch", "another name")


def test_cleanup_removes_only_generations_the_marker_records(tmp_path: Path, notes: Path) -> None:
    index_dir = indexed(notes)
    # Things a user (or another tool) put inside the index folder, named like
    # msearch's own: not recorded by msearch, so never deleted.
    write(index_dir, "data-0123456789ab/mine.txt", "precious\n")
    write(index_dir, "data-x/mine.txt", "precious\n")
    write(notes, "moon.md", "changed text about the moon\n")
    first = record.read_meta(index_dir).segments[0].name
    assert cli("index", str(notes), "--compact").code == 0
    assert not (index_dir / first).exists()  # msearch's own old generation: removed
    assert (index_dir / "data-0123456789ab/mine.txt").read_text() == "precious\n"
    assert (index_dir / "data-x/mine.txt").read_text() == "precious\n"
    marker = ownership.read_marker(index_dir)
    assert marker is not None and marker.generations == [
        record.read_meta(index_dir).segments[0].name
    ]


def test_an_index_of_an_older_msearch_is_adopted(tmp_path: Path, notes: Path) -> None:
    index_dir = indexed(notes)
    (index_dir / layout.MARKER_NAME).unlink()  # as an index from before the marker
    write(notes, "new.txt", "a new note about tea\n")
    r = cli("index", str(notes))
    assert r.code == 0 and "1 added" in r.stderr
    assert (index_dir / layout.MARKER_NAME).is_file()


def test_a_damaged_index_is_rebuilt_but_a_folder_of_the_user_s_is_refused(
    tmp_path: Path, notes: Path
) -> None:
    index_dir = indexed(notes)
    (index_dir / "meta.json").write_text("{damaged")
    r = cli("index", str(notes))
    assert r.code == 0 and "damaged" in r.stderr and "rebuilding" in r.stderr
    # Without the marker, a folder with an unreadable meta.json is not
    # recognisably msearch's: refused, never "rebuilt".
    other = tmp_path / "other"
    write(other, "meta.json", "{damaged")
    r = cli("index", str(notes), "--index", str(other))
    r.one_line_error("not an msearch index")
    assert "rebuilding it" not in r.stderr and (other / "meta.json").read_text() == "{damaged"


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path: Path, notes: Path) -> None:
    index_dir = indexed(notes)
    precious = tmp_path / "precious.txt"
    precious.write_text("my thesis\n")
    (index_dir / "lock").unlink()
    (index_dir / "lock").symlink_to(precious)
    r = cli("index", str(notes), "--full")
    r.one_line_error("lock", "symbolic link")
    assert precious.read_text() == "my thesis\n"
    # A hard link is refused too: the lock must be msearch's alone.
    (index_dir / "lock").unlink()
    os.link(precious, index_dir / "lock")
    cli("index", str(notes)).one_line_error("lock")
    assert precious.read_text() == "my thesis\n"


def test_a_symlinked_meta_or_marker_is_refused(tmp_path: Path, notes: Path) -> None:
    index_dir = indexed(notes)
    precious = tmp_path / "precious.json"
    precious.write_text("{}")
    (index_dir / "meta.json").unlink()
    (index_dir / "meta.json").symlink_to(precious)
    cli("index", str(notes)).one_line_error("meta.json", "symbolic link")
    cli("query", "moon", "--index", str(index_dir)).one_line_error("meta.json")
    assert precious.read_text() == "{}"
    (index_dir / "meta.json").unlink()
    (index_dir / layout.MARKER_NAME).unlink()
    (index_dir / layout.MARKER_NAME).symlink_to(precious)
    cli("index", str(notes)).one_line_error(layout.MARKER_NAME)
    assert precious.read_text() == "{}"


def test_a_symlinked_data_folder_is_not_followed(tmp_path: Path, notes: Path) -> None:
    index_dir = indexed(notes)
    data = record.read_meta(index_dir).segments[0].name
    outside = tmp_path / "outside"
    (index_dir / data).rename(outside)
    (index_dir / data).symlink_to(outside)
    cli("query", "moon", "--index", str(index_dir)).one_line_error(data, "symbolic link")
    # Re-indexing rebuilds; cleanup never follows the link into the user's folder.
    r = cli("index", str(notes))
    assert r.code == 0
    assert (outside / segment.EMBEDDINGS_NAME).is_file()
    # A link in an index file's place is refused as well.
    index_dir = indexed(notes, "--full")
    data_dir = index_dir / record.read_meta(index_dir).segments[0].name
    target = tmp_path / "emb.npy"
    (data_dir / segment.EMBEDDINGS_NAME).rename(target)
    (data_dir / segment.EMBEDDINGS_NAME).symlink_to(target)
    cli("query", "moon", "--index", str(index_dir)).one_line_error("embeddings.npy")


@pytest.mark.parametrize(
    "change",
    [
        {"files.path": ["../secret.txt", "moon.md"]},
        {"files.path": [None, "moon.md"]},
        {"segments.0.name": "../outside"},
        {"segments.0.name": "/tmp"},
        {"segments.0.name": "seg-0123456789ab"},
        {"root": "/"},
        {"root": "relative/dir"},
        {"root": "/a/../b"},
    ],
    ids=[
        "dotdot",
        "not-a-string",
        "segment-dotdot",
        "segment-absolute",
        "segment-elsewhere",
        "root-slash",
        "root-rel",
        "root-dots",
    ],
)
def test_a_crafted_meta_cannot_read_outside_the_root(
    tmp_path: Path, notes: Path, change: dict[str, object]
) -> None:
    index_dir = indexed(notes)
    meta = json.loads((index_dir / "meta.json").read_text())
    # The secret has exactly the size and hash the index records for the
    # first file, so that msearch would print it if it read it.
    first = meta["files"]["path"][0]
    secret = tmp_path / "secret.txt"
    secret.write_bytes((notes / first).read_bytes())
    edit_meta(index_dir, change)
    for args in (("query", "moon bread"), ("status",)):
        r = cli(*args, "--index", str(index_dir), "--format", "jsonl")
        if args == ("status",):
            r = cli(*args, "--index", str(index_dir))
        assert r.code == 2, (change, args, r.stderr)
        r.one_line_error()
        assert b"phases" not in r.stdout


def test_a_dot_msearch_index_always_searches_its_own_folder(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index named .msearch (found by looking upwards, or arrived with a
    repository) may not name another folder as its root."""
    index_dir = indexed(notes)
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, "moon.md", (notes / "moon.md").read_text())
    edit_meta(index_dir, {"root": str(elsewhere)})
    monkeypatch.chdir(notes)
    cli("query", "moon").one_line_error("not the folder it lies in")
    cli("status").one_line_error("not the folder it lies in")
    # Written the new way ("..") it moves along with its folder.
    index_dir = indexed(notes, "--full")
    assert json.loads((index_dir / "meta.json").read_text())["root"] == ".."
    moved = tmp_path / "moved"
    notes.rename(moved)
    monkeypatch.chdir(moved)
    r = cli("query", "moon phases", "--format", "jsonl")
    assert r.code == 0 and b"crescent" in r.stdout


def test_links_inside_the_root_are_not_followed_without_L(tmp_path: Path, notes: Path) -> None:
    index_dir = indexed(notes)
    secret = tmp_path / "secret.md"
    secret.write_bytes((notes / "moon.md").read_bytes())
    os.utime(secret, ns=(0, (notes / "moon.md").stat().st_mtime_ns))
    (notes / "moon.md").unlink()
    (notes / "moon.md").symlink_to(secret)  # same size, mtime and hash
    r = cli("query", "moon phases", "--index", str(index_dir), "--format", "jsonl")
    hits = [json.loads(x) for x in r.stdout.splitlines()]
    moon = [h for h in hits if h["path"].endswith("moon.md")]
    assert moon and all(h.get("stale") and h["text"] == "" for h in moon)


def test_file_names_that_are_not_utf8_round_trip_and_show_escaped(
    tmp_path: Path, notes: Path
) -> None:
    bad = os.fsencode(notes) + b"/bad\xffname.txt"
    with open(bad, "wb") as fh:
        fh.write(b"quince jelly recipe\n")
    r = cli("index", str(notes))
    assert r.code == 0, r.stderr
    r = cli("index", str(notes))  # round trip: the name reads back as itself
    assert r.code == 0 and "3 unchanged" in r.stderr, r.stderr
    index_dir = notes / ".msearch"
    json.loads((index_dir / "meta.json").read_bytes().decode("utf-8"))  # valid UTF-8 JSON

    r = cli("query", "quince jelly", "--index", str(index_dir), "--format", "jsonl", "-k", "1")
    hit = json.loads(r.stdout.decode("utf-8"))
    assert hit["path"].endswith("bad\ufffdname.txt")
    assert base64.b64decode(hit["path_bytes"]).endswith(b"bad\xffname.txt")
    assert hit["text"] == "quince jelly recipe" and not hit.get("stale")
    r = cli("query", "quince jelly", "--index", str(index_dir), "--format", "tsv", "-k", "1")
    assert "bad\\xffname.txt:1-1" in r.text
    r = cli("query", "quince jelly", "--index", str(index_dir), "-l", "-0", "-k", "1")
    assert r.stdout.endswith(b"bad\xffname.txt\0")
    r = cli("query", "quince jelly", "--index", str(index_dir), "-l", "-k", "1")
    assert r.stdout.endswith(b"bad\\xffname.txt\n")
    r = cli("query", "quince", "--index", str(index_dir), "--refresh", "--format", "jsonl")
    assert r.code == 0, r.stderr
    os.unlink(bad)
    r = cli("status", "--index", str(index_dir), "--json")
    st = json.loads(r.stdout.decode("utf-8"))
    assert r.code == 0 and st["deleted"] == ["bad\ufffdname.txt"]
    r = cli("status", "--index", str(index_dir))
    assert "deleted: bad\\xffname.txt" in r.text


def test_an_unreadable_subfolder_is_skipped_with_a_notice(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(notes, "locked/inner.txt", "hidden\n")
    locked = str(notes / "locked")
    real_stat, real_scandir = os.stat, os.scandir

    def deny_stat(path: object, *a: object, **k: object) -> os.stat_result:
        # (an int is a file descriptor: shutil.rmtree stats those)
        if not isinstance(path, int) and os.fspath(path).startswith(locked + "/"):  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))  # type: ignore[arg-type]
        return real_stat(path, *a, **k)  # type: ignore[arg-type]

    def deny_scandir(path: object = ".") -> object:
        if not isinstance(path, int) and os.fspath(path) == locked:  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return real_scandir(path)  # type: ignore[arg-type]

    # What a folder without read/execute permission does to the walk (as
    # root, permissions do not apply, so the calls are made to fail).
    monkeypatch.setattr(os, "stat", deny_stat)
    monkeypatch.setattr(os, "scandir", deny_scandir)
    r = cli("index", str(notes))
    assert r.code == 0, r.stderr
    assert "skipped locked: unreadable folder (Permission denied)" in r.stderr


@pytest.mark.skipif(IS_ROOT, reason="permissions do not apply to root")
def test_an_unreadable_subfolder_is_skipped_for_real(tmp_path: Path, notes: Path) -> None:
    locked = notes / "locked"
    write(locked, "inner.txt", "hidden\n")
    locked.chmod(0)
    try:
        r = cli("index", str(notes))
        assert r.code == 0 and "skipped locked: unreadable folder" in r.stderr
    finally:
        locked.chmod(0o755)


def test_an_unsearchable_current_folder_is_one_line(
    tmp_path: Path, use_fake: FakeEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "cwd", "a.txt", "text\n")
    monkeypatch.chdir(tmp_path / "cwd")
    real_scandir = os.scandir

    def deny(path: object = ".") -> object:
        if os.path.realpath(os.fspath(path)) == str(tmp_path / "cwd"):  # type: ignore[arg-type]
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))  # type: ignore[arg-type]
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", deny)
    r = cli("index", ".")
    assert r.code == 0, r.stderr
    assert "skipped .: unreadable folder" in r.stderr and "indexed 0 files" in r.stderr


def test_query_bytes_that_are_not_utf8_are_decoded_with_replacement(notes: Path) -> None:
    from msearch.cli import query_text

    index_dir = indexed(notes)
    assert query_text("moon \udcff\udcfe") == "moon \ufffd\ufffd"
    r = cli("query", "moon \udcff", "--index", str(index_dir), "--format", "jsonl")
    assert r.code == 0 and "Traceback" not in r.stderr
    r = cli("query", "-", "--index", str(index_dir), "--format", "jsonl", input=b"\xff\xfe moon\n")
    assert r.code == 0 and "Traceback" not in r.stderr
    assert json.loads(r.stdout.splitlines()[0])["query"] == "\ufffd\ufffd moon"


def test_device_cuda_without_cuda_is_one_line(notes: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cli("index", str(notes), "--device", "cuda").one_line_error("--device cuda", "CUDA")
    index_dir = indexed(notes)
    cli("query", "moon", "--index", str(index_dir), "--device", "cuda").one_line_error("CUDA")


def test_a_fifo_or_device_in_place_of_an_indexed_file_makes_its_hits_stale(
    tmp_path: Path, notes: Path, alarm: None
) -> None:
    index_dir = indexed(notes)
    (notes / "moon.md").unlink()
    os.mkfifo(notes / "moon.md")
    r = cli("query", "moon phases", "--index", str(index_dir), "--format", "jsonl")
    assert r.code == 0
    assert any(json.loads(x).get("stale") for x in r.stdout.splitlines())
    assert cli("status", "--index", str(index_dir)).code == 0
    assert cli("query", "moon", "--index", str(index_dir), "--refresh").code in (0, 1)
    (notes / "moon.md").unlink()
    (notes / "moon.md").symlink_to("/dev/zero")
    r = cli("query", "moon phases", "--index", str(index_dir), "--format", "jsonl")
    assert r.code in (0, 1) and "Traceback" not in r.stderr
    r = cli("index", str(notes), "--follow")
    assert r.code == 0


def test_read_bytes_refuses_what_is_not_a_regular_file(tmp_path: Path, alarm: None) -> None:
    from msearch.walk import NotText, read_bytes

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotText, match="regular"):
        read_bytes(tmp_path / "fifo")
    with pytest.raises(NotText, match="regular"):
        read_bytes(Path("/dev/zero"), 100)
    big = write(tmp_path, "big.txt", "x" * 1000)
    with pytest.raises(NotText, match="size limit"):
        read_bytes(big, 999)
    os.symlink(big, tmp_path / "link")
    with pytest.raises(NotText, match="link"):
        read_bytes(tmp_path / "link", 5000, follow=False)
    assert read_bytes(tmp_path / "link", 5000) == b"x" * 1000


def _fail_on(monkeypatch: pytest.MonkeyPatch, target: object, name: str, err: int) -> None:
    def boom(*a: object, **k: object) -> object:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(target, name, boom)


@pytest.mark.parametrize(
    "where, err",
    [
        ("write", errno.ENOSPC),
        ("write", errno.EFBIG),
        ("mkdir", errno.EROFS),
        ("replace", errno.EPERM),
    ],
)
def test_os_errors_while_writing_are_one_line_and_keep_the_previous_index(
    tmp_path: Path, notes: Path, monkeypatch: pytest.MonkeyPatch, where: str, err: int
) -> None:
    index_dir = indexed(notes)
    before = record.read_meta(index_dir).segments[0].name
    write(notes, "new.txt", "a note about the harvest moon\n")
    with monkeypatch.context() as m:
        if where == "write":
            real = disk.create_new

            class Full:
                def __init__(self, fh: object) -> None:
                    self.fh = fh

                def __getattr__(self, name: str) -> object:
                    return getattr(self.fh, name)

                def __enter__(self) -> Full:
                    return self

                def __exit__(self, *exc: object) -> None:
                    self.fh.close()  # type: ignore[attr-defined]

                def write(self, data: bytes) -> int:
                    raise OSError(err, os.strerror(err))

            m.setattr(disk, "create_new", lambda path: Full(real(path)))
        elif where == "mkdir":
            _fail_on(m, ownership.os, "mkdir", err)
        else:
            _fail_on(m, ownership.os, "replace", err)
        r = cli("index", str(notes))
    r.one_line_error("cannot write", os.strerror(err), "previous index is unchanged")
    assert record.read_meta(index_dir).segments[0].name == before
    r = cli("query", "moon", "--index", str(index_dir), "--format", "jsonl")
    assert r.code == 0  # the previous index still answers


def test_a_file_size_limit_is_one_line_for_real(tmp_path: Path) -> None:
    """``ulimit -f``: writes past the limit fail with EFBIG (Python ignores SIGXFSZ)."""
    import subprocess

    root = tmp_path / "notes"
    for i in range(40):
        write(root, f"n{i}.txt", f"note {i} " + "words " * 200 + "\n")
    script = Path(__file__).parent / "fake_cli.py"
    cmd = [sys.executable, str(script), "index", str(root), "-q"]

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000, 2_000))

    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "File too large" in lines[0]


def test_a_read_only_index_folder_is_one_line_for_real(tmp_path: Path, notes: Path) -> None:
    if IS_ROOT:
        pytest.skip("permissions do not apply to root (the monkeypatched cases cover it)")
    index_dir = indexed(notes)
    write(notes, "new.txt", "new\n")
    index_dir.chmod(0o555)
    try:
        cli("index", str(notes)).one_line_error("cannot write")
    finally:
        index_dir.chmod(0o755)


@pytest.mark.parametrize("size", ["nan", "inf", "1e400", "-1", "0", "0.5", "abc", "4X"])
def test_a_bad_max_file_size_is_refused(notes: Path, size: str) -> None:
    cli("index", str(notes), "--max-file-size", size).one_line_error("size")


@pytest.mark.parametrize(
    "args",
    [["--exclude", "***/!/[z-a]"], ["-g", "["], ["--include", "a[b"], ["--exclude", "x\\"]],
)
def test_bad_globs_are_refused(notes: Path, args: list[str]) -> None:
    r = cli("index", str(notes), *args)
    r.one_line_error(repr(args[1]))
    assert not (notes / ".msearch").exists()


def test_truncated_model_weights_are_one_line(tmp_path: Path) -> None:
    import shutil

    from msearch.encoders import bundled_model_path

    folder = tmp_path / "model"
    shutil.copytree(bundled_model_path(), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    root = tmp_path / "notes"
    write(root, "a.txt", "text\n")
    cli("index", str(root), "--model", str(folder)).one_line_error("model.safetensors", "damaged")


def test_a_malformed_model_record_is_one_line_and_index_rebuilds(
    tmp_path: Path, notes: Path
) -> None:
    index_dir = indexed(notes)
    edit_meta(index_dir, {"model": {"dim": 32}})
    cli("query", "moon", "--index", str(index_dir)).one_line_error("model record")
    cli("query", "moon", "--index", str(index_dir), "--refresh").one_line_error("model record")
    assert cli("index", str(notes)).code == 0
    edit_meta(index_dir, {"model": {"dim": 32}})
    assert cli("index", str(notes), "--full").code == 0
    r = cli("query", "moon", "--index", str(index_dir), "--format", "jsonl")
    assert r.code == 0


def test_a_meta_json_that_is_a_folder_is_moved_aside_never_deleted(
    tmp_path: Path, notes: Path
) -> None:
    index_dir = indexed(notes)
    (index_dir / "meta.json").unlink()
    write(index_dir, "meta.json/inside.txt", "whatever this is\n")
    cli("query", "moon", "--index", str(index_dir)).one_line_error("meta.json")
    for args in ((), ("--full",)):
        r = cli("index", str(notes), *args)
        assert r.code == 0, r.stderr
        if not args:
            assert "moved it to" in r.stderr
    moved = [p for p in index_dir.iterdir() if p.name.startswith("meta.json.moved-")]
    assert len(moved) == 1 and (moved[0] / "inside.txt").read_text() == "whatever this is\n"
    assert cli("query", "moon", "--index", str(index_dir), "--format", "jsonl").code == 0


def _deep_tree(base: Path, depth: int) -> None:
    fd = os.open(base, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as fh:
            fh.write("the bottom of a very deep folder tree\n")
    finally:
        os.close(fd)


def _remove_deep(base: Path) -> None:
    """Undo _deep_tree without recursion (shutil.rmtree recurses)."""
    while (base / "d").exists():
        path = base
        while (path / "d" / "d").exists():
            path = path / "d"
        for entry in os.scandir(path / "d"):
            os.unlink(entry.path)
        os.rmdir(path / "d")


def test_a_folder_tree_1100_levels_deep_is_walked(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    _deep_tree(root, 1100)
    try:
        r = cli("index", str(root))
        assert r.code == 0, r.stderr
        assert "indexed 1 files" in r.stderr
        r = cli("status", "--index", str(root / ".msearch"))
        assert r.code == 0
        r = cli("query", "very deep folder", "--index", str(root / ".msearch"), "--format", "tsv")
        assert r.code == 0 and b"deep.txt" in r.stdout
    finally:
        _remove_deep(root)


def test_an_unexpected_exception_is_exit_2_and_one_line(
    notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import msearch.query

    index_dir = indexed(notes)

    def broken(*a: object, **k: object) -> object:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(msearch.query.Searcher, "query_many", broken)
    r = cli("query", "moon", "--index", str(index_dir))
    r.one_line_error("internal error", "RuntimeError", "something nobody expected", "report")
    r = cli("query", "moon", "--index", str(index_dir), env={"MSEARCH_DEBUG": "1"})
    assert r.code == 2 and "Traceback" in r.stderr and "internal error" in r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--min-score", "nan"], "--min-score"),
        (["--min-score", "inf"], "--min-score"),
        (["-k", "0"], "-k"),
    ],
)
def test_bad_query_options_are_one_line(notes: Path, args: list[str], needle: str) -> None:
    index_dir = indexed(notes)
    cli("query", "moon", "--index", str(index_dir), *args).one_line_error(needle)


def test_bad_index_options_are_one_line(notes: Path) -> None:
    cli("index", str(notes), "--max-file-size", "0.5").one_line_error("size")
    # The fake model sees 64 tokens: 100000 is capped to 64, and an overlap
    # of 300 is then checked against 64.
    r = cli("index", str(notes), "--chunk-tokens", "100000", "--overlap-tokens", "300")
    r.one_line_error("--overlap-tokens (300)", "64")


@pytest.mark.parametrize("column, value", [(1, -3), (2, -1), (3, -5), (4, 10**6), (0, 99)])
def test_a_damaged_passage_table_is_refused(notes: Path, column: int, value: int) -> None:
    index_dir = indexed(notes)
    path = index_dir / record.read_meta(index_dir).segments[0].name / segment.PASSAGES_NAME
    rows = np.load(path)
    rows[:, column] = value
    path.unlink()
    np.save(path, rows)
    cli("status", "--index", str(index_dir)).one_line_error("passages.npy")
    r = cli("query", "moon", "--index", str(index_dir), "--format", "jsonl")
    if column == 0:
        # The file ordinal is not what queries use to find a passage's file
        # (the file table is): they answer as before.
        assert r.code == 0 and b"crescent" in r.stdout
    else:
        r.one_line_error("passages.npy")


def test_nan_vectors_are_refused(notes: Path) -> None:
    index_dir = indexed(notes)
    path = index_dir / record.read_meta(index_dir).segments[0].name / segment.EMBEDDINGS_NAME
    data = bytearray(path.read_bytes())
    data[-4:] = np.array([np.nan], dtype="<f4").tobytes()
    path.write_bytes(bytes(data))
    cli("query", "moon", "--index", str(index_dir)).one_line_error("invalid numbers")
    cli("status", "--index", str(index_dir)).one_line_error("embeddings.npy", "damaged")


def test_terminal_escapes_are_shown_not_obeyed(tmp_path: Path, use_fake: FakeEmbedder) -> None:
    root = tmp_path / "notes"
    prose = "The moon shows its phases to anyone who looks up at night. " * 3
    nasty = prose + "moon \x1b[2J\x1b]0;pwned\x07 \x1b[31mred\x1b[0m phases \x9b31m\n"
    write(root, "esc\x1b[1mname.txt", nasty)
    index_dir = indexed(root)
    for fmt in ("table", "tsv"):
        for color in ("never", "always"):
            r = cli(
                "query", "moon phases", "--index", str(index_dir), "--format", fmt, "--color", color
            )
            assert r.code == 0
            if color == "never":
                assert b"\x1b" not in r.stdout and "\x9b".encode() not in r.stdout
            # What the file said is still there, escaped:
            assert b"\\x1b[2J" in r.stdout and b"esc\\x1b[1mname.txt" in r.stdout
            # and with --color always only rich's own styles reach the terminal.
            assert b"\x1b[2J" not in r.stdout and b"\x1b]0;" not in r.stdout
    r = cli("index", str(root), "--exclude", "*.txt")
    assert "\x1b" not in r.stderr


def test_long_lines_are_tokenized_a_piece_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every tokenizer call sees a bounded amount of text, and the passages
    are those of one call on the whole line (property-tested in test_chunk)."""
    import msearch.chunking.lines as chunk
    from msearch.chunking import ChunkSettings, WhitespaceCounter, chunk_text

    seen: list[int] = []

    class Recording(WhitespaceCounter):
        def count(self, texts):  # type: ignore[no-untyped-def]
            seen.append(sum(len(t) for t in texts))
            return super().count(texts)

        def split(self, text, max_tokens, first=None):  # type: ignore[no-untyped-def]
            seen.append(len(text))
            return super().split(text, max_tokens, first)

    line = " ".join(f"w{i}" for i in range(400_000))  # ~2.7 MB on one line
    settings = ChunkSettings(max_tokens=64, overlap_tokens=8)
    got = chunk_text("title\n" + line + "\n", Recording(), settings)
    assert max(seen) <= chunk.COUNT_GROUP_CHARS + chunk.PIECE_CHARS
    monkeypatch.setattr(chunk, "PIECE_CHARS", 10**9)
    monkeypatch.setattr(chunk, "COUNT_GROUP_CHARS", 10**10)
    whole = chunk_text("title\n" + line + "\n", WhitespaceCounter(), settings)
    assert got == whole


def test_a_long_file_is_embedded_window_by_window(tmp_path: Path, fake: FakeEmbedder) -> None:
    import msearch.indexer as indexer
    from msearch.chunking import ChunkSettings
    from msearch.config import IndexConfig

    sizes: list[int] = []
    real = fake.encode

    def encode(texts, batch_size=32):  # type: ignore[no-untyped-def]
        sizes.append(len(texts))
        return real(texts, batch_size)

    fake.encode = encode  # type: ignore[method-assign]
    root = tmp_path / "notes"
    write(root, "long.txt", " ".join(f"word{i}" for i in range(3000)) + "\n")
    stats = indexer.build_index(
        root,
        root / ".msearch",
        fake,
        chunking=ChunkSettings(max_tokens=16, overlap_tokens=2),
        config=IndexConfig(window=16),
    )
    assert stats.passages > 100 and max(sizes) <= 16 + 1


def test_ctrl_c_during_chunking_of_a_huge_line_stops_at_once(tmp_path: Path) -> None:
    """SIGINT while the real tokenizer works on a 20 MB line: out within a second."""
    import subprocess
    import time

    root = tmp_path / "notes"
    root.mkdir()
    words = ("harvest moon tide river stone bread " * 600_000).encode()
    (root / "huge.txt").write_bytes(words)
    script = Path(__file__).parent / "fake_cli.py"
    proc = subprocess.Popen(
        [sys.executable, script, "--real-tokenizer", "index", str(root), "--max-file-size", "100M"],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # imports, walk, then chunking of the huge line
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 1.5, err
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, hint",
    [
        (["query", "moon", "--min-score", "abc"], "msearch query --help"),
        (["query", "moon", "--format", "bad"], "msearch query --help"),
        (["query"], "msearch query --help"),
        (["index"], "msearch index --help"),
        (["index", ".", "--nope"], "msearch index --help"),
        (["nope"], "msearch --help"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], hint: str) -> None:
    r = cli(*args)
    r.one_line_error(hint)


def test_no_arguments_prints_help() -> None:
    r = cli()
    assert r.code == 2 and b"index" in r.stdout and b"query" in r.stdout


def test_a_fifo_named_gitignore_does_not_block_the_walk(
    tmp_path: Path, use_fake: FakeEmbedder, alarm: None
) -> None:
    root = tmp_path / "notes"
    write(root, "a.txt", "a note about the moon\n")
    os.mkfifo(root / ".gitignore")
    r = cli("index", str(root))
    assert r.code == 0 and "indexed 1 files" in r.stderr


def test_a_huge_recorded_size_allocates_nothing(notes: Path) -> None:
    """A damaged size in the file table (a terabyte) must not make a read
    allocate it up front (found by the damaged-index fuzz test)."""
    index_dir = indexed(notes)
    edit_meta(index_dir, {"files.size": [2**40, 2**40]})
    r = cli("query", "moon", "--index", str(index_dir), "--format", "jsonl")
    assert r.code == 0 and all(json.loads(x).get("stale") for x in r.stdout.splitlines())
    assert cli("status", "--index", str(index_dir)).code in (0, 2)
