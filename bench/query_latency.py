"""Cold-query latency of `msearch query` (issue 3), against the plain approach.

Builds synthetic indexes (random normalized vectors over a real folder of
small text files, with the bundled model's real record so the real query
path runs), then times fresh processes side by side:

  python bench/query_latency.py [--runs 15] [--baseline-runs 5] [--write]

Figures: cold query median at 100k passages; the baseline script's median;
their ratio; 100 queries through `msearch query -`; and what a 1M-passage
index adds to a cold query over a 1k-passage one. --write appends the
table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import report, table

from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path
from msearch.storage import layout, ownership, reader, record, segment

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
QUERIES = [
    "why does the moon change shape",
    "how do I keep my bread from being dense",
    "what causes jet lag and how to recover",
    "best way to water tomatoes in summer",
    "how to create a python virtual environment",
]


def msearch_exe() -> list[str]:
    """The installed console script next to this interpreter (no pyenv shim)."""
    exe = Path(sys.executable).parent / "msearch"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "msearch"]


def make_corpus(root: Path, files: int) -> list[record.FileRecord]:
    import hashlib

    root.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(files):
        p = root / f"doc{i:05d}.txt"
        if not p.exists():
            p.write_text(
                "".join(f"line {j} of document {i} about topic {j % 17}\n" for j in range(40))
            )
        data = p.read_bytes()
        st = p.stat()
        recs.append(
            record.FileRecord(p.name, st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest())
        )
    return recs


def synthetic_texts(rows: int, seed: int) -> list[str]:
    """Texts for the BM25 side of the synthetic rows: 30 words a passage drawn
    from a Zipf distribution over 50,000 terms, with the benchmark queries'
    words among them, so postings lists have realistic lengths."""
    rng = np.random.default_rng(seed + 1)
    query_words = sorted({w for q in QUERIES for w in q.split()})
    vocab = np.array(query_words + [f"term{i}" for i in range(50_000 - len(query_words))])
    perm = rng.permutation(len(vocab))  # query words land at random ranks
    ranks = np.minimum(rng.zipf(1.2, size=(rows, 30)) - 1, len(vocab) - 1)
    words = vocab[perm[ranks]]
    return [" ".join(r) for r in words]


def up_to_date(index_dir: Path) -> bool:
    """Whether every segment of a kept index has the files this msearch
    writes for a large search (an older one is built again)."""
    from msearch.storage.segment import search_files

    meta = record.read_meta(index_dir)
    return all(
        (index_dir / seg.name / name).exists()
        for seg in meta.segments
        for name in search_files(meta.dim)
    )


def make_index(
    index_dir: Path, corpus: Path, rows: int, model_record: dict, seed: int = 0, segments: int = 1
) -> Path:
    """A synthetic index of ``rows`` random unit vectors over the real files
    of ``corpus``, in ``segments`` segments of about equal size (the same
    rows, vectors and texts whatever the number of segments)."""
    from msearch.lexical import LexicalParams, build_lexical
    from msearch.storage.segment import SegmentWriter

    if (index_dir / layout.META_NAME).exists() and up_to_date(index_dir):
        return index_dir
    shutil.rmtree(index_dir, ignore_errors=True)
    ownership.claim(index_dir)  # creates and marks the folder as msearch's own
    files = make_corpus(corpus, 1000)
    rng = np.random.default_rng(seed)
    texts = synthetic_texts(rows, seed)
    per_file = max(1, rows // len(files))
    bounds = np.linspace(0, len(files), segments + 1).astype(int)
    infos = []
    records = []
    for s in range(segments):
        f0, f1 = int(bounds[s]), int(bounds[s + 1])
        a = min(f0 * per_file, rows)
        b = rows if s == segments - 1 else min(f1 * per_file, rows)
        folder = ownership.new_segment_dir(index_dir)
        w = SegmentWriter(folder, 384)
        for start in range(a, b, 65536):
            n = min(65536, b - start)
            v = rng.standard_normal((n, 384)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            ids = np.arange(start, start + n)
            file_idx = np.minimum(ids // per_file, len(files) - 1)
            line = (ids % 35) + 1
            begin = (line - 1) * 40
            r = np.stack([file_idx - f0, line, line + 2, begin, begin + 100], axis=1)
            w.append(r.astype(np.int32), v, np.zeros((n, 16), np.uint8))
        infos.append(w.close(build_lexical(texts[a:b])))
        for f in range(f0, f1):
            lo = f * per_file
            hi = rows if f == len(files) - 1 else min((f + 1) * per_file, rows)
            rec = files[f]
            records.append(
                record.FileRecord(rec.path, rec.size, rec.mtime_ns, rec.sha256, s, lo - a, hi - lo)
            )
    meta = record.Meta(
        root=str(corpus.resolve()),
        model=model_record,
        chunking={"max_tokens": 256, "overlap_tokens": 32},
        walk={},
        files=records,
        dim=384,
        segments=infos,
        lexical=LexicalParams.default().to_json(),
    )
    ownership.commit(index_dir, meta)
    return index_dir


def warm_queries(index_dir: Path, runs: int) -> list[float]:
    """In-process query time (hybrid, top 10) on an open index: what each
    query costs once the model and the index are loaded."""
    from msearch.models import query_encoder
    from msearch.query import Searcher, open_lexical
    from msearch.storage.segment import populate_segments

    idx = reader.load_index(index_dir)
    populate_segments(idx.segments)  # as a long-running process (msearch mcp) does
    searcher = Searcher(idx, query_encoder(idx, "cpu"), open_lexical(idx), "hybrid")
    for q in QUERIES:
        searcher.query(q)
    out = []
    for i in range(runs):
        t = time.perf_counter()
        searcher.query(QUERIES[i % len(QUERIES)] + f" {i}")
        out.append(time.perf_counter() - t)
    return out


def time_cmd(cmd: list[str], stdin: str | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(f"{cmd[:3]} failed: {r.stderr}")
    return dt


def add_vocab_cache(index_dir: Path, model: Model) -> None:
    """What `msearch index` writes beside the segments for the model's
    tokenizer (msearch.encoders.vocab_cache), through the indexer's own code."""
    from msearch.indexer import _vocab_cache

    meta = record.read_meta(index_dir)
    name = _vocab_cache(index_dir, model, reader.load_index(index_dir))
    if name != meta.vocab_cache:
        meta.vocab_cache = name
        ownership.commit(index_dir, meta)


