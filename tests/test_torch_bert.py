"""The indexing encoder (msearch/encoders/torch_encoder.py) against sentence-transformers.

Every test here loads the bundled model: the point is that a hand-written
forward pass gives sentence-transformers' vectors, for each pooling mode and
precision, and that models it does not cover still go to
sentence-transformers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_models import set_pooling

from conftest import SAMPLE
from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path, token_counter
from msearch.encoders.st_encoder import SentenceTransformerEncoder

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
    return set_pooling(folder, pooling)


def _model(folder: Path | None = None, precision: str = "float32") -> Model:
    return Model(BUNDLED_MODEL, BUNDLED_SOURCE, folder or bundled_model_path(), "cpu", precision)


def test_bert_models_index_through_the_torch_encoder() -> None:
    model = _model()
    assert model.spec.fast
    texts = _texts()
    got = model.passage_encoder().encode(texts)
    assert model._torch is not None  # msearch's own forward pass ran
    assert (got * _st_vectors(bundled_model_path(), texts)).sum(axis=1).min() >= 0.99999


@pytest.mark.parametrize("pooling", ["pooling_mode_cls_token", "pooling_mode_max_tokens"])
def test_other_poolings_equal_sentence_transformers(tmp_path: Path, pooling: str) -> None:
    folder = _copy_model(tmp_path, pooling)
    texts = _texts()
    got = Model("copy", "path", folder, "cpu").passage_encoder().encode(texts, batch_size=5)
    want = _st_vectors(folder, texts)
    assert (got * want).sum(axis=1).min() >= 0.99999


def test_bfloat16_equals_torch_autocast() -> None:
    """--fast through the torch encoder is sentence-transformers under
    bfloat16 autocast, the arithmetic the numpy query encoder reproduces."""
    folder = bundled_model_path()
    texts = _texts()
    got = _model(folder, "bfloat16").passage_encoder().encode(texts)
    lengths = [n + 2 for n in token_counter(folder).count(texts)]
    ref = SentenceTransformerEncoder(BUNDLED_MODEL, folder, "cpu", "bfloat16").encode_documents(
        texts, lengths
    )
    f32 = _model(folder).passage_encoder().encode(texts)
    same = (got * ref).sum(axis=1)
    assert same.min() >= 0.9999
    assert same.mean() > (f32 * ref).sum(axis=1).mean()  # autocast's rounding, not float32's
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_vectors() -> None:
    emb = _model().passage_encoder()
    texts = _texts()
    one = emb.encode(texts, batch_size=1)
    many = emb.encode(texts, batch_size=64)
    assert (one * many).sum(axis=1).min() >= 0.99999
    assert emb.encode([]).shape == (0, 384)


def test_batches_in_any_order_and_mix_of_lengths_give_the_same_vectors() -> None:
    """Regression guard: a batch is padded to its longest text wherever that
    text sits, not assumed to come first."""
    model = _model()
    texts = _texts()
    want = model.passage_encoder().encode(texts)
    encoder, _ = model._torch_encoder()
    got = encoder.encode(
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
    from msearch.encoders.torch_encoder import TorchEncoder, onednn_linear_available

    if not onednn_linear_available(precision):
        pytest.skip(f"this torch or CPU has no oneDNN linear in {precision}")
    model = _model(precision=precision)
    encoder, _ = model._torch_encoder()
    assert encoder.onednn
    texts = _texts()
    plain = TorchEncoder(encoder.spec, "cpu", precision, onednn=False)
    assert not plain.onednn

    def batches(lengths: list[int]) -> list[list[int]]:
        return [list(range(len(lengths)))]

    got, want = encoder.encode(texts, batches), plain.encode(texts, batches)
    assert (got * want).sum(axis=1).min() >= (0.99999 if precision == "float32" else 0.9999)


def test_onednn_is_asked_per_precision() -> None:
    """Regression: on a CPU with only AVX2, oneDNN takes float32 weights but
    refuses bfloat16 ones; the encoder then took the oneDNN path for
    bfloat16 too and every bfloat16 index failed with an internal error.
    Each precision is probed on its own, and the encoder follows its probe."""
    from msearch.encoders.torch_encoder import onednn_linear_available

    model = _model(precision="bfloat16")
    encoder, _ = model._torch_encoder()
    assert encoder.onednn == onednn_linear_available("bfloat16")
    assert encoder.encode(_texts()[:2], lambda lengths: [[0, 1]]).shape[0] == 2


def test_a_dense_layer_runs_on_msearchs_own_encoders(tmp_path: Path) -> None:
    """A Dense layer after pooling (once sentence-transformers' job alone):
    the torch and numpy encoders apply it, with sentence-transformers' vectors."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(bundled_model_path()), device="cpu")
    torch.manual_seed(0)
    dense = models.Dense(384, 128, activation_function=torch.nn.Tanh())
    folder = tmp_path / "with-dense"
    SentenceTransformer(modules=[base[0], base[1], dense], device="cpu").save(str(folder))

    model = Model("dense", "path", folder, "cpu")
    assert model.spec.fast and model.record.dim == 128
    texts = _texts()
    want = _st_vectors(folder, texts)
    got = model.passage_encoder().encode(texts)
    assert (got * want).sum(axis=1).min() >= 0.99999
    small = model.encode(texts[:10])  # the numpy encoder (a small job)
    assert (small * want[:10]).sum(axis=1).min() >= 0.99999


def test_allocator_setting_applies_on_glibc() -> None:
    import platform

    from msearch.encoders.torch_encoder import keep_freed_memory

    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
