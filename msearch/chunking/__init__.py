"""File text to passages: the seam "file -> passages" and its chunkers.

One part per concern: ``lines`` packs runs of whole lines up to the
model's token budget (any text; the fallback for everything else);
``tokens`` counts them in the model's tokens; ``syntax`` reads source code
as a tree-sitter syntax tree (which language a file is, what it defines);
``structure`` cuts code at its definitions and Markdown or
reStructuredText at its sections, each passage with its context;
``parallel`` runs a large update's chunking on every core. The indexer
and every Ray worker ask :func:`chunker_for` for the one chunker of an
index, so one index's passages never depend on where they were cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from msearch.chunking.lines import (
    SPECIAL_TOKENS,
    ChunkSettings,
    Passage,
    TokenCounter,
    WhitespaceCounter,
    carry_overlap,
    chunk_text,
    chunk_texts,
    count_lines,
    counted_lines,
    front_matter_lines,
    pack_lines,
    split_lines,
)
from msearch.chunking.tokens import HFTokenCounter

__all__ = [
    "SPECIAL_TOKENS",
    "ChunkSettings",
    "Chunker",
    "HFTokenCounter",
    "LineChunker",
    "Passage",
    "StructureChunker",
    "TokenCounter",
    "WhitespaceCounter",
    "carry_overlap",
    "chunk_files",
    "chunk_text",
    "chunk_texts",
    "chunker_for",
    "count_lines",
    "front_matter_lines",
    "split_lines",
]


class Chunker(Protocol):
    """The seam "file -> passages": what the indexer (and each Ray worker)
    asks to cut the files it embeds. One is made per index from its model's
    token counter and its chunking settings (:func:`chunker_for`)."""

    def chunk(self, files: Sequence[tuple[str, str]]) -> list[list[Passage]]:
        """The passages of each ``(path, text)`` (path relative to the
        indexed folder, POSIX separators), in order: every non-blank line
        covered, each passage within the settings' token budget, the same
        passages for the same text and path wherever it runs."""
        ...


@dataclass(frozen=True)
class LineChunker:
    """Runs of whole lines, packed up to the token budget (:func:`chunk_texts`),
    whatever the file's type: the passages of an index made before
    passages followed structure (``ChunkSettings.structure`` false)."""

    counter: TokenCounter
    settings: ChunkSettings

    def chunk(self, files: Sequence[tuple[str, str]]) -> list[list[Passage]]:
        return chunk_files(files, self.counter, self.settings, structure=False)


@dataclass(frozen=True)
class StructureChunker:
    """Code by its syntax tree, Markdown and reStructuredText by sections,
    anything else as runs of lines (:func:`chunk_files`)."""

    counter: TokenCounter
    settings: ChunkSettings

    def chunk(self, files: Sequence[tuple[str, str]]) -> list[list[Passage]]:
        return chunk_files(files, self.counter, self.settings, structure=True)


def chunker_for(counter: TokenCounter, settings: ChunkSettings) -> Chunker:
    """The chunker of an index whose model counts tokens with ``counter``,
    chosen by what its settings record."""
    if settings.structure:
        return StructureChunker(counter, settings)
    return LineChunker(counter, settings)


def chunk_files(
    files: Sequence[tuple[str, str]],
    counter: TokenCounter,
    settings: ChunkSettings,
    structure: bool = True,
) -> list[list[Passage]]:
    """``chunk_texts`` for (path, text) pairs, each file by its structure:
    code by its syntax tree, Markdown and reStructuredText by their
    sections, anything else as plain text. ``structure=False``: plain text
    for all (what ``chunk_texts`` does), each passage of a code file still
    with the symbols it defines (so symbol queries work in such an index).

    The lines of all files are counted in one tokenizer call (which a fast
    tokenizer spreads over every core)."""
    from msearch.chunking import structure as st

    texts = [text for _, text in files]
    out = []
    for (path, text), (lines, line_counts) in zip(
        files, counted_lines(texts, counter, settings), strict=True
    ):
        got = None
        if structure:
            got = st.file_passages(path, text, lines, line_counts, counter, settings)
        if got is None:
            plain = pack_lines(text, lines, line_counts, counter, settings)
            got = st.with_symbols(path, text, plain)
        out.append(got)
    return out
