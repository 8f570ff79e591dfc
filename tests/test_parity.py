"""The numpy query encoder reproduces sentence-transformers (issue 3)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SAMPLE
from msearch.encoders import bundled_model_path, quiet_libraries, read_spec
from msearch.encoders.numpy_encoder import NumpyEncoder

pytestmark = pytest.mark.model
EVAL = REPO.parent / "shared" / "eval"


@pytest.fixture(scope="module")
def st_model():  # type: ignore[no-untyped-def]
    quiet_libraries()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model_path()), device="cpu")


@pytest.fixture(scope="module")
def fast() -> NumpyEncoder:
    return NumpyEncoder(read_spec(bundled_model_path()))


def varied_queries(n: int = 520) -> list[str]:
    rng = random.Random(7)
    lines = [
        ln.strip()
        for p in sorted(SAMPLE.rglob("*.*"))
        if p.is_file() and ".msearch" not in p.parts
        for ln in p.read_text(encoding="utf-8").splitlines()
        if ln.strip()
    ]
    words = " ".join(lines).split()
    out = [
        "?",
        " a ",
        "x",
        "42",
        "…",
        "   moon   ",
        "C++ vs. Rust: which?",
        "naïve café crème brûlée",
        "日本語の検索クエリ",
        "Ünïcödé ßtraße",
        "emoji 🌙 phases",
        "tab\tseparated\tquery",
        "UPPER CASE QUERY",
        "a" * 300,
        "supercalifragilisticexpialidocious " * 3,
    ]
    while len(out) < n:
        kind = rng.random()
        if kind < 0.5:
            out.append(" ".join(rng.sample(words, rng.randint(1, 12))))
        elif kind < 0.8:
            out.append(rng.choice(lines))
        elif kind < 0.95:
            out.append(" ".join(rng.choices(words, k=rng.randint(150, 400))))  # over the limit
        else:
            out.append("".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 30))))
    return out


def test_cosine_parity_over_varied_queries(st_model, fast: NumpyEncoder) -> None:  # type: ignore[no-untyped-def]
    queries = varied_queries()
    assert len(queries) >= 500
    ref = st_model.encode(queries, normalize_embeddings=True, batch_size=64)
    ours = fast.encode(queries)
    cos = (ref * ours).sum(axis=1)
    assert cos.min() >= 0.9999, (cos.min(), queries[int(cos.argmin())])


def test_long_query_is_truncated_like_sentence_transformers(st_model, fast: NumpyEncoder) -> None:  # type: ignore[no-untyped-def]
    long = "the moon and the stars " * 200
    assert fast.token_count(long) > 256
    ref = st_model.encode([long], normalize_embeddings=True)
    assert float(ref[0] @ fast.encode([long])[0]) >= 0.9999
    # Truncation means the tail does not matter, exactly as in the reference.
    assert float(fast.encode([long])[0] @ fast.encode([long + " volcano " * 50])[0]) > 0.99999


@pytest.mark.skipif(not (EVAL / "medline").exists(), reason="shared/eval not beside the repo")
def test_top10_identical_on_an_eval_collection(st_model, fast: NumpyEncoder) -> None:  # type: ignore[no-untyped-def]
    docs = [json.loads(line) for line in (EVAL / "medline" / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (EVAL / "medline" / "queries.jsonl").open()]
    corpus = st_model.encode(
        [(d["title"] + " " + d["text"]).strip() for d in docs],
        normalize_embeddings=True,
        batch_size=64,
    )
    ref_q = st_model.encode(queries, normalize_embeddings=True)
    fast_q = fast.encode(queries)
    for r, f in zip(ref_q, fast_q, strict=True):
        assert (
            np.argsort(-(corpus @ r), kind="stable")[:10].tolist()
            == np.argsort(-(corpus @ f), kind="stable")[:10].tolist()
        )


def test_unsupported_models_are_refused_cleanly(tmp_path: Path) -> None:
    from msearch.encoders.weights import Unsupported

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    spec = read_spec(tmp_path)
    assert any("mpnet" in reason for reason in spec.unsupported)
    with pytest.raises(Unsupported, match="mpnet"):
        NumpyEncoder(spec)
