"""The lexical side of hybrid search: BM25 over the same passages as the vectors.

Why: a small sentence encoder misses what only exact words carry (names,
rare terms, codes, abbreviations), and BM25 is strong exactly there. Fused
with the dense scores it lifts mean nDCG@10 over seven public test
collections from 47.3 to 54.1 and loses nothing that matters on any of them
(bench/eval.py, bench/EVAL_RESULTS.md).

The index is bm25s's (its tokenization, English stopwords, the Snowball
stemmer from PyStemmer, Lucene's BM25 with k1=1.5, b=0.75), bit for bit
(tested), but built here a window of passages at a time
(:class:`LexicalBuilder`): bm25s wants every text at once. Querying does
*not* import bm25s: it pulls in scipy and tqdm, half a second that a cold
query cannot afford. The index is saved as plain arrays (a CSC matrix of
precomputed per-term passage scores plus a sorted term table) that are
memory-mapped and scored here with numpy; the query is tokenized exactly as
bm25s tokenizes, with PyStemmer alone (a 3 ms import).

Files written into the folder given to :meth:`LexicalIndex.save`:

    lexical.json            parameters, stopwords, counts, format version
    lexical_data.npy        float32: BM25 score of each (term, passage) pair
    lexical_indices.npy     int32: the passage of each pair, grouped by term
    lexical_indptr.npy      int64: where each term's pairs start (terms + 1)
    lexical_terms.npy       uint8: the terms, UTF-8, sorted bytewise, concatenated
    lexical_term_offsets.npy int64: where each term starts in lexical_terms.npy

Column ``t`` of the matrix is the ``t``-th term in sorted order, so looking
a query term up is a binary search over the memory-mapped term table: no
vocabulary dictionary is parsed at load time, whatever the index size.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from msearch.store import DataFolder

# BM25 as measured in bench/EVAL_RESULTS.md (bm25s defaults, Lucene variant).
K1 = 1.5
B = 0.75
METHOD = "lucene"
STEMMER_LANGUAGE = "english"
STOPWORDS = "en"  # bm25s's English list (NLTK's); stored in the index, see below
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # bm25s's (and scikit-learn's) default

# Fusion, chosen on seven test collections (bench/EVAL_RESULTS.md):
# (1 - LEXICAL_WEIGHT) * cosine + LEXICAL_WEIGHT * bm25 / (the query's best bm25).
LEXICAL_WEIGHT = 0.3

FORMAT_VERSION = 1
META_NAME = "lexical.json"
DATA_NAME = "lexical_data.npy"
INDICES_NAME = "lexical_indices.npy"
INDPTR_NAME = "lexical_indptr.npy"
TERMS_NAME = "lexical_terms.npy"
TERM_OFFSETS_NAME = "lexical_term_offsets.npy"


class LexicalFormatError(ValueError):
    """The folder does not hold a lexical index this version can read."""


class _Stemmer:
    """PyStemmer's Snowball stemmer, imported on first use (not at module import)."""

    def __init__(self, language: str) -> None:
        import Stemmer

        self._stemmer = Stemmer.Stemmer(language)

    def stem_words(self, words: list[str]) -> list[str]:
        return list(self._stemmer.stemWords(words))


