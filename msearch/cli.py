"""The ``msearch`` command: a thin typer layer over the library.

Every library error (:class:`msearch.errors.MsearchError`) becomes one line
on stderr and exit status 2; results go to stdout, everything else to
stderr. Heavy modules are imported inside the commands, so ``--help`` and
error paths stay fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from msearch.errors import MsearchError
from msearch.formats import FORMATS

app = typer.Typer(
    name="msearch",
    help="Semantic search over local text files: index a folder, then ask it questions.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


# --format's choices: the printers' registry (msearch.printers).
if TYPE_CHECKING:
    Format = str
else:
    Format = Enum("Format", {name: name for name in FORMATS}, type=str)


class Color(str, Enum):
    auto = "auto"
    never = "never"
    always = "always"


class Precision(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def say(msg: str) -> None:
    """A line on stderr, with control characters and undecodable name bytes
    escaped: a file name must not drive the terminal."""
    from msearch.output import escape_controls

    print(escape_controls(msg, keep=""), file=sys.stderr)


def err(msg: str) -> None:
    say(f"msearch: {msg}")


def fail(msg: str) -> NoReturn:
    err(msg)
    raise typer.Exit(EXIT_ERROR)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so a half-written index folder is removed."""
    raise KeyboardInterrupt


def _run(fn: Callable[[], int]) -> None:
    """Run a command body, mapping library errors and closed pipes to exit codes.

    Anything else is a bug: one line and exit 2 (never 1, which means "no
    hits" to a script); ``MSEARCH_DEBUG=1`` shows the traceback.
    """
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = fn()
    except MsearchError as exc:
        fail(str(exc))
    except BrokenPipeError:
        _quiet_pipe()
        code = EXIT_OK
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        internal_error(exc)
    raise typer.Exit(code)


def internal_error(exc: BaseException) -> NoReturn:
    if os.environ.get("MSEARCH_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    err(
        f"internal error: {type(exc).__name__}{': ' + detail if detail else ''} "
        "(please report it; MSEARCH_DEBUG=1 shows the traceback)"
    )
    raise typer.Exit(EXIT_ERROR)


