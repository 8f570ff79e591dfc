"""The lexical side of hybrid search: BM25 over the same passages as the vectors.

Why: a small sentence encoder misses what only exact words carry (names,
rare terms, codes, abbreviations), and BM25 is strong exactly there. Fused
with the dense scores it lifts mean nDCG@10 over seven public test
collections from 47.3 to 54.1 and loses nothing that matters on any of them
(bench/eval.py, bench/EVAL_RESULTS.md).

The scoring is bm25s's (its tokenization, English stopwords, the Snowball
stemmer from PyStemmer, Lucene's BM25 with k1=1.5, b=0.75), to the bit
(tested against bm25s itself), but the index is stored as statistics, as
Lucene stores it: each segment of the index holds, for every term, the
passages that contain it and how often (postings), and every passage's
length. BM25 weights are computed at query time for the query's terms
only, from the live passages' counts: the number of passages, their total
length, and each query term's document frequency (counted over its live
postings, which scoring reads anyway). So an update that adds a segment
or deletes rows never touches an unchanged passage's lexical data, and
scores equal those of a fresh build of the same passages.

Querying does *not* import bm25s (scipy and tqdm: half a second that a
cold query cannot afford); the query is tokenized exactly as bm25s
tokenizes, with PyStemmer alone (a 3 ms import).

Files of a segment (see :meth:`LexicalSegment.save`)::

    lex_terms.npy           uint8: the segment's terms, UTF-8, sorted bytewise, concatenated
    lex_term_offsets.npy    int64: where each term starts in lex_terms.npy (terms + 1)
    lex_indptr.npy          int64: where each term's postings start (terms + 1)
    lex_rows.npy            int32: the passage (row) of each posting, ascending per term
    lex_tfs.npy             int32: how often the term occurs in that passage
    lex_lengths.npy         int32: every passage's length in terms (after stopwords)

Looking a query term up is a binary search over the memory-mapped term
table: no vocabulary is parsed at load time, whatever the index size.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from msearch import npyfile

# BM25 as measured in bench/EVAL_RESULTS.md (bm25s defaults, Lucene variant).
K1 = 1.5
B = 0.75
METHOD = "lucene"
STEMMER_LANGUAGE = "english"
STOPWORDS = "en"  # bm25s's English list (NLTK's); stored in the index, see below
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # bm25s's (and scikit-learn's) default
# Identifiers (format 3): a run of word characters, or several joined by
# ".", "::", "->" or "-" (``os.path``, ``Sinatra::Base``, ``max-age``).
# Possessive (``++``, ``*+``): what ``\w+(?:(?:\.|::|->|-)\w+)*`` matches
# (giving back a word character never lets a separator match, nor does
# giving back a part, with nothing after it), without the backtracking
# bookkeeping: a third less time, and tokenizing was most of committing the
# words of a large change.
COMPOUND_PATTERN = r"(?u)\w++(?:(?:\.|::|->|-)\w++)*+"
# Tokens whose words and terms a process remembers (see Tokenizer.term_ids),
# each of at most MAX_TOKEN_CHARS; the table of terms is started afresh past
# MAX_TERMS when no build holds ids from it (see Tokenizer.release).
MAX_TOKENS = 1 << 20
MAX_TOKEN_CHARS = 100
MAX_TERMS = 1 << 20
_JOINERS = re.compile(r"\.|::|->|-|_+")
# camelCase and PascalCase boundaries: lower or digit then upper ("getUser"),
# and an acronym before a word ("XMLParser" -> "XML", "Parser").
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

# Fusion, chosen on seven test collections (bench/EVAL_RESULTS.md):
# (1 - LEXICAL_WEIGHT) * cosine + LEXICAL_WEIGHT * bm25 / (the query's best bm25).
LEXICAL_WEIGHT = 0.3

FORMAT_VERSION = 3  # 2: bm25s's words only; 3: also identifiers, and symbols
SYMBOL_PREFIX = "\x01"  # symbol terms (see LexicalBuilder.add): no word starts so
FILES = {
    "terms": ("lex_terms.npy", np.uint8),
    "term_offsets": ("lex_term_offsets.npy", np.int64),
    "indptr": ("lex_indptr.npy", np.int64),
    "rows": ("lex_rows.npy", np.int32),
    "tfs": ("lex_tfs.npy", np.int32),
    "lengths": ("lex_lengths.npy", np.int32),
}


# Terms that start with this byte (symbol names) are not counted in any
# passage's length: a posting check "tf <= the row's length" skips them.
UNCOUNTED_PREFIX = b"\x01"


class LexicalFormatError(ValueError):
    """The lexical data is not something this version can read, or is
    damaged (the storage turns it into ``IndexCorrupt`` with its fix)."""


class Folder(Protocol):
    """An open segment folder, as :meth:`LexicalSegment.load` reads it
    (msearch.storage.disk.DataFolder)."""

    path: Path

    def npy(self, name: str, mmap: bool = True) -> np.ndarray: ...


def _stopword_list(stopwords: str | Sequence[str]) -> list[str]:
    """The stopword list itself: it is stored in the index, so that queries
    are tokenized without importing bm25s."""
    if isinstance(stopwords, str):
        if stopwords.lower() not in ("en", "english"):
            raise ValueError(f"unknown stopword list {stopwords!r} (use 'en' or a list)")
        return list(_bm25s_stopwords())
    return list(stopwords)


@functools.cache
def _bm25s_stopwords() -> tuple[str, ...]:
    """bm25s's English stopword list, read from its module file alone:
    importing the package imports scipy (0.3 s, a tenth of the time to
    a first answer on a fresh repository: see msearch.vectors)."""
    import importlib.util

    found = importlib.util.find_spec("bm25s")
    where = found.submodule_search_locations if found is not None else None
    if where:
        path = Path(list(where)[0]) / "stopwords.py"
        spec = importlib.util.spec_from_file_location("_msearch_bm25s_stopwords", path)
        if spec is not None and spec.loader is not None and path.is_file():
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return tuple(module.STOPWORDS_EN)
    from bm25s.stopwords import STOPWORDS_EN

    return tuple(STOPWORDS_EN)


@dataclass(frozen=True)
class LexicalParams:
    """How text becomes terms and terms become scores: one set per index,
    recorded in ``meta.json``."""

    k1: float = K1
    b: float = B
    stopwords: tuple[str, ...] = ()
    stemmer: str = STEMMER_LANGUAGE
    token_pattern: str = TOKEN_PATTERN
    method: str = METHOD
    # Identifiers split into their parts, the whole kept too (format 3).
    identifiers: bool = False

    @classmethod
    def default(cls) -> LexicalParams:
        return cls(stopwords=tuple(_stopword_list(STOPWORDS)), identifiers=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION if self.identifiers else 2,
            "identifiers": self.identifiers,
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stemmer": self.stemmer,
            "stopwords": list(self.stopwords),
            "token_pattern": self.token_pattern,
        }

    @classmethod
    def from_json(cls, data: Any) -> LexicalParams:
        """Type-checked (an index may come from anywhere): anything odd is a
        ``LexicalFormatError``."""
        try:
            if not isinstance(data, dict) or data.get("format_version") not in (2, FORMAT_VERSION):
                raise ValueError(f"not lexical format 2 or {FORMAT_VERSION}")
            identifiers = data.get("identifiers", False)
            if type(identifiers) is not bool or identifiers != (data["format_version"] == 3):
                raise ValueError("identifiers does not match the format")
            k1, b = data["k1"], data["b"]
            stop, stem, pattern = data["stopwords"], data["stemmer"], data["token_pattern"]
            if not all(type(v) in (int, float) and math.isfinite(v) for v in (k1, b)):
                raise ValueError("k1 and b are not numbers")
            if not isinstance(stop, list) or not all(isinstance(w, str) for w in stop):
                raise ValueError("stopwords are not a list of words")
            if not isinstance(stem, str) or not isinstance(pattern, str):
                raise ValueError("stemmer or token pattern is not a string")
            if data.get("method", METHOD) != METHOD:
                raise ValueError(f"unknown method {data.get('method')!r}")
            re.compile(pattern)
            params = cls(float(k1), float(b), tuple(stop), stem, pattern, METHOD, identifiers)
            params.tokenizer()  # an unknown stemmer fails here, not at the first query
            return params
        except (KeyError, ValueError, TypeError, re.error) as exc:
            raise LexicalFormatError(f"malformed lexical parameters ({exc})") from None

    def tokenizer(self) -> Tokenizer:
        """The tokenizer of these parameters, one per process: its memory of
        identifiers and stems serves every segment an update writes."""
        found = _TOKENIZERS.get(self)
        if found is None:
            if len(_TOKENIZERS) >= 8:
                _TOKENIZERS.clear()
            found = _TOKENIZERS[self] = Tokenizer(self)
        return found


_TOKENIZERS: dict[LexicalParams, Tokenizer] = {}


def identifier_parts(token: str) -> list[str]:
    """The parts of an identifier, as written: ``getHTTPResponse`` -> get,
    HTTP, Response; ``max_retries`` -> max, retries; ``Rack::Builder`` ->
    Rack, Builder. A plain word is its own single part."""
    if token.isalnum() and (token.islower() or token.isdigit()):
        return [token]  # no joiner, no capital: most tokens, without a regex
    out: list[str] = []
    for piece in _JOINERS.split(token):
        if piece:
            out.extend(p for p in _CAMEL.split(piece) if p)
    return out


class _TokenMemory(dict[str, tuple[int, ...]]):
    """Token -> the ids of its terms, learned at the first lookup that misses
    (``__missing__``: a hit stays a C lookup, so ``map`` over a text's
    tokens runs without Python), at most MAX_TOKENS of them."""

    def __init__(self, learn: Callable[[str], tuple[int, ...]]) -> None:
        super().__init__()
        self.learn = learn

    def __missing__(self, token: str) -> tuple[int, ...]:
        got = self.learn(token)
        if len(token) <= MAX_TOKEN_CHARS:  # a long one is learned each time it comes
            if len(self) >= MAX_TOKENS:
                self.clear()
            self[token] = got
        return got


class Tokenizer:
    """bm25s's tokenization: lowercase, the token pattern, stopwords, then the
    Snowball stemmer (PyStemmer, imported on first use). Words are stemmed
    once each: a dictionary remembers them.

    With ``identifiers`` (format 3), a compound token (``getUser``,
    ``max_retries``, ``os.path``, ``max-age``) gives the whole token and
    each of its parts, so that ``getUser`` is found by ``getUser`` exactly
    and by "get the user" too. Prose words are what bm25s makes of them."""

    def __init__(self, params: LexicalParams) -> None:
        self.identifiers = params.identifiers
        self.pattern = re.compile(COMPOUND_PATTERN if params.identifiers else params.token_pattern)
        self.split = self.pattern.findall
        self.stop = frozenset(params.stopwords)
        self._expanded: dict[str, list[str]] = {}
        self._stemmer: Any = None
        if params.stemmer:
            try:
                import Stemmer

                self._stemmer = Stemmer.Stemmer(params.stemmer)
            except KeyError:
                raise ValueError(f"unknown stemmer {params.stemmer!r}") from None
        self.stems: dict[str, str] = {}
        self._token_ids = _TokenMemory(self._token_terms)  # token as matched -> its terms' ids
        self.term_names: list[str] = []  # id -> term (stemmed), in order of first sight
        self._term_index: dict[str, int] = {}
        self._lock = threading.Lock()
        self._holders = 0  # builds holding ids of the table (see hold)

    def words(self, text: str) -> list[str]:
        if not self.identifiers:
            return [w for w in self.split(text.lower()) if w not in self.stop]
        return list(chain.from_iterable(map(self.expand, self.split(text))))

    def term_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``terms`` of all ``texts`` as ids in this tokenizer's table of terms
        (``term_names``), one text after the other, and how many each text
        has: what an index build wants. Each token is looked at once a
        process (code repeats its identifiers, prose its words); after that
        a text costs its regular expression and a lookup a token, with no
        step in Python for each, nor for each text."""
        lower = not self.identifiers
        tokens = [self.split(t.lower() if lower else t) for t in texts]
        per_token = list(map(self._token_ids.__getitem__, chain.from_iterable(tokens)))
        ids = np.fromiter(chain.from_iterable(per_token), dtype=np.int64)
        counts = np.zeros(len(per_token) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, per_token), np.int64, len(per_token)), out=counts[1:])
        ends = np.cumsum(np.fromiter(map(len, tokens), np.int64, len(tokens)))
        starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
        return ids, counts[ends] - counts[starts]

    def term_id(self, term: str) -> int:
        """A term's id in ``term_names`` (a new one for a term not seen yet)."""
        found = self._term_index.get(term)
        if found is None:
            with self._lock:  # two threads must not give one id to two terms
                found = self._term_index.get(term)
                if found is None:
                    found = len(self.term_names)
                    self.term_names.append(term)  # the name first: a reader finds both
                    self._term_index[term] = found
        return found

    def hold(self) -> Callable[[], None]:
        """Keep the table of terms while a build uses ids from it; the call
        it returns lets go. When no build holds it any more and it has grown
        past MAX_TERMS (a watcher or a server sees ever new terms), the table
        and the tokens' memory start afresh."""
        with self._lock:
            self._holders += 1
        done = False

        def release() -> None:
            nonlocal done
            with self._lock:
                if done:
                    return
                done = True
                self._holders -= 1
                if not self._holders and len(self.term_names) > MAX_TERMS:
                    self.term_names = []
                    self._term_index = {}
                    self._token_ids = _TokenMemory(self._token_terms)

        return release

    def _token_terms(self, token: str) -> tuple[int, ...]:
        """The ids of one token's terms (see _TokenMemory)."""
        if not self.identifiers:  # bm25s's words: the token, unless a stopword
            words = [] if token in self.stop else [token]
        else:
            words = self._words_of(token)
        stems = self.stems
        return tuple(self.term_id(stems.get(w) or self.stem([w])[0]) for w in words)

    def expand(self, token: str) -> list[str]:
        """The words of one compound token (remembered: code repeats its
        identifiers), lower case, without stopwords and one-letter parts."""
        got = self._expanded.get(token)
        if got is None:
            got = self._words_of(token)
            if len(self._expanded) < MAX_TOKENS:
                self._expanded[token] = got
        return got

    def _words_of(self, token: str) -> list[str]:
        parts = [p.lower() for p in identifier_parts(token)]
        got = [p for p in parts if len(p) > 1 and p not in self.stop]
        if len(parts) > 1:
            got.insert(0, token.lower())
        return got

    def stem(self, words: Sequence[str]) -> list[str]:
        new = [w for w in dict.fromkeys(words) if w not in self.stems]
        if new:
            stems = self._stemmer.stemWords(new) if self._stemmer is not None else new
            self.stems.update(zip(new, stems, strict=True))
        return [self.stems[w] for w in words]

    def terms(self, text: str) -> list[str]:
        """A text's terms, duplicates kept (bm25s counts a repeated query word
        twice, and so do we)."""
        return self.stem(self.words(text))


