"""Token counts from the model's own tokenizer, for chunking.

Why a module of its own: chunking counts the tokens of every line of every
file it cuts, and through the tokenizer that was more than half of
chunking's time (a ``tokenizers`` Encoding, with its offsets and masks,
for each line, when only its length is wanted). A BERT-style tokenizer
(WordPiece after BertPreTokenizer) tokenizes each word on its own, so a
line's count is the sum of its words' counts. In printable ASCII the
words are known without the tokenizer: runs of letters and digits, and
each punctuation character alone. Code repeats its words far more than its
lines (12 repositories: 396,319 content lines, 184,676 distinct, 37,928
distinct words), so each distinct word goes through the tokenizer once a
process, and a line costs a regular expression and a sum. Anything else
goes through the tokenizer whole, as before: another kind of tokenizer
(BPE, Unigram: their pieces cross spaces), text outside printable ASCII
(accents, CJK, control characters), and text that may hold one of the
tokenizer's added tokens (``[SEP]`` is one token, not three words).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import numpy as np

# A text the word rule applies to: printable ASCII, tabs and line breaks.
_PLAIN = re.compile(r"[\t\n\r -~]*")
# BertPreTokenizer's words in such a text (whitespace separates, and every
# ASCII punctuation character, Rust's is_ascii_punctuation, is a word), and
# NUL: the joint between texts counted together.
_WORDS_OR_SEP = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]|\x00")
_SEP = "\x00"
# In ASCII text: what the word rule leaves to the tokenizer (control characters).
_CONTROL = re.compile(r"[^\t\n\r\x00 -~]")
# An added token the word rule can look for in raw text: printable ASCII, no space.
_ADDED_PLAIN = re.compile(r"[!-~]*")
# Distinct words remembered; past this the memory starts over. Only words
# of at most MAX_WORD_CHARS are kept (a long one is counted each time it
# comes), so the memory stays under ~100 MB whatever the text.
MAX_WORDS = 1 << 19
MAX_WORD_CHARS = 100


def words_add_up(tokenizer: Any) -> bool:
    """Whether a line's token count is the sum of its words' counts for
    printable ASCII: WordPiece after BertPreTokenizer, normalized only by
    BertNormalizer or Lowercase (each acts on one character at a time
    there)."""
    from tokenizers import models, normalizers, pre_tokenizers

    if not isinstance(tokenizer.model, models.WordPiece) or not isinstance(
        tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer
    ):
        return False
    norm = tokenizer.normalizer
    try:
        is_sequence = isinstance(norm, normalizers.Sequence)
        steps = list(norm) if is_sequence else [norm]  # type: ignore[call-overload]
    except TypeError:  # a tokenizers release whose Sequence cannot be looked into
        return False
    if not all(
        s is None or isinstance(s, (normalizers.BertNormalizer, normalizers.Lowercase))
        for s in steps
    ):
        return False
    # An added token with a space, a control character (NUL: the joint of
    # _by_words) or a letter outside ASCII could match across words, or after
    # normalization only: such a tokenizer counts every text whole.
    contents = (str(t.content) for t in tokenizer.get_added_tokens_decoder().values())
    return all(_ADDED_PLAIN.fullmatch(c) for c in contents)


def added_tokens(tokenizer: Any) -> re.Pattern[str] | None:
    """A pattern found in any text that may hold one of the tokenizer's added
    tokens (matched before normalization, or after it), in any case."""
    contents = {str(t.content) for t in tokenizer.get_added_tokens_decoder().values()}
    contents.discard("")
    if not contents:
        return None
    alternatives = sorted((re.escape(c) for c in contents), key=len, reverse=True)
    return re.compile("|".join(alternatives), re.IGNORECASE)


class _WordMemory(dict[str, int]):
    """Word -> its tokens, and NUL (the joint between texts, see
    HFTokenCounter._by_words) -> -1. A miss (a word the memory forgot,
    another thread's full memory, a long word it never keeps) is counted by
    the tokenizer there and then (``__missing__``), so a lookup never
    fails; a hit stays a C lookup."""

    def __init__(self, count: Callable[[str], int]) -> None:
        super().__init__({_SEP: -1})
        self.count = count

    def __missing__(self, word: str) -> int:
        if word == _SEP:
            return -1
        n = self.count(word)
        if len(word) <= MAX_WORD_CHARS:
            if len(self) >= MAX_WORDS:
                self.forget()
            self[word] = n
        return n

    def forget(self) -> None:
        self.clear()
        self[_SEP] = -1


class HFTokenCounter:
    """A ``TokenCounter`` over the model's own tokenizer (a ``tokenizers.Tokenizer``,
    set up by ``msearch.encoders.tokenizer.load_tokenizer``)."""

    # Lines at least this long keep their tokens from ``count`` until the
    # next call, for ``split``: at the default passage size only such lines
    # are split, and tokenizing them twice was a third of chunking's time.
    KEEP_TOKENS = 128

    def __init__(self, tokenizer: Any) -> None:
        tok = tokenizer
        tok.no_truncation()
        tok.no_padding()
        self.tok = tok
        self._kept: dict[str, Any] = {}
        self._additive = words_add_up(tok)
        self._added = added_tokens(tok) if self._additive else None
        self._word_tokens = _WordMemory(self._count_word)

    def count(self, texts: Sequence[str]) -> list[int]:
        # Each distinct text once: code repeats its lines (blank lines,
        # braces, ``end``, imports): 40,007 lines of a Scala repository
        # hold 16,848 distinct ones.
        if len(texts) == 1 and self._additive:
            n = self._one(texts[0])
            if n is not None:
                self._kept = {}
                return [n]
        distinct = list(dict.fromkeys(texts))
        counts: dict[str, int] = {}
        whole = self._by_words(distinct, counts) if self._additive else distinct
        encs = self._encode(whole, fast=False)
        self._kept = {
            t: e for t, e in zip(whole, encs, strict=True) if len(e.ids) >= self.KEEP_TOKENS
        }
        counts.update((t, len(e.ids)) for t, e in zip(whole, encs, strict=True))
        return [counts[t] for t in texts]

    def _one(self, text: str) -> int | None:
        """One short text of known words (a passage's header: the chunker
        asks for thousands), without the batch's machinery; None otherwise."""
        if not text.isascii() or not self._plain(text):
            return None
        n = sum(map(self._word_tokens.__getitem__, _WORDS_OR_SEP.findall(text)))
        return n if n < self.KEEP_TOKENS else None

    def _plain(self, text: str) -> bool:
        """Whether the word rule may count an ASCII text: no control
        character or NUL, nothing an added token could match."""
        return bool(_PLAIN.fullmatch(text)) and not (self._added and self._added.search(text))

    def _count_word(self, word: str) -> int:
        return len(self._encode([word], fast=True)[0].ids)

    def _by_words(self, texts: list[str], counts: dict[str, int]) -> list[str]:
        """Count into ``counts`` the texts the word rule applies to; the rest,
        and lines long enough to be split (``split`` wants their tokens), to
        be tokenized whole.

        All of them at once: joined by NUL (which no text the rule takes
        holds), the words of all are found by one regular expression and
        summed between the NULs by numpy, with no step in Python a line."""
        plain = [t for t in texts if t.isascii()]
        whole = [t for t in texts if not t.isascii()]
        joined = _SEP.join(plain)
        odd = self._odd(plain, joined)
        if odd:
            whole += [plain[i] for i in sorted(odd)]
            plain = [t for i, t in enumerate(plain) if i not in odd]
            joined = _SEP.join(plain)
        if not plain:
            return whole
        flat = _WORDS_OR_SEP.findall(joined + _SEP)
        known = self._word_tokens
        new = set(flat).difference(known)
        if new:  # tokenized together (a miss alone would be too, but slower)
            if len(known) + len(new) > MAX_WORDS:
                known.forget()
                new = set(flat).difference(known)
            words = [w for w in new if len(w) <= MAX_WORD_CHARS]
            known.update(
                (w, len(e.ids)) for w, e in zip(words, self._encode(words, fast=True), strict=True)
            )
        tokens = np.fromiter(map(known.__getitem__, flat), dtype=np.int64, count=len(flat))
        ends = np.flatnonzero(tokens < 0)  # each text's NUL, in order
        tokens[ends] = 0
        sums = np.diff(np.cumsum(tokens)[ends], prepend=0).tolist()
        for t, n in zip(plain, sums, strict=True):
            if n >= self.KEEP_TOKENS:
                whole.append(t)
            else:
                counts[t] = n
        return whole

    def _odd(self, plain: list[str], joined: str) -> set[int]:
        """Which of the ASCII ``plain`` texts the word rule must not take: a
        control character (or NUL), or something an added token could match.
        Found in ``joined`` at once, then traced to their texts."""
        added = self._added
        if joined.count(_SEP) != len(plain) - 1 and plain:  # a text holds a NUL
            return {i for i, t in enumerate(plain) if not self._plain(t)}
        found = [m.start() for m in _CONTROL.finditer(joined)]
        if added is not None:
            # No added token holds a NUL (see words_add_up): a match lies in one text.
            found += [m.start() for m in added.finditer(joined)]
        if not found:
            return set()
        starts = list(accumulate((len(t) + 1 for t in plain), initial=0))
        return {bisect_right(starts, pos) - 1 for pos in found}

    def _encode(self, texts: list[str], fast: bool) -> list[Any]:
        """Encodings without special tokens; ``fast``: without offsets (only
        their lengths are wanted)."""
        if not texts:
            return []
        encode = getattr(self.tok, "encode_batch_fast", None) if fast else None
        encode = encode or self.tok.encode_batch
        return encode(texts, add_special_tokens=False)  # type: ignore[no-any-return]

    def split(self, text: str, max_tokens: int, first: int | None = None) -> list[tuple[int, int]]:
        enc = self._kept.get(text)
        if enc is None:
            enc = self.tok.encode(text, add_special_tokens=False)
        offsets = enc.offsets
        words = enc.word_ids
        spans: list[tuple[int, int]] = []
        i = 0
        n = len(offsets)
        while i < n:
            is_first = first is not None and not spans
            j = min(i + (first if first is not None and is_first else max_tokens), n)
            if i < j < n and words[j] is not None and words[j] == words[j - 1]:
                # Back off to a word boundary so no word is cut in two.
                k = j
                while k > i + 1 and words[k] is not None and words[k] == words[k - 1]:
                    k -= 1
                if k > i + 1:
                    j = k
                elif is_first:
                    j = i  # not even the first word fits in ``first``
            if j <= i:  # an empty first span rather than half a word
                spans.append((offsets[0][0], offsets[0][0]))
                continue
            spans.append((offsets[i][0], offsets[j - 1][1]))
            i = j
        return spans
