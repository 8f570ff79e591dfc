"""Query-time encoder: the transformer forward pass in numpy, weights memory-mapped.

Why not torch or ONNX Runtime here: a query is one short text through a
small encoder, a few milliseconds of arithmetic. Importing torch costs
seconds; ONNX Runtime costs its import plus ~0.12 s to build a session,
which alone breaks a cold-query budget (bench/RESULTS.md). numpy is loaded
for the search anyway, and the weights are read in place from the model's
own ``model.safetensors`` through ``np.memmap``: a cold query touches only
what it needs.

Scope (msearch.encoders.spec decides): BERT and the RoBERTa / XLM-RoBERTa
family (positions after the padding index, one token type), CLS, mean or
max pooling (with or without the prompt's tokens), Dense layers and
Normalize, and the model's query and document prompts. Anything else runs
on sentence-transformers. Vectors equal sentence-transformers' to cosine
>= 0.9999 (tests/test_encoders.py, per family, pooling and prompt).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from msearch.encoders.spec import ModelSpec
from msearch.encoders.tokenizer import load_tokenizer, prompt_length
from msearch.encoders.weights import Unsupported, Weights

PRECISIONS = ("float32", "bfloat16")

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


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "gelu":
        return _gelu(x)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    return x  # identity


class NumpyEncoder:
    """Sentence vectors from a model folder that msearch's encoders support
    (see ``ModelSpec.unsupported``), numpy only."""

    def __init__(
        self,
        spec: ModelSpec,
        precision: str = "float32",
        weights: Weights | None = None,
        tokenizer: Any = None,
    ) -> None:
        if spec.unsupported:
            raise Unsupported(spec.unsupported[0])
        if precision not in PRECISIONS:
            raise Unsupported(f"precision {precision!r}")
        self.spec = spec
        self.precision = precision
        # bfloat16: what torch.autocast does on the CPU, see to_bfloat16.
        self._round = to_bfloat16 if precision == "bfloat16" else _same
        self._rounded: dict[str, np.ndarray] = {}
        self.w = weights or Weights(spec)
        cfg = spec.config
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.dim = self.w.dim
        self.out_dim = spec.dim
        self.pooling = spec.pooling[0]
        self.offset = spec.position_offset
        self.tokenizer = tokenizer or load_tokenizer(spec)

    def token_count(self, text: str) -> int:
        """Tokens the model would see before truncation (for the long-query notice)."""
        tok = self.tokenizer
        tok.no_truncation()
        try:
            return len(tok.encode(text).ids)
        finally:
            tok.enable_truncation(max_length=self.spec.max_seq_length)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Hidden states (batch, length, dim) for padded ``ids`` with ``mask``."""
        w = self.w
        b, n = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][self.offset : self.offset + n]
            + w["embeddings.token_type_embeddings.weight"][0]
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
        if self.pooling == "cls":
            # The first token that counts: [CLS], or the first after the prompt.
            first = mask.argmax(1)
            return hidden[np.arange(len(hidden)), first]
        if self.pooling == "max":
            return np.where(m, hidden, -1e9).max(1)
        return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def _head(self, vecs: np.ndarray) -> np.ndarray:
        """The Dense layers after pooling (their products in the encoder's precision)."""
        r = self._round
        for spec, (weight, bias) in zip(self.spec.dense, self.w.dense, strict=True):
            vecs = r(r(vecs) @ r(np.asarray(weight)).T)
            if bias is not None:
                vecs = vecs + bias
            vecs = _activation(spec.activation, vecs).astype(np.float32)
        return vecs

    def encode(self, texts: Sequence[str], prompt: str = "", batch_size: int = 32) -> np.ndarray:
        """One normalized row per text, ``prompt`` in front of each.

        Texts are batched by similar length (little padding) because the
        weights are read from memory once per batch: on these machines one
        pass over them costs more than the arithmetic for a short query.
        """
        out = np.zeros((len(texts), self.out_dim), dtype=np.float32)
        if not len(texts):
            return out
        skip = (
            prompt_length(self.tokenizer, prompt) if prompt and not self.spec.include_prompt else 0
        )
        encs = self.tokenizer.encode_batch([prompt + t for t in texts] if prompt else list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            n = max(len(encs[i].ids) for i in rows)
            ids = np.zeros((len(rows), n), dtype=np.int64)
            mask = np.zeros((len(rows), n), dtype=bool)
            for j, i in enumerate(rows):
                m = len(encs[i].ids)
                ids[j, :m] = encs[i].ids
                mask[j, :m] = True
            hidden = self._forward(ids, mask)
            pool_mask = mask.copy()
            pool_mask[:, :skip] = False  # the prompt's tokens left out of pooling
            vecs = self._head(self._pool(hidden, pool_mask))
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            out[rows] = vecs / np.maximum(norms, 1e-12)
        return out
