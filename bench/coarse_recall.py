"""Recall and speed of the two-stage dense search (an estimate from the
sign bits, msearch.coarse; the int8 codes' estimate of those candidates,
msearch.int8; exact scores of the best of them) against the exact scan,
on real vectors.

Vectors: the 30,381 passages of the seven collections in ../shared/eval,
embedded with the bundled all-MiniLM-L6-v2 (bench/eval.py's indexes), and
their 1,041 real queries. Then 1,000,000 synthetic passages made from them
(each a real passage's vector plus Gaussian noise, renormalized: cosine
about 0.86 or 0.71 to its source), searched with the same real queries.
Each set is written as an index by msearch's own segment writer (which
writes the sign bits) and searched through `Searcher.query`, dense mode,
k=10, with and without `exact`. Also, on the real set, how far the int8
estimate lies from the exact cosine, and the same search without codes
(every candidate scored from float32), with fewer rows rescored, and
with smaller shares:

  python bench/coarse_recall.py [--queries 300] [--write]

The real collection is far below the size where msearch turns the two
stages on (TwoStage.from_rows); the benchmark turns them on for it to
measure their recall on real vectors.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _results import report, table

from msearch import coarse
from msearch.config import TwoStage
from msearch.lexical import LexicalParams, build_lexical
from msearch.query import Searcher
from msearch.storage import ownership, reader, record
from msearch.storage.record import SegmentInfo
from msearch.storage.segment import Segment, SegmentWriter

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "coarse"
EVAL = BENCH.parent.parent / "shared" / "eval"


def real_vectors() -> tuple[np.ndarray, list[str], np.ndarray]:
    """(passage vectors, query texts, query vectors) of the eval collections."""
    from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path

    parts = []
    for folder in sorted(glob.glob(str(BENCH / ".work" / "eval" / "*" / "index-256-32"))):
        parts.append(reader.load_index(Path(folder)).table()[1])
    if not parts:
        raise SystemExit("run `python bench/eval.py` first: it builds the eval indexes")
    texts = []
    for f in sorted(EVAL.glob("*/queries.jsonl")):
        texts += [json.loads(line)["text"] for line in f.read_text().splitlines() if line.strip()]
    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    return np.concatenate(parts), texts, model.encode_queries(texts)


def write_index(index_dir: Path, vectors: np.ndarray) -> Path:
    """An index holding ``vectors``, one passage per row of one (absent)
    file, line numbers = row numbers, so that hits name their rows."""
    shutil.rmtree(index_dir, ignore_errors=True)
    ownership.claim(index_dir)
    n = len(vectors)
    folder = ownership.new_segment_dir(index_dir)
    writer = SegmentWriter(folder, vectors.shape[1])
    for start in range(0, n, 65536):
        ids = np.arange(start, min(start + 65536, n))
        rows = np.stack([0 * ids, ids + 1, ids + 1, 0 * ids, 0 * ids], axis=1).astype(np.int32)
        writer.append(rows, vectors[ids], np.zeros((len(ids), 16), np.uint8))
    info = writer.close(build_lexical(["passage"] * n))
    dim = int(vectors.shape[1])
    commit_one_file(index_dir, info, WORK, {"name": "bench", "dim": dim}, dim)
    return index_dir


def commit_one_file(index_dir: Path, info: SegmentInfo, root: Path, model: dict, dim: int) -> None:
    """Commit ``info`` as the index's one segment, all its rows the
    passages of one absent file (as :func:`write_index` writes them)."""
    meta = record.Meta(
        root=str(root.resolve()),
        model=model,
        chunking={"max_tokens": 256, "overlap_tokens": 32},
        walk={},
        files=[record.FileRecord("none.txt", 0, 0, "", 0, 0, info.rows)],
        dim=dim,
        segments=[info],
        lexical=LexicalParams.default().to_json(),
    )
    ownership.commit(index_dir, meta)


# Two stages from any size: on for the small real set too (see the docstring).
SHIPPED = TwoStage(from_rows=0)


def measure(
    index_dir: Path, texts: Sequence[str], qvecs: np.ndarray, stages: TwoStage = SHIPPED
) -> tuple[float, float, float, float]:
    """(recall@10 of two stages vs exact, worst query's recall, median ms
    two-stage, median ms exact)."""
    index = reader.load_index(index_dir)
    lookup = {t: v for t, v in zip(texts, qvecs, strict=True)}

    def encode(batch: Sequence[str]) -> np.ndarray:
        return np.stack([lookup[t] for t in batch])

    staged = Searcher(index, encode, None, "dense", stages=stages)
    exact = Searcher(index, encode, None, "dense", exact=True, stages=stages)
    assert staged.two_stage() and not exact.two_stage()
    recalls, t_staged, t_exact = [], [], []
    for text in texts:
        t = time.perf_counter()
        got = staged.query(text, 10)
        t_staged.append(time.perf_counter() - t)
        t = time.perf_counter()
        want = exact.query(text, 10)
        t_exact.append(time.perf_counter() - t)
        # Ties at the 10th score may pick either row: count by score too.
        cut = want[-1].score
        want_rows = {h.start_line for h in want}
        hits = sum(1 for h in got if h.start_line in want_rows or h.score >= cut - 1e-7)
        recalls.append(min(hits, 10) / 10)
    ms = 1000.0
    return (
        float(np.mean(recalls)),
        float(min(recalls)),
        statistics.median(t_staged) * ms,
        statistics.median(t_exact) * ms,
    )


def estimate_error(
    index_dir: Path, vectors: np.ndarray, qvecs: np.ndarray
) -> tuple[float, float, int, float]:
    """(mean, standard deviation, count, largest magnitude) of the int8
    estimate minus the exact cosine (numpy's, over the float32 vectors),
    for the candidates of every query at 1 in TwoStage.share."""
    index = reader.load_index(index_dir)
    seg = index.segments[0]
    scan, codes = seg.scan(), seg.int8()
    assert scan is not None and codes is not None
    want = max(len(vectors) // SHIPPED.share, 10)
    diffs = []
    for q in qvecs:
        found, est = codes.nearest(scan, q, want, want)
        diffs.append(est - vectors[found] @ q)
    d = np.concatenate(diffs)
    return float(d.mean()), float(d.std()), len(d), float(np.abs(d).max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300, help="real queries used at 1M")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    vectors, texts, qvecs = real_vectors()
    rows = []
    index_dir = write_index(WORK / "real", vectors)
    scan_method, codes_method = Segment.scan, Segment.int8
    # As shipped (the floor of TwoStage.min_candidates is 6.6% of this set),
    # then the share alone, as at ten million rows: with the int8 codes'
    # rescored rows, with fewer, and without codes (every candidate scored
    # from float32, as before the codes); a smaller share. The last: the
    # Hamming fallback (segments with many unusable rows), as every
    # segment was searched before the fast-scan estimate.
    share = SHIPPED.share
    configs = [
        (None, False, True, SHIPPED.rescore),
        (share, False, True, SHIPPED.rescore),
        (share, False, True, 20),
        (share, False, False, 0),
        (500, False, True, SHIPPED.rescore),
        (200, True, False, 0),
    ]
    for share, hamming, codes, best in configs:
        stages = SHIPPED
        if share is not None:
            stages = dataclasses.replace(stages, share=share, min_candidates=0)
        if best:
            stages = dataclasses.replace(stages, rescore=best, rescore_per_k=best // 10)
        if hamming:
            Segment.scan = lambda self: None  # type: ignore[method-assign,assignment,misc]
        if not codes:
            Segment.int8 = lambda self: None  # type: ignore[method-assign,assignment,misc]
        try:
            r, worst, ts, te = measure(index_dir, texts, qvecs, stages)
            n = stages.candidates(len(vectors)) * (coarse.HAMMING_FACTOR if hamming else 1)
            rescored = stages.rescored(10) if codes else n
        finally:
            Segment.scan, Segment.int8 = scan_method, codes_method  # type: ignore[method-assign]
        label = f"real: {len(vectors):,} passages, {len(texts):,} queries"
        if share is not None:
            label += f"; 1 in {share // (coarse.HAMMING_FACTOR if hamming else 1)}, no floor"
        if hamming:
            label += "; Hamming distance (the fallback)"
        elif not codes:
            label += "; no int8 codes"
        rows.append(
            (
                label,
                f"{n:,}",
                f"{rescored:,}",
                f"{r:.4f} (worst query {worst:.1f})",
                f"{ts:.1f} / {te:.1f} ms",
            )
        )
        print(rows[-1], file=sys.stderr)
    err = estimate_error(index_dir, vectors, qvecs)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(texts), size=min(args.queries, len(texts)), replace=False)
    sub_texts = [texts[i] for i in pick]
    for sigma in (0.03, 0.05):
        src = rng.integers(0, len(vectors), args.rows)
        syn = vectors[src] + rng.standard_normal((args.rows, vectors.shape[1])).astype(
            np.float32
        ) * np.float32(sigma)
        syn /= np.linalg.norm(syn, axis=1, keepdims=True)
        cos = float(np.mean(np.sum(syn[:10000] * vectors[src[:10000]], axis=1)))
        index_dir = write_index(WORK / f"syn-{sigma}", syn)
        del syn
        r, worst, ts, te = measure(index_dir, sub_texts, qvecs[pick])
        rows.append(
            (
                f"synthetic: {args.rows:,} noisy copies (cosine {cos:.2f} to source), "
                f"{len(sub_texts)} real queries",
                f"{SHIPPED.candidates(args.rows):,}",
                f"{SHIPPED.rescored(10):,}",
                f"{r:.4f} (worst query {worst:.1f})",
                f"{ts:.1f} / {te:.1f} ms",
            )
        )
        print(rows[-1], file=sys.stderr)
        shutil.rmtree(index_dir, ignore_errors=True)
    report(
        "Two-stage dense search: recall@10 against the exact scan",
        "dense, k=10, `Searcher.query` with and without `exact`; warm, in process, "
        "query vectors precomputed (no encoding in the times)",
        [
            *table(
                rows,
                (
                    "vectors",
                    "candidates",
                    "scored from float32",
                    "recall@10 (target ≥ 0.99)",
                    "two-stage / exact",
                ),
            ),
            "",
            f"int8 estimate minus the exact cosine, {err[2]:,} candidates of the real "
            f"set's queries (1 in {SHIPPED.share}): mean {err[0]:+.5f}, standard deviation "
            f"{err[1]:.5f}, largest {err[3]:.4f}.",
        ],
        args.write,
    )


if __name__ == "__main__":
    main()