def _quiet_pipe() -> None:
    """The reader went away (``| head``): stop writing, without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def parse_size(text: str) -> int:
    """A size such as 500k or 4M, in bytes: a finite number, at least one byte."""
    import math

    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3}
    units |= {"gb": 1024**3, "t": 1024**4, "tb": 1024**4}
    t = text.strip().lower().replace("ib", "b")
    num = t.rstrip("kmgtb")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        fail(f"invalid size {text!r} (use e.g. 500k, 4M)")
    if unit not in units or not math.isfinite(value) or value <= 0:
        fail(f"invalid size {text!r} (use e.g. 500k, 4M)")
    size = value * units[unit]
    if size < 1:
        fail(f"invalid size {text!r}: less than one byte")
    if size > 1 << 50:
        fail(f"invalid size {text!r}: too large")
    return int(size)


def query_text(arg: str) -> str:
    """A query from the command line: bytes that are not UTF-8 (which Python
    keeps as lone surrogates) become U+FFFD, as when reading stdin."""
    return arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


IndexOpt = Annotated[
    Path | None,
    typer.Option(
        "--index",
        envvar="MSEARCH_INDEX",
        help="Index folder (default: DIR/.msearch; for queries, the nearest .msearch upwards).",
        show_default=False,
    ),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Allow a model that ships its own code to run it (env MSEARCH_TRUST_REMOTE_CODE=1).",
    ),
]


def trust_from_env() -> bool:
    return os.environ.get("MSEARCH_TRUST_REMOTE_CODE", "").lower() in ("1", "true", "yes", "on")


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="MSEARCH_MODEL",
        help="sentence-transformers model name or local folder "
        "(default: msmarco-MiniLM-L6-cos-v5, else the bundled all-MiniLM-L6-v2).",
        show_default=False,
    ),
]


MAX_DEBOUNCE_MS = 86_400_000  # a day: --debounce is refused above it, when it is parsed

# Options shared by `index` and `watch` (and --device by every command that loads a model).
IncludeOpt = Annotated[
    list[str] | None, typer.Option("--include", "-g", help="Only files matching this glob.")
]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude", help="Skip files/folders matching this glob.")
]
HiddenOpt = Annotated[bool, typer.Option("--hidden", help="Include hidden files.")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-L", help="Follow symlinks.")]
NoIgnoreOpt = Annotated[
    bool, typer.Option("--no-ignore", help="Do not honour .gitignore/.ignore files.")
]
NoiseOpt = Annotated[
    bool,
    typer.Option(
        "--include-noise", help="Index lock files, minified files and vendored folders too."
    ),
]
MaxSizeOpt = Annotated[
    str, typer.Option("--max-file-size", help="Skip files larger than this (e.g. 4M).")
]
ChunkOpt = Annotated[
    int, typer.Option("--chunk-tokens", help="Passage size in model tokens (capped).")
]
OverlapOpt = Annotated[
    int, typer.Option("--overlap-tokens", help="Tokens repeated between passages.")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run the model.")]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help="At most this many passages per batch (default: 32 on CPU, 1024 on a GPU).",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        "--precision",
        help="Precision of the model's arithmetic (default: float32, or the index's).",
        show_default=False,
    ),
]
FastOpt = Annotated[
    bool,
    typer.Option(
        "--fast",
        help="Same as --precision bfloat16: about 1.5x faster where the CPU or GPU "
        "has bfloat16, vectors within cosine 0.9999.",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or summaries; errors only.")
]

# The options `index` and `watch` share that make an update's walk and
# chunking: option name -> (WalkOptions or ChunkSettings field).
WALK_OPTIONS = {
    "hidden": "hidden",
    "follow": "follow_symlinks",
    "no_ignore": "use_ignore_files",
    "include_noise": "include_noise",
    "max_file_size": "max_file_size",
    "include": "include",
    "exclude": "exclude",
}
CHUNK_OPTIONS = {"chunk_tokens": "max_tokens", "overlap_tokens": "overlap_tokens"}


def _models(ctx: typer.Context) -> Any:
    """Where the commands get their models: the ``models`` given to
    :func:`main` (a test's fake), else msearch.encoders (``None``)."""
    return ctx.obj


def _overrides(
    ctx: typer.Context,
    only_given: bool,
    model: str | None,
    device: Device,
    batch_size: int | None,
    precision: Precision | None,
    fast: bool,
    trust_remote_code: bool,
    walk: Any,
) -> Any:
    """What `index` and `watch` hand the update (api.Overrides). ``only_given``:
    walk and chunking options left at their defaults are not given, so
    they keep what the index records (watch); otherwise every one is
    (index builds with exactly its options)."""
    from msearch import api

    if fast and precision not in (None, Precision.bfloat16):
        fail("--fast means --precision bfloat16; give one or the other")

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return not only_given or (source is not None and source.name != "DEFAULT")

    params = ctx.params
    return api.Overrides(
        model=model,
        precision=Precision.bfloat16.value if fast else precision.value if precision else None,
        device=device.value,
        batch_size=batch_size,
        trust_remote_code=trust_remote_code or trust_from_env(),
        walk={f: getattr(walk, f) for opt, f in WALK_OPTIONS.items() if given(opt)},
        chunking={f: params[opt] for opt, f in CHUNK_OPTIONS.items() if given(opt)},
    )


def _updater(
    ctx: typer.Context,
    directory: Path,
    given: Any,
    index_path: Path | None,
    quiet: bool,
    segments_writer: Any = None,
    full: bool = False,
    verify_first: bool = False,
) -> Any:
    """The update `index` and `watch` run: with ``quiet``, only what loading
    the model says (a fallback model, a precision the hardware lacks)."""
    from msearch import api

    return api.Updater(
        directory,
        given,
        index_dir=index_path,
        models=_models(ctx),
        notice=(lambda _m: None) if quiet else say,
        model_notice=say,
        segments_writer=segments_writer,
        full=full,
        verify_first=verify_first,
    )


@app.command()
def index(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to index.")],
    index_path: IndexOpt = None,
    model: ModelOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild from scratch.")] = False,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    hidden: HiddenOpt = False,
    follow: FollowOpt = False,
    no_ignore: NoIgnoreOpt = False,
    include_noise: NoiseOpt = False,
    max_file_size: MaxSizeOpt = "4M",
    chunk_tokens: ChunkOpt = 256,
    overlap_tokens: OverlapOpt = 32,
    device: DeviceOpt = Device.auto,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    fast: FastOpt = False,
    quiet: QuietOpt = False,
    compact: Annotated[
        bool,
        typer.Option("--compact", help="Then merge every segment into one (no re-embedding)."),
    ] = False,
    trust_remote_code: TrustOpt = False,
    use_ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Read, chunk and embed on a Ray cluster: RAY_ADDRESS, else a local one "
            "(needs the extra 'ray'; files and model at the same path on every node).",
        ),
    ] = False,
) -> None:
    """Index the text files under DIR (again: only what changed)."""

    def body() -> int:
        walk = _walk_options(
            include, exclude, hidden, follow, no_ignore, include_noise, max_file_size
        )
        given = _overrides(
            ctx, False, model, device, batch_size, precision, fast, trust_remote_code, walk
        )
        runner: Any = None
        if use_ray:
            from msearch.distributed import RayIndexer

            runner = RayIndexer(device=device.value)
        updater = _updater(ctx, directory, given, index_path, quiet, runner, full)
        if use_ray:
            from msearch.distributed import check_available

            check_available()  # Ray installed, RAY_ADDRESS reachable: before any work
        updater.model()  # what loading it says comes before the progress bar
        bar: Any = contextlib.nullcontext()
        if not quiet and sys.stderr.isatty():
            from msearch.tty import BarProgress, make_console

            bar = BarProgress(make_console(sys.stderr, "auto"))
        try:
            with bar as progress:
                stats = updater.run(full, compact, progress)
        except KeyboardInterrupt:
            _say_waiting(updater.index_dir)
            raise
        if not quiet:
            _say_skipped(stats.skipped)
            say(summary_line(stats))
            if runner is not None:
                from msearch.distributed import describe

                describe(runner.report, say)
        return EXIT_OK

    _run(body)