class _SortedTerms:
    """A read-only sequence of terms (bytes) over the memory-mapped term table,
    so that :func:`bisect.bisect_left` can search it without building a dict."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob = blob
        self.offsets = offsets

    def __len__(self) -> int:
        return max(len(self.offsets) - 1, 0)

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])])

    def find(self, term: str) -> int:
        """Column of ``term``, or -1 when no passage contains it."""
        key = term.encode("utf-8")
        i = bisect.bisect_left(self, key)  # type: ignore[call-overload]
        return i if i < len(self) and self[i] == key else -1


def _stopword_list(stopwords: str | Sequence[str]) -> list[str]:
    """The stopword list itself: it is stored in the index, so that queries
    are tokenized without importing bm25s."""
    if isinstance(stopwords, str):
        if stopwords.lower() not in ("en", "english"):
            raise ValueError(f"unknown stopword list {stopwords!r} (use 'en' or a list)")
        from bm25s.stopwords import STOPWORDS_EN

        return list(STOPWORDS_EN)
    return list(stopwords)


@dataclass
class LexicalIndex:
    """BM25 scores of every (term, passage) pair, ready for one query at a time.

    Scores are precomputed at build time (bm25s's "eager" BM25), so a query
    costs one slice-and-add per query term over the passages that contain it.
    """

    num_passages: int
    params: dict[str, Any]
    data: np.ndarray  # float32, pairs grouped by term
    indices: np.ndarray  # int32 passage of each pair
    indptr: np.ndarray  # int64, terms + 1
    terms: np.ndarray  # uint8 UTF-8 blob of sorted terms
    term_offsets: np.ndarray  # int64, terms + 1

    def __post_init__(self) -> None:
        self._table = _SortedTerms(self.terms, self.term_offsets)
        self._stopwords = frozenset(self.params.get("stopwords", []))
        self._split = re.compile(self.params.get("token_pattern", TOKEN_PATTERN)).findall
        self._stemmer: _Stemmer | None = None

    @property
    def num_terms(self) -> int:
        return len(self._table)

    def query_terms(self, query: str) -> list[str]:
        """The query's stemmed terms, as bm25s would tokenize it (duplicates kept:
        bm25s counts a repeated query word twice, and so do we)."""
        words = [w for w in self._split(query.lower()) if w not in self._stopwords]
        if not words:
            return []
        language = self.params.get("stemmer")
        if not language:
            return words
        if self._stemmer is None:
            self._stemmer = _Stemmer(language)
        return self._stemmer.stem_words(words)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for ``query`` (float32, one per passage;
        0 where no query term occurs)."""
        out = np.zeros(self.num_passages, dtype=np.float32)
        for term in self.query_terms(query):
            col = self._table.find(term)
            if col < 0:
                continue
            start, end = int(self.indptr[col]), int(self.indptr[col + 1])
            rows = self.indices[start:end]
            # Checked per query term, which costs as much as the add: a
            # damaged index must not index outside the score array.
            if not 0 <= start <= end <= len(self.data) or (
                len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= self.num_passages)
            ):
                from msearch.errors import IndexCorrupt

                raise IndexCorrupt(
                    "the index's lexical side is damaged; rebuild it with `msearch index --full DIR`"
                )
            # Within one term's column every passage appears once, so a
            # fancy-indexed add is exact (no np.add.at needed).
            out[rows] += self.data[start:end]
        return out

    def save(self, folder: Path) -> None:
        """Write the index into ``folder`` (created if missing) with plain writes;
        atomicity is the caller's (write into a fresh folder, then commit)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr, dtype in (
            (DATA_NAME, self.data, np.float32),
            (INDICES_NAME, self.indices, np.int32),
            (INDPTR_NAME, self.indptr, np.int64),
            (TERMS_NAME, self.terms, np.uint8),
            (TERM_OFFSETS_NAME, self.term_offsets, np.int64),
        ):
            # "x": a new file, never one that is there already (nor a link).
            with open(folder / name, "xb") as fh:
                np.save(fh, np.ascontiguousarray(arr, dtype=dtype))
        meta = dict(self.params)
        meta["format_version"] = FORMAT_VERSION
        meta["num_passages"] = self.num_passages
        meta["num_terms"] = self.num_terms
        with open(folder / META_NAME, "xb") as fh:
            fh.write(json.dumps(meta, ensure_ascii=False).encode("utf-8"))


def build_lexical(
    texts: Sequence[str],
    k1: float = K1,
    b: float = B,
    stopwords: str | Sequence[str] = STOPWORDS,
    stemmer: str | None = STEMMER_LANGUAGE,
) -> LexicalIndex:
    """BM25 index of ``texts`` (one per passage, in row order)."""
    builder = LexicalBuilder(k1, b, stopwords, stemmer)
    builder.add(texts)
    return builder.finish()


class LexicalBuilder:
    """BM25 built a window of passages at a time, with bm25s's scores.

    Why not bm25s itself: it wants every text at once and holds every
    token of them as Python lists; on 1,000,000 short passages that was
    ~770 MB and 17 s (bench/memory.py). Here each window is tokenized
    exactly as bm25s tokenizes (lowercase, its token pattern, stopwords,
    then the Snowball stemmer) and only each passage's distinct terms and
    their counts are kept, as int32 arrays; ``finish`` scores them with
    bm25s's Lucene formula in the same float64-then-float32 arithmetic
    (tests compare the scores with bm25s's).
    """

    SCORE_SLICE = 1 << 20  # pairs scored at a time, bounding float64 temporaries

    def __init__(
        self,
        k1: float = K1,
        b: float = B,
        stopwords: str | Sequence[str] = STOPWORDS,
        stemmer: str | None = STEMMER_LANGUAGE,
    ) -> None:
        self.k1, self.b = float(k1), float(b)
        self.stop_list = _stopword_list(stopwords)
        self.stop = frozenset(self.stop_list)
        self.stemmer_name = stemmer or ""
        self.stemmer = _Stemmer(stemmer) if stemmer else None
        self.split = re.compile(TOKEN_PATTERN).findall
        self.word_term: dict[str, int] = {}  # word as written (lowercased) -> term id
        self.term_id: dict[str, int] = {}  # term (stemmed) -> id, in order of first sight
        self.terms: list[np.ndarray] = []  # per window: term of each (passage, term) pair
        self.counts: list[np.ndarray] = []  # per window: occurrences of each pair
        self.pairs: list[np.ndarray] = []  # per window: pairs of each passage
        self.lengths: list[np.ndarray] = []  # per window: tokens of each passage
        self.num_passages = 0

    def add(self, texts: Sequence[str]) -> None:
        """Passages, in row order after those already added."""
        if not texts:
            return
        docs = [[w for w in self.split(t.lower()) if w not in self.stop] for t in texts]
        new = list({w: None for d in docs for w in d if w not in self.word_term})
        if new:
            stems = self.stemmer.stem_words(new) if self.stemmer else new
            for word, term in zip(new, stems, strict=True):
                self.word_term[word] = self.term_id.setdefault(term, len(self.term_id))
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        ids = np.fromiter(
            (self.word_term[w] for d in docs for w in d), dtype=np.int64, count=int(lengths.sum())
        )
        passage = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        # Sorted by passage, then term: each passage's distinct terms and counts.
        keys, counts = np.unique((passage << 32) | ids, return_counts=True)
        self.terms.append((keys & 0xFFFFFFFF).astype(np.int32))
        self.counts.append(counts.astype(np.int32))
        self.pairs.append(np.bincount(keys >> 32, minlength=len(docs)).astype(np.int32))
        self.lengths.append(lengths.astype(np.int32))
        self.num_passages += len(docs)

    def finish(self) -> LexicalIndex:
        """The index of every passage added, columns in bytewise term order."""
        n = self.num_passages
        params: dict[str, Any] = {
            "k1": self.k1,
            "b": self.b,
            "method": METHOD,
            "stemmer": self.stemmer_name,
            "stopwords": self.stop_list,
            "token_pattern": TOKEN_PATTERN,
        }
        words = [t.encode("utf-8") for t in self.term_id]
        terms = np.concatenate(self.terms) if self.terms else np.zeros(0, np.int32)
        if not len(terms):  # nothing but stopwords and one-letter words
            return LexicalIndex(
                num_passages=n,
                params=params,
                data=np.zeros(0, dtype=np.float32),
                indices=np.zeros(0, dtype=np.int32),
                indptr=np.zeros(1, dtype=np.int64),
                terms=np.zeros(0, dtype=np.uint8),
                term_offsets=np.zeros(1, dtype=np.int64),
            )
        self.terms = []
        counts = np.concatenate(self.counts)
        self.counts = []
        passage = np.repeat(np.arange(n, dtype=np.int32), np.concatenate(self.pairs))
        lengths = np.concatenate(self.lengths)
        # bm25s: idf as float32, the rest in float64, the score stored as float32.
        df = np.bincount(terms, minlength=len(words))
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avg = lengths.astype(np.float64).mean()
        k1, b = self.k1, self.b
        data = np.empty(len(terms), dtype=np.float32)
        for s in range(0, len(terms), self.SCORE_SLICE):
            sl = slice(s, s + self.SCORE_SLICE)
            tf = counts[sl].astype(np.float64)
            tfc = tf / (k1 * ((1 - b) + b * lengths[passage[sl]] / avg) + tf)
            data[sl] = idf[terms[sl]] * tfc
        del counts

        # Column t is the t-th term in bytewise order (no empty term: the
        # token pattern needs two characters; a stemmer's empty result is dropped).
        order = sorted((w, i) for i, w in enumerate(words) if w)
        rank = np.full(len(words), -1, dtype=np.int32)
        rank[[i for _, i in order]] = np.arange(len(order), dtype=np.int32)
        col = rank[terms]
        del terms
        keep = col >= 0
        if not keep.all():
            col, data, passage = col[keep], data[keep], passage[keep]
        del keep
        indptr = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(np.bincount(col, minlength=len(order)), out=indptr[1:])
        by_term = np.argsort(col, kind="stable")  # passages stay ascending in a column
        del col
        data = data[by_term]
        passage = passage[by_term]
        del by_term
        blob = b"".join(w for w, _ in order)
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum([len(w) for w, _ in order], out=offsets[1:])
        return LexicalIndex(
            num_passages=n,
            params=params,
            data=data,
            indices=passage,
            indptr=indptr,
            terms=np.frombuffer(blob, dtype=np.uint8).copy(),
            term_offsets=offsets,
        )


def load_lexical(folder: Path | DataFolder, mmap: bool = True) -> LexicalIndex:
    """Open an index written by :meth:`LexicalIndex.save`; arrays are memory-mapped
    by default, so opening costs the same at any size.

    Everything read is checked: a damaged or hostile index is a
    ``LexicalFormatError``, never an index that could make a query read
    outside its arrays.
    """
    from msearch.errors import IndexCorrupt
    from msearch.store import DataFolder

    if not isinstance(folder, DataFolder):
        with DataFolder(Path(folder)) as opened:
            return load_lexical(opened, mmap)
    where = folder.path
    try:
        meta = folder.read_json(META_NAME)
    except FileNotFoundError:
        raise
    except IndexCorrupt as exc:
        raise LexicalFormatError(str(exc).split("; ")[0]) from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise LexicalFormatError(f"{where / META_NAME}: not lexical format {FORMAT_VERSION}")

    def arr(name: str, dtype: type) -> np.ndarray:
        try:
            a = folder.npy(name, mmap)
        except FileNotFoundError:
            raise LexicalFormatError(f"{where / name}: missing") from None
        except IndexCorrupt as exc:
            raise LexicalFormatError(str(exc).split("; ")[0]) from None
        if a.dtype != dtype or a.ndim != 1:
            raise LexicalFormatError(f"{where / name}: {a.dtype} {a.shape}, expected {dtype}")
        return a

    params = {k: v for k, v in meta.items() if k not in ("format_version", "num_terms")}
    num_passages = params.pop("num_passages", None)
    stopwords = params.get("stopwords", [])
    if (
        type(num_passages) is not int
        or num_passages < 0
        or not isinstance(params.get("stemmer", ""), str)
        or not isinstance(params.get("token_pattern", TOKEN_PATTERN), str)
        or not isinstance(stopwords, list)
        or not all(isinstance(w, str) for w in stopwords)
    ):
        raise LexicalFormatError(f"{where / META_NAME}: malformed parameters")
    try:
        re.compile(params.get("token_pattern", TOKEN_PATTERN))
        if params.get("stemmer"):
            _Stemmer(params["stemmer"])
    except (re.error, KeyError, ValueError) as exc:
        raise LexicalFormatError(f"{where / META_NAME}: unusable parameters ({exc})") from None
    index = LexicalIndex(
        num_passages=num_passages,
        params=params,
        data=arr(DATA_NAME, np.float32),
        indices=arr(INDICES_NAME, np.int32),
        indptr=arr(INDPTR_NAME, np.int64),
        terms=arr(TERMS_NAME, np.uint8),
        term_offsets=arr(TERM_OFFSETS_NAME, np.int64),
    )
    if (
        len(index.indptr) != len(index.term_offsets)
        or len(index.indptr) < 1
        or len(index.data) != len(index.indices)
        or int(index.indptr[-1]) != len(index.data)
        or int(index.term_offsets[-1]) != len(index.terms)
    ):
        raise LexicalFormatError(f"{where}: lexical arrays do not fit together")
    return index


def fuse(
    dense: np.ndarray,
    lexical: np.ndarray,
    weight: float = LEXICAL_WEIGHT,
) -> np.ndarray:
    """One hybrid score per passage from its dense (cosine) and BM25 scores:
    ``(1 - weight) * cosine + weight * bm25 / max(bm25)``.

    Why this form: on seven test collections it ranked as well as or better
    than reciprocal rank fusion, min-max and z-score fusion at their best
    weights (bench/EVAL_RESULTS.md), and it keeps the score meaningful
    across queries: the cosine is not rescaled per query, so a query that
    matches nothing well still gets low scores (``--min-score`` keeps its
    sense), while BM25, whose scale depends on the query's words and the
    collection, is made relative to the best lexical match. When no passage
    contains a query word the lexical side is zero and the ranking is exactly
    the dense one. It costs two passes over the arrays (no sort).

    Monotone in each input: raising one passage's dense or lexical score
    never moves it below a passage it was level with or above.
    """
    dense = np.asarray(dense, dtype=np.float32)
    lexical = np.asarray(lexical, dtype=np.float32)
    if dense.shape != lexical.shape:
        raise ValueError(f"score arrays differ in shape: {dense.shape} vs {lexical.shape}")
    out = dense * np.float32(1.0 - weight)
    if lexical.size:
        top = float(lexical.max())
        if top > 0:  # BM25 is never negative; 0 means no query word anywhere
            # Divide first: weight / top can overflow float32 for a tiny top.
            rel = lexical / np.float32(top)
            rel *= np.float32(weight)
            out += rel
    return out
