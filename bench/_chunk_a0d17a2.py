"""The chunker of msearch at commit a0d17a2 (before content-defined boundaries),
kept verbatim below this paragraph for bench/longdoc_eval.py, which compares
long-document retrieval with it. Not used by msearch.

File text to passages: line ranges sized by the model's own tokenizer.

Passages are built from whole lines so that every hit maps back to
``path:start-end``. Sizes are counted in the model's tokens because a model
silently truncates what goes past its maximum sequence length: a passage
sized in characters or words either wastes capacity or loses its tail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# Room for the [CLS] and [SEP] tokens that every BERT-style encoder adds.
SPECIAL_TOKENS = 2


class TokenCounter(Protocol):
    """The two things chunking needs from a tokenizer."""

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each text, without special tokens."""
        ...

    def split(self, text: str, max_tokens: int, first: int | None = None) -> list[tuple[int, int]]:
        """Character spans of ``text``, in order, each at most ``max_tokens``
        tokens; the first at most ``first`` if given, and empty where a
        word would have to be cut to fit."""
        ...


@dataclass(frozen=True)
class ChunkSettings:
    """Stored in the index: changing any of these means a full rebuild."""

    max_tokens: int = 256  # including special tokens; capped at the model's limit
    overlap_tokens: int = 32


@dataclass(frozen=True)
class Passage:
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    start: int  # character offset of the first character in the decoded text
    end: int  # character offset one past the last character
    text: str


def front_matter_lines(lines: Sequence[str]) -> int:
    """How many leading lines are YAML front matter (0 if none).

    Front matter (``---`` ... ``---``) is metadata for static site
    generators; embedded on its own it makes a passage that matches
    queries about tags and dates rather than content.
    """
    if not lines or lines[0].rstrip("\r\n") != "---":
        return 0
    for i in range(1, min(len(lines), 200)):
        if lines[i].rstrip("\r\n") in ("---", "..."):
            return i + 1
    return 0


def split_lines(text: str) -> list[str]:
    """Lines ending at "\n" only, with their endings, as editors and grep count them.

    ``str.splitlines`` also breaks at form feeds, U+2028 and other separators,
    which would shift every line number after one of them.
    """
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def chunk_text(text: str, counter: TokenCounter, settings: ChunkSettings) -> list[Passage]:
    """Split ``text`` into passages that cover every non-blank line, in order.

    Lines are packed greedily up to ``settings.max_tokens``; the next passage
    starts with the trailing lines of the previous one that fit in
    ``settings.overlap_tokens`` (so a sentence spanning a cut is seen whole
    at least once). A single line too long for one passage is cut at token
    boundaries into several passages on that same line.
    """
    return chunk_texts([text], counter, settings)[0]


def chunk_texts(
    texts: Sequence[str], counter: TokenCounter, settings: ChunkSettings
) -> list[list[Passage]]:
    """``chunk_text`` for several files at once, the same passages.

    Why: the lines of all of them are counted in one tokenizer call, which
    a fast tokenizer spreads over every core; one file at a time, a folder
    of short files is tokenized on one.
    """
    if settings.max_tokens - SPECIAL_TOKENS < 1:
        raise ValueError("max_tokens leaves no room for text")
    files = [_content_lines(text) for text in texts]
    counts = iter(counter.count([lines[i] for lines, content in files for i in content]))
    return [
        _pack(text, lines, {i: next(counts) for i in content}, counter, settings)
        for text, (lines, content) in zip(texts, files, strict=True)
    ]


def _content_lines(text: str) -> tuple[list[str], list[int]]:
    """The file's lines, and the indices of those to embed (not blank, not
    front matter)."""
    lines = split_lines(text)
    skip = front_matter_lines(lines)
    return lines, [i for i in range(skip, len(lines)) if lines[i].strip()]


def _pack(
    text: str,
    lines: list[str],
    counts: dict[int, int],
    counter: TokenCounter,
    settings: ChunkSettings,
) -> list[Passage]:
    """Passages from counted lines (``counts``: content line -> tokens)."""
    budget = settings.max_tokens - SPECIAL_TOKENS
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    passages: list[Passage] = []

    def emit(first: int, last: int) -> None:
        start = offsets[first]
        end = offsets[last] + len(lines[last].rstrip("\r\n"))
        passages.append(Passage(first + 1, last + 1, start, end, text[start:end]))

    current: list[int] = []  # indices into ``lines`` of the non-blank lines in the passage
    used = 0
    for i, n in counts.items():
        if n > budget:
            width = len(lines[i].rstrip("\r\n"))
            # The line exactly as counted: the counter may still hold its tokens.
            # Fill the open passage with the line's beginning: a title or
            # heading then shares a passage with the text it introduces.
            fill = bool(current) and used < budget
            spans = counter.split(lines[i], budget, first=budget - used if fill else None)
            if fill:
                (a, b), spans = spans[0], spans[1:]
                if b > a:
                    s, e = offsets[current[0]], offsets[i] + min(b, width)
                    passages.append(Passage(current[0] + 1, i + 1, s, e, text[s:e]))
                else:  # not one whole word fits: the passage closes as it is
                    emit(current[0], current[-1])
            elif current:
                emit(current[0], current[-1])
            current, used = [], 0
            for a, b in spans:
                s, e = offsets[i] + a, offsets[i] + min(b, width)
                if e > s:
                    passages.append(Passage(i + 1, i + 1, s, e, text[s:e]))
            continue
        if current and used + n > budget:
            emit(current[0], current[-1])
            current, used = carry_overlap(current, counts, settings.overlap_tokens, budget - n)
        current.append(i)
        used += n
    if current:
        emit(current[0], current[-1])
    return passages


def carry_overlap(
    current: Sequence[int], counts: Mapping[int, int], overlap_tokens: int, room: int
) -> tuple[list[int], int]:
    """The trailing lines of a closed passage that open the next one, and their
    tokens: as many as fit in ``overlap_tokens`` and leave the next line its
    ``room``, never all of the passage's lines (the chunker must advance)."""
    carried: list[int] = []
    tokens = 0
    for j in reversed(current[1:]):
        if tokens + counts[j] > overlap_tokens or tokens + counts[j] > room:
            break
        carried.insert(0, j)
        tokens += counts[j]
    return carried, tokens


class WhitespaceCounter:
    """A tokenizer stand-in: one token per whitespace-separated word.

    Used by tests and by the fake embedder; it has the same additive
    behaviour across lines as BERT's WordPiece.
    """

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def split(self, text: str, max_tokens: int, first: int | None = None) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        words: list[tuple[int, int]] = []
        pos = 0
        for word in text.split():
            start = text.index(word, pos)
            pos = start + len(word)
            words.append((start, pos))
        k = 0
        while k < len(words):
            group = words[k : k + (first if first is not None and not spans else max_tokens)]
            if not group:  # first < 1
                spans.append((words[0][0], words[0][0]))
                continue
            spans.append((group[0][0], group[-1][1]))
            k += len(group)
        return spans
