"""File text to passages: line ranges sized by the model's own tokenizer.

Passages are built from whole lines so that every hit maps back to
``path:start-end``. Sizes are counted in the model's tokens because a model
silently truncates what goes past its maximum sequence length: a passage
sized in characters or words either wastes capacity or loses its tail.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

# Room for the [CLS] and [SEP] tokens that every BERT-style encoder adds.
SPECIAL_TOKENS = 2
# Lines longer than this go through the tokenizer in pieces cut at
# whitespace: one call on a 50 MB line held gigabytes of token objects and
# could not be interrupted (Ctrl-C waits for a tokenizer call to return).
PIECE_CHARS = 16 * 1024
# A passage at least this full may close at a paragraph break (see _soft_cut).
SOFT_CUT_FILL = 0.5
# Characters of lines counted per tokenizer call: memory stays bounded
# whatever the file, and Ctrl-C acts between calls.
COUNT_GROUP_CHARS = 1 << 20


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
    # Code by its syntax tree, Markdown and reStructuredText by sections
    # (msearch.structure); an index of an older msearch has plain passages.
    structure: bool = True


@dataclass(frozen=True)
class Passage:
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    start: int  # character offset of the first character in the decoded text
    end: int  # character offset one past the last character
    text: str
    # What the passage lies in (the file's path, enclosing signatures or
    # headings), put before its text where it is embedded and indexed.
    context: str = ""
    # The symbols the passage defines (msearch.syntax), simple and qualified.
    symbols: tuple[str, ...] = ()

    @property
    def indexed(self) -> str:
        """The text that is embedded and indexed: context, then the passage."""
        return f"{self.context}\n{self.text}" if self.context else self.text


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
    return [
        pack_lines(text, lines, counts, counter, settings)
        for text, (lines, counts) in zip(
            texts, counted_lines(texts, counter, settings), strict=True
        )
    ]


def counted_lines(
    texts: Sequence[str], counter: TokenCounter, settings: ChunkSettings
) -> list[tuple[list[str], dict[int, int]]]:
    """Each text's lines and its content lines' token counts (line ->
    tokens), the lines of all texts counted in one tokenizer call."""
    if settings.max_tokens - SPECIAL_TOKENS < 1:
        raise ValueError("max_tokens leaves no room for text")
    files = [content_lines(text) for text in texts]
    counts = iter(count_lines(counter, [lines[i] for lines, content in files for i in content]))
    return [(lines, {i: next(counts) for i in content}) for lines, content in files]


def _pieces(text: str) -> list[tuple[int, int]]:
    """``text`` cut into spans of at most PIECE_CHARS characters, each cut
    at whitespace where there is any in the second half of the piece, so
    that no word is split and token counts add up."""
    out: list[tuple[int, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        end = min(pos + PIECE_CHARS, n)
        if end < n:
            k = end
            while k > pos + PIECE_CHARS // 2 and not text[k].isspace():
                k -= 1
            if k > pos + PIECE_CHARS // 2:
                end = k
        out.append((pos, end))
        pos = end
    return out


def count_lines(counter: TokenCounter, lines: Sequence[str]) -> list[int]:
    """``counter.count(lines)``, a bounded amount of text per call; a line
    longer than PIECE_CHARS counts as the sum of its pieces (tokenizers
    split words at whitespace, so counts add up)."""
    if max(map(len, lines), default=0) <= PIECE_CHARS:
        # Each line whole (the common case): groups cut where their
        # characters add up, without a step per line in Python.
        ends = list(accumulate(map(len, lines)))
        counts: list[int] = []
        start = 0
        while start < len(lines):
            base = ends[start - 1] if start else 0
            stop = bisect_left(ends, base + COUNT_GROUP_CHARS, lo=start) + 1
            counts += counter.count(lines[start:stop])
            start = stop
        return counts
    out: list[int] = []
    group: list[str] = []
    owners: list[int] = []  # the line each text in ``group`` belongs to
    size = 0

    def run() -> None:
        nonlocal group, owners, size
        for line, n in zip(owners, counter.count(group), strict=True):
            out[line] += n
        group, owners, size = [], [], 0

    for i, line in enumerate(lines):
        out.append(0)
        spans = _pieces(line) if len(line) > PIECE_CHARS else [(0, len(line))]
        for a, b in spans:
            group.append(line if (a, b) == (0, len(line)) else line[a:b])
            owners.append(i)
            size += b - a
            if size >= COUNT_GROUP_CHARS:
                run()
    if group:
        run()
    return out


def split_line(
    counter: TokenCounter, text: str, max_tokens: int, first: int | None = None
) -> list[tuple[int, int]]:
    """``counter.split``, a piece at a time for a very long line.

    A piece's last span may end where it does only because the piece ends;
    the next piece starts where that span started, so the spans are the
    ones a single call on the whole line would give.
    """
    if len(text) <= PIECE_CHARS:
        return counter.split(text, max_tokens, first)
    spans: list[tuple[int, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        end = _pieces(text[pos : pos + PIECE_CHARS + 1])[0][1] + pos
        got = [
            (a + pos, b + pos)
            for a, b in counter.split(text[pos:end], max_tokens, None if spans else first)
        ]
        if end < n and len(got) > 1 and got[-1][0] > pos:
            spans.extend(got[:-1])
            pos = got[-1][0]
        else:
            spans.extend(got)
            pos = end
    return spans


def content_lines(text: str) -> tuple[list[str], list[int]]:
    """The file's lines, and the indices of those to embed (not blank, not
    front matter)."""
    lines = split_lines(text)
    skip = front_matter_lines(lines)
    return lines, [i for i in range(skip, len(lines)) if lines[i].strip()]


def pack_lines(
    text: str,
    lines: list[str],
    counts: dict[int, int],
    counter: TokenCounter,
    settings: ChunkSettings,
    budget: int | None = None,
    headings: bool = True,
    offsets: Sequence[int] | None = None,
    soft_fill: float = SOFT_CUT_FILL,
) -> list[Passage]:
    """Passages from counted lines (``counts``: content line -> tokens), of
    at most ``budget`` tokens (default: the settings' passage size).
    ``headings``: Markdown headings are boundaries (not in code, where a
    ``#`` line is a comment). ``offsets``: where each line starts in
    ``text`` (and where the last ends), if the caller has them.
    ``soft_fill``: how full a passage must be to close at a paragraph break
    chosen by its content (see ``_soft_cut``)."""
    if budget is None:
        budget = settings.max_tokens - SPECIAL_TOKENS
    budget = max(budget, 1)
    if offsets is None:
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
            # Fill a short open passage (a title, a heading) with the line's
            # beginning, so that it shares a passage with the text it
            # introduces; a longer one closes, so that where the line's
            # passages start depends on the line alone, not on what an edit
            # further up left open.
            fill = bool(current) and used <= budget // 4
            spans = split_line(counter, lines[i], budget, first=budget - used if fill else None)
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
        if current:
            # A paragraph break (blank lines) or a heading before line i.
            brk = i > current[-1] + 1 or (headings and is_heading(lines, i))
            if used + n > budget:
                emit(current[0], current[-1])
                # No sentence spans a paragraph break: overlap only within one.
                current, used = (
                    ([], 0)
                    if brk
                    else carry_overlap(current, counts, settings.overlap_tokens, budget - n)
                )
            elif brk and _soft_cut(lines, current[-1], i, used, budget, headings, soft_fill):
                emit(current[0], current[-1])
                current, used = [], 0
        current.append(i)
        used += n
    if current:
        emit(current[0], current[-1])
    return passages


_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-+)[ \t]*\r?\n?")


def is_heading(lines: Sequence[str], i: int) -> bool:
    """A Markdown heading: ``# Title`` (ATX), or a line underlined with
    ``===`` or ``---`` (setext)."""
    if _ATX_HEADING.match(lines[i]):
        return True
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    return bool(lines[i].strip()) and _SETEXT_UNDERLINE.fullmatch(nxt) is not None


def _soft_cut(
    lines: Sequence[str],
    last: int,
    nxt: int,
    used: int,
    budget: int,
    headings: bool = True,
    fill: float = SOFT_CUT_FILL,
) -> bool:
    """Whether to close a passage at the break before line ``nxt`` although
    the line would fit.

    Why: packing greedily from the top of a file makes every boundary
    depend on everything above it, so a paragraph inserted near the top
    shifts every later passage and all of them must be embedded again.
    Here a passage that is at least half full also closes at a paragraph
    break chosen by the content around it (a hash of the paragraph's last
    line: about every other break), and one that is a quarter full closes
    before a heading. Two chunkings that start at different places thus
    meet again at the first such break, and from there on cut alike, as
    content-defined chunking does (rsync, restic); passages also end where
    paragraphs do.
    """
    if headings and is_heading(lines, nxt):
        return used >= budget // 4
    if used < budget * fill:
        return False
    return zlib.crc32(lines[last].strip().encode("utf-8", "surrogatepass")) & 1 == 1


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