def _walk_options(
    include: list[str] | None,
    exclude: list[str] | None,
    hidden: bool,
    follow: bool,
    no_ignore: bool,
    include_noise: bool,
    max_file_size: str,
) -> Any:
    """The WalkOptions the command line asks for, checked."""
    from msearch.walk import WalkOptions, check_globs

    max_bytes = parse_size(max_file_size)
    check_globs(include or (), "--include")
    check_globs(exclude or (), "--exclude")
    return WalkOptions(
        hidden=hidden,
        follow_symlinks=follow,
        use_ignore_files=not no_ignore,
        include_noise=include_noise,
        max_file_size=max_bytes,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
    )


def _say_waiting(index_dir: Path) -> None:
    """After an interrupted update: what of the index is searchable."""
    from msearch.storage.record import read_meta

    try:
        meta = read_meta(index_dir)
    except MsearchError:
        return
    if meta.waiting:
        err(
            f"{meta.count - meta.waiting:,} of {meta.count:,} passages have their vectors; "
            "the others are searchable by their words until the next `msearch index` "
            "or `msearch watch` embeds them"
        )


def _say_skipped(skipped: Iterable[Any]) -> None:
    """A line for each skipped file, but for noise and binary files (expected)."""
    from msearch.output import escape

    for s in skipped:
        if not s.reason.startswith(("noise", "binary")):
            say(f"msearch: skipped {escape(s.rel)}: {s.reason}")


def summary_line(stats: Any) -> str:
    from collections import Counter

    reasons = Counter(s.reason.split(" (")[0] for s in stats.skipped)
    skipped = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    parts = [
        f"indexed {stats.files} files ({stats.added} added, {stats.changed} changed, "
        f"{stats.removed} removed, {stats.unchanged} unchanged)",
        f"skipped {len(stats.skipped)}" + (f" ({skipped})" if skipped else ""),
        f"{stats.passages} passages ({stats.embedded} embedded"
        + (f", {stats.pending} waiting for vectors)" if stats.pending else ")"),
        f"{stats.seconds:.1f}s",
    ]
    return "msearch: " + "; ".join(parts)


