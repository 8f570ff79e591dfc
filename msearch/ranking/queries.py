"""What a query is: an identifier or a question in plain language, the
symbols it names and its words.

A query is an identifier when it is one token shaped like one
(``TypeAdapter``, ``safeParse``, ``get_user``, ``Sinatra::Base``,
``http.Handler``) or a capitalized single word (``Router``); such a query
leans on words and definitions, a question on meaning (msearch.ranking).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Identifier shapes: camelCase, PascalCase with two humps or more, snake_case,
# SCREAMING_CASE, qualified (``a.b``, ``A::B``, ``a->b``), dunder.
_QUALIFIED = re.compile(r"^[A-Za-z_$][\w$]*(?:(?:\.|::|->|#|\\)[A-Za-z_$][\w$]*)+$")
_CAMEL = re.compile(r"^[a-z_$][a-z0-9_$]*[A-Z][\w$]*$")
_PASCAL = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+$|^[A-Z]{2,}[a-z][\w]*$")
_SNAKE = re.compile(r"^_*[A-Za-z][A-Za-z0-9]*(?:_+[A-Za-z0-9]+)+_*$|^__\w+__$")
_TOKEN = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\.|::|->|#|\\)[A-Za-z_$][\w$]*)*\(?\)?")
_QUALIFIERS = re.compile(r"::|->|#|\\")
_WORD = re.compile(r"(?u)\w+")


@dataclass(frozen=True)
class QueryInfo:
    """What the ranking needs to know of a query."""

    kind: str  # "identifier" or "natural"
    symbols: tuple[str, ...]  # names to look up among definitions, lower case, "." qualified
    words: frozenset[str]  # its words, lower case (for file names and priors)
    # How much a definition of each of ``symbols`` counts: 1 for the name as
    # the query writes it, less for the last part of a qualified one alone.
    weights: tuple[float, ...] = ()


def analyze(query: str) -> QueryInfo:
    """The query's kind and the symbols it names.

    A query is an identifier when it is one token shaped like one
    (``TypeAdapter``, ``safeParse``, ``get_user``, ``Sinatra::Base``,
    ``http.Handler``), or a capitalized single word (``Router``). Inside a
    sentence, only tokens with an identifier's shape are taken as symbols:
    "the Router" in "how does the Router dispatch" is one, "router" is not.
    """
    text = query.strip()
    tokens = [t.rstrip("()") for t in _TOKEN.findall(text)]
    words = frozenset(w.lower() for w in _WORD.findall(text))
    single = len(text.split()) == 1 and bool(tokens) and len(tokens) == 1
    found: dict[str, float] = {}
    for tok in tokens:
        if _is_identifier(tok) or (single and tok[:1].isupper()):
            for name, weight in _lookup_names(tok):
                found[name] = max(found.get(name, 0.0), weight)
    kind = "identifier" if single and found else "natural"
    ranked = sorted(found.items(), key=lambda nw: -nw[1])  # the first name a row defines counts
    return QueryInfo(kind, tuple(n for n, _ in ranked), words, tuple(w for _, w in ranked))


def _is_identifier(tok: str) -> bool:
    return bool(
        _QUALIFIED.match(tok) or _CAMEL.match(tok) or _PASCAL.match(tok) or _SNAKE.match(tok)
    )


# How much a definition counts, by how the query names it: as written
# (``Query`` defines ``Query``), in another case (``query``), or only the
# last part of a qualified name (``Base`` for ``Sinatra::Base``).
EXACT, ANY_CASE, LAST_PART, LAST_PART_ANY_CASE = 1.0, 0.7, 0.5, 0.35


def _lookup_names(tok: str) -> list[tuple[str, float]]:
    """A symbol as definitions record it (msearch.syntax: qualifiers as "."),
    in the query's own case and in lower case, and for a qualified one its
    last part too, each with its weight."""
    name = _QUALIFIERS.sub(".", tok).strip(".")
    out = [(name, EXACT), (name.lower(), ANY_CASE)]
    if "." in name:
        last = name.rsplit(".", 1)[1]
        out += [(last, LAST_PART), (last.lower(), LAST_PART_ANY_CASE)]
    return out