class _SortedTerms:
    """A read-only sequence of terms (bytes) over the memory-mapped term table,
    so that :func:`bisect.bisect_left` can search it without building a dict."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        # A memoryview of the blob and a plain view of the offsets: slicing a
        # numpy.memmap makes a new memmap object each time, several times
        # slower in a binary search (a query looks up each term in each segment).
        self.blob = np.ascontiguousarray(blob).data.cast("B")
        self.offsets = np.asarray(offsets)

    def __len__(self) -> int:
        return max(len(self.offsets) - 1, 0)

    def __getitem__(self, i: int) -> bytes:
        return self.blob[self.offsets.item(i) : self.offsets.item(i + 1)].tobytes()

    def find(self, term: str) -> int:
        """Index of ``term``, or -1 when no passage of the segment contains it."""
        key = term.encode("utf-8", "surrogatepass")
        i = bisect.bisect_left(self, key)  # type: ignore[call-overload]
        return i if i < len(self) and self[i] == key else -1


@dataclass
class LexicalSegment:
    """One segment's BM25 statistics: postings (row, term frequency) per term,
    terms in bytewise order, and every row's length."""

    terms: np.ndarray  # uint8 blob
    term_offsets: np.ndarray  # int64, terms + 1
    indptr: np.ndarray  # int64, terms + 1
    rows: np.ndarray  # int32
    tfs: np.ndarray  # int32
    lengths: np.ndarray  # int32, one per row
    _table: _SortedTerms = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._table = _SortedTerms(self.terms, self.term_offsets)

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    @property
    def num_terms(self) -> int:
        return len(self._table)

    def term_list(self) -> list[bytes]:
        return [self._table[i] for i in range(self.num_terms)]

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, term frequencies) of the passages that contain ``term``.

        Checked before use, because the arrays may be damaged or crafted
        (:meth:`check_postings` on this term's slice): a posting outside the
        segment, or one the row's length cannot hold, is
        ``LexicalFormatError``, never an index error or a wrong score.
        """
        t = self._table.find(term)
        if t < 0:
            return _EMPTY_ROWS, _EMPTY_ROWS
        start, end = int(self.indptr[t]), int(self.indptr[t + 1])
        if not 0 <= start <= end <= len(self.rows):
            raise LexicalFormatError("the index's lexical side is damaged (postings)")
        rows, tfs = np.asarray(self.rows[start:end]), np.asarray(self.tfs[start:end])
        counted = np.full(
            len(rows), not term.encode("utf-8", "surrogatepass").startswith(UNCOUNTED_PREFIX)
        )
        self._check_postings(rows, tfs, counted, np.array([0, len(rows)]))
        return rows, tfs

    def _check_postings(
        self,
        rows: np.ndarray,
        tfs: np.ndarray,
        counted: np.ndarray,
        starts: np.ndarray | None = None,
    ) -> None:
        """Postings ``(rows, tfs)`` fit the segment: rows in range and rising
        within a term (``starts``: where each term's postings begin, the
        last entry their end; None: one term's), each term at least once,
        and no more often than its row is long where the term counts toward
        the length (``counted``)."""
        if not len(rows):
            return
        if int(rows.min()) < 0 or int(rows.max()) >= self.num_rows or int(tfs.min()) < 1:
            raise LexicalFormatError("the index's lexical side is damaged (postings)")
        if starts is not None:  # rows rise within each term's postings
            rising = np.diff(rows.astype(np.int64)) > 0
            rising[starts[1:-1] - 1] = True  # where the next term begins
            if not rising.all():
                raise LexicalFormatError("the index's lexical side is damaged (posting order)")
        lengths = np.asarray(self.lengths)
        if (tfs[counted] > lengths[rows[counted]]).any():
            raise LexicalFormatError("the index's lexical side is damaged (term counts)")

    def check_structure(self) -> None:
        """The arrays' structure, checked at every load (it costs a pass over
        the terms and the rows, not the postings): term offsets and posting
        pointers start at 0 and rise (no term is empty, every term occurs
        somewhere), passage lengths are never negative.
        ``LexicalFormatError`` otherwise."""
        offsets, indptr = np.asarray(self.term_offsets), np.asarray(self.indptr)
        lengths = np.asarray(self.lengths)
        if (
            len(offsets) < 1
            or int(offsets[0]) != 0
            or (np.diff(offsets) < 1).any()
            or int(indptr[0]) != 0
            or (np.diff(indptr) < 1).any()
        ):
            raise LexicalFormatError("the index's lexical side is damaged (offsets)")
        if len(lengths) and int(lengths.min()) < 0:
            raise LexicalFormatError("the index's lexical side is damaged (passage lengths)")

    def check_postings(self, term_order: bool = False) -> None:
        """Every posting of every term (see :meth:`postings`), vectorized: a
        pass over the whole segment, for ``status`` and for an update
        reusing it. ``term_order``: also that terms rise strictly, which a
        binary search needs (a pass in Python over every term: ``status``)."""
        self.check_structure()
        if term_order:
            words = self.term_list()
            if any(a >= b for a, b in zip(words, words[1:], strict=False)):
                raise LexicalFormatError("the index's lexical side is damaged (term order)")
        indptr = np.asarray(self.indptr)
        first_bytes = np.asarray(self.terms)[np.asarray(self.term_offsets)[:-1]]
        counted_term = first_bytes != UNCOUNTED_PREFIX[0]  # symbol names count toward no length
        counted = np.repeat(counted_term, np.diff(indptr))
        self._check_postings(np.asarray(self.rows), np.asarray(self.tfs), counted, indptr)

    def save(self, folder: Path) -> None:
        """Write the arrays into ``folder`` as new files (``x``: never one that
        is there already, nor a link); atomicity is the caller's."""
        for attr, (name, dtype) in FILES.items():
            with open(Path(folder) / name, "xb") as fh:
                npyfile.save(fh, np.ascontiguousarray(getattr(self, attr), dtype=dtype))

    @classmethod
    def load(cls, folder: Folder, mmap: bool = True) -> LexicalSegment:
        """Open the arrays of a segment folder (memory-mapped by default, so
        opening costs the same at any size) and check that they fit together.
        A missing file is a ``FileNotFoundError`` (a writer may have just
        removed the segment: the caller may look again)."""
        from msearch.errors import IndexCorrupt

        arrays: dict[str, np.ndarray] = {}
        for attr, (name, dtype) in FILES.items():
            try:
                a = folder.npy(name, mmap)
            except IndexCorrupt as exc:
                raise LexicalFormatError(str(exc).split("; ")[0]) from None
            if a.dtype != dtype or a.ndim != 1:
                raise LexicalFormatError(f"{folder.path / name}: {a.dtype} {a.shape}, not {dtype}")
            arrays[attr] = a
        seg = cls(**arrays)
        if (
            len(seg.indptr) != len(seg.term_offsets)
            or len(seg.indptr) < 1
            or len(seg.rows) != len(seg.tfs)
            or int(seg.indptr[0]) != 0
            or int(seg.indptr[-1]) != len(seg.rows)
            or int(seg.term_offsets[-1]) != len(seg.terms)
        ):
            raise LexicalFormatError(f"{folder.path}: lexical arrays do not fit together")
        try:
            seg.check_structure()
        except LexicalFormatError as exc:
            raise LexicalFormatError(f"{folder.path}: {exc}") from None
        return seg


_EMPTY_ROWS = np.zeros(0, dtype=np.int32)


def _empty_segment(lengths: np.ndarray) -> LexicalSegment:
    return LexicalSegment(
        terms=np.zeros(0, dtype=np.uint8),
        term_offsets=np.zeros(1, dtype=np.int64),
        indptr=np.zeros(1, dtype=np.int64),
        rows=np.zeros(0, dtype=np.int32),
        tfs=np.zeros(0, dtype=np.int32),
        lengths=lengths.astype(np.int32),
    )


def _inverted(
    words: list[bytes],
    term: np.ndarray,
    row: np.ndarray,
    tf: np.ndarray,
    lengths: np.ndarray,
    rows_ascending: bool = False,
) -> LexicalSegment:
    """Postings grouped by term in bytewise order, rows ascending within a
    term, from (term id, row, tf) triples; ``words[id]`` is the term.
    ``rows_ascending``: the triples come in row order already (a build), so
    a stable sort by term alone keeps the rows in order (and costs less
    memory than sorting by both)."""
    order = sorted((w, i) for i, w in enumerate(words) if w)  # an empty stem is dropped
    if not order or not len(term):
        return _empty_segment(lengths)
    rank = np.full(len(words), -1, dtype=np.int32)
    rank[[i for _, i in order]] = np.arange(len(order), dtype=np.int32)
    col = rank[term]
    del term
    keep = col >= 0
    if not keep.all():
        col, row, tf = col[keep], row[keep], tf[keep]
    del keep
    counts = np.bincount(col, minlength=len(order))
    present = counts > 0
    if not present.all():  # a term all of whose passages were dropped (a merge)
        order = [o for o, p in zip(order, present.tolist(), strict=True) if p]
        col = (np.cumsum(present, dtype=np.int32) - 1)[col]
        counts = counts[present]
        if not order:
            return _empty_segment(lengths)
    if rows_ascending:
        by = np.argsort(col, kind="stable")
    else:
        by = np.argsort(col.astype(np.int64) * (int(row.max()) + 1) + row, kind="stable")
    del col
    indptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    rows = row[by].astype(np.int32, copy=False)
    del row
    tfs = tf[by].astype(np.int32, copy=False)
    del tf, by
    blob = b"".join(w for w, _ in order)
    offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum([len(w) for w, _ in order], out=offsets[1:])
    return LexicalSegment(
        terms=np.frombuffer(blob, dtype=np.uint8).copy(),
        term_offsets=offsets,
        indptr=indptr,
        rows=rows,
        tfs=tfs,
        lengths=lengths.astype(np.int32),
    )


class LexicalBuilder:
    """A segment's statistics, built a window of passages at a time.

    Why not bm25s itself: it wants every text at once and holds every
    token of them as Python lists; on 1,000,000 short passages that was
    ~770 MB and 17 s (bench/memory.py). Here each window is tokenized
    exactly as bm25s tokenizes and only each passage's distinct terms and
    their counts are kept, as int32 arrays.
    """

    def __init__(self, params: LexicalParams | None = None) -> None:
        self.params = params or LexicalParams.default()
        self.tok = self.params.tokenizer()
        # Ids of the tokenizer's table of terms live in the windows until
        # finish(); a builder dropped unfinished lets go when collected.
        self._release = weakref.finalize(self, self.tok.hold())
        self.terms: list[np.ndarray] = []  # per window: term of each (passage, term) pair
        # (the tokenizer's term ids, one table a process: see Tokenizer.term_ids)
        self.counts: list[np.ndarray] = []  # per window: occurrences of each pair
        self.pairs: list[np.ndarray] = []  # per window: pairs of each passage
        self.lengths: list[np.ndarray] = []  # per window: terms of each passage
        self.num_passages = 0

    def add(self, texts: Sequence[str], symbols: Sequence[Sequence[str]] | None = None) -> None:
        """Passages, in row order after those already added; ``symbols``: the
        symbols each defines (msearch.syntax), stored as terms of their own
        (``SYMBOL_PREFIX`` + the name as written, and in lower case; not
        stemmed) that count toward no passage's length: a query naming a
        symbol finds its definitions by them (``Bm25.symbol_rows``)."""
        if not texts:
            return
        tok = self.tok
        ids, lengths = tok.term_ids(texts)
        passage = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        if symbols is not None:
            rows: list[int] = []
            keys_: list[int] = []
            for row, names in zip(range(len(texts)), symbols, strict=True):
                for name in names:
                    # As written and in lower case: a query's exact spelling
                    # finds the first, any other spelling the second.
                    for key in dict.fromkeys((SYMBOL_PREFIX + name, SYMBOL_PREFIX + name.lower())):
                        rows.append(row)
                        keys_.append(tok.term_id(key))
            passage = np.concatenate((passage, np.array(rows, dtype=np.int64)))
            ids = np.concatenate((ids, np.array(keys_, dtype=np.int64)))
        # Sorted by passage, then term: each passage's distinct terms and counts.
        keys, counts = np.unique((passage << 32) | ids, return_counts=True)
        self.terms.append((keys & 0xFFFFFFFF).astype(np.int32))
        self.counts.append(counts.astype(np.int32))
        self.pairs.append(np.bincount(keys >> 32, minlength=len(texts)).astype(np.int32))
        self.lengths.append(lengths.astype(np.int32))
        self.num_passages += len(texts)

    def finish(self) -> LexicalSegment:
        n = self.num_passages
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        terms = np.concatenate(self.terms) if self.terms else np.zeros(0, np.int32)
        self.terms = []
        counts = np.concatenate(self.counts) if self.counts else np.zeros(0, np.int32)
        self.counts = []
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros(0, np.int32)
        row = np.repeat(np.arange(n, dtype=np.int32), pairs)
        del pairs
        # The process's table of terms holds every segment's: this one's alone.
        present, local = np.unique(terms, return_inverse=True)
        del terms
        names = self.tok.term_names
        words = [names[i].encode("utf-8", "surrogatepass") for i in present.tolist()]
        self._release()
        return _inverted(words, local.astype(np.int32), row, counts, lengths, rows_ascending=True)


def build_lexical(
    texts: Sequence[str],
    params: LexicalParams | None = None,
    symbols: Sequence[Sequence[str]] | None = None,
) -> LexicalSegment:
    """The statistics of ``texts`` (one per passage, in row order)."""
    builder = LexicalBuilder(params)
    builder.add(texts, symbols)
    return builder.finish()


def merge_lexical(parts: Sequence[tuple[LexicalSegment, np.ndarray]]) -> LexicalSegment:
    """One segment from several, as Lucene merges postings: ``row_map[r]`` is
    the new row of row ``r`` of a part, or -1 for a row that is dropped
    (deleted). Nothing is tokenized again."""
    vocab: dict[bytes, int] = {}
    term_parts, row_parts, tf_parts = [], [], []
    total = 0
    for _seg, row_map in parts:
        total = max(total, int(row_map.max()) + 1 if len(row_map) else 0)
    lengths = np.zeros(total, dtype=np.int32)
    for seg, row_map in parts:
        row_map = np.asarray(row_map, dtype=np.int64)
        rows, counts = np.asarray(seg.rows), np.diff(np.asarray(seg.indptr))
        if (
            len(row_map) != seg.num_rows
            or (counts < 0).any()
            or (len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= seg.num_rows))
        ):
            raise LexicalFormatError("the index's lexical side is damaged")
        kept = row_map >= 0
        lengths[row_map[kept]] = np.asarray(seg.lengths)[kept]
        ids = np.array([vocab.setdefault(w, len(vocab)) for w in seg.term_list()], dtype=np.int64)
        counts = np.diff(np.asarray(seg.indptr))
        term = np.repeat(ids, counts)
        new_row = row_map[np.asarray(seg.rows)]
        live = new_row >= 0
        term_parts.append(term[live])
        row_parts.append(new_row[live])
        tf_parts.append(np.asarray(seg.tfs)[live])
    words = list(vocab)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return _inverted(words, cat(term_parts), cat(row_parts), cat(tf_parts), lengths)