@app.command()
def query(
    ctx: typer.Context,
    text: Annotated[
        str, typer.Argument(metavar="TEXT", help="What to look for; '-' reads queries from stdin.")
    ],
    index_path: IndexOpt = None,
    model: ModelOpt = None,
    top: Annotated[int, typer.Option("--top", "-k", help="Number of results.")] = 10,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Drop hits scoring below this.")
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format", "-f", help="Output format (default: table on a terminal, else jsonl)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format jsonl.")] = False,
    files_with_matches: Annotated[
        bool, typer.Option("--files-with-matches", "-l", help="Print matching files, best first.")
    ] = False,
    null: Annotated[
        bool, typer.Option("--null", "-0", help="End each path with NUL (for xargs -0).")
    ] = False,
    color: Annotated[Color, typer.Option("--color", help="Colour the table.")] = Color.auto,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Re-index changed files before searching.")
    ] = False,
    device: DeviceOpt = Device.auto,
    dense_only: Annotated[
        bool, typer.Option("--dense-only", help="Rank by embeddings alone (no BM25).")
    ] = False,
    lexical_only: Annotated[
        bool, typer.Option("--lexical-only", help="Rank by BM25 alone (no model needed).")
    ] = False,
    globs: Annotated[
        list[str] | None,
        typer.Option(
            "--glob",
            "-g",
            help="Only files matching this glob (gitignore syntax, relative to the index root; "
            "'!' excludes; repeatable).",
        ),
    ] = None,
    context: Annotated[
        int | None, typer.Option("--context", "-C", help="Show N lines around each hit.")
    ] = None,
    after_context: Annotated[
        int | None, typer.Option("--after-context", "-A", help="Show N lines after each hit.")
    ] = None,
    before_context: Annotated[
        int | None, typer.Option("--before-context", "-B", help="Show N lines before each hit.")
    ] = None,
    vimgrep: Annotated[
        bool,
        typer.Option("--vimgrep", help="Same as --format vimgrep: path:line:column:text per hit."),
    ] = False,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="Score every passage (a large index is otherwise searched in two stages).",
        ),
    ] = False,
    no_priors: Annotated[
        bool,
        typer.Option(
            "--no-priors",
            help="Rank tests, examples, vendored, generated and docs files like any other.",
        ),
    ] = False,
    trust_remote_code: TrustOpt = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-L",
            help="Read hits' files, and walk with --refresh, through symlinks.",
        ),
    ] = False,
) -> None:
    """Search the index for passages that answer TEXT."""

    def body() -> int:
        from msearch import api, stdout
        from msearch.config import RankConfig
        from msearch.printers import PrintOptions, print_results
        from msearch.storage.layout import find_index

        stdout.require()
        # Parse, then the request (checked whole, before anything is written
        # or loaded), then the facade, then the printer.
        chosen = FORMATS[_choose_format(fmt, as_json, vimgrep, files_with_matches, null)]
        if dense_only and lexical_only:
            fail("--dense-only and --lexical-only exclude each other")
        request = api.SearchRequest(
            tuple(_read_queries() if text == "-" else [query_text(text)]),
            k=top,
            mode="dense" if dense_only else "lexical" if lexical_only else "hybrid",
            min_score=min_score,
            globs=tuple(globs or ()),
            context=_context(context, before_context, after_context),
            exact=exact,
            files=chosen.files,
            ranking=RankConfig(priors=not no_priors),
            spelling=api.CLI,
        )
        index_dir = find_index(index_path)
        trust = trust_remote_code or trust_from_env()
        if refresh:
            given = api.Overrides(
                device=device.value, trust_remote_code=trust, walk=_follow_walk(follow)
            )
            updater = api.Updater(None, given, index_dir=index_dir, models=_models(ctx), notice=say)
            err(summary_line(updater.run()).removeprefix("msearch: "))
        idx = api.open_index(
            index_dir,
            models=_models(ctx),
            device=device.value,
            trust_remote_code=trust,
            notice=say,
            model=model,
            lexical=request.mode != "dense",
            follow_links=follow,
        )
        results = idx.search(request)
        if idx.waiting and sys.stderr.isatty():
            have = idx.count - idx.waiting
            err(
                f"{have:,} of {idx.count:,} passages have their vectors so far; the others "
                "are ranked by their words until `msearch index` has embedded them"
            )
        printer = chosen.make(
            PrintOptions(
                out=sys.stdout,
                multi=text == "-",
                context=any(request.context),
                null=null,
                color=_color_mode(color),
                lexical=idx.meta.lexical,
            )
        )
        return EXIT_OK if print_results(printer, request.queries, results) else EXIT_NO_MATCH

    _run(body)


def _follow_walk(follow: bool) -> dict[str, Any]:
    """An update's walk options from this run's -L: links are followed only
    where the command line says so, never because an index records it."""
    return {"follow_symlinks": True} if follow else {}


