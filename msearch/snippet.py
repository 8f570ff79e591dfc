"""Which lines of a passage answer the query, and where its words are.

A passage is up to a few hundred tokens; a terminal row or an editor's
quickfix line shows a handful of lines or one. Showing the passage's first
lines hides the part that matched, so the shown window is the one that holds
the most distinct query words. Words are matched as BM25 sees them (the
index's token pattern, stopwords and stemmer), so "indexing" finds
"indexed" and a stopword never lights up. A passage found by meaning alone,
with none of the query's words, shows its first lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from msearch.lexical import LexicalParams, Tokenizer


@dataclass
class Matcher:
    """The query's terms, and a way to find them in a line."""

    tokenizer: Tokenizer
    pattern: re.Pattern[str]
    stems: frozenset[str]
    _seen: dict[str, str | None] = field(default_factory=dict)  # word -> its query term

    @classmethod
    def for_query(
        cls, query: str, params: LexicalParams, tokenizer: Tokenizer | None = None
    ) -> Matcher:
        """``tokenizer``: one made from ``params`` before, for a process that
        answers many queries (it remembers the stems it has seen)."""
        tok = tokenizer or params.tokenizer()
        return cls(tok, re.compile(params.token_pattern), frozenset(tok.terms(query)))

    @classmethod
    def for_index(cls, query: str, lexical: object) -> Matcher:
        """With the index's recorded lexical settings (``meta.lexical``)."""
        return cls.for_query(query, params_for(lexical))

    def matches(self, line: str) -> list[tuple[int, int, str]]:
        """(start, end, term) of each query word in ``line``."""
        if not self.stems:
            return []
        found = []
        seen = self._seen
        for m in self.pattern.finditer(line):
            word = m.group().lower()
            term = seen.get(word, "")
            if term == "":  # not met yet: stopword, or a stem to look at once
                stem = None if word in self.tokenizer.stop else self.tokenizer.stem([word])[0]
                term = seen[word] = stem if stem in self.stems else None
            if term is not None:
                found.append((m.start(), m.end(), term))
        return found

    def spans(self, line: str) -> list[tuple[int, int]]:
        return [(a, b) for a, b, _ in self.matches(line)]


def params_for(lexical: object) -> LexicalParams:
    """An index's recorded lexical settings; one without usable ones gets
    the default pattern and stemmer, without stopwords (highlighting must
    never fail a query)."""
    from msearch.lexical import LexicalFormatError

    try:
        return LexicalParams.from_json(lexical)
    except LexicalFormatError:
        return LexicalParams()


def best_window(lines: list[str], matcher: Matcher, size: int) -> int:
    """First index of the ``size`` consecutive lines that hold the most
    distinct query terms, then the most matches; the earliest such window,
    and 0 when no line holds a query word."""
    if len(lines) <= size and size > 1:
        return 0
    per_line = [matcher.matches(line) for line in lines]
    best, best_key = 0, (0, 0)
    for start in range(max(len(lines) - size + 1, 1)):
        window = per_line[start : start + size]
        terms = {t for found in window for _, _, t in found}
        key = (len(terms), sum(len(found) for found in window))
        if key > best_key:
            best, best_key = start, key
    return best


def best_line(text: str, matcher: Matcher) -> tuple[int, int]:
    """(line offset within ``text``, 0-based column) of the line that holds
    the most query terms, at its first query word; without any, the first
    line that is not blank, at its first character."""
    lines = text.split("\n")
    i = best_window(lines, matcher, 1)
    found = matcher.matches(lines[i])
    if found:
        return i, found[0][0]
    first = next((j for j, line in enumerate(lines) if line.strip()), 0)
    return first, len(lines[first]) - len(lines[first].lstrip())
