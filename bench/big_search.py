"""Search at 10,000,000 passages on one machine (issue 15): msearch's
two-stage search (every row's sign bits against the query's components on
faiss's fast-scan kernel picks 1 in 200, msearch.coarse; their int8 codes
estimate their cosines and the best 100 get exact scores from float32,
msearch.int8) against the exact scan; and why no coarser first stage
(k-means lists, as faiss's IVF indexes) is used.

Vectors: the 30,381 passage vectors of ../shared/eval (bench/eval.py's
indexes, the bundled all-MiniLM-L6-v2), each copied many times with
Gaussian noise and renormalized (cosine about 0.71 to its source: the
noisier of bench/coarse_recall.py's two sets). Queries: the real queries
of the same collections, encoded by the bundled model as a query is. The
index is written by msearch's own SegmentWriter, one segment, one passage
a row of one absent file (line number = row + 1, so hits name their rows),
with the bundled model's record, so that `msearch query` loads the model.

  python bench/big_search.py [--rows 10000000] [--queries 100] [--write]

Figures:
- recall@10 of `Searcher.query` against the exact top 10, computed here
  by a plain matrix product over the float32 vectors (not msearch's code);
- warm query: `Searcher.query(text)` in one process, encoding included,
  dense, k=10, after the vectors are mapped (as `msearch mcp` does), with
  the exact scan's time beside it;
- cold query: `msearch query TEXT --index DIR --dense-only` in a fresh
  process (the OS page cache warm), and the same with `--exact`;
- memory: what the search holds (the sign bits in fast-scan order, a heap
  copy; the int8 codes, mapped) against the float32 vectors; what is
  resident after the warm queries; and queries in a fresh process after
  the float32 vectors were dropped from the page cache (posix_fadvise) and
  not mapped in, where each rescored row is read from disk, with how much
  of the float32 vectors they brought back;
- lists (not used by msearch): the share of the exact top 10 that lies in
  the k-means lists nearest to each query, on the real vectors and queries
  (faiss spherical k-means, about sqrt(rows) lists), for several shares of
  the rows probed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _results import report, table
from coarse_recall import commit_one_file, real_vectors
from query_latency import add_vocab_cache, compile_package, msearch_exe, up_to_date

from msearch.coarse import SCAN_NAME
from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path
from msearch.int8 import CODES_NAME, SCALE_NAME
from msearch.lexical import build_lexical
from msearch.storage import layout, ownership, reader, record
from msearch.storage.segment import BITS_NAME, EMBEDDINGS_NAME, SegmentWriter

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "big"
SIGMA = 0.05
BLOCK = 65536


def build(index_dir: Path, rows: int, vectors: np.ndarray, model_record: dict) -> dict[str, float]:
    """The synthetic index (kept between runs, rebuilt when it lacks a file
    this msearch writes); seconds spent."""
    if (index_dir / layout.META_NAME).exists() and up_to_date(index_dir):
        info = json.loads((index_dir / "build.json").read_text())
        return dict(info)
    shutil.rmtree(index_dir, ignore_errors=True)
    ownership.claim(index_dir)
    rng = np.random.default_rng(0)
    folder = ownership.new_segment_dir(index_dir)
    writer = SegmentWriter(folder, vectors.shape[1])
    t0 = time.perf_counter()
    for start in range(0, rows, BLOCK):
        n = min(BLOCK, rows - start)
        src = rng.integers(0, len(vectors), n)
        v = vectors[src] + rng.standard_normal((n, vectors.shape[1]), dtype=np.float32) * SIGMA
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = np.arange(start, start + n)
        r = np.stack([0 * ids, ids + 1, ids + 1, 0 * ids, 0 * ids], axis=1).astype(np.int32)
        writer.append(r, v, np.zeros((n, 16), np.uint8))
    lexical = build_lexical(["passage"] * rows)
    t1 = time.perf_counter()
    info = writer.close(lexical)
    t2 = time.perf_counter()
    commit_one_file(index_dir, info, WORK, model_record, int(vectors.shape[1]))
    out = {"write": t1 - t0, "close": t2 - t1}
    (index_dir / "build.json").write_text(json.dumps(out))
    return out


def exact_top10(index_dir: Path, qvecs: np.ndarray) -> np.ndarray:
    """Rows of the exact top 10 of each query: a plain blocked matrix
    product over the float32 vectors."""
    meta = record.read_meta(index_dir)
    emb = np.load(index_dir / meta.segments[0].name / EMBEDDINGS_NAME, mmap_mode="r")
    best_s = np.full((len(qvecs), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(qvecs), 10), dtype=np.int64)
    step = 1 << 18
    for s in range(0, len(emb), step):
        sc = np.asarray(emb[s : s + step]) @ qvecs.T  # rows x queries
        top = np.argpartition(-sc, 9, axis=0)[:10]  # 10 x queries
        cand_s = np.concatenate([best_s, np.take_along_axis(sc, top, 0).T], axis=1)
        cand_i = np.concatenate([best_i, top.T + s], axis=1)
        keep = np.argsort(-cand_s, axis=1)[:, :10]
        best_s = np.take_along_axis(cand_s, keep, 1)
        best_i = np.take_along_axis(cand_i, keep, 1)
    return best_i


def resident(index_dir: Path) -> dict[str, int]:
    """Bytes resident of each file of the index mapped by this process."""
    out: dict[str, int] = {}
    where = str(index_dir.resolve())
    name = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:
            name = parts[5] if len(parts) > 5 and parts[5].startswith(where) else None
        elif name and parts and parts[0] == "Rss:":
            base = os.path.basename(name)
            out[base] = out.get(base, 0) + int(parts[1]) * 1024
    return out


def warm(index_dir: Path, texts: list[str], warmup: list[str], exact: int) -> dict:
    """Warm query times and recall rows, in this process."""
    from msearch.models import query_encoder
    from msearch.query import Searcher
    from msearch.storage.segment import populate, populate_segments

    index = reader.load_index(index_dir)
    populate_segments(index.segments)  # as `msearch mcp` does, once per generation
    encode = query_encoder(index, "cpu", warm=True)
    searcher = Searcher(index, encode, None, "dense")
    assert searcher.two_stage()
    for t in warmup:
        searcher.query(t, 10)
    times, found = [], []
    for t in texts:
        t0 = time.perf_counter()
        hits = searcher.query(t, 10)
        times.append(time.perf_counter() - t0)
        found.append([h.start_line - 1 for h in hits])
    res = resident(index_dir)
    # The exact scan in its own mapping, read ahead as usual (the search
    # above advised its mapping of float32 to read only the page asked for).
    whole = reader.load_index(index_dir)
    for seg in whole.segments:
        populate(seg.embeddings)
    full = Searcher(whole, encode, None, "dense", exact=True)
    ex_times = []
    for t in texts[:exact]:
        t0 = time.perf_counter()
        full.query(t, 10)
        ex_times.append(time.perf_counter() - t0)
    return {"times": times, "found": found, "resident": res, "exact_times": ex_times}


def evicted(index_dir: Path, texts: list[str], prefetch: bool = True) -> tuple[list[float], int]:
    """Query times in a fresh process after the float32 vectors were
    dropped from the page cache, without mapping them all in first (as the
    CLI runs): each rescored row's vector comes from disk (``prefetch``:
    all of a query's rows requested at once, as shipped; else one page
    fault after another). Also the bytes of float32 vectors resident in
    that process after the queries."""
    meta = record.read_meta(index_dir)
    emb = index_dir / meta.segments[0].name / EMBEDDINGS_NAME
    fd = os.open(emb, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    code = (
        "import json, sys, time\n"
        "from msearch.storage import reader\n"
        "from msearch.models import query_encoder\n"
        "from msearch.query import Searcher\n"
        "sys.path.insert(0, " + repr(str(BENCH)) + ")\n"
        "from big_search import resident\n"
        "from msearch.config import TwoStage\n"
        + f"stages = TwoStage({'' if prefetch else 'prefetch_rows=0'})\n"
        + f"index = reader.load_index({str(index_dir)!r})\n"
        "s = Searcher(index, query_encoder(index, 'cpu', warm=True), None, 'dense', stages=stages)\n"
        "s.query('warm up the encoder', 10)\n"
        "out = []\n"
        f"for t in {texts!r}:\n"
        "    t0 = time.perf_counter(); s.query(t, 10); out.append(time.perf_counter() - t0)\n"
        "res = resident(index.dir).get(" + repr(EMBEDDINGS_NAME) + ", 0)\n"
        "print(json.dumps([out, res]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    times, res = json.loads(r.stdout.strip().splitlines()[-1])
    return list(times), int(res)


def cold(index_dir: Path, texts: list[str], extra: list[str]) -> list[float]:
    out = []
    for t in texts:
        cmd = [*msearch_exe(), "query", t, "--index", str(index_dir), "--dense-only"]
        cmd += ["--format", "jsonl", *extra]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"msearch query failed: {r.stderr}")
    return out


def list_recall(vectors: np.ndarray, qvecs: np.ndarray, shares: list[float]) -> list[str]:
    """Share of each query's exact top 10 in the k-means lists nearest to
    it, holding ``shares`` of the rows: what a first stage over lists could
    find at best."""
    import faiss

    nlist = int(round(np.sqrt(len(vectors))))
    km = faiss.Kmeans(vectors.shape[1], nlist, niter=20, spherical=True, seed=1234)
    km.train(np.ascontiguousarray(vectors))
    cents = km.centroids
    owner = np.argmax(vectors @ cents.T, axis=1)
    sizes = np.bincount(owner, minlength=nlist)
    top = np.argsort(-(vectors @ qvecs.T), axis=0)[:10].T
    out = []
    for share in shares:
        got = []
        for q, best in zip(qvecs, top, strict=True):
            near = np.argsort(-(cents @ q))
            n = int(np.searchsorted(np.cumsum(sizes[near]), share * len(vectors))) + 1
            got.append(np.isin(owner[best], near[:n]).mean())
        out.append(f"{share:.0%}: {np.mean(got):.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--exact-runs", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=7)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    compile_package()
    vectors, texts, qvecs = real_vectors()
    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    index_dir = WORK / f"idx-{args.rows}"
    spent = build(index_dir, args.rows, vectors, model.record.to_json())
    add_vocab_cache(index_dir, model)
    print(f"index ready: {spent}", file=sys.stderr)

    rng = np.random.default_rng(1)
    order = rng.permutation(len(texts))
    pick = order[: args.queries]
    sub = [texts[i] for i in pick]
    warmup = [texts[i] for i in order[args.queries : args.queries + 50]]
    t = time.perf_counter()
    want = exact_top10(index_dir, qvecs[pick])
    t_ref = time.perf_counter() - t
    print(f"exact reference in {t_ref:.0f} s", file=sys.stderr)

    got = warm(index_dir, sub, warmup, args.exact_runs)
    emb = np.load(
        index_dir / record.read_meta(index_dir).segments[0].name / EMBEDDINGS_NAME, mmap_mode="r"
    )
    recalls = []
    for q, rows, exact in zip(qvecs[pick], got["found"], want, strict=True):
        # Ties at the 10th score may pick either row: count by score too.
        cut = float(np.asarray(emb[exact[-1]]) @ q)
        hits = sum(
            1
            for r in rows
            if r in set(exact.tolist()) or float(np.asarray(emb[r]) @ q) >= cut - 1e-6
        )
        recalls.append(min(hits, 10) / 10)
    del emb
    import gc

    gc.collect()  # no mapping of the vectors left here: the cache can drop them
    cold_texts = [texts[i] for i in order[-args.cold_runs :]]
    cold_two = cold(index_dir, cold_texts[:2], [])  # page cache warm-up
    cold_two = cold(index_dir, cold_texts, [])
    cold_exact = cold(index_dir, cold_texts[:2], ["--exact"])
    ev, ev_res = evicted(index_dir, sub[:40])
    ev_plain, _ = evicted(index_dir, sub[:40], prefetch=False)

    seg = index_dir / record.read_meta(index_dir).segments[0].name
    f32 = (seg / EMBEDDINGS_NAME).stat().st_size
    bits = (seg / BITS_NAME).stat().st_size
    scan = (seg / SCAN_NAME).stat().st_size
    codes = (seg / CODES_NAME).stat().st_size + (seg / SCALE_NAME).stat().st_size
    res = got["resident"]
    shares = [0.03, 0.1, 0.2, 0.4]
    real_lists = list_recall(vectors, qvecs, shares)
    med = statistics.median
    ms = 1000.0
    p90 = float(np.percentile(got["times"], 90)) * ms
    rows = [
        (
            "recall@10 against the exact scan",
            f"{np.mean(recalls):.4f} (worst query {min(recalls):.1f}; {len(sub)} real queries)",
            "≥ 0.99",
        ),
        (
            "warm query, two-stage (median / p90, encoding included)",
            f"{med(got['times']) * ms:.0f} / {p90:.0f} ms",
            "≤ 50 ms",
        ),
        (
            "warm query, exact scan (median)",
            f"{med(got['exact_times']) * ms:.0f} ms ({len(got['exact_times'])} queries)",
            "",
        ),
        (
            "cold query, two-stage: `msearch query --dense-only` (median)",
            f"{med(cold_two):.3f} s ({len(cold_two)} runs)",
            "≤ 1 s",
        ),
        ("cold query, `--exact` (median)", f"{med(cold_exact):.3f} s", ""),
        (
            "what the search holds: sign bits in fast-scan order (heap copy) + int8 codes (mapped)",
            f"{scan / 2**20:,.0f} + {codes / 2**20:,.0f} MiB = {(scan + codes) / f32:.1%} of "
            f"float32 ({f32 / 2**30:.1f} GiB); on disk with bits.npy "
            f"{(scan + codes + bits) / f32:.1%}",
            "≤ 30%",
        ),
        (
            f"mapped into the warm process after its {len(sub) + 50} queries (codes mapped "
            "in first, as `msearch mcp` does): int8 codes; float32 vectors (the file was in "
            "the page cache, read by the exact reference, and this kernel maps in a whole "
            "cached folio around each row read: pages already in memory, not read for the "
            "search; see the next row)",
            f"{res.get(CODES_NAME, 0) / 2**20:,.0f} MiB; "
            f"{res.get(EMBEDDINGS_NAME, 0) / 2**20:,.0f} MiB",
            "",
        ),
        (
            "query, float32 dropped from the page cache first, not mapped in (median / p90, "
            f"{len(ev)} queries in one process), and float32 resident after them",
            f"{med(ev) * ms:.0f} / {float(np.percentile(ev, 90)) * ms:.0f} ms; "
            f"{ev_res / 2**20:,.0f} MiB ({ev_res / f32:.2%} of float32)",
            "",
        ),
        (
            "  the same without prefetching the rescored rows (one page fault after another)",
            f"{med(ev_plain) * ms:.0f} / {float(np.percentile(ev_plain, 90)) * ms:.0f} ms",
            "",
        ),
        (
            "k-means lists (not used): exact top 10 found in the nearest lists holding "
            f"a share of the rows, real {len(vectors):,} passages, {len(qvecs):,} queries",
            "; ".join(real_lists),
            "",
        ),
        (
            "writing the synthetic index: rows; closing (fast-scan order, int8 codes, checksums)",
            f"{spent['write']:.0f} s; {spent.get('close', float('nan')):.0f} s",
            "",
        ),
    ]
    for r in rows:
        print(r, file=sys.stderr)
    report(
        f"Search at {args.rows:,} passages",
        f"dense, k=10; {args.rows:,} noisy copies (sigma {SIGMA}) of the 30,381 real "
        "passage vectors, real queries encoded by the bundled model",
        table(rows, ("figure", "measured", "target")),
        args.write,
    )


if __name__ == "__main__":
    main()
