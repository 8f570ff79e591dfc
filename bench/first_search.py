"""Searchable in seconds: time from the start of ``msearch index`` to the
first answered query, and what words-first costs the whole index.

    python bench/first_search.py [--repo cats] [--passages 100000] [--copies 4]
        [--rounds 3] [--before TREE] [--write]

1. ``msearch index REPO/src`` (bundled model, CPU, a fresh index) starts as
   a process of its own. Beside it a poller waits for the index's
   ``meta.json`` (a stat every 20 ms) and then runs ``msearch query TEXT
   --json -k 5`` in a cold process, as a person or an agent would, until
   one exits 0 with hits (the repository's first labeled question). The
   figure is seconds from the start of ``msearch index`` to the end of
   that query; also how many passages had vectors then, and when the
   index was done.
2. The same first answer for a folder of ``--passages`` passages of
   distinct text (the twelve repositories' ``src/``, then the Python files
   of the installed ``transformers``, hard links; see ``distinct``), and
   with ``--copies`` for that many copies of the twelve ``src/`` side by
   side (~29,000 passages a copy); ``--rounds`` times each, the median.
   The indexer is stopped once the first answer is in: the vector half of
   100,000 passages takes hours on 2 cores and is not the figure.
3. With ``--before TREE`` (a checkout of msearch before words-first):
   ``msearch index`` of the same repository there, one after the other
   with step 1, so that the machine's drift hits both: the total indexing
   time now / before, and before's first answer (its end plus one query).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from msearch.errors import MsearchError
from msearch.storage.record import read_meta

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "first_search"


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}


def query_once(tree: Path, index_dir: Path, text: str) -> tuple[bool, int]:
    """One cold ``msearch query``: (answered with hits, passages embedded then)."""
    r = subprocess.run(
        [sys.executable, "-m", "msearch", "query", text, "--index", str(index_dir), "--json"]
        + ["-k", "5"],
        env=_env(tree),
        cwd=tree,  # ``python -m`` puts its folder before PYTHONPATH
        capture_output=True,
        text=True,
    )
    if r.returncode != 0 or not r.stdout.strip():
        return False, 0
    try:
        meta = read_meta(index_dir)
        embedded = meta.count - meta.waiting
    except MsearchError:  # replaced under us: the next look says
        embedded = 0
    return True, embedded


def first_answer(
    tree: Path, src: Path, index_dir: Path, text: str, stop_after: bool = False
) -> dict[str, Any]:
    """Start ``msearch index`` of ``src``; the seconds to the first answered
    query, passages embedded then, the total (unless ``stop_after``)."""
    shutil.rmtree(index_dir, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "msearch", "index", str(src), "--index", str(index_dir), "-q"],
        env=_env(tree),
        cwd=tree,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: dict[str, Any] = {}
    while "first" not in out:
        if not (index_dir / "meta.json").exists():
            if proc.poll() is not None:
                raise SystemExit(
                    f"index failed: {proc.stderr.read()[-2000:] if proc.stderr else ''}"
                )
            time.sleep(0.02)
            continue
        ok, embedded = query_once(tree, index_dir, text)
        if ok:
            out["first"] = time.perf_counter() - t0
            out["embedded_then"] = embedded
    out["passages"] = read_meta(index_dir).count
    if stop_after:
        proc.kill()
        proc.wait()
        return out
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"index failed: {err[-2000:]}")
    out["total"] = time.perf_counter() - t0
    return out


def copies(root: Path, n: int) -> Path:
    """``n`` copies of every repository's src/ (hard links) in one folder."""
    big = WORK / f"copies{n}"
    if not big.exists():
        tmp = WORK / f"copies{n}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(n):
            for repo in sorted(p.name for p in root.iterdir() if (p / "src").is_dir()):
                shutil.copytree(root / repo / "src", tmp / f"copy{i}" / repo, copy_function=os.link)
        tmp.rename(big)
    return big


