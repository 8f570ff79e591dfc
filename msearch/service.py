"""One index kept open for a long-running process (the MCP server).

A command-line query pays for loading the model and opening the index each
time; a server pays once. What it must not do is answer from an index that
has moved on: every call compares ``meta.json`` (the single commit point,
replaced by a rename at each commit) with the one it opened, and reopens on
a new generation. The model is kept across generations while the index's
model record stays the same.

Inputs come from an agent, not a person at a prompt: every argument is
checked and a bad one is a :class:`~msearch.errors.UsageError` with one
sentence, never a crash of the process that serves it.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msearch.config import DEFAULT
from msearch.errors import UsageError
from msearch.query import MODES, Hit, Searcher, two_stage_ready
from msearch.storage import safefs
from msearch.storage.layout import META_NAME
from msearch.storage.reader import IndexReader, load_index
from msearch.storage.record import read_meta

if TYPE_CHECKING:
    from msearch.indexer import IndexStats
    from msearch.snippet import Matcher

MAX_K = 1000
MAX_CONTEXT = 100
MAX_GET_LINES = 2000
MAX_GET_BYTES = 64 << 20


@dataclass(frozen=True)
class Lines:
    path: str
    start_line: int
    end_line: int
    total_lines: int
    text: str


class SearchService:
    """Search, read and update one index; safe to call from several threads
    (a watcher updates while the server answers)."""

    def __init__(
        self,
        index_dir: Path,
        device: str = "auto",
        trust_remote_code: bool = False,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.device = device
        self.trust = trust_remote_code
        self.say = notice or (lambda _m: None)
        self._lock = threading.RLock()
        self._query_lock = threading.Lock()  # one query at a time through the model
        self._stamp: tuple[int, int, int] | None = None
        self._index: IndexReader | None = None
        self._searchers: dict[str, Searcher] = {}
        self._encoder: Any = None
        self._encoder_key: str | None = None
        self._matching: tuple[Any, Any, Any] | None = None
        self._paths: tuple[IndexReader, frozenset[str]] | None = None
        self._reindex_lock = threading.Lock()  # the watcher and the tool: one model load
        self._doc_model: Any = None
        self._doc_key: str | None = None

    # -- the open index ---------------------------------------------------

    def _meta_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.index_dir / META_NAME)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def index(self) -> IndexReader:
        """The index as last committed, reopened when a commit replaced it."""
        with self._lock:
            try:
                stamp = self._meta_stamp()
            except OSError:
                stamp = None
            if self._index is None or stamp != self._stamp:
                index = load_index(self.index_dir, lexical=True)
                if two_stage_ready(index, DEFAULT.two_stage):  # see populate: once per generation
                    from msearch.storage.segment import populate_segments

                    populate_segments(index.segments)
                self._index = index
                self._stamp = stamp
                self._searchers = {}
            return self._index

    def searcher(self, mode: str) -> Searcher:
        from msearch.query import check_model, open_lexical, query_encoder

        with self._lock:
            index = self.index()
            found = self._searchers.get(mode)
            if found is not None:
                return found
            check_model(index, None)
            encode = None
            if mode != "lexical":
                key = json.dumps([index.meta.model, index.meta.vocab_cache], sort_keys=True)
                if self._encoder is None or key != self._encoder_key:
                    self._encoder = query_encoder(
                        index, self.device, self.say, self.trust, warm=True
                    )
                    self._encoder_key = key
                encode = self._encoder
            lexical = None
            if mode != "dense":
                lexical = next(
                    (s.lexical for s in self._searchers.values() if s.lexical is not None), None
                ) or open_lexical(index)
            searcher = Searcher(index, encode, lexical, mode, cwd=index.root)
            self._searchers[mode] = searcher
            return searcher

    def matcher(self, query: str) -> Matcher:
        """Finds ``query``'s words in passages (for summaries), with a
        tokenizer kept across calls while the index's settings stay."""
        from msearch.snippet import Matcher, params_for

        lexical = self.index().meta.lexical
        if self._matching is None or self._matching[0] != lexical:
            params = params_for(lexical)
            self._matching = (lexical, params, params.tokenizer())
        _, params, tokenizer = self._matching
        return Matcher.for_query(query, params, tokenizer)

    # -- the calls ----------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        globs: Sequence[str] = (),
        min_score: float | None = None,
        context: int = 0,
        exact: bool = False,
    ) -> list[Hit]:
        from msearch.filters import PathFilter

        if not isinstance(query, str) or not query.strip():
            raise UsageError("the query is empty; give the words or question to search for")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise UsageError(f"k must be a whole number from 1 to {MAX_K} (got {k!r})")
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        if min_score is not None and (
            isinstance(min_score, bool)
            or not isinstance(min_score, int | float)
            or not math.isfinite(min_score)
        ):
            raise UsageError(f"min_score must be a number (got {min_score!r})")
        if (
            isinstance(context, bool)
            or not isinstance(context, int)
            or not 0 <= context <= MAX_CONTEXT
        ):
            raise UsageError(f"context must be a whole number from 0 to {MAX_CONTEXT}")
        if isinstance(globs, str):
            globs = [globs]
        paths = PathFilter(list(globs), "path glob") if globs else None
        with self._query_lock:
            searcher = self.searcher(mode)
            searcher.exact = exact is True
            return searcher.query(query, k, min_score, paths, (context, context))

    def get(self, path: str, start_line: int = 1, end_line: int | None = None) -> Lines:
        """Lines ``start_line``..``end_line`` (from 1, inclusive) of a file
        the index holds: nothing outside the root, no link out of it unless
        the index was built following links, and nothing the walk left out
        (a hidden ``.env``, a gitignored secret), whoever asks for it (an
        agent may be steered by text it read)."""
        if not isinstance(path, str) or not path.strip():
            raise UsageError("give the path of a file inside the indexed folder")
        for name, n in (("start_line", start_line), ("end_line", end_line)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise UsageError(f"{name} must be a line number from 1 (got {n!r})")
        if end_line is not None and end_line < start_line:
            raise UsageError("end_line is before start_line")
        index = self.index()
        rel = self._inside_root(index.root, path)
        if rel not in self._indexed_paths(index):
            raise UsageError(
                f"{rel} is not a file of the index (only indexed files can be read; "
                "a new file needs `reindex` first)"
            )
        follow = index.meta.walk.get("follow_symlinks") is True
        from msearch.walk import NotText, decode

        try:
            fh, _ = safefs.open_beneath(index.root, rel, follow, max_size=MAX_GET_BYTES)
            with fh:
                data = safefs.read_limited(fh, MAX_GET_BYTES, rel)
            text = decode(data)
        except FileNotFoundError:
            raise UsageError(f"{rel}: no such file in the indexed folder") from None
        except NotText:
            raise UsageError(f"{rel} is not a text file") from None
        except OSError as exc:
            raise UsageError(f"{rel} cannot be read ({exc.strerror or exc})") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if start_line > max(len(lines), 1):
            raise UsageError(
                f"{rel} has {len(lines)} lines; start_line {start_line} is past its end"
            )
        last = len(lines) if end_line is None else min(end_line, len(lines))
        last = min(last, start_line + MAX_GET_LINES - 1)
        shown = lines[start_line - 1 : last]
        return Lines(rel, start_line, start_line + len(shown) - 1, len(lines), "\n".join(shown))

    def _indexed_paths(self, index: IndexReader) -> frozenset[str]:
        with self._lock:
            if self._paths is None or self._paths[0] is not index:
                self._paths = (index, frozenset(f.path for f in index.meta.files))
            return self._paths[1]

    @staticmethod
    def _inside_root(root: Path, path: str) -> str:
        """``path`` (relative to the root, or absolute inside it) as a clean
        relative path; anything that leaves the root is refused."""
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(root)
            except ValueError:
                raise UsageError(f"{path} is outside the indexed folder {root}") from None
        rel = p.as_posix()
        if rel.startswith("./"):
            rel = rel[2:]
        if not safefs.safe_relpath(rel):
            raise UsageError(f"{path} is outside the indexed folder {root}")
        return rel

    def status(self) -> dict[str, Any]:
        from msearch.output import lossy
        from msearch.status import index_status

        out = lossy(index_status(self.index_dir).to_json())
        assert isinstance(out, dict)
        return out

    def reindex(self) -> IndexStats:
        """An incremental update with the index's recorded settings and
        model (loaded once, for documents)."""
        from msearch.encoders import ModelRecord, load_recorded
        from msearch.indexer import update_recorded

        with self._reindex_lock:
            meta = read_meta(self.index_dir)
            key = json.dumps(meta.model, sort_keys=True)
            if self._doc_model is None or key != self._doc_key:
                self._doc_model = load_recorded(
                    ModelRecord.from_json(meta.model), self.device, self.trust, notice=self.say
                )
                self._doc_key = key
            return update_recorded(self.index_dir, self._doc_model, notice=self.say)
