"""How far an edit near the top of a file moves the passages after it, and
what the soft cuts cost in passages (issue 12).

For each text, chunked by the bundled model's tokenizer at the default
--chunk-tokens 256 / --overlap-tokens 32, with msearch's chunker as built
(soft cuts at paragraph breaks and headings) and with the soft cuts turned
off (greedy packing, the chunker before): the number of passages, and after
a paragraph is inserted near the top, how many passages are new (must be
embedded again). Texts: Markdown from this repository (README, the sample
corpus), and the documents of the eval collections that have several
paragraphs (if ../shared/eval is there), each a file of its own.

  python bench/chunk_resync.py [--write]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _results import report, table

import msearch.chunking.lines as chunk
from msearch.chunking import ChunkSettings, chunk_text
from msearch.encoders import bundled_model_path, token_counter

REPO = Path(__file__).resolve().parent.parent
INSERT = (
    "A paragraph added later, near the top: it mentions the weather, a meeting "
    "that moved to Thursday, and a reminder to water the tomatoes before the heat."
)


def texts() -> dict[str, list[str]]:
    out = {
        "README.md": [(REPO / "README.md").read_text()],
        "sample corpus (30 files)": [
            p.read_text() for p in sorted((REPO / "sample_corpus").rglob("*.md"))
        ],
    }
    for base in (REPO / "shared" / "eval", REPO.parent / "shared" / "eval"):
        if base.exists():
            for coll in sorted(p for p in base.iterdir() if (p / "corpus.jsonl").exists()):
                docs = []
                with open(coll / "corpus.jsonl", encoding="utf-8") as fh:
                    for line in fh:
                        d = json.loads(line)
                        body = d.get("text", "")
                        if body.count("\n\n") >= 2:  # several paragraphs
                            docs.append(d.get("title", "") + "\n\n" + body)
                if docs:
                    out[f"{coll.name} (multi-paragraph docs: {len(docs)})"] = docs[:300]
            break
    return out


def insert_near_top(text: str) -> str:
    parts = text.split("\n\n")
    return "\n\n".join([parts[0], INSERT, *parts[1:]])


def measure(docs: list[str], counter: Any, soft: Callable[..., bool]) -> tuple[int, int, int]:
    """(passages, passages after the insertion, of them new)."""
    chunk._soft_cut = soft  # type: ignore[assignment]
    settings = ChunkSettings()
    before = after = new = 0
    for text in docs:
        a = chunk_text(text, counter, settings)
        b = chunk_text(insert_near_top(text), counter, settings)
        old = {p.text for p in a}
        before += len(a)
        after += len(b)
        new += sum(1 for p in b if p.text not in old)
    return before, after, new


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    counter = token_counter(bundled_model_path())
    built = chunk._soft_cut
    rows = []
    for name, docs in texts().items():
        soft = measure(docs, counter, built)
        greedy = measure(docs, counter, lambda *a: False)
        chunk._soft_cut = built
        rows.append(
            (
                name,
                f"{greedy[0]:,} → {soft[0]:,} ({soft[0] / max(greedy[0], 1):.2f}×)",
                f"{greedy[2]:,} of {greedy[1]:,} → {soft[2]:,} of {soft[1]:,}",
            )
        )
    report(
        "Chunk boundaries after an edit near the top",
        "bundled tokenizer, chunking 256/32; greedy packing → soft cuts (as built)",
        table(rows, ("text", "passages, greedy → soft", "new passages after the insertion")),
        args.write,
    )


if __name__ == "__main__":
    main()