def distinct(root: Path, passages: int) -> tuple[Path, str]:
    """A folder of about ``passages`` passages of distinct text (hard links):
    the 12 repositories' src/, then the Python files of the installed
    ``transformers`` (a large real repository, and a dependency here), in
    path order, until the passages the index's chunker cuts reach
    ``passages``. No copies: an index of them gains nothing from what a
    process remembers of text it has seen (token counts, terms). Also what
    it holds, in words."""
    import importlib.metadata

    import transformers  # type: ignore[import-untyped]

    from msearch.chunking import ChunkSettings, chunker_for
    from msearch.encoders import bundled_model_path, token_counter
    from msearch.walk import NotText, read_bytes, text_from_bytes, walk

    version = importlib.metadata.version("transformers")
    big = WORK / f"distinct{passages}-transformers{version}"
    extra = Path(transformers.__file__).parent
    what = f"the 12 repositories' src/ and transformers {version}'s Python files in path order"
    if big.exists():
        return big, what
    chunker = chunker_for(token_counter(bundled_model_path()), ChunkSettings())

    def passages_of(rel: str, path: Path) -> int:
        """As ``msearch index`` cuts the file (none for what it skips)."""
        try:
            text = text_from_bytes(read_bytes(path))
        except NotText:
            return 0
        return len(chunker.chunk([(rel, text)])[0])

    tmp = WORK / "distinct.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for repo in sorted(p.name for p in root.iterdir() if (p / "src").is_dir()):
        shutil.copytree(root / repo / "src", tmp / repo, copy_function=os.link)
    total = sum(passages_of(e.rel, e.path) for e in walk(tmp).files)
    for path in sorted(extra.rglob("*.py")):
        if total >= passages:
            break
        rel = path.relative_to(extra.parent)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, tmp / rel)
        total += passages_of(rel.as_posix(), path)
    tmp.rename(big)
    return big, what


def main() -> None:
    sys.path.insert(0, str(BENCH))
    from _results import report, table
    from code_eval import data_root, load_queries

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default="cats", help="the ~3,000-passage repository")
    ap.add_argument(
        "--passages", type=int, default=100_000, help="passages of distinct text (0: skip)"
    )
    ap.add_argument("--copies", type=int, default=0, help="copies of the 12 repositories (0: skip)")
    ap.add_argument("--rounds", type=int, default=3, help="first answers of a large folder")
    ap.add_argument("--before", type=Path, help="a checkout of msearch before words-first")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    root = data_root()
    now = BENCH.parent
    question = load_queries(root / args.repo)[0].text
    rows = []
    small = first_answer(now, root / args.repo / "src", WORK / "now" / args.repo, question)
    print("now", small, file=sys.stderr, flush=True)
    rows.append(
        [
            f"{args.repo} ({small['passages']:,} passages): first answer",
            f"{small['first']:.2f} s ({small['embedded_then']:,} passages embedded then)",
            "≤ 3 s",
        ]
    )
    if args.before is not None:
        tree = args.before.resolve()
        before = first_answer(tree, root / args.repo / "src", WORK / "before" / args.repo, question)
        print("before", before, file=sys.stderr, flush=True)
        rows.append(
            [
                f"{args.repo}: first answer before words-first (index, then one query)",
                f"{before['first']:.1f} s",
                "",
            ]
        )
        ratio = small["total"] / before["total"]
        rows.append(
            [
                f"{args.repo}: total indexing time, before / now",
                f"{before['total']:.1f} / {small['total']:.1f} s ({ratio:.3f}×)",
                "now ≤ 1.1× before",
            ]
        )
    else:
        rows.append([f"{args.repo}: total indexing time", f"{small['total']:.1f} s", ""])

    def large(src: Path, what: str) -> None:
        """The first answer over a large folder, ``--rounds`` times (this
        machine's speed drifts by a fifth within minutes): the median."""
        got = [
            first_answer(now, src, WORK / "now" / "large", question, stop_after=True)
            for _ in range(args.rounds)
        ]
        print(what, got, file=sys.stderr, flush=True)
        firsts = sorted(g["first"] for g in got)
        spread = f", {firsts[0]:.1f} to {firsts[-1]:.1f} s" if len(firsts) > 1 else ""
        rows.append(
            [
                f"{what} ({got[0]['passages']:,} passages): first answer",
                f"{statistics.median(firsts):.2f} s (median of {len(firsts)}{spread}; "
                f"{max(g['embedded_then'] for g in got):,} passages embedded then)",
                "≤ 30 s",
            ]
        )

    held = ""
    if args.passages:
        src, held = distinct(root, args.passages)
        large(src, f"{args.passages:,} passages of distinct text")
    if args.copies:
        large(copies(root, args.copies), f"{args.copies} copies of the 12 repositories")
    note = (
        "first answer = from the start of `msearch index` (a fresh index, bundled model, CPU) "
        "to the end of the first cold `msearch query --json -k 5` that returns hits, the "
        f"repository's first labeled question ({question!r}); the poller waits for meta.json, "
        "then queries"
        + (f"; before = a checkout of {args.before.name}" if args.before else "")
        + (f"; the distinct text is {held}" if held else "")
        + (
            f"; the {args.copies} copies are hard links of the same files (a process remembers "
            "the token counts and terms of words it has seen, so the copies after the first "
            "cost less than new text would)"
            if args.copies
            else ""
        )
        + "; the indexer of a large folder is stopped after the first answer (its vectors "
        "take hours on 2 cores and are not the figure)"
    )
    report(
        "Searchable in seconds: words first, vectors as they come", note, table(rows), args.write
    )


if __name__ == "__main__":
    main()