def compile_package() -> None:
    """Byte-compile msearch as ``pip install`` does: an editable checkout
    run with PYTHONDONTWRITEBYTECODE=1 (as here) would otherwise compile
    every changed module on every cold query."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    package = BENCH.parent / "msearch"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], env=env, check=True)


def cold_queries(index_dir: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        q = QUERIES[i % len(QUERIES)]
        times.append(
            time_cmd([*msearch_exe(), "query", q, "--index", str(index_dir), "--format", "jsonl"])
        )
    return times


def model_folders() -> dict[str, Path]:
    """Two models beyond the bundled one (issue 13): all-MiniLM-L6-v2 with a
    query and a document prompt, and an XLM-RoBERTa of multilingual-e5-small's
    shape (12 layers, 384 wide, 250,002 tokens; random weights)."""
    import json

    sys.path.insert(0, str(BENCH.parent / "tests"))
    from tiny_models import build

    prompted = WORK / "model-minilm-prompts"
    if not (prompted / "modules.json").exists():
        shutil.rmtree(prompted, ignore_errors=True)
        shutil.copytree(bundled_model_path(), prompted)
        path = prompted / "config_sentence_transformers.json"
        cfg = json.loads(path.read_text())
        cfg["prompts"] = {"query": "query: ", "document": "passage: "}
        path.write_text(json.dumps(cfg))
    xlmr = WORK / "model-xlmr-e5-small-shape"
    if not (xlmr / "modules.json").exists():
        build(
            xlmr,
            family="xlm-roberta",
            pooling="mean",
            prompts={"query": "query: ", "document": "passage: "},
            hidden=384,
            layers=12,
            heads=12,
            max_seq_length=512,
            vocab_size=250_002,
        )
    return {
        "BERT with prompts (all-MiniLM-L6-v2 + prompts)": prompted,
        "XLM-RoBERTa (e5-small shape)": xlmr,
    }


def model_rows(corpus: Path, runs: int) -> list[tuple[str, str, str]]:
    rows = []
    folders = {"bundled all-MiniLM-L6-v2, no prompts (reference)": bundled_model_path()}
    folders.update(model_folders())
    indexes = {}
    for label, folder in folders.items():
        model = Model(label, "path", folder, "cpu")
        name = "idx-100k" if folder == bundled_model_path() else f"idx-100k-{folder.name}"
        index_dir = make_index(WORK / name, corpus, 100_000, model.record.to_json())
        add_vocab_cache(index_dir, model)
        indexes[label] = index_dir
        cold_queries(indexes[label], 2)
    times: dict[str, list[float]] = {label: [] for label in indexes}
    for _ in range(runs):
        for label, index_dir in indexes.items():
            times[label] += cold_queries(index_dir, 1)
    for label in indexes:
        rows.append(
            (
                f"cold query, 100k passages, {label} (median)",
                f"{statistics.median(times[label]):.3f} s",
                "" if "reference" in label else "≤ 0.3 s",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline-runs", type=int, default=5)
    ap.add_argument("--models-only", action="store_true", help="only the issue-13 model rows")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    compile_package()
    if args.models_only:
        rows = model_rows(WORK / "corpus", args.runs)
        note = f"{args.runs} runs each, interleaved"
        report("Cold query latency, other models", note, table(rows), args.write)
        return

    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    model_record = model.record.to_json()
    corpus = WORK / "corpus"
    t = time.perf_counter()
    idx_1k = make_index(WORK / "idx-1k", corpus, 1_000, model_record)
    idx_100k = make_index(WORK / "idx-100k", corpus, 100_000, model_record)
    idx_1m = make_index(WORK / "idx-1m", corpus, 1_000_000, model_record)
    idx_1m_10 = make_index(WORK / "idx-1m-10seg", corpus, 1_000_000, model_record, segments=10)
    for d in (idx_1k, idx_100k, idx_1m, idx_1m_10):
        add_vocab_cache(d, model)
    print(f"indexes ready in {time.perf_counter() - t:.1f}s", file=sys.stderr)

    # Warm the OS cache, then measure interleaved so drift hits both sides.
    for d in (idx_1k, idx_100k, idx_1m, idx_1m_10):
        cold_queries(d, 2)
    emb_100k = idx_100k / record.read_meta(idx_100k).segments[0].name / segment.EMBEDDINGS_NAME
    base_cmd = [
        sys.executable,
        str(BENCH / "baseline_query.py"),
        str(bundled_model_path()),
        str(emb_100k),
    ]
    time_cmd([*base_cmd, QUERIES[0]])

    ours_100k, ours_1k, ours_1m, ours_1m_10, base = [], [], [], [], []
    for i in range(args.runs):
        q = QUERIES[i % len(QUERIES)]
        ours_100k += cold_queries(idx_100k, 1)
        ours_1k += cold_queries(idx_1k, 1)
        ours_1m += cold_queries(idx_1m, 1)
        ours_1m_10 += cold_queries(idx_1m_10, 1)
        if i < args.baseline_runs:
            base.append(time_cmd([*base_cmd, q]))
    warm_1, warm_10 = [], []
    for _ in range(3):  # interleaved rounds
        warm_1 += warm_queries(idx_1m, 20)
        warm_10 += warm_queries(idx_1m_10, 20)

    stdin = "\n".join(QUERIES[i % len(QUERIES)] + f" {i}" for i in range(100)) + "\n"
    batch = [
        time_cmd(
            [*msearch_exe(), "query", "-", "--index", str(idx_100k), "--format", "jsonl"], stdin
        )
        for _ in range(3)
    ]

    med = statistics.median
    rows = [
        ("cold query, 100k passages, jsonl (median)", f"{med(ours_100k):.3f} s", "≤ 0.5 s"),
        ("baseline script, 100k passages (median)", f"{med(base):.3f} s", ""),
        ("speed-up vs baseline", f"{med(base) / med(ours_100k):.1f}×", "≥ 10×"),
        (
            "100 queries via `query -`, 100k (median of 3)",
            f"{med(batch):.3f} s = cold + {(med(batch) - med(ours_100k)) / 100 * 1000:.1f} ms/query",
            "≤ cold + 10 ms/query",
        ),
        ("cold query, 1k passages (median)", f"{med(ours_1k):.3f} s", ""),
        ("cold query, 1M passages (median)", f"{med(ours_1m):.3f} s", ""),
        (
            "1M index overhead (1M − 1k)",
            f"{(med(ours_1m) - med(ours_1k)) * 1000:.0f} ms",
            "≤ 150 ms",
        ),
        ("cold query, 1M passages in 10 segments (median)", f"{med(ours_1m_10):.3f} s", ""),
        (
            "  10 segments / 1 segment, cold",
            f"{med(ours_1m_10) / med(ours_1m):.3f}",
            "≤ 1.10",
        ),
        (
            "warm hybrid query, 1M in 1 / 10 segments (median of 60)",
            f"{med(warm_1) * 1000:.1f} / {med(warm_10) * 1000:.1f} ms",
            "",
        ),
        ("  10 segments / 1 segment, warm", f"{med(warm_10) / med(warm_1):.3f}", "≤ 1.10"),
    ]
    lines = [
        *table(rows),
        "",
        "Raw (s): 100k " + " ".join(f"{x:.3f}" for x in ours_100k),
        "; baseline " + " ".join(f"{x:.2f}" for x in base),
    ]
    note = f"{args.runs} runs each, interleaved; baseline {args.baseline_runs} runs"
    report("Cold query latency", note, lines, args.write)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
