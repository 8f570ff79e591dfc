"""``msearch`` with the fake embedder, for tests that need a real process
(resource limits, signals). Not a test module.

Usage: python tests/fake_cli.py [--real-tokenizer] ARGS...
``--real-tokenizer`` chunks with the bundled model's tokenizer (the fake
still makes the vectors), for tests of chunking very large files.
``FAKE_EMBED_DELAY=S``: each batch takes S seconds more (a slow model).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import FakeEmbedder, FakeModels  # noqa: E402

if __name__ == "__main__":
    import os
    import time

    import msearch.encoders
    from msearch.cli import main

    args = sys.argv[1:]
    fake = FakeEmbedder(max_seq_length=256)
    delay = float(os.environ.get("FAKE_EMBED_DELAY", "0"))  # seconds a batch
    if delay:
        encode = fake.encode

        def slow(texts: object, batch_size: int = 32) -> object:
            time.sleep(delay)
            return encode(texts, batch_size)  # type: ignore[arg-type]

        fake.encode = slow  # type: ignore[method-assign]
    if args and args[0] == "--real-tokenizer":
        args = args[1:]
        fake.counter = msearch.encoders.token_counter(msearch.encoders.bundled_model_path())
    main(args, models=FakeModels(fake))
