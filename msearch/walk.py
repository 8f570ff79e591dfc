"""Which files of a folder get indexed, and how their bytes become text.

The walk is deliberately conservative: users point msearch at folders full of
things they never meant to search (lock files, vendored dependencies, build
output, binaries), and every such file costs embedding time and pollutes
results. Each skip is reported with a reason so nothing disappears silently.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msearch.errors import UsageError
from msearch.storage import safefs
from msearch.storage.layout import INDEX_DIR_NAME

DEFAULT_MAX_FILE_SIZE = 4 * 1024 * 1024

# Folders that are almost never what a user wants to search.
NOISE_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "site-packages",
        "bower_components",
        # Vendored dependencies: other projects' code, copied in.
        "vendor",
        "third_party",
        "thirdparty",
    }
)
# Machine-written lock files: long, repetitive, never the answer to a question.
NOISE_FILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "Pipfile.lock",
        "uv.lock",
        "pdm.lock",
        "Cargo.lock",
        "Gemfile.lock",
        "composer.lock",
        "go.sum",
        "flake.lock",
        "bun.lockb",
    }
)
NOISE_GLOBS = ("*.min.js", "*.min.css", "*.map")
# A line this long is minified code or data, not prose.
MINIFIED_LINE_LENGTH = 5000
MINIFIED_SPACE_SHARE = 0.05
BINARY_SNIFF_BYTES = 8192
IGNORE_FILE_MAX_BYTES = 16 << 20
# Control characters that text files do not contain, as bytes that
# bytes.translate deletes: counted in the text's UTF-8, where each is one
# byte (no byte below 0x20 is part of a longer character), a C loop over a
# table. str.translate with a dict was as fast only on ASCII text: 0.1 ms
# a file with one accent, twice per file.
_CONTROL_BYTES = bytes(c for c in range(32) if chr(c) not in "\n\r\t\f\v")


@dataclass(frozen=True)
class WalkOptions:
    """Everything that decides which files are indexed.

    Part of it is stored in the index so that a re-index with other options
    is recognised as a different index.
    """

    hidden: bool = False
    follow_symlinks: bool = False
    use_ignore_files: bool = True
    include_noise: bool = False
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileEntry:
    path: Path
    rel: str  # POSIX path relative to the root: the file's identity in the index
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    rel: str
    reason: str


@dataclass
class WalkResult:
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def check_globs(patterns: Sequence[str], option: str = "--include") -> None:
    """Refuse a glob that gitignore syntax cannot read, or that can match
    nothing because a ``[`` is never closed (it would silently index nothing)."""
    import pathspec

    for pattern in patterns:
        if "\0" in pattern:
            raise UsageError(f"{option} {pattern!r}: a glob cannot hold a NUL character")
        if _unclosed_bracket(pattern):
            raise UsageError(f"{option} {pattern!r}: a '[' is never closed")
        try:
            pathspec.GitIgnoreSpec.from_lines([pattern])
        except Exception as exc:  # re.error, pathspec's own pattern errors
            raise UsageError(f"{option} {pattern!r} is not a valid glob ({exc})") from None


def _unclosed_bracket(pattern: str) -> bool:
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] in "!^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 1
            if j >= len(pattern):
                return True
            i = j
        i += 1
    return False


def _glob_matcher(patterns: Sequence[str]) -> Any:
    """Globs with gitignore semantics, like ripgrep's ``-g``: ``*`` stops at "/",
    a pattern without "/" matches a name at any depth, ``**`` crosses folders."""
    if not patterns:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns)


class _IgnoreRules:
    """The .gitignore/.ignore files seen on the way down, innermost last."""

    def __init__(self, chain: tuple[tuple[str, Any], ...] = ()) -> None:
        self.chain = chain

    def descend(self, dir_path: Path, rel_dir: str) -> _IgnoreRules:
        lines: list[str] = []
        for name in (".gitignore", ".ignore"):
            try:
                # Regular files only: a FIFO named .gitignore must not block the walk.
                raw = safefs.read_regular(dir_path / name, IGNORE_FILE_MAX_BYTES)
            except OSError:
                continue
            lines.extend(raw.decode("utf-8", "replace").splitlines())
        if not lines:
            return self
        import pathspec  # only the indexer walks; queries never pay for it

        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        return _IgnoreRules((*self.chain, (rel_dir, spec)))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        verdict: bool | None = None
        for base, spec in self.chain:
            sub = rel[len(base) + 1 :] if base else rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)


def walk(
    root: Path, options: WalkOptions | None = None, exclude_dirs: Sequence[Path] = ()
) -> WalkResult:
    """List the files under ``root`` that should be indexed, in a stable order.

    ``exclude_dirs`` are absolute folders never entered (the index itself).
    Symbolic links are followed only on request, and then with loop detection
    by (device, inode) of every folder already entered. A folder that cannot
    be read is skipped with a reason, like a file; the walk keeps a stack of
    its own rather than recursing, so no depth of folders can overflow it.
    """
    opts = options or WalkOptions()
    result = WalkResult()
    skip_dirs = {os.path.realpath(p) for p in exclude_dirs}
    seen_dirs: set[tuple[int, int]] = set()
    include = _glob_matcher(opts.include)
    exclude = _glob_matcher(opts.exclude)

    def enter(
        dir_path: Path, rel_dir: str, rules: _IgnoreRules
    ) -> tuple[str, _IgnoreRules, Iterator[os.DirEntry[str]]] | None:
        try:
            st = os.stat(dir_path)
        except OSError as exc:
            result.skipped.append(Skipped(rel_dir or ".", f"unreadable folder ({exc.strerror})"))
            return None
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            result.skipped.append(Skipped(rel_dir, "symlink loop"))
            return None
        seen_dirs.add(key)
        try:
            with os.scandir(dir_path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.skipped.append(Skipped(rel_dir or ".", f"unreadable folder ({exc.strerror})"))
            return None
        if opts.use_ignore_files:
            rules = rules.descend(dir_path, rel_dir)
        return rel_dir, rules, iter(entries)

    frames = []
    first = enter(Path(root), "", _IgnoreRules())
    if first is not None:
        frames.append(first)
    while frames:
        rel_dir, rules, entries = frames[-1]
        entry = next(entries, None)
        if entry is None:
            frames.pop()
            continue
        name = entry.name
        rel = f"{rel_dir}/{name}" if rel_dir else name
        if name == INDEX_DIR_NAME:
            continue
        if not opts.hidden and name.startswith("."):
            continue
        try:
            is_link = entry.is_symlink()
            if is_link and not opts.follow_symlinks:
                continue
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            result.skipped.append(Skipped(rel, f"unreadable ({exc.strerror or 'broken link'})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(entry.path) in skip_dirs:
                continue
            if not opts.include_noise and name in NOISE_DIRS:
                continue
            if not opts.include_noise and safefs.exists(os.path.join(entry.path, "pyvenv.cfg")):
                continue  # a virtualenv under any name
            if opts.use_ignore_files and rules.ignored(rel, is_dir=True):
                continue
            if exclude is not None and exclude.match_file(rel + "/"):
                continue
            sub = enter(Path(entry.path), rel, rules)
            if sub is not None:
                frames.append(sub)
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if opts.use_ignore_files and rules.ignored(rel, is_dir=False):
            continue
        if exclude is not None and exclude.match_file(rel):
            continue
        if include is not None and not include.match_file(rel):
            continue
        if not opts.include_noise and (
            name in NOISE_FILES or any(fnmatch.fnmatchcase(name, g) for g in NOISE_GLOBS)
        ):
            result.skipped.append(Skipped(rel, "noise (lock or minified file)"))
            continue
        if st.st_size > opts.max_file_size:
            result.skipped.append(Skipped(rel, f"over the size limit ({st.st_size:,} bytes)"))
            continue
        result.files.append(FileEntry(Path(entry.path), rel, st.st_size, st.st_mtime_ns))
    return result


class NotText(Exception):
    """The file is not something we can embed; the message says why."""


def decode(data: bytes) -> str:
    """Bytes to text: UTF-8 (BOM or not) first, then Windows-1252.

    Windows-1252 is the common legacy encoding of Western text; unlike
    Latin-1 it leaves five bytes undefined, so genuinely undecodable input
    still fails instead of becoming mojibake.
    """
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise NotText("binary")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            raise NotText("not valid UTF-8 or Windows-1252 text") from None
    sample = text[:BINARY_SNIFF_BYTES]
    if sample:
        raw = sample.encode("utf-8", "surrogatepass")
        controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))
        if controls / len(sample) > 0.05:
            raise NotText("binary")
    return text


def looks_minified(line: str) -> bool:
    """A very long line with almost no spaces: minified code or packed data.

    Length alone is not enough: a paragraph kept on one line (common in
    Markdown and in exported abstracts) is long too, but a sixth of prose
    is whitespace.
    """
    if len(line) <= MINIFIED_LINE_LENGTH:
        return False
    sample = line[:MINIFIED_LINE_LENGTH]
    return sum(ch.isspace() for ch in sample) < MINIFIED_SPACE_SHARE * len(sample)


def text_from_bytes(data: bytes, include_noise: bool = False) -> str:
    """Decode a file's bytes, or raise :class:`NotText` with the reason."""
    text = decode(data)
    lines = text.split("\n") if not include_noise and len(text) > MINIFIED_LINE_LENGTH else []
    if max(map(len, lines), default=0) > MINIFIED_LINE_LENGTH and any(map(looks_minified, lines)):
        raise NotText(f"minified or data file (a line over {MINIFIED_LINE_LENGTH:,} characters)")
    return text


def read_bytes(path: Path, limit: int | None = None, follow: bool = True) -> bytes:
    """A walked file's bytes, or ``NotText`` with the reason.

    The file may have changed since the walk: it is read only if it is
    still a regular file (a FIFO put in its place would block forever, a
    link to a device would never end) and still within ``limit`` bytes.
    ``follow=False`` refuses a link that replaced it.
    """
    try:
        fh, st = safefs.open_regular(path, follow=follow)
        with fh:
            if limit is None:
                return fh.read()
            if st.st_size > limit:
                raise NotText(f"over the size limit ({st.st_size:,} bytes)")
            return safefs.read_limited(fh, limit, str(path))
    except safefs.UnsafeFile as exc:
        reason = str(exc)
        if "larger than" in reason:
            raise NotText("over the size limit (it grew while being indexed)") from None
        raise NotText("not a regular file any more") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotText("replaced by a symbolic link") from None
        raise NotText(f"unreadable ({exc.strerror})") from None
