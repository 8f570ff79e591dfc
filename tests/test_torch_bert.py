"""The indexing encoder (msearch/torch_bert.py) against sentence-transformers.

Every test here loads the bundled model: the point is that a hand-written
forward pass gives sentence-transformers' vectors, for each pooling mode and
precision, and that models it does not cover still go to
sentence-transformers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE
from msearch.embed import (
    BUNDLED_MODEL,
    BUNDLED_SOURCE,
    Model,
    SentenceTransformerEmbedder,
    TorchBertEmbedder,
    bundled_model_path,
)

pytestmark = pytest.mark.model


def _texts() -> list[str]:
    # Mixed lengths so that batches are padded, plus edge cases.
    texts = [
        p.read_text(encoding="utf-8")[: 150 + 90 * i]
        for i, p in enumerate(sorted(SAMPLE.rglob("*.md")) + sorted(SAMPLE.rglob("*.txt")))
    ]
    return texts + ["", "one", "  padded  ", "ünïcode ✓ 日本語", "word " * 400]


def _st_vectors(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, batch_size=32, normalize_embeddings=True)


def _copy_model(tmp_path: Path, pooling: str) -> Path:
    folder = tmp_path / f"minilm-{pooling}"
    shutil.copytree(bundled_model_path(), folder)
    cfg_path = folder / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in list(cfg):
        if key.startswith("pooling_mode"):
            cfg[key] = key == pooling
    cfg_path.write_text(json.dumps(cfg))
    return folder


def test_bert_models_index_through_torch_bert() -> None:
    model = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
    assert isinstance(model.embedder, TorchBertEmbedder)
    assert model.embedder.record == model.record


@pytest.mark.parametrize("pooling", ["pooling_mode_cls_token", "pooling_mode_max_tokens"])
def test_other_poolings_equal_sentence_transformers(tmp_path: Path, pooling: str) -> None:
    folder = _copy_model(tmp_path, pooling)
    texts = _texts()
    got = Model("copy", "path", folder, "cpu").embedder.encode(texts, batch_size=5)
    want = _st_vectors(folder, texts)
    assert (got * want).sum(axis=1).min() >= 0.99999


def test_bfloat16_equals_torch_autocast() -> None:
    """--fast through torch_bert is sentence-transformers under bfloat16
    autocast, the arithmetic the numpy query encoder reproduces."""
    folder = bundled_model_path()
    texts = _texts()
    ours = Model(BUNDLED_MODEL, BUNDLED_SOURCE, folder, "cpu", "bfloat16").embedder
    assert isinstance(ours, TorchBertEmbedder)
    got = ours.encode(texts)
    ref = SentenceTransformerEmbedder(
        BUNDLED_MODEL, BUNDLED_SOURCE, folder, "cpu", precision="bfloat16"
    ).encode(texts)
    f32 = Model(BUNDLED_MODEL, BUNDLED_SOURCE, folder, "cpu").embedder.encode(texts)
    same = (got * ref).sum(axis=1)
    assert same.min() >= 0.9999
    assert same.mean() > (f32 * ref).sum(axis=1).mean()  # autocast's rounding, not float32's
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_vectors() -> None:
    emb = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu").embedder
    texts = _texts()
    one = emb.encode(texts, batch_size=1)
    many = emb.encode(texts, batch_size=64)
    assert (one * many).sum(axis=1).min() >= 0.99999
    assert emb.encode([]).shape == (0, emb.record.dim)


def test_batches_in_any_order_and_mix_of_lengths_give_the_same_vectors() -> None:
    """Regression guard: a batch is padded to its longest text wherever that
    text sits, not assumed to come first."""
    emb = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu").embedder
    assert isinstance(emb, TorchBertEmbedder)
    texts = _texts()
    want = emb.encode(texts)
    got = emb.impl.encode(
        texts,
        lambda lengths: [
            list(range(i, min(i + 3, len(lengths)))) for i in range(0, len(lengths), 3)
        ],
    )
    assert (got * want).sum(axis=1).min() >= 0.99999


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_onednn_linears_equal_plain_torch_linears(precision: str) -> None:
    """The CPU default (oneDNN, packed weights, GELU fused) against the
    F.linear path that GPUs and torch builds without oneDNN take."""
    from msearch.torch_bert import TorchBert, onednn_linear_available

    if not onednn_linear_available():
        pytest.skip("this torch has no oneDNN linear")
    emb = Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu", precision).embedder
    assert isinstance(emb, TorchBertEmbedder) and emb.impl.onednn
    texts = _texts()
    plain = TorchBert(emb.impl.spec, "cpu", precision, onednn=False)
    assert not plain.onednn

    def batches(lengths: list[int]) -> list[list[int]]:
        return [list(range(len(lengths)))]

    got, want = emb.impl.encode(texts, batches), plain.encode(texts, batches)
    assert (got * want).sum(axis=1).min() >= (0.99999 if precision == "float32" else 0.9999)


def test_models_with_a_dense_layer_stay_on_sentence_transformers(tmp_path: Path) -> None:
    """torch_bert covers BERT + pooling (+ normalize); anything more is
    sentence-transformers' job, with its vectors."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(bundled_model_path()), device="cpu")
    torch.manual_seed(0)
    dense = models.Dense(384, 128, activation_function=torch.nn.Tanh())
    folder = tmp_path / "with-dense"
    SentenceTransformer(modules=[base[0], base[1], dense], device="cpu").save(str(folder))

    model = Model("dense", "path", folder, "cpu")
    assert isinstance(model.embedder, SentenceTransformerEmbedder)
    assert model.record.dim == 128
    texts = _texts()
    got = model.embedder.encode(texts)
    want = _st_vectors(folder, texts)
    assert (got * want).sum(axis=1).min() >= 0.99999


def test_allocator_setting_applies_on_glibc() -> None:
    import platform

    from msearch.torch_bert import keep_freed_memory

    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