@dataclass
class LexicalPart:
    """A segment as the scorer sees it: where its rows start among all rows
    of the index, and which of them are live (None: all)."""

    segment: LexicalSegment
    offset: int
    live: np.ndarray | None


class Bm25:
    """BM25 over the live rows of every segment, weights computed per query.

    ``live_rows`` and ``live_tokens`` are the index's counts (kept in
    ``meta.json``, updated as rows are added and deleted); a term's
    document frequency is its number of live postings.
    """

    def __init__(
        self,
        params: LexicalParams,
        parts: Sequence[LexicalPart],
        total_rows: int,
        live_rows: int,
        live_tokens: int,
    ) -> None:
        self.params = params
        self.parts = list(parts)
        self.total_rows = total_rows
        self.live_rows = live_rows
        self.avg = live_tokens / live_rows if live_rows else 0.0
        self.tok = params.tokenizer()

    def query_terms(self, query: str) -> list[str]:
        return self.tok.terms(query)

    def term_scores(self, term: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per segment: (offset, live rows containing ``term``, their scores),
        each score bm25s's float32(idf32 * tf-part64)."""
        return self._term(term)[1]

    def _term(self, term: str) -> tuple[float, list[tuple[int, np.ndarray, np.ndarray]]]:
        """The term's idf (0 where no live row holds it) and its scores."""
        found = []
        df = 0
        for part in self.parts:
            rows, tfs = part.segment.postings(term)
            if len(rows) and part.live is not None:
                keep = part.live[rows]
                rows, tfs = rows[keep], tfs[keep]
            if len(rows):
                found.append((part, rows, tfs))
                df += len(rows)
        if not found:
            return 0.0, []
        n = self.live_rows
        idf = np.float32(math.log(1 + (n - df + 0.5) / (df + 0.5)))
        k1, b, avg = self.params.k1, self.params.b, self.avg
        out = []
        for part, rows, tfs in found:
            tf = tfs.astype(np.float64)
            dl = np.asarray(part.segment.lengths)[rows]
            tfc = tf / (k1 * ((1 - b) + b * dl / avg) + tf)
            out.append((part.offset, rows, (idf * tfc).astype(np.float32)))
        return float(idf), out

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every row of the index for ``query`` (float32; 0 where
        no query term occurs, and for deleted rows)."""
        return self.scores_and_unit(query)[0]

    def scores_and_unit(self, query: str) -> tuple[np.ndarray, float]:
        """``scores``, and the score of a passage of average length that holds
        each query word (found in the index) once: a scale that depends on
        the query's words alone, so that a score divided by it means the
        same for every query (msearch.rank calibrates with it)."""
        out = np.zeros(self.total_rows, dtype=np.float32)
        cache: dict[str, tuple[float, list[tuple[int, np.ndarray, np.ndarray]]]] = {}
        unit = 0.0
        for term in self.query_terms(query):
            if term not in cache:
                cache[term] = self._term(term)
            idf, found = cache[term]
            unit += idf / (1 + self.params.k1)
            for offset, rows, values in found:
                # Within one term every row appears once: a fancy-indexed add
                # is exact (no np.add.at needed).
                out[offset + rows] += values
        return out, unit

    def symbol_rows(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Live rows that define one of ``names`` (as written, or in lower
        case; qualifiers as "."; see ``LexicalBuilder.add``), ascending, and
        for each the position in ``names`` of the first name it defines
        (earlier names are the query's own spelling, later ones looser)."""
        found: dict[int, int] = {}
        for i, name in enumerate(names):
            for part in self.parts:
                rows, _ = part.segment.postings(SYMBOL_PREFIX + name)
                if len(rows) and part.live is not None:
                    rows = rows[part.live[rows]]
                for r in (rows + part.offset).tolist():
                    found.setdefault(r, i)
        out = np.array(sorted(found), dtype=np.int64)
        return out, np.array([found[r] for r in out.tolist()], dtype=np.int64)


def bm25_of(segment: LexicalSegment, params: LexicalParams | None = None) -> Bm25:
    """BM25 over one segment whose rows are all live (a fresh build's)."""
    n = segment.num_rows
    tokens = int(np.asarray(segment.lengths, dtype=np.int64).sum())
    return Bm25(params or LexicalParams.default(), [LexicalPart(segment, 0, None)], n, n, tokens)


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
