"""Retrieval quality of msearch on public test collections (BEIR layout).

    python bench/eval.py [COLLECTION ...] [--write] [--extras COLL,...]
    python bench/eval.py --quick          # CI: small SciFact subset, exits 1 on a regression

For each collection (default: all seven in shared/eval), in one process:

- reference: the model card's plain approach, each document's
  ``title + " " + text`` embedded whole with sentence-transformers
  (truncated at the model limit), one dot product, top 100;
- BM25 over whole documents, as the issue's baseline was run (bm25s
  ``retrieve(k=100)``: k1=1.5, b=0.75, English stopwords, Snowball
  stemmer), checked against ``msearch.lexical``'s scores;
- msearch dense: every document written as a file (title on the first
  line, then the text), indexed by ``msearch.indexer.build_index``, queried
  by ``msearch.query.Searcher`` (numpy query encoder) for the top 1000
  passages; a document ranks by its best passage;
- msearch hybrid: the same index through ``Searcher(..., mode="hybrid")``
  (the index's own BM25 side; ordered by the ranking stage,
  msearch.ranking, as every query is);
- BM25 over msearch's passages, and other fusions of the dense and lexical
  passage scores (RRF, min-max, z-score, weights) for comparison;
- file ranking: best passage vs mean vs sum of passage scores;
- with --extras: a chunk-size table (--chunk-table settings), chunking
  what-ifs and passage context (the file's first line in front of every
  passage) on those collections;
- with --latency: the lexical side's extra cost per query on 100,000
  passages.

--quick indexes a SciFact subset (QUICK_* below) and fails (exit 1) when
dense or hybrid nDCG@10 drops more than QUICK_TOLERANCE below the figures
recorded here; about 1.5 minutes with an empty cache.

Metrics (nDCG@10, Recall@100, MRR@10) come from ir-measures. Vectors are
cached in bench/.cache/ by model fingerprint and exact token ids, so the
reference and msearch share work and a re-run embeds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_lib as L  # noqa: E402

# The issue's reference figures (nDCG@10 x 100) for all-MiniLM-L6-v2, and BM25.
REFERENCE_EXPECTED = {
    "scifact": 64.51,
    "nfcorpus": 31.59,
    "medline": 78.75,
    "cisi": 41.93,
    "cranfield": 38.17,
    "cacm": 40.91,
    "lisa": 34.93,
}
BM25_EXPECTED = {
    "scifact": 68.63,
    "nfcorpus": 32.30,
    "medline": 69.57,
    "cisi": 38.58,
    "cranfield": 37.30,
    "cacm": 49.35,
    "lisa": 47.56,
}
REFERENCE_TOLERANCE = 0.2
DENSE_TOLERANCE = 1.0  # msearch dense vs the reference on SciFact and NFCorpus

# --quick: SciFact, the first QUICK_QUERIES queries, their judged documents and
# a fixed sample of others up to QUICK_DOCS. Figures measured with
# `python bench/eval.py --quick` (see bench/EVAL_RESULTS.md); the run fails
# when either drops more than QUICK_TOLERANCE below.
QUICK_COLLECTION = "scifact"
QUICK_QUERIES = 100
QUICK_DOCS = 800
QUICK_EXPECTED = {"dense": 84.98, "hybrid": 89.73}
QUICK_TOLERANCE = 1.0

DEFAULT_CHUNK_TABLE = "256:0,128:32"
NOTES_MARKER = "<!-- notes: kept by bench/eval.py --write -->"


def parse_settings(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        if part.strip():
            a, b = part.split(":")
            out.append((int(a), int(b)))
    return out


def fusion_block(D: np.ndarray, X: np.ndarray, mr: L.MsearchRun, coll: L.Collection) -> dict:
    out = {name: L.passage_eval(fn(D, X), mr, coll) for name, fn in L.fusion_variants().items()}
    out["library"] = L.passage_eval(L.library_fuse(D, X), mr, coll)
    return out


def eval_collection(name: str, args: argparse.Namespace, emb: L.CachedEmbedder) -> dict[str, Any]:
    t_start = time.perf_counter()
    coll = L.load_collection(name)
    res: dict[str, Any] = {
        "collection": name,
        "docs": len(coll.doc_ids),
        "queries": len(coll.query_ids),
    }
    timings: dict[str, float] = {}
    L.say(f"eval: {name}: {len(coll.doc_ids)} documents, {len(coll.query_ids)} queries")

    if not args.no_reference:
        t = time.perf_counter()
        ref = L.reference_scores(coll, emb)
        res["reference"] = L.evaluate(
            coll.qrels, L.run_from_matrix(ref, coll.query_ids, coll.doc_ids)
        )
        timings["reference"] = time.perf_counter() - t
        L.say(f"eval: {name}: reference nDCG@10 {res['reference']['nDCG@10']:.2f}")

        t = time.perf_counter()
        res["bm25_docs"] = L.evaluate(coll.qrels, L.bm25_doc_run(coll))
        timings["bm25_docs"] = time.perf_counter() - t
        L.say(f"eval: {name}: BM25 docs nDCG@10 {res['bm25_docs']['nDCG@10']:.2f}")

    t = time.perf_counter()
    mr = L.build_msearch(coll, emb, args.chunk_tokens, args.overlap_tokens)
    timings["msearch_index"] = mr.build_seconds
    st = mr.stats
    res["index"] = {
        "files": st.files,
        "passages": st.passages,
        "skipped": [f"{s.rel}: {s.reason}" for s in st.skipped],
        "chunking": f"{args.chunk_tokens}/{args.overlap_tokens}",
    }
    t = time.perf_counter()
    run, short = L.searcher_run(mr, coll)
    timings["msearch_query"] = time.perf_counter() - t
    res["dense"] = L.evaluate(coll.qrels, run)
    res["dense_short_queries"] = short
    L.say(
        f"eval: {name}: msearch dense nDCG@10 {res['dense']['nDCG@10']:.2f} "
        f"({st.passages} passages; {len(st.skipped)} files skipped)"
    )

    t = time.perf_counter()
    run, _ = L.searcher_run(mr, coll, searcher=L.hybrid_searcher(mr))
    timings["msearch_hybrid_query"] = time.perf_counter() - t
    res["hybrid"] = L.evaluate(coll.qrels, run)

    t = time.perf_counter()
    D = L.dense_matrix(mr, coll)
    res["dense_full"] = L.passage_eval(D, mr, coll)
    _, X = L.lexical_matrix(mr.texts, coll.queries, mr.lexical)
    timings["lexical"] = time.perf_counter() - t
    res["bm25_passages"] = L.passage_eval(X, mr, coll)
    t = time.perf_counter()
    res["fusion"] = fusion_block(D, X, mr, coll)
    timings["fusion"] = time.perf_counter() - t
    # The matrices reproduce the Searcher's own rankings (a self-check).
    for key, got in (("dense", res["dense_full"]), ("hybrid", res["fusion"]["library"])):
        if abs(got["nDCG@10"] - res[key]["nDCG@10"]) > 0.01:
            L.say(f"eval: WARNING: {name}: {key} from score matrices {got} != Searcher {res[key]}")
    L.say(
        f"eval: {name}: BM25 passages {res['bm25_passages']['nDCG@10']:.2f}, "
        f"hybrid (msearch.ranking) {res['hybrid']['nDCG@10']:.2f}"
    )

    H = L.library_fuse(D, X)
    res["file_ranking"] = {
        kind: {how: L.passage_eval(S, mr, coll, how) for how in ("max", "mean", "sum")}
        for kind, S in (("dense", D), ("hybrid", H))
    }

    if name in args.extras:
        t = time.perf_counter()
        res["chunk_whatifs"] = L.chunk_whatifs(
            mr, coll, emb, args.chunk_tokens, args.overlap_tokens
        )
        timings["chunk what-ifs"] = time.perf_counter() - t
        t = time.perf_counter()
        ctx = L.context_texts(mr)
        changed = sum(a != b for a, b in zip(ctx, mr.texts, strict=True))
        Dc = L.dense_matrix(mr, coll, emb.encode(ctx))
        _, Xc = L.lexical_matrix(ctx, coll.queries)
        res["context"] = {
            "passages_changed": changed,
            "dense": L.passage_eval(Dc, mr, coll),
            "hybrid_ctx_dense": L.passage_eval(L.library_fuse(Dc, X), mr, coll),
            "hybrid_ctx_both": L.passage_eval(L.library_fuse(Dc, Xc), mr, coll),
        }
        timings["context"] = time.perf_counter() - t
        table = {
            f"{args.chunk_tokens}/{args.overlap_tokens}": {
                "passages": st.passages,
                "dense": res["dense"],
                "hybrid": res["hybrid"],
            }
        }
        for mt, ov in parse_settings(args.chunk_table):
            t = time.perf_counter()
            m2 = L.build_msearch(coll, emb, mt, ov)
            r2, _ = L.searcher_run(m2, coll)
            D2 = L.dense_matrix(m2, coll)
            _, X2 = L.lexical_matrix(m2.texts, coll.queries)
            table[f"{mt}/{ov}"] = {
                "passages": m2.stats.passages,
                "dense": L.evaluate(coll.qrels, r2),
                "hybrid": L.passage_eval(L.library_fuse(D2, X2), m2, coll),
            }
            timings[f"chunk {mt}/{ov}"] = time.perf_counter() - t
        res["chunk_table"] = table

    res["timings"] = timings
    res["seconds"] = time.perf_counter() - t_start
    L.say(f"eval: {name}: done in {res['seconds']:.0f} s; embedding so far: {emb.stats.line()}")
    return res


# ---------------------------------------------------------------- reporting


def fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    names = [r["collection"] for r in results]
    lines = [
        "# Retrieval quality (bench/eval.py)",
        "",
        f"Model: `{meta['model']}` (the bundled all-MiniLM-L6-v2, fingerprint "
        f"`{meta['fingerprint'][:16]}`, {meta.get('precision', 'float32')}), "
        f"chunking {meta['chunking']} tokens, "
        "msearch's numpy query encoder. BM25: bm25s "
        f"{meta['versions'].get('bm25s', '?')} (k1=1.5, b=0.75, Lucene IDF, English "
        "stopwords, Snowball stemmer via PyStemmer). Metrics: ir-measures "
        f"{meta['versions'].get('ir-measures', '?')} (pytrec_eval). All figures x100.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; {meta['date']}; total wall time "
        f"{meta['wall_seconds'] / 60:.1f} min ({meta['cache']}).  ",
        f"Embedding: {meta['embed']}",
        "",
        "## nDCG@10",
        "",
        "| collection | reference | expected | BM25 docs | expected | BM25 passages "
        "| msearch dense | msearch hybrid | hybrid − dense |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cols: dict[str, list[float]] = {}

    def add(key: str, v: float | None) -> str:
        if v is not None:
            cols.setdefault(key, []).append(v)
        return fmt(v)

    for r in results:
        n = r["collection"]
        ref = r.get("reference", {}).get("nDCG@10")
        bm = r.get("bm25_docs", {}).get("nDCG@10")
        dense = r["dense"]["nDCG@10"]
        hyb = r["hybrid"]["nDCG@10"]
        lines.append(
            f"| {n} | {add('ref', ref)} | {add('ref_exp', REFERENCE_EXPECTED.get(n))} "
            f"| {add('bm', bm)} | {add('bm_exp', BM25_EXPECTED.get(n))} "
            f"| {add('bmp', r['bm25_passages']['nDCG@10'])} | {add('dense', dense)} "
            f"| {add('hyb', hyb)} | {hyb - dense:+.2f} |"
        )
    if len(results) > 1:
        m = {k: mean(v) if len(v) == len(results) else None for k, v in cols.items()}
        lines.append(
            f"| **mean** | {fmt(m.get('ref'))} | {fmt(m.get('ref_exp'))} | {fmt(m.get('bm'))} "
            f"| {fmt(m.get('bm_exp'))} | {fmt(m.get('bmp'))} | {fmt(m.get('dense'))} "
            f"| {fmt(m.get('hyb'))} | {(m['hyb'] or 0) - (m['dense'] or 0):+.2f} |"
        )

    lines += [
        "",
        "## Recall@100 / MRR@10",
        "",
        "| collection | reference | BM25 docs | BM25 passages | msearch dense | msearch hybrid |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cells = []
        for key in ("reference", "bm25_docs", "bm25_passages", "dense", "hybrid"):
            v = r.get(key)
            cells.append(f"{v['R@100']:.2f} / {v['MRR@10']:.2f}" if v else "")
        lines.append(f"| {r['collection']} | " + " | ".join(cells) + " |")

    variants = list(results[0]["fusion"])
    lines += [
        "",
        "## Fusion variants (nDCG@10; passage scores fused, document = best passage)",
        "",
        "`library` is `msearch.lexical.fuse`, the fixed mix msearch used before the ranking stage. "
        '"worst" is the largest drop below msearch dense on any collection.',
        "",
        "| fusion | " + " | ".join(names) + " | mean | worst vs dense |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for v in variants:
        vals = [r["fusion"][v]["nDCG@10"] for r in results]
        worst = min(r["fusion"][v]["nDCG@10"] - r["dense"]["nDCG@10"] for r in results)
        lines.append(
            f"| {v} | " + " | ".join(fmt(x) for x in vals) + f" | {mean(vals):.2f} | {worst:+.2f} |"
        )

    lines += [
        "",
        "## File ranking (nDCG@10): a document's score from its passages",
        "",
        "| scores | aggregate | " + " | ".join(names) + " | mean |",
        "|---|---|" + "---:|" * (len(names) + 1),
    ]
    for kind in ("dense", "hybrid"):
        for how in ("max", "mean", "sum"):
            vals = [r["file_ranking"][kind][how]["nDCG@10"] for r in results]
            lines.append(
                f"| {kind} | {how} | " + " | ".join(fmt(x) for x in vals) + f" | {mean(vals):.2f} |"
            )

    extra = [r for r in results if "context" in r]
    if extra:
        settings = list(extra[0]["chunk_table"])
        lines += [
            "",
            "## Chunk size / overlap (nDCG@10 dense / hybrid; passages)",
            "",
            "| chunk/overlap | "
            + " | ".join(r["collection"] for r in extra)
            + " | mean dense | mean hybrid |",
            "|---|" + "---:|" * (len(extra) + 2),
        ]
        for s in settings:
            cells = []
            for r in extra:
                c = r["chunk_table"][s]
                cells.append(
                    f"{c['dense']['nDCG@10']:.2f} / {c['hybrid']['nDCG@10']:.2f} ({c['passages']})"
                )
            md = mean([r["chunk_table"][s]["dense"]["nDCG@10"] for r in extra])
            mh = mean([r["chunk_table"][s]["hybrid"]["nDCG@10"] for r in extra])
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {md:.2f} | {mh:.2f} |")
        wi = list(extra[0]["chunk_whatifs"])
        lines += [
            "",
            "## Chunking what-ifs (dense nDCG@10; documents chunked in the bench, not walked)",
            "",
            "| collection | msearch dense (as indexed) | " + " | ".join(wi) + " |",
            "|---|---:|" + "---:|" * len(wi),
        ]
        for r in extra:
            cells = [
                f"{r['chunk_whatifs'][w]['nDCG@10']:.2f} ({r['chunk_whatifs'][w]['passages']:.0f})"
                for w in wi
            ]
            lines.append(
                f"| {r['collection']} | {r['dense']['nDCG@10']:.2f} ({r['index']['passages']}) | "
                + " | ".join(cells)
                + " |"
            )
        lines += [
            "",
            "## Passage context: the file's first line (title) in front of each passage (nDCG@10)",
            "",
            "| collection | passages changed | dense | dense + title | hybrid | "
            "hybrid, title in dense only | hybrid, title in both |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in extra:
            c = r["context"]
            lines.append(
                f"| {r['collection']} | {c['passages_changed']} | {fmt(r['dense']['nDCG@10'])} "
                f"| {fmt(c['dense']['nDCG@10'])} | {fmt(r['hybrid']['nDCG@10'])} "
                f"| {fmt(c['hybrid_ctx_dense']['nDCG@10'])} | {fmt(c['hybrid_ctx_both']['nDCG@10'])} |"
            )

    lines += [
        "",
        "## Index and timings",
        "",
        "| collection | docs | queries | passages | files skipped | queries < 100 docs "
        "| wall s | timings (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        tm = ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items())
        lines.append(
            f"| {r['collection']} | {r['docs']} | {r['queries']} | {r['index']['passages']} "
            f"| {len(r['index']['skipped'])} | {r['dense_short_queries']} | {r['seconds']:.0f} | {tm} |"
        )
    lat = meta.get("latency")
    if lat:
        lines += [
            "",
            f"## Extra query cost of the lexical side ({lat['passages']:,} passages)",
            "",
            f"Real text ({lat['passages']:,} {L.LATENCY_WINDOW}-word passages cut from the seven "
            f"collections; {lat['terms']:,} terms; {lat['index_mb']:.0f} MB on disk, built in "
            f"{lat['build_s']:.0f} s), memory-mapped back with `LexicalSegment.load`; the once-per-process "
            "figures are medians of 5 fresh processes; then all "
            f"{lat['queries']} queries of the seven collections, each timed through "
            "`Bm25.scores` + `fuse` + msearch's `top_k` on the fused scores.",
            "",
            "| figure | ms |",
            "|---|---:|",
            f"| once per process: `import msearch.lexical` | {lat['import_ms']:.1f} |",
            f"| once per process: `LexicalSegment.load` (memory-mapped) | {lat['load_ms']:.1f} |",
            f"| once per process: first query (imports PyStemmer) | {lat['first_query_ms']:.1f} |",
            f"| per query: `scores` only, median | {lat['lexical_median_ms']:.1f} |",
            f"| per query: `scores` + `fuse` + `top_k`, median | {lat['median_ms']:.1f} |",
            f"| per query: `scores` + `fuse` + `top_k`, p95 | {lat['p95_ms']:.1f} |",
            f"| per query: `scores` + `fuse` + `top_k`, max | {lat['max_ms']:.1f} |",
            f"| for comparison: dense `top_k` alone | {lat['dense_topk_ms']:.1f} |",
        ]
    skipped = [(r["collection"], s) for r in results for s in r["index"]["skipped"]]
    if skipped:
        lines += ["", "Files msearch skipped:", ""]
        lines += [f"- {c}: {s}" for c, s in skipped]
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "bm25s",
        "PyStemmer",
        "ir-measures",
        "pytrec-eval-terrier",
        "sentence-transformers",
        "torch",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "?"
    return out


def check_expectations(results: list[dict[str, Any]]) -> list[str]:
    problems = []
    for r in results:
        n = r["collection"]
        if "reference" in r and n in REFERENCE_EXPECTED:
            gap = r["reference"]["nDCG@10"] - REFERENCE_EXPECTED[n]
            if abs(gap) > REFERENCE_TOLERANCE:
                problems.append(f"{n}: reference nDCG@10 off the expected figure by {gap:+.2f}")
        if n in ("scifact", "nfcorpus") and n in REFERENCE_EXPECTED:
            gap = r["dense"]["nDCG@10"] - REFERENCE_EXPECTED[n]
            if gap < -DENSE_TOLERANCE:
                problems.append(f"{n}: msearch dense is {gap:+.2f} below the reference figure")
    return problems


def quick(args: argparse.Namespace) -> int:
    """Small, fast regression check for CI."""
    t0 = time.perf_counter()
    emb = L.load_embedder(Path(args.cache_dir))
    coll = L.subset(L.load_collection(QUICK_COLLECTION), QUICK_QUERIES, QUICK_DOCS)
    mr = L.build_msearch(coll, emb, args.chunk_tokens, args.overlap_tokens)
    run, _ = L.searcher_run(mr, coll)
    dense = L.evaluate(coll.qrels, run)["nDCG@10"]
    hrun, _ = L.searcher_run(mr, coll, searcher=L.hybrid_searcher(mr))
    hybrid = L.evaluate(coll.qrels, hrun)["nDCG@10"]
    took = time.perf_counter() - t0
    got = {"dense": dense, "hybrid": hybrid}
    print(
        f"eval --quick: {coll.name} ({len(coll.doc_ids)} docs, {len(coll.query_ids)} queries, "
        f"{mr.stats.passages} passages): nDCG@10 dense {dense:.2f} (recorded "
        f"{QUICK_EXPECTED['dense']:.2f}), hybrid {hybrid:.2f} (recorded "
        f"{QUICK_EXPECTED['hybrid']:.2f}); {took:.0f} s; {emb.stats.line()}"
    )
    bad = [k for k, v in got.items() if v < QUICK_EXPECTED[k] - QUICK_TOLERANCE]
    if bad:
        print(f"eval --quick: FAILED: {', '.join(bad)} dropped more than {QUICK_TOLERANCE} point")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("collections", nargs="*", help=f"default: {' '.join(L.COLLECTIONS)}")
    p.add_argument("--quick", action="store_true", help="CI regression check (SciFact subset)")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--overlap-tokens", type=int, default=32)
    p.add_argument(
        "--extras",
        default="",
        help="comma-separated collections on which to also run the chunk table and the context study",
    )
    p.add_argument(
        "--chunk-table", default=DEFAULT_CHUNK_TABLE, help="TOKENS:OVERLAP,... for --extras"
    )
    p.add_argument(
        "--no-reference", action="store_true", help="skip the reference and BM25-docs runs"
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="also time the lexical side + fusion per query on a 100,000-passage index",
    )
    p.add_argument("--cache-dir", default=str(L.CACHE_DIR))
    p.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16"],
        help="index (and so query) in this precision, as `msearch index --precision` does",
    )
    p.add_argument("--write", action="store_true", help="write bench/EVAL_RESULTS.md")
    p.add_argument("--out", default=str(L.BENCH / "EVAL_RESULTS.md"))
    args = p.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quick:
        return quick(args)
    names = args.collections or list(L.COLLECTIONS)
    unknown = [n for n in names if n not in L.COLLECTIONS]
    if unknown:
        p.error(f"unknown collection(s): {', '.join(unknown)}")
    args.extras = [e for e in args.extras.split(",") if e]

    t0 = time.perf_counter()
    emb = L.load_embedder(Path(args.cache_dir), args.precision)
    cache_before = len(emb.cache)
    results = [eval_collection(n, args, emb) for n in names]
    lat = None
    if args.latency:
        t = time.perf_counter()
        lat = L.latency()
        L.say(f"eval: latency: {lat} ({time.perf_counter() - t:.0f} s)")
    wall = time.perf_counter() - t0
    meta = {
        "latency": lat,
        "model": emb.record.name,
        "fingerprint": emb.record.fingerprint,
        "precision": emb.record.precision,
        "chunking": f"{args.chunk_tokens}/{args.overlap_tokens}",
        "versions": versions(),
        "command": "python bench/eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": wall,
        "cache": f"{cache_before} vectors cached at start",
        "embed": emb.stats.line(),
    }
    text = report(results, meta)
    print(text)
    out_json = L.WORK_DIR / "last-results.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    if args.write:
        out = Path(args.out)
        # Hand-written findings below NOTES_MARKER survive a regeneration.
        old = out.read_text() if out.exists() else ""
        if NOTES_MARKER in old:
            text = text.rstrip("\n") + "\n\n" + old[old.index(NOTES_MARKER) :]
        out.write_text(text)
        L.say(f"eval: wrote {args.out}")
    problems = check_expectations(results)
    for msg in problems:
        L.say(f"eval: WARNING: {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
