"""The one way into msearch: open an index and search it, update it, report
on it. The command line (msearch.cli) and the MCP server (msearch.service,
msearch.mcp_server) are two thin front ends over this module, as llm's
``Collection`` and sqlite-utils' ``Database`` sit under their CLIs; a
Python caller uses it the same way::

    from msearch import api

    stats = api.update("notes")                      # index (or update) a folder
    index = api.open_index("notes/.msearch")
    [hits] = index.search(api.SearchRequest(("how do I stop bread being dense",)))

- :class:`SearchRequest`: a search, its arguments checked once, when it is
  made, with each interface's names for them in the messages
  (:data:`CLI`, :data:`MCP`).
- :class:`Index` (:func:`open_index`): one committed generation, open:
  ``search``, ``read`` (lines of an indexed file), ``matcher``.
- :class:`Updater` (:func:`update`): create or update an index, with the
  options given; what is not given keeps what the index records, else the
  default; one policy for the model and precision (msearch.models).
- :func:`status`: what an index holds, and what changed since.

Models come from a :class:`~msearch.models.Models` (msearch.encoders by
default): a test hands in a fake one. Tuning (merge policy, two-stage
search, embedding window) comes from an :class:`~msearch.config.IndexConfig`.
Every error a caller can cause is a :class:`~msearch.errors.MsearchError`
with one line that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msearch.config import DEFAULT, FULL_RANKING, IndexConfig, RankConfig
from msearch.errors import MsearchError, UsageError
from msearch.models import EncoderModels, Models, ModelWanted, Notice, QueryEncoder
from msearch.query import MODES, Hit, Searcher
from msearch.storage.layout import INDEX_DIR_NAME, find_index

if TYPE_CHECKING:
    from msearch.filters import PathFilter
    from msearch.lexical import Bm25
    from msearch.pipeline import IndexStats, Progress, SegmentsWriter
    from msearch.snippet import Matcher
    from msearch.status import Status
    from msearch.storage.reader import IndexReader

__all__ = [
    "CLI",
    "MCP",
    "MODES",
    "Hit",
    "Index",
    "IndexConfig",
    "Lines",
    "Models",
    "Overrides",
    "SearchRequest",
    "Spelling",
    "Updater",
    "find_index",
    "open_index",
    "status",
    "update",
]

MAX_GET_LINES = 2000
MAX_GET_BYTES = 64 << 20


def _quiet(_msg: str) -> None:
    pass


# ---------------------------------------------------------------- searching


@dataclass(frozen=True)
class Spelling:
    """How an interface names a request's arguments in its messages, and
    the bounds it puts on them (an agent's call is bounded; a person's
    command line is not)."""

    k: str = "k"
    min_score: str = "min_score"
    context: str = "context"
    globs: str = "path glob"
    max_k: int | None = None
    max_context: int | None = None


CLI = Spelling(k="-k/--top", min_score="--min-score", context="-C/--context", globs="--glob")
MCP = Spelling(max_k=1000, max_context=100)


def _check_whole(value: Any, name: str, low: int, high: int | None) -> None:
    """``value`` a whole number from ``low`` (to ``high``), or the one
    message for it: "-k/--top must be at least 1 (got 0)"."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and value >= low and (high is None or value <= high):
        return
    bound = "0 or more" if low == 0 else f"at least {low}"
    bound += f" and at most {high}" if high is not None else ""
    raise UsageError(f"{name} must be {bound} (got {value!r})")


