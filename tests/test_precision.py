"""Token-budget batching and the bfloat16 fast mode (issue 6).

The unit tests need no model; the ones marked ``model`` index sample_corpus
with the bundled model in both precisions. bfloat16 support is forced on
where a test needs the bfloat16 path, so they run the same on CPUs without
it (torch then emulates bfloat16: slower, same rounding).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import msearch.encoders
from clihelp import invoke
from conftest import SAMPLE
from msearch.encoders import (
    CPU_BATCH,
    GPU_BATCH,
    cpu_has_bfloat16,
    device_batches,
    resolve_precision,
    token_batches,
)
from msearch.encoders.numpy_encoder import to_bfloat16
from msearch.errors import UsageError
from msearch.storage import reader

# ------------------------------------------------------------------ batching


@given(
    st.lists(st.integers(min_value=0, max_value=300), max_size=200),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=1, max_value=4096),
)
def test_token_batches_cover_every_text_once_within_limits(
    lengths: list[int], max_batch: int, max_tokens: int
) -> None:
    batches = token_batches(lengths, max_batch, max_tokens)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(b for b in batches)
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert len(b) <= max_batch
        padded = len(b) * max(lengths[i] for i in b)
        assert len(b) == 1 or padded <= max_tokens


def test_token_batches_put_short_texts_in_big_batches() -> None:
    lengths = [256] * 16 + [16] * 64
    sizes = [len(b) for b in token_batches(lengths, 32, 2048)]
    assert sizes == [8, 8, 32, 32]


def test_device_batches_cap_tokens_on_cpu_only() -> None:
    lengths = [256] * 64
    assert [len(b) for b in device_batches(lengths, "cpu", 32, 256)] == [8] * 8
    assert [len(b) for b in device_batches(lengths, "cuda", 32, 256)] == [32, 32]


def test_batch_size_defaults_by_device() -> None:
    """No --batch-size: 32 passages at most on CPU, 1,024 on a GPU (where 32
    leaves the device mostly idle)."""
    short = [20] * 3000
    assert max(len(b) for b in device_batches(short, "cpu", None, 256)) == CPU_BATCH == 32
    assert [len(b) for b in device_batches(short, "cuda", None, 256)] == [1024, 1024, 952]
    assert GPU_BATCH == 1024


# ------------------------------------------------------------ bfloat16 maths


def test_to_bfloat16_rounds_to_nearest_even() -> None:
    ulp = 2.0**-7  # bfloat16 keeps 7 fraction bits
    x = np.array(
        [1.0, 1 + ulp / 2, 1 + 3 * ulp / 2, 1 + ulp * 0.49, -2.5, 0.0, math.inf, -math.inf],
        dtype=np.float32,
    )
    got = to_bfloat16(x)
    want = [1.0, 1.0, 1 + 2 * ulp, 1.0, -2.5, 0.0, math.inf, -math.inf]
    assert got.tolist() == want
    assert math.isnan(float(to_bfloat16(np.array([math.nan], dtype=np.float32))[0]))


@given(
    st.lists(
        st.floats(
            min_value=-(2.0**100),
            max_value=2.0**100,
            allow_nan=False,
            allow_subnormal=False,
            width=32,
        ),
        min_size=1,
        max_size=50,
    )
)
def test_to_bfloat16_is_within_half_an_ulp(values: list[float]) -> None:
    x = np.array(values, dtype=np.float32)
    got = to_bfloat16(x)
    assert not (got.view(np.uint32) & 0xFFFF).any()  # representable in bfloat16
    assert np.all(np.abs(got - x) <= np.abs(x) * 2.0**-8 + 1e-38)


# ------------------------------------------------------------ hardware checks


def test_cpu_has_bfloat16_reads_the_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_vnni\n")
    assert not cpu_has_bfloat16(str(info))
    info.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_bf16\n")
    assert cpu_has_bfloat16(str(info))
    info.write_text("flags : fpu amx_bf16 amx_tile\n")
    assert cpu_has_bfloat16(str(info))
    assert not cpu_has_bfloat16(str(tmp_path / "missing"))


def test_resolve_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    assert resolve_precision("float32", "cpu", said.append) == "float32"
    monkeypatch.setattr(msearch.encoders.policy, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("bfloat16", "cpu", said.append) == "bfloat16"
    assert resolve_precision("bfloat16", "auto", said.append) == "bfloat16"  # no GPU here
    assert said == []
    monkeypatch.setattr(msearch.encoders.policy, "cpu_has_bfloat16", lambda: False)
    assert resolve_precision("bfloat16", "cpu", said.append) == "float32"
    assert len(said) == 1 and "bfloat16" in said[0] and "float32" in said[0]
    with pytest.raises(UsageError):
        resolve_precision("float8", "cpu", said.append)


def test_fast_and_another_precision_is_a_usage_error(tmp_path: Path, use_fake) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("hello\n")
    r = invoke("index", str(tmp_path / "c"), "--fast", "--precision", "float32")
    assert r.exit_code == 2
    assert "--fast" in r.output and "Traceback" not in r.output


# ------------------------------------------------------- with the real model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("prec") / "c"
    shutil.copytree(SAMPLE, dst, ignore=shutil.ignore_patterns(".msearch"))
    return dst


def _index(*args: str) -> str:
    r = invoke("index", *args)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.model
def test_token_batched_encode_equals_sentence_transformers() -> None:
    """The default path's vectors are sentence-transformers' own (batch 32)."""
    from sentence_transformers import SentenceTransformer

    from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path

    texts = [
        p.read_text(encoding="utf-8")[: 200 + 60 * i]
        for i, p in enumerate(sorted(SAMPLE.rglob("*.md")) + sorted(SAMPLE.rglob("*.txt")))
    ]
    texts += ["", "one word", "ünïcode ✓ 日本語"]
    ours = (
        Model(BUNDLED_MODEL, BUNDLED_SOURCE, bundled_model_path(), "cpu")
        .passage_encoder()
        .encode(texts)
    )
    st_model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    ref = st_model.encode(texts, batch_size=32, normalize_embeddings=True)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.99999


@pytest.mark.model
def test_fast_index_records_bfloat16_and_queries_in_it(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(msearch.encoders.policy, "cpu_has_bfloat16", lambda: True)
    _index(str(corpus), "--full", "-q")
    fp32 = reader.load_index(corpus / ".msearch")
    rows32, v32 = fp32.table()
    assert fp32.meta.model["precision"] == "float32"

    out = _index(str(corpus), "--fast")
    assert "precision changed" in out  # a full rebuild, announced
    bf = reader.load_index(corpus / ".msearch")
    assert bf.meta.model["precision"] == "bfloat16"
    rows_bf, vbf = bf.table()
    assert np.array_equal(rows_bf, rows32)
    cos = (v32 * vbf).sum(axis=1)
    assert cos.min() >= 0.9999 and not np.array_equal(v32, vbf)

    # Re-indexing without a flag keeps bfloat16 (nothing to redo).
    out = _index(str(corpus))
    assert "30 unchanged" in out and "0 embedded" in out
    assert reader.load_index(corpus / ".msearch").meta.model["precision"] == "bfloat16"

    # A small re-index (numpy, no torch) embeds in bfloat16 too.
    target = corpus / "astronomy" / "eclipses.txt"
    target.write_text(target.read_text() + "Eclipse glasses protect your eyes.\n")
    _index(str(corpus), "-q")
    small = reader.load_index(corpus / ".msearch")
    _index(str(corpus), "--full", "-q")
    full = reader.load_index(corpus / ".msearch")
    assert full.meta.model["precision"] == "bfloat16"
    cos = (small.table()[1] * full.table()[1]).sum(axis=1)
    assert cos.min() >= 0.9999

    r = invoke("status", "--index", str(corpus / ".msearch"))
    assert "bfloat16" in r.output
    r = invoke(
        "query",
        "when is the next solar eclipse",
        "--index",
        str(corpus / ".msearch"),
        "--format",
        "jsonl",
        "-k",
        "1",
    )
    assert r.exit_code == 0, r.output
    assert "eclipses" in json.loads(r.output.splitlines()[0])["path"]


@pytest.mark.model
def test_fast_without_hardware_support_stays_float32(
    corpus: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(msearch.encoders.policy, "cpu_has_bfloat16", lambda: False)
    small = tmp_path / "c"
    shutil.copytree(corpus / "astronomy", small)
    out = _index(str(small), "--fast")
    assert "no native bfloat16" in out
    assert reader.load_index(small / ".msearch").meta.model["precision"] == "float32"


@pytest.mark.model
def test_numpy_bfloat16_queries_match_torch_autocast() -> None:
    """Queries on a bfloat16 index are embedded as torch's autocast would."""
    from msearch.encoders import BUNDLED_MODEL, BUNDLED_SOURCE, Model, bundled_model_path
    from msearch.encoders.numpy_encoder import NumpyEncoder
    from msearch.encoders.spec import read_spec

    folder = bundled_model_path()
    queries = [
        ln.strip()
        for p in sorted(SAMPLE.rglob("*.md"))
        for ln in p.read_text(encoding="utf-8").splitlines()
        if ln.strip()
    ][:150]
    queries += ["", "?", "ünïcode ✓ 日本語", "why " * 300]
    torch_bf = Model(BUNDLED_MODEL, BUNDLED_SOURCE, folder, "cpu", "bfloat16").passage_encoder()
    ref = torch_bf.encode(queries)
    np_bf = NumpyEncoder(read_spec(folder), precision="bfloat16").encode(queries)
    np_32 = NumpyEncoder(read_spec(folder)).encode(queries)
    same = (np_bf * ref).sum(axis=1)
    other = (np_32 * ref).sum(axis=1)
    assert same.min() >= 0.9999
    assert same.mean() > other.mean()  # closer to autocast than float32 is


@pytest.mark.model
def test_float16_checkpoint_embeds_in_float32(tmp_path: Path) -> None:
    """Regression: transformers 5 kept a float16 checkpoint's dtype, and
    sentence-transformers on the CPU then failed in LayerNorm ("mixed dtype")."""
    from safetensors.numpy import load_file, save_file

    from msearch.encoders import Model, bundled_model_path
    from msearch.encoders.numpy_encoder import NumpyEncoder
    from msearch.encoders.spec import read_spec

    src = bundled_model_path()
    folder = tmp_path / "minilm-fp16"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v.astype(np.float16) for k, v in weights.items()}, str(folder / "model.safetensors")
    )
    texts = [p.read_text(encoding="utf-8")[:600] for p in sorted(SAMPLE.rglob("*.md"))]
    got = Model("fp16 copy", "path", folder, "cpu").passage_encoder().encode(texts)
    want = NumpyEncoder(read_spec(folder)).encode(texts)  # float16 weights read as float32
    assert ((got * want).sum(axis=1)).min() >= 0.9999
