"""Query-time encoder: a BERT forward pass in numpy over memory-mapped weights.

Why not torch or ONNX Runtime here: a query is one short text through a
6-layer encoder, a few milliseconds of arithmetic. Importing torch costs
seconds; ONNX Runtime costs its import plus ~0.12 s to build a session for
this model on these machines, which alone breaks a 0.5 s cold-query budget
(measurements in bench/RESULTS.md). numpy is already loaded for the search,
and the weights are read in place from the model's own ``model.safetensors``
through ``np.memmap``, so start-up work is close to nothing.

Scope: BERT-architecture encoders (BERT, MiniLM, ...) with mean, CLS or max
pooling and optional normalization, which covers the default and the bundled
model. Other architectures fall back to sentence-transformers. The output
matches sentence-transformers to cosine >= 0.9999 (tested).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msearch.errors import ModelUnavailable

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}


class Unsupported(Exception):
    """This model cannot run on the numpy path; use sentence-transformers."""


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Memory-map every tensor of a ``.safetensors`` file as float32 (or int64).

    The format is an 8-byte header length, a JSON header of offsets, then raw
    little-endian data, so a memmap plus slicing is a zero-copy reader.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(n))
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
    except (OSError, ValueError, struct.error) as exc:
        raise ModelUnavailable(f"{path}: unreadable weights ({exc})") from None
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES.get(info["dtype"])
            if dtype is None:
                raise Unsupported(f"tensor dtype {info['dtype']}")
            start, end = (int(v) for v in info["data_offsets"])
            shape = [int(v) for v in info["shape"]]
            # A truncated or damaged file must be an error, not a reshape
            # traceback or a tensor read from the wrong bytes.
            expected = math.prod(shape) * np.dtype(dtype).itemsize
            if not 0 <= start <= end <= len(raw) - base or end - start != expected:
                raise ValueError(f"tensor {name} does not fit the file (truncated?)")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelUnavailable(f"{path}: damaged weights ({exc})") from None
        arr = raw[base + start : base + end].view(dtype).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            arr = arr.astype(np.float32)
        out[name] = arr
    return out


_ERFC_COEFFS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf-based) GELU, as BERT's "gelu" is; numpy has no erf.

    erf comes from Numerical Recipes' Chebyshev fit of erfc (fractional
    error below 1.2e-7, under float32 resolution), evaluated in place to
    keep temporaries out of the hot loop.
    """
    z = np.abs(x) * np.float32(1 / math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_COEFFS[-1])
    for c in reversed(_ERFC_COEFFS[:-1]):
        poly *= t
        poly += np.float32(c)
    np.square(z, out=z)
    poly -= z
    np.exp(poly, out=poly)
    poly *= t  # erfc(|x| / sqrt 2)
    # 0.5 * x * (1 + erf(x / sqrt 2)), with erf(-a) = -erf(a)
    erf = np.where(x >= 0, 1.0 - poly, poly - 1.0)
    erf += 1.0
    erf *= x
    erf *= 0.5
    return erf.astype(np.float32, copy=False)


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to bfloat16 (nearest, ties to even) and held as float32.

    Why: an index made in bfloat16 (``--fast``) must get its queries in the
    same precision, and numpy has no bfloat16. torch's CPU autocast rounds
    the inputs and outputs of every matrix product to bfloat16 and
    accumulates in float32; rounding the same tensors here reproduces it.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    r = u >> 16  # in place from here: a query rounds ~22M weights once
    r &= np.uint32(1)
    r += np.uint32(0x7FFF)
    r += u
    r &= np.uint32(0xFFFF0000)
    out = r.view(np.float32)
    nan = np.isnan(x)  # rounding may carry a NaN's payload into the sign bit
    if nan.any():
        out[nan] = np.nan
    return out


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class NumpyBert:
    """Sentence embeddings from a sentence-transformers BERT folder, numpy only."""

    def __init__(
        self, folder: Path, max_seq_length: int | None = None, precision: str = "float32"
    ) -> None:
        from msearch.embed import PRECISIONS, read_model_config

        if precision not in PRECISIONS:
            raise Unsupported(f"precision {precision!r}")
        self.precision = precision
        # bfloat16: what torch.autocast does on the CPU, see to_bfloat16.
        self._round = to_bfloat16 if precision == "bfloat16" else _same
        self._rounded: dict[str, np.ndarray] = {}

        self.folder = Path(folder)
        try:
            config = json.loads((self.folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise Unsupported(f"no config.json ({exc})") from None
        if config.get("model_type") != "bert":
            raise Unsupported(f"model type {config.get('model_type')!r} is not BERT")
        if config.get("hidden_act", "gelu") != "gelu":
            raise Unsupported(f"activation {config.get('hidden_act')!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise Unsupported("non-absolute position embeddings")
        st_cfg = read_model_config(self.folder)
        if st_cfg["has_dense"]:
            raise Unsupported("a Dense layer after pooling")
        pooling = st_cfg["pooling"]
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes not in (
            ["pooling_mode_mean_tokens"],
            ["pooling_mode_cls_token"],
            ["pooling_mode_max_tokens"],
        ):
            raise Unsupported(f"pooling {modes}")
        self.pooling = modes[0]
        self.normalize = bool(st_cfg["normalize"])
        self.lowercase = bool(st_cfg["do_lower_case"])
        self.max_seq_length = int(max_seq_length or st_cfg["max_seq_length"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        weights_path = self.folder / "model.safetensors"
        if not weights_path.exists():
            raise Unsupported("no model.safetensors")
        w = read_safetensors(weights_path)
        prefix = "bert." if any(k.startswith("bert.") for k in w) else ""
        self.w = {k[len(prefix) :]: v for k, v in w.items() if k.startswith(prefix)}
        if "embeddings.word_embeddings.weight" not in self.w:
            raise Unsupported("unexpected weight names")
        self.dim = int(self.w["embeddings.word_embeddings.weight"].shape[1])
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # tokenizer.json may carry its own truncation/padding (128, fixed);
        # sentence-transformers overrides both with max_seq_length.
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer = tok

    def token_count(self, text: str) -> int:
        """Tokens the model would see before truncation (for the long-query notice)."""
        from tokenizers import Tokenizer

        tok: Tokenizer = self.tokenizer
        tok.no_truncation()
        try:
            return len(tok.encode(self._prep(text)).ids)
        finally:
            tok.enable_truncation(max_length=self.max_seq_length)

    def _prep(self, text: str) -> str:
        # What sentence-transformers' Transformer.tokenize does before tokenizing.
        text = str(text).strip()
        return text.lower() if self.lowercase else text

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Hidden states (batch, length, dim) for padded ``ids`` with ``mask``."""
        w = self.w
        b, n = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        h = self.heads
        d = self.dim // h
        scale = 1.0 / math.sqrt(d)
        # Padding keys get a large negative bias: they receive ~0 attention,
        # exactly as in the reference implementation.
        bias = np.where(mask[:, None, None, :], 0.0, np.finfo(np.float32).min).astype(np.float32)
        r = self._round
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(name: str, inp: np.ndarray, p: str = p) -> np.ndarray:
                # 2-D so that numpy hands the whole batch to one BLAS call.
                flat = r(inp.reshape(b * n, inp.shape[-1]))
                out = flat @ self._weight(p + name + ".weight").T + self._weight(p + name + ".bias")
                return r(out).reshape(b, n, -1)

            q = lin("attention.self.query", x).reshape(b, n, h, d).transpose(0, 2, 1, 3)
            k = lin("attention.self.key", x).reshape(b, n, h, d).transpose(0, 2, 3, 1)
            v = lin("attention.self.value", x).reshape(b, n, h, d).transpose(0, 2, 1, 3)
            scores = (q @ k) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = r(r(probs) @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            x = _layer_norm(
                x + lin("attention.output.dense", ctx),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            inter = r(_gelu(lin("intermediate.dense", x)))
            x = _layer_norm(
                x + lin("output.dense", inter),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        return np.asarray(x, dtype=np.float32)

    def _weight(self, name: str) -> np.ndarray:
        """A weight in the precision of the matrix products (rounded once)."""
        if self._round is _same:
            return self.w[name]
        got = self._rounded.get(name)
        if got is None:
            got = self._rounded[name] = self._round(self.w[name])
        return got

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = mask[:, :, None]
        if self.pooling == "pooling_mode_cls_token":
            return hidden[:, 0]
        if self.pooling == "pooling_mode_max_tokens":
            return np.where(m, hidden, -1e9).max(1)
        return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """One normalized row per text.

        Texts are batched by similar length (little padding) because the
        weights are read from memory once per batch: on these machines one
        pass over them costs more than the arithmetic for a short query.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encs = self.tokenizer.encode_batch([self._prep(t) for t in texts])
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            n = max(len(encs[i].ids) for i in rows)
            ids = np.zeros((len(rows), n), dtype=np.int64)
            types = np.zeros((len(rows), n), dtype=np.int64)
            mask = np.zeros((len(rows), n), dtype=bool)
            for j, i in enumerate(rows):
                m = len(encs[i].ids)
                ids[j, :m] = encs[i].ids
                types[j, :m] = encs[i].type_ids
                mask[j, :m] = True
            vecs = self._pool(self._forward(ids, types, mask), mask)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            out[rows] = vecs / np.maximum(norms, 1e-12)
        return out
