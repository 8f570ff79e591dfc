"""``msearch`` with the fake embedder, for tests that need a real process
(resource limits, signals). Not a test module.

Usage: python tests/fake_cli.py [--real-tokenizer] ARGS...
``--real-tokenizer`` chunks with the bundled model's tokenizer (the fake
still makes the vectors), for tests of chunking very large files.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import FakeEmbedder  # noqa: E402

if __name__ == "__main__":
    import msearch.embed
    import msearch.query
    from msearch.cli import main

    args = sys.argv[1:]
    fake = FakeEmbedder(max_seq_length=256)
    if args and args[0] == "--real-tokenizer":
        args = args[1:]
        fake.counter = msearch.embed.HFTokenCounter.from_folder(msearch.embed.bundled_model_path())
    msearch.embed.load_model = lambda *a, **k: fake  # type: ignore[assignment]
    msearch.embed.load_recorded = lambda *a, **k: fake  # type: ignore[assignment]
    msearch.query.query_encoder = lambda *a, **k: fake.encode  # type: ignore[assignment]
    main(args)
