"""The pieces of bench/eval.py: test collections, an embedding cache, msearch
indexes of a collection, score matrices, fusion variants and metrics.

Everything msearch-specific goes through msearch's own code: files are
written to disk and indexed with ``msearch.indexer.build_index``; queries run
through ``msearch.query.Searcher`` with ``msearch.models.query_encoder``. The
only thing the bench adds is a cache in front of the embedder, keyed by the
model's fingerprint and the exact token ids the model sees, so that the
reference (whole documents) and msearch (passages) share every vector they
have in common, and re-runs embed nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE_DIR = BENCH / ".cache"
WORK_DIR = BENCH / ".work" / "eval"
COLLECTIONS = ("scifact", "nfcorpus", "medline", "cisi", "cranfield", "cacm", "lisa")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOC_K = 100  # documents per query in a run (Recall@100)
PASSAGE_K = 1000  # passages asked of the Searcher, so that 100 distinct documents rank
EMBED_CHUNK = 2048  # texts per embedding call: ST sorts each call by length; saved after each


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- collections


def data_root() -> Path:
    """The shared test collections: $MSEARCH_EVAL_DATA, else shared/eval next to
    (or inside) the checkout, as CI lays it out."""
    env = os.environ.get("MSEARCH_EVAL_DATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO / "shared" / "eval", REPO.parent / "shared" / "eval"]
    for c in candidates:
        if (c / "scifact" / "corpus.jsonl").exists():
            return c
    raise SystemExit(
        "eval: test collections not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); set MSEARCH_EVAL_DATA"
    )


@dataclass
class Collection:
    name: str
    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]


def load_collection(name: str, root: Path | None = None) -> Collection:
    folder = (root or data_root()) / name
    doc_ids, titles, texts = [], [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            doc_ids.append(str(d["_id"]))
            titles.append(d.get("title") or "")
            texts.append(d.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels.tsv", encoding="utf-8") as fh:
        header = fh.readline().split("\t")
        assert header[0].strip() == "query-id", header
        for line in fh:
            if not line.strip():
                continue
            q, d, s = line.rstrip("\n").split("\t")
            if int(s) > 0:
                qrels.setdefault(q, {})[d] = int(s)
    query_ids, queries = [], []
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                query_ids.append(str(q["_id"]))
                queries.append(q["text"])
    return Collection(name, doc_ids, titles, texts, query_ids, queries, qrels)


def subset(coll: Collection, n_queries: int, n_docs: int, seed: int = 0) -> Collection:
    """The first ``n_queries`` queries, every document they judge, and a fixed
    random sample of the other documents up to ``n_docs`` (for --quick)."""
    qids = coll.query_ids[:n_queries]
    judged = {d for q in qids for d in coll.qrels[q]}
    others = [i for i, d in enumerate(coll.doc_ids) if d not in judged]
    rng = np.random.default_rng(seed)
    extra = max(0, n_docs - len(judged))
    pick = set(rng.choice(others, size=min(extra, len(others)), replace=False).tolist())
    keep = [i for i, d in enumerate(coll.doc_ids) if d in judged or i in pick]
    return Collection(
        name=f"{coll.name}-quick",
        doc_ids=[coll.doc_ids[i] for i in keep],
        titles=[coll.titles[i] for i in keep],
        texts=[coll.texts[i] for i in keep],
        query_ids=qids,
        queries=coll.queries[:n_queries],
        qrels={q: coll.qrels[q] for q in qids},
    )


# ---------------------------------------------------------------- metrics


def evaluate(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 (x100) with ir-measures (pytrec_eval
    underneath, the same code BEIR and MTEB use). Graded judgments are gains."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measures = [nDCG @ 10, R @ 100, RR @ 10]
    agg = ir_measures.calc_aggregate(measures, qrels, run)
    # Queries that retrieved nothing count as 0, not as absent.
    n_run = sum(1 for q in qrels if run.get(q))
    scale = n_run / len(qrels) if qrels else 0.0
    return {
        "nDCG@10": 100 * agg[measures[0]] * scale,
        "R@100": 100 * agg[measures[1]] * scale,
        "MRR@10": 100 * agg[measures[2]] * scale,
    }


def top_docs(scores: np.ndarray, doc_ids: Sequence[str], k: int = DOC_K) -> dict[str, float]:
    """The ``k`` best documents of one query (by score) as a run entry."""
    k = min(k, len(scores))
    if k == 0:
        return {}
    idx = np.argpartition(-scores, k - 1)[:k]
    return {doc_ids[i]: float(scores[i]) for i in idx if np.isfinite(scores[i])}


def run_from_matrix(
    scores: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], k: int = DOC_K
) -> dict[str, dict[str, float]]:
    return {q: top_docs(scores[i], doc_ids, k) for i, q in enumerate(query_ids)}


# ---------------------------------------------------------------- embedding cache


class EmbeddingCache:
    """Vectors by key, in append-only shard files under one folder per model.

    Each embedding call adds one shard (written to a temporary name, then
    renamed), so an interrupted run keeps everything embedded before it.
    """

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        folder.mkdir(parents=True, exist_ok=True)
        self._blocks: list[np.ndarray] = []
        self._where: dict[bytes, tuple[int, int]] = {}
        for shard in sorted(folder.glob("shard-*.npz")):
            try:
                with np.load(shard) as z:
                    keys, vecs = z["keys"], z["vecs"]
            except Exception as exc:  # a damaged shard is only lost work
                say(f"eval: ignoring damaged cache shard {shard} ({exc})")
                continue
            if vecs.ndim != 2 or vecs.shape[1] != dim:
                continue
            self._add(keys, vecs)

    def __len__(self) -> int:
        return len(self._where)

    def _add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        b = len(self._blocks)
        self._blocks.append(np.asarray(vecs, dtype=np.float32))
        for row, key in enumerate(keys):
            self._where[bytes(key)] = (b, row)

    def get(self, key: bytes) -> np.ndarray | None:
        hit = self._where.get(key)
        return None if hit is None else self._blocks[hit[0]][hit[1]]

    def put(self, keys: Sequence[bytes], vecs: np.ndarray) -> None:
        karr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
        tmp = self.folder / f".{name}.tmp.npz"
        np.savez(tmp, keys=karr, vecs=np.asarray(vecs, dtype=np.float32))
        os.replace(tmp, self.folder / f"{name}.npz")
        self._add(karr, vecs)


@dataclass
class EmbedStats:
    texts: int = 0  # asked for
    embedded: int = 0  # cache misses actually embedded
    tokens: int = 0  # tokens of the embedded ones (with [CLS]/[SEP])
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return (
            f"{self.texts} texts asked, {self.embedded} embedded "
            f"({self.tokens} tokens, {self.seconds:.0f} s, {rate:.0f} tokens/s)"
        )


class CachedEmbedder:
    """msearch's ``Embedder`` (record, counter, encode) over the real model,
    with :class:`EmbeddingCache` in front.

    The cache key is a hash of the token ids the model actually sees (after
    its own truncation), under a folder named by the model fingerprint and
    maximum length. So "title text" (the reference) and "title\\ntext"
    (msearch's passage of a short file) are one vector, embedded once. Misses
    are embedded by ``Model.passage_encoder()`` (msearch's torch encoder for BERT models):
    the same path ``msearch index`` uses for big jobs.
    """

    def __init__(self, model: Any, cache_dir: Path = CACHE_DIR) -> None:
        from msearch.encoders.tokenizer import load_tokenizer

        self.model = model
        self.record = model.record
        self.counter = model.counter
        self.document_prompt_tokens = model.document_prompt_tokens
        self.query_cache_name = model.query_cache_name
        self.write_query_cache = model.write_query_cache
        self.big = model.passage_encoder()
        self.lowercase = False  # the tokenizer lowercases where the model says so
        self.tok = load_tokenizer(model.spec)
        folder = cache_dir / f"vectors-{self.record.fingerprint[:16]}-{self.record.max_seq_length}"
        if self.record.precision != "float32":
            folder = folder.with_name(f"{folder.name}-{self.record.precision}")
        self.cache = EmbeddingCache(folder, self.record.dim)
        self.stats = EmbedStats()

    def keys(self, texts: Sequence[str]) -> tuple[list[bytes], list[int]]:
        prepped = [t.strip().lower() if self.lowercase else t.strip() for t in texts]
        encs = self.tok.encode_batch(prepped)
        keys = [
            hashlib.blake2b(np.asarray(e.ids, dtype=np.int32).tobytes(), digest_size=20).digest()
            for e in encs
        ]
        return keys, [len(e.ids) for e in encs]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.record.dim), dtype=np.float32)
        if not texts:
            return out
        keys, lengths = self.keys(texts)
        missing: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            vec = self.cache.get(key)
            if vec is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = vec
        self.stats.texts += len(texts)
        todo = list(missing)
        for start in range(0, len(todo), EMBED_CHUNK):
            chunk = todo[start : start + EMBED_CHUNK]
            chunk_texts = [texts[missing[k][0]] for k in chunk]
            ntok = sum(lengths[missing[k][0]] for k in chunk)
            t0 = time.perf_counter()
            vecs = self.big.encode(chunk_texts, batch_size=batch_size)
            dt = time.perf_counter() - t0
            self.stats.embedded += len(chunk)
            self.stats.tokens += ntok
            self.stats.seconds += dt
            say(
                f"eval:   embedded {len(chunk)} texts ({ntok} tokens) in {dt:.0f} s "
                f"({ntok / max(dt, 1e-9):.0f} tokens/s); "
                f"{len(todo) - start - len(chunk)} left in this call"
            )
            self.cache.put(chunk, vecs)
            for k, v in zip(chunk, vecs, strict=True):
                for i in missing[k]:
                    out[i] = v
        return out


def load_embedder(cache_dir: Path = CACHE_DIR, precision: str = "float32") -> CachedEmbedder:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from msearch.encoders import load_model

    model = load_model(MODEL, device="cpu", notice=say, precision=precision)
    return CachedEmbedder(model, cache_dir)


# ---------------------------------------------------------------- the reference


def reference_text(title: str, text: str) -> str:
    """The model card's / BEIR's document string: title, a space, the text."""
    return (title + " " + text).strip()


def reference_scores(coll: Collection, emb: CachedEmbedder) -> np.ndarray:
    """(queries x documents) cosines: each document embedded whole (truncated
    by the model at its limit), queries embedded the same way."""
    docs = emb.encode([reference_text(t, x) for t, x in zip(coll.titles, coll.texts, strict=True)])
    queries = emb.encode(coll.queries)
    return queries @ docs.T


def bm25_doc_run(coll: Collection, k: int = DOC_K) -> dict[str, dict[str, float]]:
    """BM25 over whole documents, exactly as the issue's baseline was run:
    bm25s (k1=1.5, b=0.75, Lucene, English stopwords, Snowball stemmer),
    ``retrieve(k=100)``.

    bm25s's own top-k matters where a query matches fewer than 100 documents
    (75 NFCorpus queries match fewer than 10): the rest of its list is
    documents that score 0, in bm25s's order, and relevant ones among them
    still count. Also checks that ``msearch.lexical`` (which msearch uses)
    gives the same score to every retrieved document.
    """
    import bm25s
    import Stemmer

    from msearch.lexical import bm25_of, build_lexical

    texts = [reference_text(t, x) for t, x in zip(coll.titles, coll.texts, strict=True)]
    stemmer = Stemmer.Stemmer("english")
    ret = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ret.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    queries = bm25s.tokenize(coll.queries, stopwords="en", stemmer=stemmer, show_progress=False)
    docs, scores = ret.retrieve(queries, k=min(k, len(texts)), show_progress=False, n_threads=1)
    lex = bm25_of(build_lexical(texts))
    for i, q in enumerate(coll.queries):
        ours = lex.scores(q)[docs[i]]
        if not np.allclose(ours, scores[i], rtol=1e-5, atol=1e-5):
            say(f"eval: WARNING: {coll.name}: msearch.lexical differs from bm25s on {q!r}")
            break
    return {
        q: {coll.doc_ids[d]: float(s) for d, s in zip(docs[i], scores[i], strict=True)}
        for i, q in enumerate(coll.query_ids)
    }


# ---------------------------------------------------------------- msearch


def doc_file_text(title: str, text: str) -> str:
    """A document as a file: its title as the first line, then its text."""
    return f"{title}\n{text}\n"


def write_corpus(coll: Collection, folder: Path) -> None:
    """One file per document, named by its position (walk order = corpus order).
    Unchanged files are not rewritten; files of other documents are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    names = set()
    for i, (title, text) in enumerate(zip(coll.titles, coll.texts, strict=True)):
        name = f"{i:06d}.txt"
        names.add(name)
        path = folder / name
        data = doc_file_text(title, text).encode("utf-8")
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        path.write_bytes(data)
    for path in folder.glob("*.txt"):
        if path.name not in names:
            path.unlink()


@dataclass
class MsearchRun:
    """An msearch index of one collection, opened for querying, plus what the
    bench derives from it: passage texts and the passage -> document map."""

    name: str
    stats: Any
    index: Any  # msearch.storage.reader.IndexReader
    searcher: Any  # msearch.query.Searcher
    passage_file: np.ndarray  # file index of each passage row
    starts: np.ndarray  # first row of each file that has passages (row order)
    group_doc: np.ndarray  # document position of each such file
    texts: list[str]  # each passage's text, read back from its file
    first_lines: list[str]  # each passage's file's first line (the title)
    start_lines: np.ndarray
    path_doc: dict[str, int]  # absolute path -> document position
    build_seconds: float = 0.0
    query_vecs: np.ndarray | None = None
    dense: np.ndarray | None = None  # (queries x passages) cosines
    lexical: Any = None  # msearch.lexical.Bm25 over ``texts``
    vectors: np.ndarray | None = None  # each passage's vector, in the order of ``texts``
    lex_scores: np.ndarray | None = None  # (queries x passages)
    extra: dict[str, Any] = field(default_factory=dict)


def build_msearch(
    coll: Collection,
    emb: CachedEmbedder,
    max_tokens: int,
    overlap: int,
    work_dir: Path = WORK_DIR,
) -> MsearchRun:
    from msearch.chunking import ChunkSettings
    from msearch.indexer import build_index
    from msearch.models import query_encoder
    from msearch.query import Searcher
    from msearch.storage import reader
    from msearch.walk import decode

    base = work_dir / coll.name
    docs_dir = base / "docs"
    write_corpus(coll, docs_dir)
    idx_dir = base / f"index-{max_tokens}-{overlap}"
    t0 = time.perf_counter()
    stats = build_index(
        docs_dir,
        idx_dir,
        emb,
        chunking=ChunkSettings(max_tokens=max_tokens, overlap_tokens=overlap),
        full=True,
        notice=say,
    )
    build_seconds = time.perf_counter() - t0
    index = reader.load_index(idx_dir)
    searcher = Searcher(index, query_encoder(index, device="cpu", notice=say))
    # A full build is one segment, its rows in file order: table() is that order.
    assert len(index.segments) <= 1
    pas, vectors = index.table()
    passage_file = pas[:, 0].astype(np.int64)
    files = index.meta.files
    root = index.root
    path_doc = {str(root / f.path): int(Path(f.path).stem) for f in files}
    if len(pas):
        change = np.flatnonzero(np.diff(passage_file)) + 1
        starts = np.concatenate([[0], change]).astype(np.int64)
    else:
        starts = np.zeros(0, dtype=np.int64)
    group_doc = np.array(
        [int(Path(files[passage_file[s]].path).stem) for s in starts], dtype=np.int64
    )
    texts: list[str] = []
    first_lines: list[str] = []
    cache: dict[int, str] = {}
    for f, _a, _b, s, e in pas.tolist():
        if f not in cache:
            cache = {f: decode((root / files[f].path).read_bytes())}
        text = cache[f]
        texts.append(text[s:e])
        first_lines.append(text.split("\n", 1)[0])
    return MsearchRun(
        name=f"{max_tokens}/{overlap}",
        stats=stats,
        index=index,
        searcher=searcher,
        passage_file=passage_file,
        starts=starts,
        group_doc=group_doc,
        texts=texts,
        first_lines=first_lines,
        start_lines=pas[:, 1].astype(np.int64),
        path_doc=path_doc,
        build_seconds=build_seconds,
        vectors=vectors,
    )


def hybrid_searcher(mr: MsearchRun) -> Any:
    """msearch's own hybrid query path over the index's own lexical side."""
    from msearch.query import Searcher, open_lexical

    lexical = open_lexical(mr.index)
    mr.lexical = lexical
    return Searcher(mr.index, mr.searcher.encode, lexical, mode="hybrid")


def searcher_run(
    mr: MsearchRun, coll: Collection, k_passages: int = PASSAGE_K, searcher: Any = None
) -> tuple[dict[str, dict[str, float]], int]:
    """msearch's own query path: ``Searcher.query_many`` for the top passages,
    each document ranked by its best passage. Also returns how many queries
    had fewer than 100 distinct documents among those passages."""
    hits = (searcher or mr.searcher).query_many(coll.queries, k_passages, None)
    run: dict[str, dict[str, float]] = {}
    short = 0
    for qid, qhits in zip(coll.query_ids, hits, strict=True):
        docs: dict[str, float] = {}
        for h in qhits:
            d = coll.doc_ids[mr.path_doc[h.abs_path]]
            if d not in docs:
                docs[d] = h.score
                if len(docs) == DOC_K:
                    break
        short += len(docs) < min(DOC_K, len(mr.starts))
        run[qid] = docs
    return run, short


def dense_matrix(
    mr: MsearchRun, coll: Collection, embeddings: np.ndarray | None = None
) -> np.ndarray:
    """(queries x passages) cosines with msearch's query encoder, over every
    passage: what the Searcher computes before its top-k, kept whole here
    because fusion needs every passage's score."""
    if mr.query_vecs is None:
        mr.query_vecs = np.asarray(mr.searcher.encode(list(coll.queries)), dtype=np.float32)
    emb = np.asarray(mr.vectors if embeddings is None else embeddings, dtype=np.float32)
    return np.ascontiguousarray(mr.query_vecs @ emb.T)


def lexical_matrix(
    texts: Sequence[str], queries: Sequence[str], lex: Any = None
) -> tuple[Any, np.ndarray]:
    """(queries x passages) BM25 scores, over ``lex`` (e.g. the index's own
    lexical side) or over a lexical index built from ``texts``."""
    from msearch.lexical import bm25_of, build_lexical

    if lex is None:
        lex = bm25_of(build_lexical(list(texts)))
    mat = np.stack([lex.scores(q) for q in queries]) if queries else np.zeros((0, len(texts)))
    return lex, mat.astype(np.float32)


def doc_matrix(
    passage_scores: np.ndarray, mr: MsearchRun, n_docs: int, how: str = "max"
) -> np.ndarray:
    """(queries x documents) from (queries x passages): each document's best
    passage ("max"), or the mean or sum of its passages. Documents without
    passages get -inf (never retrieved)."""
    out = np.full((passage_scores.shape[0], n_docs), -np.inf, dtype=np.float32)
    if passage_scores.shape[1] == 0:
        return out
    if how == "max":
        agg = np.maximum.reduceat(passage_scores, mr.starts, axis=1)
    else:
        agg = np.add.reduceat(passage_scores, mr.starts, axis=1)
        if how == "mean":
            counts = np.diff(np.append(mr.starts, passage_scores.shape[1]))
            agg = agg / counts[None, :]
        elif how != "sum":
            raise ValueError(how)
    out[:, mr.group_doc] = agg
    return out


def passage_eval(
    passage_scores: np.ndarray, mr: MsearchRun, coll: Collection, how: str = "max"
) -> dict[str, float]:
    docs = doc_matrix(passage_scores, mr, len(coll.doc_ids), how)
    return evaluate(coll.qrels, run_from_matrix(docs, coll.query_ids, coll.doc_ids))


def context_texts(mr: MsearchRun) -> list[str]:
    """Each passage with its file's first line (the title) in front, unless
    the passage already starts at line 1 or the file has no title."""
    out = []
    for text, first, line in zip(mr.texts, mr.first_lines, mr.start_lines.tolist(), strict=True):
        out.append(f"{first}\n{text}" if line > 1 and first.strip() else text)
    return out


# ---------------------------------------------------------------- chunking what-ifs


def chunk_packed(
    text: str, counter: Any, max_tokens: int, overlap_tokens: int, title_context: bool = False
) -> list[str]:
    """``msearch.chunking.chunk_text`` with one change, for a what-if measurement:
    a line too long for one passage no longer strands the lines before it
    (typically a title) as a passage of their own; its first piece fills the
    rest of their passage, later pieces get the full budget.

    With ``title_context``, every passage that does not hold the file's first
    line gets that line (the title) in front, and its budget shrinks by the
    title's tokens so that nothing is truncated by the model.

    Returns passage texts only (the bench needs no line numbers for this).
    """
    from msearch.chunking import SPECIAL_TOKENS, carry_overlap, front_matter_lines, split_lines

    full = max_tokens - SPECIAL_TOKENS
    lines = split_lines(text)
    skip = front_matter_lines(lines)
    content = [i for i in range(skip, len(lines)) if lines[i].strip()]
    if not content:
        return []
    counts = dict(zip(content, counter.count([lines[i] for i in content]), strict=True))
    title = lines[0].rstrip("\r\n") if title_context and 0 in counts else ""
    tail_budget = full - counts[0] if title and full - counts[0] >= 16 else full
    if tail_budget == full:
        title = ""
    out: list[str] = []
    current: list[int] = []
    used = 0

    def emit(body: str) -> None:
        out.append(f"{title}\n{body}" if title and out else body)

    def budget() -> int:
        return full if not out else tail_budget

    def joined(idx: list[int]) -> str:
        return "".join(lines[j] for j in idx).rstrip("\r\n")

    for i in content:
        n = counts[i]
        line = lines[i].rstrip("\r\n")
        if n > budget():
            rest = line
            room = budget() - used
            if current and room >= 16:  # the change: fill the pending passage first
                _, b = counter.split(line, room)[0]
                emit(joined(current) + "\n" + line[:b])
                rest = line[b:].lstrip()
            elif current:
                emit(joined(current))
            if rest.strip():
                for a, b in counter.split(rest, budget()):
                    emit(rest[a:b])
            current, used = [], 0
            continue
        if current and used + n > budget():
            emit(joined(current))
            current, used = carry_overlap(current, counts, overlap_tokens, budget() - n)
        current.append(i)
        used += n
    if current:
        emit(joined(current))
    return out


def chunk_whatifs(
    mr: MsearchRun, coll: Collection, emb: CachedEmbedder, max_tokens: int, overlap: int
) -> dict[str, dict[str, float]]:
    """Dense nDCG@10 etc. with every document chunked in the bench (not through
    the walk): msearch's own chunker with no file skipped, and the packed
    variant above (a proposed fix to msearch/chunk.py)."""
    from msearch.chunking import ChunkSettings, chunk_text

    files = [doc_file_text(t, x) for t, x in zip(coll.titles, coll.texts, strict=True)]
    settings = ChunkSettings(max_tokens=max_tokens, overlap_tokens=overlap)
    variants = {
        "msearch chunker, no file skipped": [
            [p.text for p in chunk_text(f, emb.counter, settings)] for f in files
        ],
        "long line packed after the title, no file skipped": [
            chunk_packed(f, emb.counter, max_tokens, overlap) for f in files
        ],
        "packed + title in front of later passages, no file skipped": [
            chunk_packed(f, emb.counter, max_tokens, overlap, title_context=True) for f in files
        ],
    }
    assert mr.query_vecs is not None
    out = {}
    for name, per_doc in variants.items():
        texts = [t for ps in per_doc for t in ps]
        owner = np.array([d for d, ps in enumerate(per_doc) for _ in ps], dtype=np.int64)
        P = mr.query_vecs @ emb.encode(texts).T
        D = np.full((P.shape[0], len(per_doc)), -np.inf, dtype=np.float32)
        if len(texts):
            starts = np.flatnonzero(np.r_[True, np.diff(owner) != 0])
            D[:, owner[starts]] = np.maximum.reduceat(P, starts, axis=1)
        out[name] = evaluate(coll.qrels, run_from_matrix(D, coll.query_ids, coll.doc_ids))
        out[name]["passages"] = float(len(texts))
    return out


# ---------------------------------------------------------------- fusion variants


def _rowwise_minmax(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


def _rowwise_z(x: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    return np.where(sd > 0, (x - mu) / np.where(sd > 0, sd, 1), 0.0).astype(np.float32)


def _rowwise_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, best first; ties share the best rank of the tie."""
    from scipy.stats import rankdata

    return rankdata(-x, method="min", axis=1).astype(np.float32)


def fuse_minmax(d: np.ndarray, lex: np.ndarray, w: float) -> np.ndarray:
    return (1 - w) * _rowwise_minmax(d) + w * _rowwise_minmax(lex)


def fuse_zscore(d: np.ndarray, lex: np.ndarray, w: float) -> np.ndarray:
    return (1 - w) * _rowwise_z(d) + w * _rowwise_z(lex)


def fuse_cos_lexmax(d: np.ndarray, lex: np.ndarray, w: float) -> np.ndarray:
    """Raw cosine plus BM25 divided by the query's best BM25."""
    mx = lex.max(axis=1, keepdims=True)
    return (1 - w) * d + w * np.where(mx > 0, lex / np.where(mx > 0, mx, 1), 0.0)


def fuse_rrf(d: np.ndarray, lex: np.ndarray, k: float = 60.0) -> np.ndarray:
    return 1.0 / (k + _rowwise_ranks(d)) + 1.0 / (k + _rowwise_ranks(lex))


FusionFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def fusion_variants() -> dict[str, FusionFn]:
    variants: dict[str, FusionFn] = {"rrf k=60": lambda d, x: fuse_rrf(d, x, 60.0)}
    for w in (0.1, 0.2, 0.3, 0.4, 0.5):
        variants[f"minmax w={w}"] = lambda d, x, w=w: fuse_minmax(d, x, w)
    for w in (0.1, 0.2, 0.3, 0.4, 0.5):
        variants[f"zscore w={w}"] = lambda d, x, w=w: fuse_zscore(d, x, w)
    for w in (0.1, 0.2, 0.3, 0.4, 0.5):
        variants[f"cos+lex/max w={w}"] = lambda d, x, w=w: fuse_cos_lexmax(d, x, w)
    return variants


LATENCY_WINDOW = 40


def _cold_lexical(folder: Path, query: str, params: str) -> dict[str, float]:
    """What a fresh ``msearch query`` process pays once: importing
    msearch.lexical (numpy and msearch are loaded by then), opening the
    index, and the first query (which imports PyStemmer)."""
    import subprocess

    code = (
        "import json, sys, time; import numpy, msearch.storage.disk; from pathlib import Path; "
        "t0 = time.perf_counter(); import msearch.lexical as lx; t1 = time.perf_counter(); "
        "seg = lx.LexicalSegment.load(msearch.storage.disk.DataFolder(Path(sys.argv[1]))); "
        "ix = lx.Bm25(lx.LexicalParams.from_json(json.loads(sys.argv[3])), "
        "[lx.LexicalPart(seg, 0, None)], seg.num_rows, seg.num_rows, int(seg.lengths.sum())); "
        "t2 = time.perf_counter(); "
        "ix.scores(sys.argv[2]); t3 = time.perf_counter(); "
        "print(json.dumps({'import': t1 - t0, 'load': t2 - t1, 'first': t3 - t2}))"
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code, str(folder), query, params],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(5)
    ]
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def latency(
    n_passages: int = 100_000, window: int = LATENCY_WINDOW, seed: int = 0
) -> dict[str, Any]:
    """Extra cost per query of the lexical side on an ``n_passages`` index.

    Passages are real text: ``window``-word windows (stride window/2) over
    the documents of all seven collections, up to ``n_passages``. The index
    is built, saved and memory-mapped back as the query path would; every
    query of every collection is then timed through ``scores`` + ``fuse`` +
    msearch's ``top_k`` (the dense scores are random cosines: their cost is
    paid with or without the lexical side).
    """
    import tempfile

    from msearch.lexical import LexicalParams, LexicalSegment, bm25_of, build_lexical, fuse
    from msearch.search import top_k
    from msearch.storage.disk import DataFolder

    texts: list[str] = []
    queries: list[str] = []
    colls = [load_collection(n) for n in COLLECTIONS]
    for c in colls:
        queries += c.queries
    while len(texts) < n_passages:
        for c in colls:
            for t, x in zip(c.titles, c.texts, strict=True):
                words = (t + " " + x).split()
                for s in range(0, max(len(words) - window // 2, 1), window // 2):
                    texts.append(" ".join(words[s : s + window]))
        texts = texts[:n_passages] if len(texts) >= n_passages else texts + texts
    texts = texts[:n_passages]
    t0 = time.perf_counter()
    built = build_lexical(texts)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    dense = rng.uniform(-0.1, 0.7, n_passages).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        built.save(Path(tmp))
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        params = json.dumps(LexicalParams.default().to_json())
        cold = _cold_lexical(Path(tmp), queries[0], params)
        with DataFolder(Path(tmp)) as folder:
            lex = bm25_of(LexicalSegment.load(folder))
        for q in queries[:20]:  # warm the page cache and the stemmer
            fuse(dense, lex.scores(q))
        times, lex_times = [], []
        for q in queries:
            t0 = time.perf_counter()
            s = lex.scores(q)
            t1 = time.perf_counter()
            top_k(fuse(dense, s), 10)
            t2 = time.perf_counter()
            lex_times.append(t1 - t0)
            times.append(t2 - t0)
        t0 = time.perf_counter()
        for _ in range(50):
            top_k(dense, 10)
        dense_topk = (time.perf_counter() - t0) / 50
    ms = np.array(times) * 1000
    return {
        "passages": n_passages,
        "terms": built.num_terms,
        "queries": len(queries),
        "build_s": build_s,
        "index_mb": size / 1e6,
        "import_ms": cold["import"] * 1000,
        "load_ms": cold["load"] * 1000,
        "first_query_ms": cold["first"] * 1000,
        "lexical_median_ms": float(np.median(lex_times) * 1000),
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "max_ms": float(ms.max()),
        "dense_topk_ms": dense_topk * 1000,
    }


def library_fuse(d: np.ndarray, lex: np.ndarray) -> np.ndarray:
    """msearch.lexical.fuse (the fixed mix), one query at a time: what the query
    path ranked by before the ranking stage (msearch.ranking), kept as a
    variant beside the others."""
    from msearch.lexical import fuse

    return np.stack([fuse(d[i], lex[i]) for i in range(d.shape[0])]) if len(d) else d
