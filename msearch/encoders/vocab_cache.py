"""A model's vocabulary, ready for a cold query.

Why: loading ``tokenizer.json`` builds a table of every piece of the
vocabulary. For XLM-RoBERTa's SentencePiece Unigram of 250,002 pieces
(multilingual-e5, bge-m3, paraphrase-multilingual) that takes 0.6 s, three
times a whole cold query of a BERT model; for BERT's WordPiece of 30,522 it
is still 17 ms of a query's ~100 ms of work. A query needs only the pieces
that occur in it.

So at index time msearch writes the vocabulary into the index folder as
sorted, memory-mappable arrays (``pieces.npy``, ``offsets.npy``, ``ids.npy``,
``scores.npy``), the rest of ``tokenizer.json`` without it
(``skeleton.json``), and a CRC-32 of each (``checksums.json``, see
``msearch.storage.disk.seal``). A query finds every vocabulary entry that its
words can look up (a binary search each), and builds the model's own
tokenizer (``tokenizers``: same normalizer, pre-tokenizer, post-processor,
same model) over just those entries:

- Unigram: every piece that is a substring of a pre-tokenized word, plus one
  piece with the vocabulary's lowest score, on which the unknown-token
  penalty depends. Viterbi cannot use a piece that does not occur in the
  word, so the best segmentation is the same.
- WordPiece: greedy longest match looks up only ``word[0:b]`` and
  ``"##" + word[a:b]``; with every such entry present, each lookup answers
  as in the full vocabulary, so the tokens are the same.

Tokens are mapped back to the full vocabulary's ids, and tested equal to the
full tokenizer's on varied text. A text holding one of the tokenizer's added
tokens (``<mask>``, ``[SEP]``, ...), or a batch too long for the search to
pay, goes through the full tokenizer. BPE (GPT-2 / RoBERTa-English) is not
cached: its merges, not its vocabulary, decide the tokens.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msearch import npyfile

# Entries: from here the cache pays (from_file costs about 0.6 µs an entry).
CACHE_FROM = 10_000
FORMAT = 2
ARRAYS = ("pieces", "offsets", "ids", "scores")
CACHE_FILES = frozenset([*(f"{name}.npy" for name in ARRAYS), "skeleton.json"])
MODELS = ("Unigram", "WordPiece")
PROCESSORS = ("TemplateProcessing", "RobertaProcessing", "BertProcessing")
# Characters in a batch: above this, the full tokenizer without looking.
MAX_TEXT_CHARS = 4096
# Lookups a batch may make, per vocabulary entry: loading the full
# tokenizer costs about 0.6 µs an entry and a lookup about 30 µs, so past
# this share the search would cost more than the load it saves (BERT's
# 30,522 entries: 610 lookups, a query of about 50 words).
LOOKUPS_PER_ENTRY = 1 / 50
# A Unigram piece no text can hold (private-use characters), carrying the
# vocabulary's lowest score.
_MIN_PIECE = "\ue000\ue001msearch-min\ue002"


def cache_key(fingerprint: str) -> str:
    """What names a model's cache in an index: the folder is this, ``-`` and
    a unique suffix (a new cache never takes a damaged one's name)."""
    return f"vocab-{fingerprint[:16]}"


def _load_tokenizer_json(path: Path) -> Any:
    raw = path.read_bytes()
    try:
        import orjson

        return orjson.loads(raw)
    except ImportError:
        return json.loads(raw)


def _entries(model: dict[str, Any]) -> list[tuple[str, int, float]]:
    """(piece, id, score) of every vocabulary entry."""
    vocab = model.get("vocab")
    if model.get("type") == "Unigram" and isinstance(vocab, list):
        return [(str(p), i, float(s)) for i, (p, s) in enumerate(vocab)]
    if model.get("type") == "WordPiece" and isinstance(vocab, dict):
        return [(str(p), int(i), 0.0) for p, i in vocab.items()]
    raise ValueError("not a Unigram or WordPiece vocabulary")


def worth_caching(tokenizer_json: Path) -> bool:
    """Whether a tokenizer is a large Unigram or WordPiece that this cache
    reproduces."""
    try:
        data = _load_tokenizer_json(tokenizer_json)
    except (OSError, ValueError):
        return False
    model = data.get("model") or {}
    post = data.get("post_processor") or {}
    kind = model.get("type")
    return (
        kind in MODELS
        and len(model.get("vocab") or ()) >= CACHE_FROM
        and not model.get("byte_fallback")
        and (kind != "WordPiece" or model.get("unk_token") in (model.get("vocab") or {}))
        and (kind != "Unigram" or isinstance(model.get("unk_id"), int))
        and (not post or post.get("type") in PROCESSORS)
    )


def write_cache(tokenizer_json: Path, folder: Path) -> None:
    """The vocabulary of ``tokenizer_json``, sorted, into ``folder`` (new files;
    the caller seals the folder)."""
    data = _load_tokenizer_json(tokenizer_json)
    model = data["model"]
    entries = _entries(model)
    encoded = [p.encode("utf-8", "surrogatepass") for p, _, _ in entries]
    order = sorted(range(len(entries)), key=encoded.__getitem__)
    offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum([len(encoded[i]) for i in order], out=offsets[1:])
    arrays: dict[str, np.ndarray] = {
        "pieces": np.frombuffer(b"".join(encoded[i] for i in order), dtype=np.uint8),
        "offsets": offsets,
        "ids": np.asarray([entries[i][1] for i in order], dtype=np.int32),
        "scores": np.asarray([entries[i][2] for i in order], dtype=np.float64),
    }
    for name, arr in arrays.items():
        with open(folder / f"{name}.npy", "xb") as fh:
            npyfile.save(fh, arr)
    if model["type"] == "Unigram":
        unk = entries[int(model.get("unk_id") or 0)][0]
    else:
        unk = str(model["unk_token"])
    skeleton = dict(data)
    skeleton["model"] = dict(model, vocab=[] if model["type"] == "Unigram" else {})
    skeleton["msearch"] = {
        "format": FORMAT,
        "size": len(entries),
        "min_score": min(s for _, _, s in entries),
        "unk": unk,
        "max_piece_chars": max(len(p) for p, _, _ in entries),
    }
    with open(folder / "skeleton.json", "xb") as fh:
        fh.write(json.dumps(skeleton, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@dataclass
class _Encoding:
    ids: list[int]
    special_tokens_mask: list[int]


class CachedVocab:
    """The model's tokenizer, built per batch of texts over only the
    vocabulary entries they can use. Offers what msearch's encoders use of a
    ``tokenizers.Tokenizer``: ``encode``, ``encode_batch``,
    ``enable_truncation``, ``no_truncation``."""

    def __init__(self, folder: Any, full: Path, vocab_size: int) -> None:
        """``folder``: the cache (a ``msearch.storage.disk.DataFolder``, checked
        intact by the caller); ``full``: the model's own ``tokenizer.json``,
        for texts the cache cannot take; ``vocab_size``: the model's, which
        every id must fit (an index can come from anywhere)."""
        from tokenizers import Tokenizer

        self.skeleton = folder.read_json("skeleton.json")
        self.meta = self.skeleton["msearch"]
        self.model = self.skeleton["model"]
        self.kind = self.model.get("type")
        if self.meta.get("format") != FORMAT or self.kind not in MODELS:
            raise ValueError("unknown vocabulary cache format")
        arrays = {name: folder.npy(f"{name}.npy") for name in ARRAYS}
        if any(a.ndim != 1 for a in arrays.values()) or arrays["pieces"].dtype != np.uint8:
            raise ValueError("vocabulary cache arrays have the wrong shapes")
        if len(arrays["ids"]) > vocab_size:
            raise ValueError("vocabulary cache larger than the model's vocabulary")
        self.blob = np.ascontiguousarray(arrays["pieces"]).data.cast("B")
        self.offsets = np.asarray(arrays["offsets"])
        self.ids = np.asarray(arrays["ids"])
        self.scores = np.asarray(arrays["scores"])
        if not (len(self.offsets) == len(self.ids) + 1 == len(self.scores) + 1):
            raise ValueError("vocabulary cache arrays do not fit together")
        if (
            self.ids.dtype != np.int32
            or self.scores.dtype != np.float64
            or self.offsets.dtype != np.int64
        ):
            raise ValueError("vocabulary cache arrays have the wrong types")
        if len(self.ids) and (int(self.ids.min()) < 0 or int(self.ids.max()) >= vocab_size):
            raise ValueError("vocabulary cache ids outside the model's vocabulary")
        if (
            self.offsets[0] != 0
            or self.offsets[-1] != len(self.blob)
            or bool(np.any(np.diff(self.offsets) < 0))
        ):
            raise ValueError("vocabulary cache offsets do not fit its pieces")
        self.specials = {int(t["id"]): t for t in self.skeleton.get("added_tokens") or []}
        self.unk = str(self.meta["unk"])
        self.longest = int(self.meta["max_piece_chars"])
        self.min_score = float(self.meta["min_score"])
        self.prefix = str(self.model.get("continuing_subword_prefix") or "")
        self.max_word = int(self.model.get("max_input_chars_per_word") or 0)
        self.budget = max(100, int(len(self.ids) * LOOKUPS_PER_ENTRY))
        pos, _ = self._find(self.unk)
        if pos < 0:
            raise ValueError("vocabulary cache lacks the unknown token")
        self.unk_id = int(self.ids[pos])
        self.unk_score = float(self.scores[pos])
        if self.kind == "Unigram" and self.unk_id != self.model.get("unk_id"):
            raise ValueError("vocabulary cache disagrees on the unknown token")
        if any(not 0 <= i < vocab_size for i in [self.unk_id, *self.specials]):
            raise ValueError("vocabulary cache special ids outside the model's vocabulary")
        self.full_path = full
        self._full: Any = None
        self.truncate: int | None = None
        # The pipeline around the model, over a one-entry vocabulary: it
        # normalizes and pre-tokenizes exactly as the full tokenizer does.
        helper = self._tokenizer_json([self.unk], [0.0])
        helper["added_tokens"] = []
        helper["post_processor"] = None
        self.helper = Tokenizer.from_str(json.dumps(helper))
        # Added tokens are matched in the raw text, or (normalized ones) in
        # the normalized text with their own text normalized: a text that
        # may hold one, in any of these forms, goes to the full tokenizer.
        self.added: set[str] = set()
        for t in self.skeleton.get("added_tokens") or []:
            content = str(t["content"])
            self.added |= {content, content.lower()}
            if self.helper.normalizer is not None:
                normal = self.helper.normalizer.normalize_str(content)
                self.added |= {normal, normal.lower()}
        self.added.discard("")
        self._restricted({})  # the skeleton's post-processor and specials fit

    # ------------------------------------------------------------ tokenizers' API

    def enable_truncation(self, max_length: int) -> None:
        self.truncate = max_length

    def no_truncation(self) -> None:
        self.truncate = None

    def no_padding(self) -> None:
        pass

    def encode(self, text: str, add_special_tokens: bool = True) -> _Encoding:
        return self.encode_batch([text], add_special_tokens)[0]

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = True
    ) -> list[_Encoding]:
        texts = list(texts)
        try:
            words = self._words(texts) if sum(map(len, texts)) <= MAX_TEXT_CHARS else None
            found = self._lookups(words) if words is not None else None
            if found is None:
                return self._with_full(texts, add_special_tokens)
            tok, new2old = self._restricted(found)
            encs = tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException:
            # The cache comes with the index, from anywhere; tokenizers raises
            # its own kinds, and a Rust panic (a crafted pipeline) is a
            # BaseException. The full tokenizer is exact too.
            return self._with_full(texts, add_special_tokens)
        return [
            _Encoding([new2old[i] for i in enc.ids], list(enc.special_tokens_mask)) for enc in encs
        ]

    # ------------------------------------------------------------ internals

    def _words(self, texts: list[str]) -> list[str] | None:
        """The pre-tokenized words of ``texts``, or None where a text may hold
        an added token (matched before normalization, or after it)."""
        words: list[str] = []
        for text in texts:
            normal = self.helper.normalizer.normalize_str(text) if self.helper.normalizer else text
            if len(normal) > MAX_TEXT_CHARS:
                return None
            for seen in (text, text.lower(), normal, normal.lower()):
                if _MIN_PIECE[:2] in seen or any(a in seen for a in self.added):
                    return None
            if self.helper.pre_tokenizer:
                words += [w for w, _ in self.helper.pre_tokenizer.pre_tokenize_str(normal)]
            else:
                words.append(normal)
        return words

    def _with_full(self, texts: list[str], add_special_tokens: bool) -> list[_Encoding]:
        if self._full is None:
            from tokenizers import Tokenizer

            self._full = Tokenizer.from_file(str(self.full_path))
            self._full.no_padding()
        if self.truncate is None:
            self._full.no_truncation()
        else:
            self._full.enable_truncation(max_length=self.truncate)
        encs = self._full.encode_batch(texts, add_special_tokens=add_special_tokens)
        return [_Encoding(list(e.ids), list(e.special_tokens_mask)) for e in encs]

    def _piece(self, i: int) -> bytes:
        return self.blob[self.offsets.item(i) : self.offsets.item(i + 1)].tobytes()

    def _find(self, piece: str) -> tuple[int, bool]:
        """(position in the sorted vocabulary or -1, whether any entry starts
        with ``piece``): the second answer ends the search for longer ones."""
        key = piece.encode("utf-8", "surrogatepass")
        i = bisect.bisect_left(_Sorted(self), key)
        if i >= len(self.ids):
            return -1, False
        found = self._piece(i)
        return (i if found == key else -1), found.startswith(key)

    def _lookups(self, words: list[str]) -> dict[int, None] | None:
        """Positions of every entry the model may look up for ``words``, or
        None when that would take more lookups than the budget."""
        found: dict[int, None] = {}
        left = self.budget
        for word in words:
            if self.kind == "WordPiece" and len(word) > self.max_word:
                continue  # the unknown token, whatever the vocabulary
            for a in range(len(word)):
                lead = self.prefix if self.kind == "WordPiece" and a > 0 else ""
                for b in range(a + 1, min(len(word), a + self.longest) + 1):
                    left -= 1
                    if left < 0:
                        return None
                    pos, more = self._find(lead + word[a:b])
                    if pos >= 0:
                        found[pos] = None
                    if not more:
                        break
        return found

    def _restricted(self, found: dict[int, None]) -> tuple[Any, list[int]]:
        """The tokenizer over the unknown token, the added tokens and the
        entries at ``found``, and its ids' ids in the full vocabulary."""
        from tokenizers import Tokenizer

        pieces: list[str] = []
        scores: list[float] = []
        new2old: list[int] = []
        old2new: dict[int, int] = {}

        def add(piece: str, score: float, old: int) -> None:
            old2new[old] = len(pieces)
            pieces.append(piece)
            scores.append(score)
            new2old.append(old)

        add(self.unk, self.unk_score, self.unk_id)
        for old, t in self.specials.items():
            if old not in old2new:
                add(str(t["content"]), 0.0, old)
        for pos in found:
            old = int(self.ids[pos])
            if old not in old2new:
                add(self._piece(pos).decode("utf-8", "surrogatepass"), float(self.scores[pos]), old)
        if self.kind == "Unigram":
            # The unknown-token penalty is counted from the lowest score of
            # the whole vocabulary: a piece no text can contain carries it.
            add(_MIN_PIECE, self.min_score, -1)
        data = self._tokenizer_json(pieces, scores)
        data["added_tokens"] = [
            dict(t, id=old2new[int(t["id"])]) for t in self.skeleton.get("added_tokens") or []
        ]
        data["post_processor"] = _remap(self.skeleton.get("post_processor"), old2new)
        tok = Tokenizer.from_str(json.dumps(data))
        if self.truncate is not None:
            tok.enable_truncation(max_length=self.truncate)
        return tok, new2old

    def _tokenizer_json(self, pieces: list[str], scores: list[float]) -> dict[str, Any]:
        """The skeleton with a vocabulary of ``pieces`` (the first is the
        unknown token), numbered in order."""
        data = dict(self.skeleton)
        data.pop("msearch", None)
        if self.kind == "Unigram":
            vocab: Any = [[p, s] for p, s in zip(pieces, scores, strict=True)]
            data["model"] = dict(self.model, vocab=vocab, unk_id=0)
        else:
            data["model"] = dict(self.model, vocab={p: i for i, p in enumerate(pieces)})
        data["truncation"] = None
        data["padding"] = None
        return data


class _Sorted:
    """The sorted pieces as a sequence of bytes, for ``bisect``."""

    def __init__(self, cache: CachedVocab) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache.ids)

    def __getitem__(self, i: int) -> bytes:
        return self.cache._piece(i)


def _remap(post: Any, old2new: dict[int, int]) -> Any:
    """The post-processor with its special tokens' ids in the new vocabulary."""
    if not post:
        return post
    post = json.loads(json.dumps(post))
    kind = post.get("type")
    if kind == "TemplateProcessing":
        for special in post.get("special_tokens", {}).values():
            special["ids"] = [old2new[int(i)] for i in special["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            piece, old = post[key]
            post[key] = [piece, old2new[int(old)]]
    else:
        raise ValueError(f"post-processor {kind} not supported by the vocabulary cache")
    return post