@dataclass(frozen=True)
class SearchRequest:
    """One search: its queries (several: each answered alike), how many hits
    each, which ranking (``mode``), and which of them to keep; checked when
    it is made, so every interface refuses the same things with the same
    words (``spelling`` names the arguments as the interface does).

    ``files``: each file's best passage only, ``k`` files (``-l``);
    ``context``: lines (before, after) each hit to read from its file;
    ``globs``: only files matching them (gitignore syntax, ``!`` excludes);
    ``exact``: score every passage, even where a large index is searched in
    two stages; ``ranking``: which parts of the ranking stage run.
    """

    queries: tuple[str, ...]
    k: int = 10
    mode: str = "hybrid"
    min_score: float | None = None
    globs: tuple[str, ...] = ()
    context: tuple[int, int] = (0, 0)
    exact: bool = False
    files: bool = False
    ranking: RankConfig = FULL_RANKING
    spelling: Spelling = field(default=MCP, compare=False)
    paths: PathFilter | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        spell = self.spelling
        if isinstance(self.queries, str):
            object.__setattr__(self, "queries", (self.queries,))
        if not self.queries or not all(isinstance(q, str) and q.strip() for q in self.queries):
            raise UsageError("empty query: give the words or question to search for")
        _check_whole(self.k, spell.k, 1, spell.max_k)
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        score = self.min_score
        if score is not None and (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise UsageError(f"{spell.min_score} must be a number (got {score!r})")
        for n in self.context:
            _check_whole(n, spell.context, 0, spell.max_context)
        globs = (self.globs,) if isinstance(self.globs, str) else tuple(self.globs)
        object.__setattr__(self, "globs", globs)
        if globs:
            from msearch.filters import PathFilter

            object.__setattr__(self, "paths", PathFilter(list(globs), spell.globs))


@dataclass(frozen=True)
class Lines:
    """Lines of an indexed file (:meth:`Index.read`)."""

    path: str
    start_line: int
    end_line: int
    total_lines: int
    text: str


class Index:
    """One committed generation of an index, open for searching: its file
    table and segments, the model's query encoder (loaded at the first
    dense or hybrid search) and the BM25 statistics, shared by every search
    of this generation. A long-running process opens the next generation
    with ``previous=`` this one, which hands on what is still valid (the
    query encoder, while the model record stays; the query tokenizer,
    while the lexical settings stay)."""

    def __init__(
        self,
        reader: IndexReader,
        *,
        models: Models | None = None,
        device: str = "auto",
        trust_remote_code: bool = False,
        notice: Notice | None = None,
        config: IndexConfig = DEFAULT,
        cwd: str | os.PathLike[str] | None = None,
        root_relative: bool = False,
        warm: bool = False,
        previous: Index | None = None,
        follow_links: bool = False,
    ) -> None:
        """``cwd``: hits' paths are shown relative to it when inside it
        (default: the current folder); ``root_relative``: relative to the
        indexed folder (a server's clients do not share its current
        folder). ``warm``: for a process that answers many queries (see
        msearch.models.query_encoder). ``follow_links``: indexed files may
        be read through symbolic links; only this run's ``-L`` gives it,
        never what the index records (it may come from anywhere)."""
        self.reader = reader
        self.models = models or EncoderModels()
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.notice = notice or _quiet
        self.config = config
        self.cwd = reader.root if root_relative else cwd
        self.warm = warm
        self.follow_links = follow_links
        self._searchers: dict[tuple[str, bool, RankConfig], Searcher] = {}
        self._lexical: Bm25 | None = None
        self._encoder: QueryEncoder | None = None
        self._populated = False
        self._paths: frozenset[str] | None = None
        self._tokenizer: tuple[Any, Any, Any] | None = None
        if previous is not None:
            if previous._encoder is not None and previous._encoder_key() == self._encoder_key():
                self._encoder = previous._encoder
            if previous._tokenizer is not None and previous._tokenizer[0] == self.meta.lexical:
                self._tokenizer = previous._tokenizer

    @property
    def dir(self) -> Path:
        return self.reader.dir

    @property
    def root(self) -> Path:
        """The folder the index searches."""
        return self.reader.root

    @property
    def meta(self) -> Any:
        """The commit record (msearch.storage.record.Meta)."""
        return self.reader.meta

    @property
    def count(self) -> int:
        """Live passages."""
        return self.reader.count

    @property
    def waiting(self) -> int:
        """Live passages without their vector yet (found by their words)."""
        return int(self.reader.meta.waiting)

    # -- searching ----------------------------------------------------------

    def search(self, request: SearchRequest) -> list[list[Hit]]:
        """The hits of each of ``request.queries``, best first. What is
        mapped of the index is checked first (a file cut short under a
        long-running process is an ``IndexCorrupt``, not SIGBUS)."""
        searcher = self.searcher(request.mode, request.exact, request.ranking)
        self.reader.check_mapped()
        if len(request.queries) > 1 and searcher.two_stage():
            self.populate()  # many queries: map the pages once
        return searcher.query_many(
            request.queries,
            request.k,
            request.min_score,
            request.paths,
            request.context,
            request.files,
        )

    def searcher(
        self, mode: str, exact: bool = False, ranking: RankConfig = FULL_RANKING
    ) -> Searcher:
        """The searcher of ``mode`` (kept: its filter masks serve later calls)."""
        found = self._searchers.get((mode, exact, ranking))
        if found is not None:
            return found
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        # Loaded at the first query that needs it: none does while no
        # passage has its vector yet (words first: msearch.vectors).
        encode = (lambda texts: self.encoder()(texts)) if mode != "lexical" else None
        lexical = self._bm25() if mode != "dense" else None
        searcher = Searcher(
            self.reader,
            encode,
            lexical,
            mode,
            self.cwd,
            exact,
            self.config.two_stage,
            ranking,
            follow_links=self.follow_links,
        )
        self._searchers[(mode, exact, ranking)] = searcher
        return searcher

    def encoder(self) -> QueryEncoder:
        """The index's model as a query encoder, loaded once."""
        if self._encoder is None:
            from msearch.models import query_encoder

            self._encoder = query_encoder(
                self.reader,
                self.device,
                self.notice,
                self.trust_remote_code,
                warm=self.warm,
                models=self.models,
            )
        return self._encoder

    def _encoder_key(self) -> str:
        return json.dumps([self.meta.model, self.meta.vocab_cache], sort_keys=True)

    def _bm25(self) -> Bm25:
        if self._lexical is None:
            from msearch.query import open_lexical

            self._lexical = open_lexical(self.reader)
        return self._lexical

    def two_stage(self) -> bool:
        """Whether a dense search of this index runs in two stages."""
        from msearch.query import two_stage_ready

        return two_stage_ready(self.reader, self.config.two_stage)

    def populate(self) -> None:
        """Bring into memory, once, what a two-stage search reads row by row
        (see msearch.storage.segment.populate): for many queries to come."""
        if not self._populated:
            from msearch.storage.segment import populate_segments

            populate_segments(self.reader.segments)
            self._populated = True

    def matcher(self, query: str) -> Matcher:
        """Finds ``query``'s words in passages as BM25 sees them (for
        summaries and highlighting)."""
        from msearch.snippet import Matcher, params_for

        if self._tokenizer is None:
            params = params_for(self.meta.lexical)
            self._tokenizer = (self.meta.lexical, params, params.tokenizer())
        _, params, tokenizer = self._tokenizer
        return Matcher.for_query(query, params, tokenizer)

    # -- reading ------------------------------------------------------------

    def read(self, path: str, start_line: int = 1, end_line: int | None = None) -> Lines:
        """Lines ``start_line``..``end_line`` (from 1, inclusive; at most
        MAX_GET_LINES) of a file the index holds: nothing outside the root,
        no symbolic link unless this run was given ``-L`` (``follow_links``;
        what the index records never allows it), and
        nothing the walk left out (a hidden ``.env``, a gitignored secret),
        whoever asks for it (an agent may be steered by text it read)."""
        from msearch.storage import safefs
        from msearch.walk import NotText, decode

        if not isinstance(path, str) or not path.strip():
            raise UsageError("give the path of a file inside the indexed folder")
        for name, n in (("start_line", start_line), ("end_line", end_line)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise UsageError(f"{name} must be a line number from 1 (got {n!r})")
        if end_line is not None and end_line < start_line:
            raise UsageError("end_line is before start_line")
        rel = _inside_root(self.root, path)
        if self._paths is None:
            self._paths = frozenset(f.path for f in self.meta.files)
        if rel not in self._paths:
            raise UsageError(
                f"{rel} is not a file of the index (only indexed files can be read; "
                "a new file needs `reindex` first)"
            )
        try:
            fh, _ = safefs.open_beneath(self.root, rel, self.follow_links, max_size=MAX_GET_BYTES)
            with fh:
                data = safefs.read_limited(fh, MAX_GET_BYTES, rel)
            text = decode(data)
        except FileNotFoundError:
            raise UsageError(f"{rel}: no such file in the indexed folder") from None
        except NotText:
            raise UsageError(f"{rel} is not a text file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP and not self.follow_links:
                raise UsageError(
                    f"{rel} is reached through a symbolic link, which is followed only "
                    "where this command was given -L"
                ) from None
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


def _inside_root(root: Path, path: str) -> str:
    """``path`` (relative to the root, or absolute inside it) as a clean
    relative path; anything that leaves the root is refused."""
    from msearch.storage import safefs

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


def open_index(
    index_dir: str | os.PathLike[str] | None = None,
    *,
    models: Models | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
    notice: Notice | None = None,
    config: IndexConfig = DEFAULT,
    cwd: str | os.PathLike[str] | None = None,
    root_relative: bool = False,
    model: str | None = None,
    lexical: bool = True,
    warm: bool = False,
    previous: Index | None = None,
    follow_links: bool = False,
) -> Index:
    """The index at ``index_dir`` (None: ``MSEARCH_INDEX``, else the nearest
    ``.msearch`` upwards), as last committed, checked.

    ``model``: a model the caller names, refused unless it is the index's.
    ``lexical``: open the BM25 statistics now, with the rest (a hybrid or
    lexical search will need them). See :class:`Index` for the others."""
    from msearch.encoders import check_device
    from msearch.models import check_model
    from msearch.storage.reader import load_index

    check_device(device)
    where = Path(index_dir) if index_dir is not None else find_index()
    reader = load_index(where, lexical=lexical)
    check_model(reader, model)
    return Index(
        reader,
        models=models,
        device=device,
        trust_remote_code=trust_remote_code,
        notice=notice,
        config=config,
        cwd=cwd,
        root_relative=root_relative,
        warm=warm,
        previous=previous,
        follow_links=follow_links,
    )


# ---------------------------------------------------------------- updating


@dataclass(frozen=True)
class Overrides:
    """What an update was given. What is not given (None, or a walk or
    chunking field left out) keeps what the index records, else the
    default: an interface decides what it gives (``msearch index`` gives
    every option, so it builds with exactly them; ``watch`` only those on
    its command line, so it never rebuilds an index with other defaults).
    Following symbolic links is the exception: only ``walk`` given here
    allows it, never what the index records (see ``Updater._follow``)."""

    model: str | None = None
    precision: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    trust_remote_code: bool = False
    walk: Mapping[str, Any] = field(default_factory=dict)  # WalkOptions fields
    chunking: Mapping[str, int] = field(default_factory=dict)  # ChunkSettings fields

    def wanted(self) -> ModelWanted:
        return ModelWanted(self.model, self.precision, self.device, self.trust_remote_code)


class Updater:
    """Creates or updates one index, the model loaded once for all its runs
    (a watcher, a server).

    With a ``directory``: the index of that folder (``index_dir``, default
    ``DIR/.msearch``), with ``given``'s options, the rest as the index
    records them, else the defaults (settings checked now, before any
    work; the model chosen at the first run and kept). Without: the index
    at ``index_dir`` updated as it records itself (its folder, walk,
    chunking and model; only ``given``'s device, batch size and trust
    apply), the model reloaded only when another one built the index
    meanwhile.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        given: Overrides | None = None,
        *,
        index_dir: str | os.PathLike[str] | None = None,
        models: Models | None = None,
        notice: Notice | None = None,
        model_notice: Notice | None = None,
        segments_writer: SegmentsWriter | None = None,
        config: IndexConfig = DEFAULT,
        full: bool = False,
        verify_first: bool = False,
    ) -> None:
        """``verify_first``: the first run compares every segment's checksums
        before reusing it (a long-running watcher; see
        msearch.indexer.build_index). ``full``: the updates start over (``index --full``), so nothing
        the index records is read, neither settings nor model: whatever its
        ``meta.json`` holds (damage, a model that runs its own code) cannot
        stop a rebuild; the options given and the defaults make it.
        ``notice``: what the update says (a lock waited for, a rebuild);
        ``model_notice``: what loading the model says (default: ``notice``).
        ``segments_writer``: who makes the new segments (msearch.pipeline;
        a Ray cluster: msearch.distributed)."""
        from msearch.indexer import check_root

        self.given = given or Overrides()
        self.models = models or EncoderModels()
        self.notice = notice or _quiet
        self.model_notice = model_notice or self.notice
        self.segments_writer = segments_writer
        self.config = config
        self.full = full
        self._verify_next = verify_first
        if self.given.batch_size is not None and self.given.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        self._model: Any = None
        self._model_key: str | None = None
        self._said_follow = False
        if directory is None:
            if index_dir is None:
                raise ValueError("an update names a folder to index, or an index to update")
            self.directory: Path | None = None
            self.index_dir = Path(index_dir)
            return
        self.directory = Path(directory)
        check_root(self.directory)
        self.index_dir = (
            Path(index_dir) if index_dir is not None else self.directory / INDEX_DIR_NAME
        )
        self.walk, self.chunking = self._settings()

    def _settings(self) -> tuple[Any, Any]:
        """(walk options, chunking): given, else recorded, else the defaults."""
        from msearch.chunking import ChunkSettings
        from msearch.indexer import chunking_from_json, walk_options_from_json
        from msearch.storage.record import read_meta
        from msearch.walk import WalkOptions

        walk: dict[str, Any] = asdict(WalkOptions())
        chunking: dict[str, Any] = asdict(ChunkSettings())
        try:
            if not self.full:
                meta = read_meta(self.index_dir)
                walk |= asdict(walk_options_from_json(meta.walk))
                chunking |= asdict(chunking_from_json(meta.chunking))
        except MsearchError:
            pass  # none yet, or one the update converts or rebuilds
        walk |= self.given.walk
        walk["follow_symlinks"] = self._follow(walk["follow_symlinks"])
        chunking |= self.given.chunking
        # Passages follow structure from now on: an index of plain passages
        # (an older msearch's) is rebuilt once.
        chunking["structure"] = True
        settings = ChunkSettings(**chunking)
        if settings.max_tokens < 8 or not 0 <= settings.overlap_tokens < settings.max_tokens:
            raise UsageError("--chunk-tokens must be at least 8 and --overlap-tokens below it")
        walk["include"], walk["exclude"] = tuple(walk["include"]), tuple(walk["exclude"])
        return WalkOptions(**walk), settings

    def _follow(self, recorded: bool) -> bool:
        """Whether this update follows symbolic links: only where this run was
        given ``-L`` (``given.walk``); what the index records is a default
        for options, never a permission (an index may come from anywhere,
        and its links may lead out of the folder). Said once when the
        index asks for it and this run does not."""
        follow = self.given.walk.get("follow_symlinks") is True
        if recorded is True and not follow and not self._said_follow:
            self._said_follow = True
            self.notice(
                "msearch: not following symbolic links: the index records -L, "
                "but only this command's own -L allows it"
            )
        return follow

    def _recorded_model(self) -> Any:
        """The model record of the index (of any schema), or None. Starting
        over (``full``), nothing in it may stop the rebuild: a record that
        cannot be read is none, and one of a model that runs its own code,
        which this command does not allow, is set aside (said once)."""
        from msearch.encoders import ModelRecord
        from msearch.storage.record import recorded_model

        try:
            record = ModelRecord.from_json(recorded_model(self.index_dir))
        except MsearchError:
            return None
        except Exception:
            if self.full:
                return None
            raise
        if self.full and record.trust_remote_code and not self.given.trust_remote_code:
            self.model_notice(
                "msearch: the index records a model that runs its own code; starting over "
                "with the default model (--model NAME --trust-remote-code keeps it)"
            )
            return None
        return record

    def model(self) -> Any:
        """The model this folder's updates embed with (chosen once, at the
        first call: see msearch.models.model_for_update)."""
        if self._model is None:
            if self.directory is None:
                return self._as_recorded()[3]
            self._model = self._choose(self._recorded_model(), strict=False)
        return self._model

    def _choose(self, recorded: Any, strict: bool) -> Any:
        from msearch.models import model_for_update

        return model_for_update(
            self.models, recorded, self.given.wanted(), self.model_notice, strict=strict
        )

    def run(
        self,
        full: bool = False,
        compact: bool = False,
        progress: Progress | None = None,
        vectors: bool = True,
    ) -> IndexStats:
        """One update (see msearch.indexer.build_index): only what changed
        is read and embedded; ``full`` rebuilds, ``compact`` then merges
        every segment into one. Without ``vectors`` only the words of new
        passages are committed (searchable at once); :meth:`finish` embeds
        them (a watcher or a server, in a thread: msearch.vectors.Background)."""
        from msearch.indexer import build_index

        full = full or self.full
        root, walk, chunking, model = self._setup()
        return build_index(
            root,
            self.index_dir,
            model,
            walk,
            chunking,
            full=full,
            progress=progress,
            notice=self.notice,
            batch_size=self.given.batch_size,
            compact=compact,
            segments_writer=self.segments_writer,
            config=self.config,
            verify_all=self._verify_pending(),
            vectors=vectors,
        )

    def finish(
        self,
        should_stop: Callable[[], bool] | None = None,
        turn: Callable[[], Any] | None = None,
    ) -> Any:
        """Embed the passages whose words an update committed without their
        vectors (msearch.vectors.finish_pending), with this updater's model;
        a ``VectorStats``. ``turn``: held to commit each segment (see
        msearch.vectors.Background)."""
        from msearch.vectors import finish_pending

        model = self._setup()[3]
        return finish_pending(
            self.index_dir,
            model,
            batch_size=self.given.batch_size,
            config=self.config,
            should_stop=should_stop,
            turn=turn or contextlib.nullcontext,
        )

    def background(self, on_done: Callable[[Any], None] | None = None) -> Any:
        """A thread that embeds what updates leave pending, beside them
        (``with bg.paused(): updater.run(vectors=False)``; see
        msearch.vectors.Background)."""
        from msearch.vectors import Background

        return Background(lambda stop, turn: self.finish(stop, turn), self.notice, on_done)

    def _setup(self) -> tuple[Path, Any, Any, Any]:
        """(folder, walk options, chunking, model) of the next update."""
        if self.directory is not None:
            return self.directory, self.walk, self.chunking, self.model()
        return self._as_recorded()

    def _verify_pending(self) -> bool:
        verify, self._verify_next = self._verify_next, False
        return verify

    def _as_recorded(self) -> tuple[Path, Any, Any, Any]:
        from msearch.encoders import ModelRecord
        from msearch.indexer import chunking_from_json, walk_options_from_json
        from msearch.storage.layout import resolve_root
        from msearch.storage.record import read_meta

        meta = read_meta(self.index_dir)
        root = resolve_root(self.index_dir, meta.root)
        walk = walk_options_from_json(meta.walk)
        walk = replace(walk, follow_symlinks=self._follow(walk.follow_symlinks))
        # Passages follow structure from now on (see _settings).
        chunking = replace(chunking_from_json(meta.chunking), structure=True)
        key = json.dumps(meta.model, sort_keys=True)
        if self._model is None or key != self._model_key:
            self._model = self._choose(ModelRecord.from_json(meta.model), strict=True)
            self._model_key = key
        return root, walk, chunking, self._model


def update(
    directory: str | os.PathLike[str],
    given: Overrides | None = None,
    *,
    full: bool = False,
    compact: bool = False,
    progress: Progress | None = None,
    vectors: bool = True,
    **kwargs: Any,
) -> IndexStats:
    """Create or update the index of ``directory`` once (see :class:`Updater`,
    which takes the other keyword arguments); ``full``: start over, whatever
    the index records; without ``vectors``, the words only (see
    :meth:`Updater.run`)."""
    return Updater(directory, given, full=full, **kwargs).run(full, compact, progress, vectors)


# ---------------------------------------------------------------- status


def status(
    index_dir: str | os.PathLike[str] | None = None,
    config: IndexConfig = DEFAULT,
    follow_links: bool = False,
) -> Status:
    """What the index at ``index_dir`` (None: the nearest) holds, checked row
    by row, and which files changed since it was built (``follow_links``:
    walking through symbolic links, this run's ``-L`` only)."""
    from msearch.status import index_status

    where = Path(index_dir) if index_dir is not None else find_index()
    return index_status(where, config, follow_links)