def _context(both: int | None, before: int | None, after: int | None) -> tuple[int, int]:
    """(lines before, lines after): -B and -A override -C, as in grep."""
    for name, n in (("-C/--context", both), ("-B", before), ("-A", after)):
        if n is not None and n < 0:
            fail(f"{name} must be 0 or more (got {n})")
    b = before if before is not None else both or 0
    a = after if after is not None else both or 0
    return b, a


def _choose_format(
    fmt: Format | None, as_json: bool, vimgrep: bool, files: bool, null: bool
) -> str:
    """The format's name: -l/-0 mean paths, --json jsonl, --vimgrep vimgrep;
    else --format; else a table on a terminal and JSON Lines otherwise."""
    if vimgrep:
        if as_json or fmt not in (None, "vimgrep"):
            fail("--vimgrep is a format of its own; give it or --format/--json")
        return "vimgrep"
    if files or null:
        return "paths"
    if as_json:
        return "jsonl"
    if fmt is not None:
        return str(getattr(fmt, "value", fmt))
    return "table" if sys.stdout.isatty() else "jsonl"


def _color_mode(color: Color) -> str:
    if color == Color.auto and os.environ.get("NO_COLOR"):
        return "never"
    return color.value


def _read_queries() -> list[str]:
    """Queries from stdin, one per line, as UTF-8 (invalid bytes become U+FFFD)."""
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    text = raw.decode("utf-8", "replace")
    queries = [line.strip() for line in text.split("\n") if line.strip()]
    if not queries:
        fail("no queries on standard input")
    return queries


@app.command()
def status(
    index_path: IndexOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-L", help="Look for changes through symlinks.")
    ] = False,
) -> None:
    """Show what an index holds and what changed since it was built."""

    def body() -> int:
        import json
        import time

        from msearch import api, stdout
        from msearch.output import escape, lossy
        from msearch.storage.layout import find_index

        stdout.require()
        st = api.status(find_index(index_path), follow_links=follow)
        if as_json:
            print(json.dumps(lossy(st.to_json()), ensure_ascii=False))
            return EXIT_OK
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.updated))
        print(f"index:     {escape(st.index_dir)}")
        print(f"root:      {escape(st.root)}")
        print(f"model:     {escape(st.model)} ({st.dim} dims, {st.precision})")
        print(f"files:     {st.files}")
        print(f"passages:  {st.passages}")
        if st.embedded < st.passages:
            print(
                f"embedded:  {st.embedded} of {st.passages} "
                "(the others are found by their words; `msearch index` embeds them)"
            )
        print(f"segments:  {st.segments} ({st.dead} dead rows)")
        print(f"search:    {st.search}")
        print(f"size:      {st.size_bytes / 1e6:.1f} MB")
        print(f"built:     {built}")
        print(
            f"changes:   {len(st.changed)} changed, {len(st.added)} added, "
            f"{len(st.deleted)} deleted since"
        )
        for label, items in (("changed", st.changed), ("added", st.added), ("deleted", st.deleted)):
            for p in items:
                print(f"  {label}: {escape(p)}")
        return EXIT_OK

    _run(body)


