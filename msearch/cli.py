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
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from msearch.errors import MsearchError

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


class Format(str, Enum):
    table = "table"
    jsonl = "jsonl"
    tsv = "tsv"
    paths = "paths"


class Color(str, Enum):
    auto = "auto"
    never = "never"
    always = "always"


class Precision(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"


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


@app.command()
def index(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to index.")],
    index_path: IndexOpt = None,
    model: ModelOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild from scratch.")] = False,
    include: Annotated[
        list[str] | None, typer.Option("--include", "-g", help="Only files matching this glob.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Skip files/folders matching this glob.")
    ] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Include hidden files.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-L", help="Follow symlinks.")] = False,
    no_ignore: Annotated[
        bool, typer.Option("--no-ignore", help="Do not honour .gitignore/.ignore files.")
    ] = False,
    include_noise: Annotated[
        bool,
        typer.Option(
            "--include-noise", help="Index lock files, minified files and vendored folders too."
        ),
    ] = False,
    max_file_size: Annotated[
        str, typer.Option("--max-file-size", help="Skip files larger than this (e.g. 4M).")
    ] = "4M",
    chunk_tokens: Annotated[
        int, typer.Option("--chunk-tokens", help="Passage size in model tokens (capped).")
    ] = 256,
    overlap_tokens: Annotated[
        int, typer.Option("--overlap-tokens", help="Tokens repeated between passages.")
    ] = 32,
    device: Annotated[
        Device, typer.Option("--device", help="Where to run the model.")
    ] = Device.auto,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="At most this many passages per batch (default: 32 on CPU, 1024 on a GPU).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            "--precision",
            help="Precision of the model's arithmetic (default: float32, or the index's).",
            show_default=False,
        ),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Same as --precision bfloat16: about 1.5x faster where the CPU or GPU "
            "has bfloat16, vectors within cosine 0.9999.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
    compact: Annotated[
        bool,
        typer.Option("--compact", help="Then merge every segment into one (no re-embedding)."),
    ] = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Index the text files under DIR (again: only what changed)."""

    def body() -> int:
        from msearch.chunk import ChunkSettings
        from msearch.encoders import (
            ModelRecord,
            check_device,
            load_model,
            load_recorded,
            resolve_precision,
        )
        from msearch.indexer import build_index
        from msearch.store import INDEX_DIR_NAME, recorded_model
        from msearch.walk import WalkOptions, check_globs

        if not os.path.exists(directory):
            fail(f"{directory}: no such folder")
        if not os.path.isdir(directory):
            fail(f"{directory}: not a folder")
        if chunk_tokens < 8 or overlap_tokens < 0 or overlap_tokens >= chunk_tokens:
            fail("--chunk-tokens must be at least 8 and --overlap-tokens below it")
        if batch_size is not None and batch_size < 1:
            fail("--batch-size must be at least 1")
        if fast and precision not in (None, Precision.bfloat16):
            fail("--fast means --precision bfloat16; give one or the other")
        max_bytes = parse_size(max_file_size)
        check_globs(include or (), "--include")
        check_globs(exclude or (), "--exclude")
        check_device(device.value)
        wanted = Precision.bfloat16.value if fast else precision.value if precision else None
        index_dir = index_path or directory / INDEX_DIR_NAME
        notice = (lambda _m: None) if quiet else say
        emb: Any = None
        rec: ModelRecord | None = None
        try:
            rec = ModelRecord.from_json(recorded_model(Path(index_dir)))
        except MsearchError:
            rec = None
        trust = trust_remote_code or trust_from_env()
        if model is None and rec is not None:
            # Re-indexing keeps the index's model and precision unless others are asked for.
            if rec.trust_remote_code and not trust:
                emb = load_recorded(rec, device.value, trust)  # one line: allow it or not
            try:
                emb = load_recorded(rec, device.value, trust, notice=say)
            except MsearchError:
                emb = None
            if emb is not None and wanted is not None:
                got = resolve_precision(wanted, device.value, notice=say)
                if got != emb.precision:
                    emb = emb.with_precision(got)
        if emb is None:
            keep = rec.precision if rec is not None else "float32"
            emb = load_model(
                model, device.value, notice=say, precision=wanted or keep, trust_remote_code=trust
            )
        wopts = WalkOptions(
            hidden=hidden,
            follow_symlinks=follow,
            use_ignore_files=not no_ignore,
            include_noise=include_noise,
            max_file_size=max_bytes,
            include=tuple(include or ()),
            exclude=tuple(exclude or ()),
        )
        settings = ChunkSettings(max_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        bar: Any = contextlib.nullcontext()
        if not quiet and sys.stderr.isatty():
            from msearch.tty import BarProgress, make_console

            bar = BarProgress(make_console(sys.stderr, "auto"))
        with bar as progress:
            stats = build_index(
                directory,
                Path(index_dir),
                emb,
                wopts,
                settings,
                full,
                progress,
                notice,
                batch_size,
                compact,
            )
        if not quiet:
            from msearch.output import _escape

            for s in stats.skipped:
                if not s.reason.startswith(("noise", "binary")):
                    say(f"msearch: skipped {_escape(s.rel)}: {s.reason}")
            say(summary_line(stats))
        return EXIT_OK

    _run(body)


def summary_line(stats: Any) -> str:
    from collections import Counter

    reasons = Counter(s.reason.split(" (")[0] for s in stats.skipped)
    skipped = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    parts = [
        f"indexed {stats.files} files ({stats.added} added, {stats.changed} changed, "
        f"{stats.removed} removed, {stats.unchanged} unchanged)",
        f"skipped {len(stats.skipped)}" + (f" ({skipped})" if skipped else ""),
        f"{stats.passages} passages ({stats.embedded} embedded)",
        f"{stats.seconds:.1f}s",
    ]
    return "msearch: " + "; ".join(parts)


@app.command()
def query(
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
    device: Annotated[
        Device, typer.Option("--device", help="Where to run the model.")
    ] = Device.auto,
    dense_only: Annotated[
        bool, typer.Option("--dense-only", help="Rank by embeddings alone (no BM25).")
    ] = False,
    lexical_only: Annotated[
        bool, typer.Option("--lexical-only", help="Rank by BM25 alone (no model needed).")
    ] = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Search the index for passages that answer TEXT."""

    def body() -> int:
        import math

        from msearch.query import find_index

        if top < 1:
            fail(f"-k/--top must be at least 1 (got {top})")
        if min_score is not None and not math.isfinite(min_score):
            fail(f"--min-score must be a number (got {min_score})")
        if text != "-" and not text.strip():
            fail("empty query")
        if device == Device.cuda:
            from msearch.encoders import check_device

            check_device(device.value)
        chosen = _choose_format(fmt, as_json, files_with_matches, null)
        queries = _read_queries() if text == "-" else [query_text(text)]
        index_dir = find_index(index_path)
        trust = trust_remote_code or trust_from_env()
        if refresh:
            _refresh(index_dir, trust)
        if dense_only and lexical_only:
            fail("--dense-only and --lexical-only exclude each other")
        wanted = "dense" if dense_only else "lexical" if lexical_only else "hybrid"
        searcher = _open_searcher(index_dir, model, device.value, wanted, trust)
        k = top
        if chosen == Format.paths:
            k = max(top * 20, 100)  # enough passages to find `top` distinct files
        multi = text == "-"
        any_hits = False
        out = sys.stdout
        console = None
        if chosen == Format.table:
            from msearch.tty import make_console

            console = make_console(out, _color_mode(color))
        for q, hits in zip(queries, searcher.query_many(queries, k, min_score), strict=True):
            if not hits:
                continue
            any_hits = True
            _emit(chosen, hits, q, multi, null, top, console)
        out.flush()
        return EXIT_OK if any_hits else EXIT_NO_MATCH

    _run(body)


def _choose_format(fmt: Format | None, as_json: bool, files: bool, null: bool) -> Format:
    if files or null:
        return Format.paths
    if as_json:
        return Format.jsonl
    if fmt is not None:
        return fmt
    return Format.table if sys.stdout.isatty() else Format.jsonl


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


def _emit(
    fmt: Format, hits: list[Any], query: str, multi: bool, null: bool, top: int, console: Any
) -> None:
    """Write one query's hits; with several queries, each hit names its query."""
    from msearch import output

    lines: Iterable[str]
    if fmt == Format.table:
        from msearch.tty import render_table

        render_table(console, hits, query, title=multi)
        return
    tag = query if multi else None
    if fmt == Format.jsonl:
        lines = output.jsonl(hits, tag)
    elif fmt == Format.tsv:
        lines = output.tsv(hits, tag)
    else:
        lines = list(output.paths(hits, null))[:top]
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # a text-only stream (tests): names that are not UTF-8 escaped
        out.writelines(line.encode("utf-8", "backslashreplace").decode() for line in lines)
        return
    out.flush()
    buffer.write(b"".join(output.to_bytes(line) for line in lines))


def _open_searcher(
    index_dir: Path, model: str | None, device: str, mode: str, trust: bool = False
) -> Any:
    from msearch.query import Searcher, check_model, open_lexical, query_encoder
    from msearch.store import load_index

    idx = load_index(index_dir, lexical=mode != "dense")
    check_model(idx, model)
    lexical = open_lexical(idx) if mode != "dense" else None
    encode = query_encoder(idx, device, err, trust) if mode != "lexical" else None
    return Searcher(idx, encode, lexical, mode)


def _refresh(index_dir: Path, trust: bool = False) -> None:
    from msearch.chunk import ChunkSettings
    from msearch.encoders import ModelRecord, load_recorded
    from msearch.errors import IndexCorrupt
    from msearch.indexer import build_index, walk_options_from_json
    from msearch.store import read_meta, resolve_root

    meta = read_meta(index_dir)
    root = resolve_root(index_dir, meta.root)
    emb = load_recorded(ModelRecord.from_json(meta.model), "auto", trust, notice=say)
    chunking = meta.chunking
    if set(chunking) != {"max_tokens", "overlap_tokens"} or not all(
        type(v) is int for v in chunking.values()
    ):
        raise IndexCorrupt(
            "the index's chunking settings are malformed; "
            "rebuild it with `msearch index --full DIR`"
        )
    stats = build_index(
        root, index_dir, emb, walk_options_from_json(meta.walk), ChunkSettings(**chunking)
    )
    err(summary_line(stats).removeprefix("msearch: "))


@app.command()
def status(
    index_path: IndexOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show what an index holds and what changed since it was built."""

    def body() -> int:
        import json
        import time

        from msearch.output import _escape, lossy
        from msearch.query import find_index
        from msearch.status import index_status

        st = index_status(find_index(index_path))
        if as_json:
            print(json.dumps(lossy(st.to_json()), ensure_ascii=False))
            return EXIT_OK
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.updated))
        print(f"index:     {_escape(st.index_dir)}")
        print(f"root:      {_escape(st.root)}")
        print(f"model:     {_escape(st.model)} ({st.dim} dims, {st.precision})")
        print(f"files:     {st.files}")
        print(f"passages:  {st.passages}")
        print(f"segments:  {st.segments} ({st.dead} dead rows)")
        print(f"size:      {st.size_bytes / 1e6:.1f} MB")
        print(f"built:     {built}")
        print(
            f"changes:   {len(st.changed)} changed, {len(st.added)} added, "
            f"{len(st.deleted)} deleted since"
        )
        for label, items in (("changed", st.changed), ("added", st.added), ("deleted", st.deleted)):
            for p in items:
                print(f"  {label}: {_escape(p)}")
        return EXIT_OK

    _run(body)


def _usage_error_type() -> type[Exception]:
    """click's UsageError, whether typer vendors click or imports it."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "UsageError":
            return cls
    return typer.BadParameter


def main(argv: list[str] | None = None) -> None:
    """The console script: usage errors are one line with a hint (not typer's
    box), and nothing escapes as a traceback."""
    usage_error = _usage_error_type()
    try:
        code = app(args=argv, prog_name="msearch", standalone_mode=False)
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
    sys.exit(code if isinstance(code, int) else EXIT_OK)
