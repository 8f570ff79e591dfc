"""The facade kept open for a long-running process (the MCP server).

A command-line query pays for loading the model and opening the index each
time; a server pays once. What it must not do is answer from an index that
has moved on: every call compares ``meta.json`` (the single commit point,
replaced by a rename at each commit) with the one it opened, and reopens
on a new generation (:func:`msearch.api.open_index`, handing on the query
encoder while the index's model record stays the same).

Each generation's segments are checked against their checksums once,
when it is opened, in a thread of its own (a large index takes seconds,
too long for a request); a damaged generation is refused, with one log
line, until a new commit replaces it. What every search checks is cheap:
the structure of what it reads, and that no mapped file was cut short.

Inputs come from an agent, not a person at a prompt: every argument is
checked by the facade (``api.SearchRequest`` with the MCP spelling,
``api.Index.read``) and a bad one is a
:class:`~msearch.errors.UsageError` with one sentence, never a crash of
the process that serves it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msearch import api
from msearch.config import DEFAULT, IndexConfig, RankConfig
from msearch.errors import IndexCorrupt, MsearchError
from msearch.storage.layout import META_NAME

if TYPE_CHECKING:
    from msearch.models import Models
    from msearch.pipeline import IndexStats
    from msearch.query import Hit
    from msearch.snippet import Matcher


class SearchService:
    """Search, read and update one index; safe to call from several threads
    (a watcher updates while the server answers)."""

    def __init__(
        self,
        index_dir: Path,
        device: str = "auto",
        trust_remote_code: bool = False,
        notice: Callable[[str], None] | None = None,
        models: Models | None = None,
        config: IndexConfig = DEFAULT,
        follow_links: bool = False,
    ) -> None:
        """``follow_links``: ``get`` may read, and ``reindex`` walk, through
        symbolic links (the server was started with ``-L``); what the index
        records never allows it."""
        self.index_dir = Path(index_dir)
        self.follow_links = follow_links
        self.device = device
        self.trust = trust_remote_code
        self.say = notice or (lambda _m: None)
        self.models = models
        self.config = config
        self._lock = threading.RLock()
        self._query_lock = threading.Lock()  # one query at a time through the model
        self._stamp: tuple[int, int, int] | None = None
        self._index: api.Index | None = None
        self._reindex_lock = threading.Lock()  # the watcher and the tool: one model load
        self._updater: api.Updater | None = None
        self._vectors: Any = None  # msearch.vectors.Background, with the updater
        # Checksums, once per segment (segments never change), in a thread
        # of their own when a generation is opened: a damaged generation is
        # refused from then on, with one log line.
        self._verified: set[str] = set()
        self._damaged: dict[tuple[int, int, int] | None, str] = {}
        self._verifier: threading.Thread | None = None

    def _meta_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.index_dir / META_NAME)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def index(self) -> api.Index:
        """The index as last committed, reopened when a commit replaced it."""
        with self._lock:
            try:
                stamp = self._meta_stamp()
            except OSError:
                stamp = None
            if self._index is None or stamp != self._stamp:
                index = api.open_index(
                    self.index_dir,
                    models=self.models,
                    device=self.device,
                    trust_remote_code=self.trust,
                    notice=self.say,
                    config=self.config,
                    root_relative=True,
                    warm=True,
                    previous=self._index,
                    follow_links=self.follow_links,
                )
                if index.two_stage():  # see populate: once per generation
                    index.populate()
                self._index = index
                self._stamp = stamp
                self._verifier = threading.Thread(
                    target=self._verify, args=(index, stamp), daemon=True
                )
                self._verifier.start()
            damage = self._damaged.get(stamp)
            if damage is not None:
                raise IndexCorrupt(damage)
            return self._index

    def _verify(self, index: api.Index, stamp: tuple[int, int, int] | None) -> None:
        """Compare the checksums of the generation's segments not checked
        before with those recorded (off the request path: a large index
        takes seconds); a mismatch refuses the generation."""
        from msearch.storage.reader import verify_checksums

        names = {s.name for s in index.meta.segments} - self._verified
        try:
            verify_checksums(self.index_dir, index.meta, names)
        except MsearchError as exc:
            with self._lock:
                if stamp != self._stamp:
                    return  # an older generation, replaced meanwhile (its files may be gone)
                self._damaged[stamp] = str(exc)
            self.say(f"msearch: {exc} (refusing this index until it is rebuilt)")
        except Exception as exc:  # a bug: said, never a silent dead thread
            self.say(f"msearch: checking the index failed: {type(exc).__name__}: {exc}")
        else:
            self._verified |= names

    def wait_verified(self, timeout: float | None = None) -> None:
        """Until the checksums of the generation last opened are compared."""
        if self._verifier is not None:
            self._verifier.join(timeout)

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        globs: Sequence[str] = (),
        min_score: float | None = None,
        context: int = 0,
        exact: bool = False,
        priors: bool = True,
    ) -> list[Hit]:
        request = api.SearchRequest(
            (query,),
            k=k,
            mode=mode,
            min_score=min_score,
            globs=tuple([globs] if isinstance(globs, str) else globs),
            context=(context, context),
            exact=exact is True,
            ranking=RankConfig(priors=priors is True),
            spelling=api.MCP,
        )
        with self._query_lock:
            return self.index().search(request)[0]

    def matcher(self, query: str) -> Matcher:
        """Finds ``query``'s words in passages (for summaries)."""
        return self.index().matcher(query)

    def get(self, path: str, start_line: int = 1, end_line: int | None = None) -> api.Lines:
        """Lines of a file the index holds (see :meth:`msearch.api.Index.read`)."""
        return self.index().read(path, start_line, end_line)

    def status(self) -> dict[str, Any]:
        from msearch.output import lossy

        out = lossy(api.status(self.index_dir, self.config, self.follow_links).to_json())
        assert isinstance(out, dict)
        return out

    def reindex(self) -> IndexStats:
        """An incremental update with the index's recorded settings and
        model (loaded once, for documents): the words of what changed are
        committed now, their vectors in a thread of the service's own
        (msearch.vectors.Background), which gives way to the next update."""
        with self._reindex_lock:
            vectors = self._background()
            with vectors.paused():
                return self._updater_for_index().run(vectors=False)

    def embed_pending(self) -> None:
        """Embed, in the background, the passages an interrupted or
        words-first update left without their vectors."""
        with self._reindex_lock:
            self._background().kick()

    def wait_embedded(self, timeout: float | None = None) -> bool:
        """Until the background embedding has nothing left (tests)."""
        return self._vectors is None or bool(self._vectors.wait_idle(timeout))

    def close(self) -> None:
        """Stop the background embedding (what it had not committed is
        embedded by the next update)."""
        if self._vectors is not None:
            self._vectors.close()

    def _background(self) -> Any:
        if self._vectors is None:
            self._vectors = self._updater_for_index().background(
                lambda st: self.say(st.done_line())
            )
        return self._vectors

    def _updater_for_index(self) -> api.Updater:
        """The updater of this index (its recorded settings and model)."""
        if self._updater is None:
            given = api.Overrides(
                device=self.device,
                trust_remote_code=self.trust,
                walk={"follow_symlinks": True} if self.follow_links else {},
            )
            self._updater = api.Updater(
                None,
                given,
                index_dir=self.index_dir,
                models=self.models,
                notice=self.say,
                config=self.config,
                verify_first=True,
            )
        return self._updater