@app.command()
def watch(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder to watch (default: the current one).")
    ] = Path("."),
    index_path: IndexOpt = None,
    model: ModelOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    hidden: HiddenOpt = False,
    follow: FollowOpt = False,
    no_ignore: NoIgnoreOpt = False,
    include_noise: NoiseOpt = False,
    max_file_size: MaxSizeOpt = "4M",
    chunk_tokens: ChunkOpt = 256,
    overlap_tokens: OverlapOpt = 32,
    device: DeviceOpt = Device.auto,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    fast: FastOpt = False,
    debounce: Annotated[
        int,
        typer.Option(
            "--debounce",
            metavar="MS",
            min=1,
            max=MAX_DEBOUNCE_MS,
            help="Gather a burst of changes for at most this many milliseconds before updating.",
        ),
    ] = 1600,
    quiet: QuietOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Keep the index of DIR fresh: update it whenever files under DIR change.

    It updates at once, then after each batch of changes, as `msearch index`
    would; options not given keep what an existing index records. Ctrl-C
    stops.
    """

    def body() -> int:
        from msearch.watch import load_watchfiles
        from msearch.watch import watch as watch_folder

        load_watchfiles()  # a missing extra is said before the model loads
        if debounce < 1:
            fail(f"--debounce must be at least 1 millisecond (got {debounce})")
        walk = _walk_options(
            include, exclude, hidden, follow, no_ignore, include_noise, max_file_size
        )
        given = _overrides(
            ctx, True, model, device, batch_size, precision, fast, trust_remote_code, walk
        )
        # Long-running: every checksum is compared once, at the first update.
        updater = _updater(ctx, directory, given, index_path, quiet, verify_first=True)
        # Words first: each update commits the words of what changed (a
        # second), and a thread embeds them, giving way to the next update.
        vectors = updater.background(None if quiet else _say_vectors)

        def update() -> Any:
            with vectors.paused():
                return updater.run(vectors=False)

        try:
            watch_folder(
                directory,
                updater.index_dir,
                update,
                say,  # a failed update is said even with --quiet
                debounce_ms=debounce,
                on_update=None if quiet else _WatchReport(directory),
            )
        except KeyboardInterrupt:
            _say_waiting(updater.index_dir)
            err("stopped watching")
        finally:
            vectors.close()
        return EXIT_OK

    _run(body)


def _say_vectors(stats: Any) -> None:
    """What the embedding thread of a watcher says when it is done."""
    say(stats.done_line())


class _WatchReport:
    """What `msearch watch` says after each update: the first one's summary
    and that it is watching; then the summary of each update that changed
    something, and a line for a file when it starts being skipped."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.skipped: set[tuple[str, str]] | None = None  # None until the first update

    def __call__(self, stats: Any) -> None:
        first = self.skipped is None
        before = self.skipped or set()
        self.skipped = {(s.rel, s.reason) for s in stats.skipped}
        _say_skipped(s for s in stats.skipped if (s.rel, s.reason) not in before)
        if first or stats.added or stats.changed or stats.removed:
            say(summary_line(stats))
        if first:
            err(f"watching {self.directory} for changes (Ctrl-C stops)")


@app.command()
def mcp(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(
            metavar="[DIR]",
            help="Folder to serve (indexed first if it has no index); "
            "default: the nearest index upwards.",
            show_default=False,
        ),
    ] = None,
    index_path: IndexOpt = None,
    device: DeviceOpt = Device.auto,
    watch_files: Annotated[
        bool, typer.Option("--watch", help="Also keep the index fresh as files change.")
    ] = False,
    debounce: Annotated[
        int,
        typer.Option(
            "--debounce",
            metavar="MS",
            min=1,
            max=MAX_DEBOUNCE_MS,
            help="With --watch: gather a burst of changes for at most this many milliseconds.",
        ),
    ] = 1600,
    trust_remote_code: TrustOpt = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-L",
            help="Let get read, and reindex walk, through symlinks (never by the index's say).",
        ),
    ] = False,
) -> None:
    """Serve the index to AI agents and editors: a Model Context Protocol server on stdio.

    Tools: search, get, status, reindex. Logs go to stderr; stdout carries
    only the protocol.
    """

    def body() -> int:
        import threading

        from msearch import __version__, api, stdout
        from msearch.service import SearchService
        from msearch.storage.layout import INDEX_DIR_NAME, META_NAME, find_index

        stdout.require()  # the protocol's channels
        stdout.require_stdin()
        try:
            from msearch import mcp_server
        except ImportError:
            fail("msearch mcp needs the mcp extra: pip install 'msearch[mcp]'")
        if watch_files:
            from msearch.watch import load_watchfiles

            load_watchfiles()
        if debounce < 1:
            fail(f"--debounce must be at least 1 millisecond (got {debounce})")
        trust = trust_remote_code or trust_from_env()
        if directory is not None:
            from msearch.indexer import check_root

            check_root(directory)  # no such folder, not a folder, permission, no cwd
            index_dir = Path(index_path or directory / INDEX_DIR_NAME)
            if not os.path.lexists(index_dir / META_NAME):
                # Words first: served in seconds; the vectors follow in the
                # background (embed_pending below).
                err(f"{directory} has no index yet; indexing its words first")
                given = api.Overrides(
                    device=device.value, trust_remote_code=trust, walk=_follow_walk(follow)
                )
                stats = api.update(
                    directory,
                    given,
                    index_dir=index_dir,
                    models=_models(ctx),
                    notice=say,
                    vectors=False,
                )
                say(summary_line(stats))
        else:
            index_dir = find_index(index_path)
        service = SearchService(
            index_dir, device.value, trust, notice=say, models=_models(ctx), follow_links=follow
        )
        index = service.index()  # a damaged index is one line now, not an error per call
        if index.waiting:
            err(
                f"{index.waiting:,} of {index.count:,} passages are searchable by their words "
                "while their vectors are embedded"
            )
            service.embed_pending()
        stop = threading.Event()
        if watch_files:
            threading.Thread(
                target=_watch_for_server, args=(service, stop, debounce), daemon=True
            ).start()
        try:
            mcp_server.serve(service, __version__)
        finally:
            stop.set()
            service.close()
        return EXIT_OK

    _run(body)


