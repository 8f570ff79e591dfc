"""The commit record: what ``meta.json`` says of an index (its model,
settings, segments and file table), read as untrusted input and checked.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msearch.errors import IndexCorrupt, IndexNotFound, IndexTooNew
from msearch.storage import safefs
from msearch.storage.disk import os_reason, parse_json
from msearch.storage.layout import (
    FIX_HINT,
    FOLDER_RE,
    MAX_DIM,
    MAX_ROWS,
    META_MAX_BYTES,
    META_NAME,
    SCHEMA_VERSION,
    SEGMENT_RE,
    VOCAB_RE,
)


@dataclass
class FileRecord:
    """One indexed file, as it was when its passages were embedded, and
    where they are: rows ``row .. row + rows`` of segment ``segment`` (an
    index into ``Meta.segments``)."""

    path: str  # relative to the index root, POSIX separators
    size: int
    mtime_ns: int
    sha256: str
    segment: int = 0
    row: int = 0
    rows: int = 0

    def unchanged(self, size: int, mtime_ns: int, content: Callable[[], bytes | None]) -> bool:
        """Whether the file, now ``size`` bytes with mtime ``mtime_ns``, is
        still the one recorded: the one rule of the indexer (what to
        re-embed), ``status`` (what changed since) and queries (which hits
        are stale). Another size: changed. The same size and mtime:
        unchanged, not read. Otherwise ``content()`` (None where it cannot
        be read: changed) decides by its hash, so a touched but unchanged
        file is unchanged. An mtime of -1 (a file read in its last second,
        see msearch.indexer.settled_mtime) matches nothing: it is hashed."""
        if size != self.size:
            return False
        if mtime_ns == self.mtime_ns:
            return True
        data = content()
        return data is not None and content_hash(data) == self.sha256


class IndexOutdated(IndexCorrupt):
    """The index was written by an older msearch (schema 1); ``msearch index``
    converts it."""


@dataclass
class SegmentInfo:
    """What ``meta.json`` records of a segment. ``live_rows`` and
    ``live_tokens`` are updated (by deltas) as rows die; ``tokens`` is the
    total BM25 length of all its rows."""

    name: str
    rows: int
    tokens: int
    live_rows: int
    live_tokens: int
    checksums: dict[str, int] = field(default_factory=dict)
    # Rows whose vectors are still to come (msearch index commits the words
    # of every passage first, its vector later): 0 for a finished segment.
    pending: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "rows": self.rows,
            "tokens": self.tokens,
            "live_rows": self.live_rows,
            "live_tokens": self.live_tokens,
            "checksums": self.checksums,
        }
        if self.pending:
            out["pending"] = self.pending
        return out


@dataclass
class Meta:
    root: str  # PARENT_ROOT, or an absolute folder (see resolve_root)
    model: dict[str, Any]
    chunking: dict[str, Any]
    walk: dict[str, Any]
    files: list[FileRecord]
    dim: int
    segments: list[SegmentInfo] = field(default_factory=list)
    lexical: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # The model's vocabulary, cached for cold queries (msearch.encoders.vocab_cache).
    vocab_cache: str = ""

    @property
    def count(self) -> int:
        """Live passages."""
        return sum(s.live_rows for s in self.segments)

    @property
    def waiting(self) -> int:
        """Live passages without a vector yet, searchable by their words only
        (at most: a pending segment's dead rows may be among its pending)."""
        return sum(min(s.pending, s.live_rows) for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        # Columnar file table: parsing a few long lists is several times
        # faster than one object per file, which matters on every query.
        return {
            "schema_version": self.schema_version,
            "root": self.root,
            "created": self.created,
            "updated": self.updated,
            "model": self.model,
            "chunking": self.chunking,
            "walk": self.walk,
            "lexical": self.lexical,
            "count": self.count,
            "dim": self.dim,
            "dtype": "float32",
            "normalized": True,
            "segments": [s.to_json() for s in self.segments],
            "vocab_cache": self.vocab_cache,
            "files": {
                "path": [f.path for f in self.files],
                "size": [f.size for f in self.files],
                "mtime_ns": [f.mtime_ns for f in self.files],
                "sha256": [f.sha256 for f in self.files],
                "segment": [f.segment for f in self.files],
                "row": [f.row for f in self.files],
                "rows": [f.rows for f in self.files],
            },
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Meta:
        """Parse and type-check untrusted metadata; any surprise is an
        ``IndexCorrupt`` naming the file. File paths are checked where they
        are used (:func:`msearch.safefs.safe_relpath`), not here: a cold
        query must not pay for checking every path of a large index."""
        try:
            version = _int(data["schema_version"], "schema_version")
            if version > SCHEMA_VERSION:
                raise IndexTooNew(
                    f"{where}: index schema version {version} is newer than this msearch "
                    f"understands ({SCHEMA_VERSION}); upgrade msearch or {FIX_HINT}"
                )
            if version < SCHEMA_VERSION:
                raise IndexOutdated(
                    f"{where}: this index was made by an older msearch (schema {version}); "
                    "update it with `msearch index DIR`, which converts it"
                )
            segments = [_segment_info(s) for s in _list(data["segments"], "segments")]
            names = [s.name for s in segments]
            if len(set(names)) != len(names):
                raise ValueError("a segment is listed twice")
            cols = _dict(data["files"], "files")
            columns = []
            for name, kind in (
                ("path", str),
                ("size", int),
                ("mtime_ns", int),
                ("sha256", str),
                ("segment", int),
                ("row", int),
                ("rows", int),
            ):
                col = cols[name]
                if not isinstance(col, list) or not all(type(v) is kind for v in col):
                    raise ValueError(f"files.{name} is not a list of {kind.__name__}")
                columns.append(col)
            for col in columns[4:]:  # segment, row, rows
                if col and (min(col) < 0 or max(col) >= MAX_ROWS):
                    raise ValueError("a file's rows are out of range")
            files = [FileRecord(*rec) for rec in zip(*columns, strict=True)]
            dim = _int(data["dim"], "dim")
            if not 0 < dim <= MAX_DIM:
                raise ValueError(f"dim {dim} out of range")
            root = data["root"]
            if not isinstance(root, str):
                raise ValueError("root is not a string")
            vocab_cache = data.get("vocab_cache", "")
            if not isinstance(vocab_cache, str) or (
                vocab_cache and not VOCAB_RE.match(vocab_cache)
            ):
                raise ValueError(f"vocabulary cache {vocab_cache!r} is not one msearch makes")
            return cls(
                root=root,
                model=_dict(data["model"], "model"),
                chunking=_dict(data["chunking"], "chunking"),
                walk=_dict(data.get("walk", {}), "walk"),
                files=files,
                dim=dim,
                segments=segments,
                lexical=_dict(data["lexical"], "lexical"),
                created=float(data.get("created", 0.0)),
                updated=float(data.get("updated", 0.0)),
                schema_version=version,
                extra=_dict(data.get("extra", {}), "extra"),
                vocab_cache=vocab_cache,
            )
        except IndexCorrupt:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise IndexCorrupt(f"{where}: malformed index metadata ({exc}); {FIX_HINT}") from None


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{name} is not an integer")
    return value


def _dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not an object")
    return dict(value)


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return value


def _segment_info(data: Any) -> SegmentInfo:
    d = _dict(data, "segment")
    name = d["name"]
    if not isinstance(name, str) or not SEGMENT_RE.match(name):
        raise ValueError(f"segment folder {name!r} is not one msearch makes")
    nums = [_int(d[k], k) for k in ("rows", "tokens", "live_rows", "live_tokens")]
    rows, tokens, live_rows, live_tokens = nums
    if min(nums) < 0 or max(nums) >= MAX_ROWS * 1024 or live_rows > rows or live_tokens > tokens:
        raise ValueError(f"segment {name} counts are out of range")
    checksums = _dict(d.get("checksums", {}), "checksums")
    if not all(
        isinstance(k, str) and type(v) is int and 0 <= v < 1 << 32 for k, v in checksums.items()
    ):
        raise ValueError("checksums are not CRC-32 values")
    pending = _int(d.get("pending", 0), "pending")
    if not 0 <= pending <= rows:
        raise ValueError(f"segment {name} pending count is out of range")
    return SegmentInfo(name, rows, tokens, live_rows, live_tokens, checksums, pending)


def read_meta_json(index_dir: Path) -> Any:
    path = Path(index_dir) / META_NAME
    try:
        fh, _ = safefs.open_regular(path, follow=False, max_size=META_MAX_BYTES)
        with fh:
            raw = fh.read()
    except FileNotFoundError:
        raise IndexNotFound(
            f"no index at {index_dir} (create one with `msearch index DIR`)"
        ) from None
    except NotADirectoryError:
        raise IndexNotFound(f"no index at {index_dir} (it is not a folder)") from None
    except OSError as exc:
        raise IndexCorrupt(f"{path}: cannot read ({os_reason(exc)}); {FIX_HINT}") from None
    try:
        data = parse_json(raw)
    except ValueError:
        raise IndexCorrupt(f"{path} is not valid JSON; {FIX_HINT}") from None
    if not isinstance(data, dict):
        raise IndexCorrupt(f"{path} is not an msearch index; {FIX_HINT}")
    return data


def read_meta(index_dir: Path) -> Meta:
    return Meta.from_json(read_meta_json(index_dir), Path(index_dir) / META_NAME)


def content_hash(data: bytes) -> str:
    """The hash a file record keeps of a file's bytes (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


def named_folders(data: dict[str, Any]) -> list[str]:
    """The folders a ``meta.json`` of any schema names (schema 1's ``data``
    folder, the vocabulary cache, the segments), among the names msearch
    gives its folders: what a writer must keep, or may claim as its own."""
    names = [data.get("data"), data.get("vocab_cache")] + [
        s.get("name") for s in data.get("segments", []) if isinstance(s, dict)
    ]
    return [n for n in names if isinstance(n, str) and FOLDER_RE.match(n)]


def recorded_model(index_dir: Path) -> Any:
    """The model record of the committed ``meta.json``, of any schema (an
    index of an older msearch is converted with the model it was made with)."""
    return read_meta_json(index_dir).get("model")
