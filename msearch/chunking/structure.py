"""Passages that follow a file's structure: definitions in code, sections in
Markdown and reStructuredText.

Both work the same way. The file is cut into spans that are units of
meaning (a function, a class header, a section), each with its context:
the definitions or headings that enclose it. Spans are then packed into
passages: small neighbours merged up to the token budget, a span too
large for one passage split at its inner units (a class at its methods)
or, with nothing inside to split at (a very long function), into runs of
lines as plain text is. Every passage carries its context (the file's
path, the enclosing signatures or heading path) in the text that is
embedded and indexed, since a method's body rarely names its class and
a subsection rarely repeats its chapter's title.

Boundaries stay put under edits: a passage closes before a definition or a
heading when it is half full and a hash of that line says so (about every
other one), so two versions of a file that differ above some point cut
alike from the next such line on (as content-defined chunking does).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from typing import Any

from msearch.chunking import syntax
from msearch.chunking.lines import (
    SPECIAL_TOKENS,
    ChunkSettings,
    Passage,
    TokenCounter,
    pack_lines,
)

# A passage at least this full closes before a definition chosen by its
# hash (see Structured._close_before); before a heading, at least MARKUP_FILL
# full. Inside a section cut as lines, a passage closes at a paragraph
# break only when MARKUP_FILL full: sections are the places where two
# versions of a document meet again, and passages of prose stay near the
# budget (shorter ones lose their context).
SOFT_FILL = 0.5
MARKUP_FILL = 0.8
# The context header takes at most this share of a passage's budget.
HEADER_SHARE = 0.25
# A signature or heading in a header is cut to this many characters.
SIGNATURE_CHARS = 120
MARKUP_EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst"}


@dataclass
class Span:
    """Lines ``first..last`` (0-based, inclusive) of a file: one unit."""

    first: int
    last: int
    unit: bool = False  # a definition or a section: a good place to start a passage
    sticky: bool = False  # a comment or decorator: goes with the unit after it
    context: tuple[str, ...] = ()  # enclosing signatures or headings, outermost first
    level: int = 0  # a section's heading level (1 for the top)


@dataclass
class _Group:
    spans: list[Span] = field(default_factory=list)
    used: int = 0


def kind_of(path: str) -> str:
    """ "code", "markup" or "text": which chunker a file gets."""
    import os

    if syntax.language_of(path) is not None:
        return "code"
    if os.path.splitext(path)[1].lower() in MARKUP_EXTENSIONS:
        return "markup"
    return "text"


class Structured:
    """The passages of one file from its spans (see the module docstring)."""

    def __init__(
        self,
        path: str,
        text: str,
        lines: list[str],
        counts: dict[int, int],
        counter: TokenCounter,
        settings: ChunkSettings,
        fill: float = SOFT_FILL,
    ) -> None:
        self.fill = fill
        self.path = path
        self.text = text
        self.lines = lines
        self.counts = counts
        self.counter = counter
        self.settings = settings
        self.budget = settings.max_tokens - SPECIAL_TOKENS
        n = len(lines)
        self.prefix = list(accumulate(map(counts.get, range(n), repeat(0, n)), initial=0))
        self.chars = list(accumulate(map(len, lines), initial=0))
        self._header_tokens: dict[str, int] = {}
        self._headers: dict[tuple[str, ...], tuple[str, int]] = {}

    def tokens(self, first: int, last: int) -> int:
        return self.prefix[last + 1] - self.prefix[first]

    def header(self, context: tuple[str, ...]) -> tuple[str, int]:
        """The text put before a passage (path, then its context lines, the
        innermost kept when they do not all fit) and its tokens."""
        got = self._headers.get(context)
        if got is None:
            got = self._headers[context] = self._header(context)
        return got

    def _header(self, context: tuple[str, ...]) -> tuple[str, int]:
        limit = int(self.budget * HEADER_SHARE)
        parts = list(context)
        while True:
            head = "\n".join([self.path, *parts])
            n = self._count(head)
            if n <= limit or not parts:
                break
            parts.pop(0)
        if n > limit:  # a path longer than the share: no header at all
            return "", 0
        return head, n

    def _count(self, head: str) -> int:
        n = self._header_tokens.get(head)
        if n is None:
            n = self._header_tokens[head] = self.counter.count([head])[0]
        return n

    def passages(
        self, spans: Sequence[Span], symbols: Callable[[int, int], list[str]]
    ) -> list[Passage]:
        """Pack ``spans`` (in order, covering the file's content lines) into
        passages; ``symbols(first, last)`` names what lines first..last define."""
        out: list[Passage] = []
        group = _Group()
        head, head_n = "", 0

        def close() -> None:
            nonlocal group
            spans_ = _trim(group.spans, self.counts)
            if spans_:
                out.append(self._passage(spans_[0].first, spans_[-1].last, head, symbols))
            group = _Group()

        for span in spans:
            n = self.tokens(span.first, span.last)
            if not n:  # blank lines only
                if group.spans:
                    group.spans.append(span)
                continue
            span_head, span_head_n = self.header(span.context)
            if n > self.budget - span_head_n:
                # Too large for one passage, with nothing inside to split at:
                # cut as lines, with what is open before it when that is a
                # comment or a heading introducing it, or (prose) the end of
                # a short run of sections, which would be a fragment.
                if group.spans and (
                    all(g.sticky for g in group.spans)
                    or (self.fill == MARKUP_FILL and group.used < self.budget * self.fill)
                ):
                    span = Span(group.spans[0].first, span.last, True, False, span.context)
                    group = _Group()
                elif group.spans:
                    close()
                out.extend(self._lines(span, span_head, span_head_n, symbols))
                continue
            only_sticky = all(g.sticky for g in group.spans)
            room = self.budget - (span_head_n if only_sticky else head_n)
            if group.spans and (group.used + n > room or self._close_before(span, group)):
                # Comments and decorators go with the unit they precede,
                # where they fit beside it.
                carried = [] if span.sticky or only_sticky else _sticky_tail(group)
                if only_sticky:
                    head, head_n = self.header(group.spans[0].context)
                close()
                used = sum(self.tokens(c.first, c.last) for c in carried)
                if carried and used + n <= self.budget - span_head_n:
                    group.spans, group.used = carried, used
                elif carried:
                    group.spans, group.used = carried, used
                    head, head_n = self.header(carried[0].context)
                    close()
            if all(g.sticky for g in group.spans):
                # The passage's first unit (comments carried before it share
                # its context) decides its header.
                head, head_n = span_head, span_head_n
            group.spans.append(span)
            group.used += n
        if group.spans:
            close()
        return out

    def _close_before(self, span: Span, group: _Group) -> bool:
        """Close the passage before a unit, although it would fit, when the
        passage is at least half full and the unit's first line hashes odd:
        boundaries then depend on the content around them, not on
        everything above (see the module docstring)."""
        if not span.unit or group.used < self.budget * self.fill:
            return False
        line = self.lines[span.first].strip().encode("utf-8", "surrogatepass")
        return zlib.crc32(line) & 1 == 1

    def _passage(
        self, first: int, last: int, head: str, symbols: Callable[[int, int], list[str]]
    ) -> Passage:
        start = self.chars[first]
        end = self.chars[last] + len(self.lines[last].rstrip("\r\n"))
        return Passage(
            first + 1,
            last + 1,
            start,
            end,
            self.text[start:end],
            context=head,
            symbols=tuple(symbols(first, last)),
        )

    def _lines(
        self, span: Span, head: str, head_n: int, symbols: Callable[[int, int], list[str]]
    ) -> list[Passage]:
        """A span too large for one passage, as runs of lines (plain text's
        packing, with the span's context before each)."""
        counts = {i: self.counts[i] for i in range(span.first, span.last + 1) if i in self.counts}
        got = pack_lines(
            self.text,
            self.lines,
            counts,
            self.counter,
            self.settings,
            budget=self.budget - head_n,
            headings=False,
            offsets=self.chars,
            soft_fill=self.fill,
        )
        return [
            Passage(
                p.start_line,
                p.end_line,
                p.start,
                p.end,
                p.text,
                context=head,
                symbols=tuple(symbols(p.start_line - 1, p.end_line - 1)),
            )
            for p in got
        ]


def _trim(spans: list[Span], counts: dict[int, int]) -> list[Span]:
    """Spans without their blank lines at either end (a passage starts and
    ends on a line with text)."""
    spans = list(spans)
    while spans:
        s = spans[0]
        first = next((i for i in range(s.first, s.last + 1) if i in counts), None)
        if first is None:
            spans.pop(0)
            continue
        spans[0] = Span(first, s.last, s.unit, s.sticky, s.context, s.level)
        break
    while spans:
        s = spans[-1]
        last = next((i for i in range(s.last, s.first - 1, -1) if i in counts), None)
        if last is None:
            spans.pop()
            continue
        spans[-1] = Span(s.first, last, s.unit, s.sticky, s.context, s.level)
        break
    return spans


def _sticky_tail(group: _Group) -> list[Span]:
    """The comments and decorators at the end of a passage about to close:
    they belong to the unit that opens the next one (never the whole passage)."""
    tail: list[Span] = []
    while len(group.spans) > len(tail) + 1 and group.spans[-1 - len(tail)].sticky:
        tail.insert(0, group.spans[-1 - len(tail)])
    if tail:
        del group.spans[-len(tail) :]
    return tail


# ---------------------------------------------------------------- code


def code_spans(tree: syntax.Tree, s: Structured) -> list[Span]:
    """The file's lines as units of its syntax tree: a node that fits the
    budget is one span; a larger one is opened and its children become
    spans, recursively (a class at its methods, a long function at its
    statements)."""
    starts: dict[int, syntax.Definition] = {}
    for d in tree.definitions:
        starts.setdefault(d.first, d)
    lines = s.lines
    limit = s.budget - int(s.budget * HEADER_SHARE)
    out: list[Span] = []

    def add(first: int, last: int, node: object) -> None:
        unit = first in starts
        kind = getattr(node, "type", "")
        sticky = node is None or "comment" in kind or kind in _STICKY_KINDS
        if not sticky and last - first < 3 and (last + 1) in starts and lines[first].strip():
            sticky = True  # an annotation or attribute line right before a definition
        out.append(Span(first, last, unit, sticky and not unit))

    top = len(lines) - 1

    def visit(node: Any, first: int, last: int, depth: int) -> None:
        """``node``, of lines first..last, as one span or opened."""
        last = min(last, top)
        if last < first:
            return
        if s.tokens(first, last) <= limit or not node.child_count or depth > MAX_DEPTH:
            add(first, last, node)
            return
        inside(node.children, first, last, depth)

    def inside(kids: Sequence[object], first: int, last: int, depth: int) -> None:
        """Lines first..last as the spans of ``kids`` and the gaps between
        them (comments a grammar left out of its nodes, blank lines): every
        line belongs to exactly one span."""
        cursor = first
        for child in kids:
            a, extent_last = syntax.extent(child)
            b = min(extent_last, last)
            if b < cursor:
                continue
            if a > cursor:
                add(cursor, min(a, last + 1) - 1, None)
            if a > last:
                break
            visit(child, max(a, cursor), extent_last, depth + 1)
            cursor = max(cursor, b + 1)
        if cursor <= last:
            add(cursor, last, None)

    if top >= 0:
        inside(tree.root.children, 0, top, 0)
    _set_contexts(out, tree.definitions, lines)
    return out


# Nodes nested deeper than this are not opened (their span is cut as lines):
# recursion stays bounded whatever the file.
MAX_DEPTH = 200


def _set_contexts(
    spans: list[Span], defs: Sequence[syntax.Definition], lines: Sequence[str]
) -> None:
    """Each span's context: the signatures of the definitions enclosing its
    first line that start above it (one sweep; spans and definitions are in
    line order)."""
    order = sorted(defs, key=lambda d: (d.first, -d.last))
    open_: list[syntax.Definition] = []
    j = 0
    for span in spans:
        row = span.first
        while j < len(order) and order[j].first < row:
            open_.append(order[j])
            j += 1
        open_ = [d for d in open_ if d.last >= row]
        span.context = tuple(_signature(lines[d.name_line]) for d in open_ if d.name_line < row)


# Node types that belong with what follows them: decorators, attributes,
# annotations, Elixir's @doc and @spec.
_STICKY_KINDS = frozenset(
    {
        "decorator",
        "attribute_item",
        "inner_attribute_item",
        "annotation",
        "marker_annotation",
        "attribute",
        "unary_operator",
    }
)


def _signature(line: str) -> str:
    line = line.strip()
    return line if len(line) <= SIGNATURE_CHARS else line[:SIGNATURE_CHARS].rstrip() + " ..."


def code_passages(s: Structured, lang: str) -> list[Passage] | None:
    """A code file's passages; None when it does not parse (plain text then)."""
    tree = syntax.parse(s.text, lang)
    if tree is None:
        return None
    spans = code_spans(tree, s)
    by_line: dict[int, list[syntax.Definition]] = {}
    for d in tree.definitions:
        by_line.setdefault(d.name_line, []).append(d)

    def symbols(first: int, last: int) -> list[str]:
        defs = [d for i in range(first, last + 1) for d in by_line.get(i, ())]
        return syntax.symbol_names(defs)

    return s.passages(spans, symbols)


# ---------------------------------------------------------------- markup


_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_RST_ADORN = re.compile(r"([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


def headings(lines: Sequence[str], flavour: str) -> list[tuple[int, int, int, str]]:
    """(first line, title line, level, title) of each heading, in order; the
    first line is an overline's in reStructuredText. Fenced code blocks are
    skipped in Markdown (a ``#`` comment there is no heading)."""
    out: list[tuple[int, int, int, str]] = []
    if flavour == "rst":
        styles: dict[tuple[str, bool], int] = {}
        i = 0
        n = len(lines)
        while i < n - 1:
            title = lines[i].rstrip("\r\n")
            under = lines[i + 1].rstrip("\r\n")
            over = lines[i - 1].rstrip("\r\n") if i > 0 else ""
            if (
                title.strip()
                and not _RST_ADORN.match(title)
                and _RST_ADORN.match(under)
                and len(under.rstrip()) >= min(len(title.rstrip()), 4)
                and not title.startswith((" ", "\t"))
            ):
                has_over = bool(_RST_ADORN.match(over)) and over.strip()[0] == under.strip()[0]
                style = (under.strip()[0], has_over)
                level = styles.setdefault(style, len(styles) + 1)
                out.append((i - 1 if has_over else i, i, level, title.strip()))
                i += 2
                continue
            i += 1
        return out
    fence: str | None = None
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        atx = _ATX.match(line)
        if atx:
            out.append((i, i, len(atx.group(1)), (atx.group(2) or "").strip()))
        elif (
            i + 1 < len(lines)
            and line.strip()
            and _SETEXT.match(lines[i + 1].rstrip("\r\n"))
            and not _SETEXT.match(line)
            and not line.lstrip().startswith(("-", "*", "+", ">", "|"))
        ):
            level = 1 if lines[i + 1].strip().startswith("=") else 2
            out.append((i, i, level, line.strip()))
    return out


def markup_spans(lines: Sequence[str], flavour: str) -> list[Span]:
    """A span per section (its heading to the next heading), with the
    headings above it as context; what comes before the first heading is
    a span of its own."""
    heads = headings(lines, flavour)
    spans: list[Span] = []
    stack: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    if not heads or heads[0][0] > 0:
        spans.append(Span(0, (heads[0][0] if heads else len(lines)) - 1, False, False, ()))
    for j, (first, _title_line, level, title) in enumerate(heads):
        end = heads[j + 1][0] - 1 if j + 1 < len(heads) else len(lines) - 1
        while stack and stack[-1][0] >= level:
            stack.pop()
        context = tuple(t for _, t in stack)
        spans.append(Span(first, end, True, False, context, level))
        stack.append((level, _signature(title)))
    return [s for s in spans if s.last >= s.first]


def markup_passages(s: Structured, flavour: str) -> list[Passage]:
    lines = s.lines
    spans = markup_spans(lines, flavour)
    # A section too large for one passage is cut as plain text, its own
    # heading joining the context of every piece.
    titled: list[Span] = []
    heads = {first: title for first, _t, _l, title in headings(lines, flavour)}
    for j, sp in enumerate(spans):
        n = s.tokens(sp.first, sp.last)
        if sp.unit and sp.first in heads and n > s.budget:
            sp = Span(
                sp.first, sp.last, True, False, (*sp.context, _signature(heads[sp.first])), sp.level
            )
        nxt = spans[j + 1] if j + 1 < len(spans) else None
        if nxt is not None and sp.unit and nxt.level > sp.level and n <= s.budget // 4:
            # A heading with little under it before its first subsection
            # opens the passage of that subsection rather than ending one.
            sp = Span(sp.first, sp.last, True, True, sp.context, sp.level)
        titled.append(sp)
    return s.passages(titled, lambda _a, _b: [])


def file_passages(
    path: str,
    text: str,
    lines: list[str],
    counts: dict[int, int],
    counter: TokenCounter,
    settings: ChunkSettings,
) -> list[Passage] | None:
    """The passages of a file by its structure, or None for plain text."""
    import os

    lang = syntax.language_of(path)
    if lang is not None:
        return code_passages(Structured(path, text, lines, counts, counter, settings), lang)
    flavour = MARKUP_EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if flavour is not None:
        s = Structured(path, text, lines, counts, counter, settings, MARKUP_FILL)
        return markup_passages(s, flavour)
    return None


def with_symbols(path: str, text: str, passages: list[Passage]) -> list[Passage]:
    """Plain passages of a code file with the symbols each defines (from its
    syntax tree), for an index whose passages do not follow the structure."""
    import dataclasses

    lang = syntax.language_of(path)
    tree = syntax.parse(text, lang) if lang is not None and passages else None
    if tree is None:
        return passages
    out = []
    for p in passages:
        defs = [d for d in tree.definitions if p.start_line - 1 <= d.name_line <= p.end_line - 1]
        out.append(dataclasses.replace(p, symbols=tuple(syntax.symbol_names(defs))))
    return out