def _watch_for_server(service: Any, stop: Any, debounce: int) -> None:
    """`msearch mcp --watch`: the watcher beside the server, updating with the
    index's recorded settings. Whatever ends it (the folder vanished) is one
    line on stderr; the server goes on answering from the last index."""
    from msearch.storage.layout import resolve_root
    from msearch.storage.record import read_meta
    from msearch.watch import watch as watch_folder

    try:
        root = resolve_root(service.index_dir, read_meta(service.index_dir).root)
        watch_folder(
            root,
            service.index_dir,
            service.reindex,
            say,  # core notices are whole lines ("msearch: ...")
            stop=stop,
            debounce_ms=debounce,
            on_update=_WatchReport(root),
        )
    except MsearchError as exc:
        err(f"{exc}; the server goes on with the last index")
    except Exception as exc:  # a bug: said, never a silent dead thread
        err(f"the watcher stopped: internal error: {type(exc).__name__}: {exc}")


@app.command()
def completion(
    shell: Annotated[Shell, typer.Argument(help="The shell to complete in.")],
) -> None:
    """Print the shell's completion script (typer's own).

    Put `eval "$(msearch completion bash)"` in ~/.bashrc, `eval "$(msearch
    completion zsh)"` in ~/.zshrc, or `msearch completion fish >
    ~/.config/fish/completions/msearch.fish`.
    """

    def body() -> int:
        from typer.completion import get_completion_script

        from msearch import stdout

        stdout.require()
        script = get_completion_script(
            prog_name="msearch", complete_var=COMPLETE_VAR, shell=shell.value
        )
        print(script)
        sys.stdout.flush()
        return EXIT_OK

    _run(body)


COMPLETE_VAR = "_MSEARCH_COMPLETE"


def _version(value: bool) -> None:
    if value:
        from msearch import __version__

        print(f"msearch {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Semantic search over local text files: index a folder, then ask it questions."""


def _usage_error_type() -> type[Exception]:
    """click's UsageError, whether typer vendors click or imports it."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "UsageError":
            return cls
    return typer.BadParameter


def main(argv: list[str] | None = None, models: Any = None) -> None:
    """The console script: usage errors are one line with a hint (not typer's
    box), and nothing escapes as a traceback. ``models``: where the commands
    get their models (msearch.models.Models; default msearch.encoders)."""
    from msearch import stdout

    usage_error = _usage_error_type()
    stdout.prepare()  # a full disk or a closed stdout: one line, exit 2
    if os.environ.get(COMPLETE_VAR):
        # The shell asks for completions (the script from `msearch completion`):
        # typer's completion classes, loaded only then, so that every other
        # run, a cold query above all, pays nothing for them.
        from typer.completion import completion_init

        completion_init()
    try:
        code = app(args=argv, prog_name="msearch", standalone_mode=False, obj=models)
    except BrokenPipeError:
        _quiet_pipe()
        code = EXIT_OK
    except typer.Exit as exc:
        code = exc.exit_code
    except usage_error as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            code = EXIT_ERROR
        else:
            where = ctx.command_path if ctx is not None else "msearch"
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            err(f"{message.strip().rstrip('.')} (see {where} --help)")
            code = EXIT_ERROR
    except (KeyboardInterrupt, typer.Abort):
        err("interrupted")
        code = 130
    except Exception as exc:
        try:
            internal_error(exc)
        except typer.Exit as done:
            code = done.exit_code
    try:
        stdout.finish()
    except BrokenPipeError:
        _quiet_pipe()
    except MsearchError as exc:
        err(str(exc))
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else EXIT_OK)
