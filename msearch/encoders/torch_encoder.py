"""Indexing encoder: the transformer forward pass in torch, written out by hand.

Why not ``SentenceTransformer.encode``: on these 2-core machines its matrix
products already run at the CPU's peak, so the time to win is around them.
Here the query, key and value projections are one matrix product instead of
three, attention reads them in place, the weights are cast to bfloat16 once
(``--fast``) instead of at every product and, on CPU, packed once into
oneDNN's layout with GELU fused into its linear layer, and nothing is moved
or checked per batch that does not need to be. Measured side by side in
bench/embed_speed.py. Vectors equal sentence-transformers' to cosine >=
0.99999 in float32, and its bfloat16-autocast ones to >= 0.9999 (tested).

Model facts (config, weights, tokenizer, pooling, Dense layers, prompts)
come from the query-time encoder (``NumpyEncoder``), so both paths read a
model folder the same way and accept the same models (BERT and the
RoBERTa / XLM-RoBERTa family); anything else stays on sentence-transformers.

bfloat16 follows torch's autocast rule, which is what the numpy query
encoder reproduces (``bert.to_bfloat16``): matrix products and attention
take bfloat16 inputs and accumulate in float32; the residual stream,
LayerNorm, embeddings and pooling stay float32. (The fused GELU reads the
float32 accumulator where autocast rounds it to bfloat16 first.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from msearch.encoders.numpy_encoder import NumpyEncoder
from msearch.encoders.tokenizer import prompt_length

if TYPE_CHECKING:
    import torch


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks instead of unmapping them.

    Why: every layer of a CPU batch allocates activations of a few MB to a
    few tens of MB; above glibc's mmap threshold each one is a fresh mapping
    whose pages fault in one by one, and freeing it hands them back. Keeping
    them made float32 indexing ~5% faster here (bench/embed_speed.py). Peak
    memory is unchanged: what is kept is what a batch needs anyway. Only for
    processes that index; returns False where the C library is not glibc.
    """
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        return False
    return bool(ok)


def _tensor(arr: np.ndarray, device: str, dtype: Any = None) -> torch.Tensor:
    import torch

    # np.array: the weights are a read-only memmap, torch wants its own copy.
    t = torch.from_numpy(np.array(arr, dtype=np.float32))
    return t.to(device=device, dtype=dtype or torch.float32)


@functools.cache
def onednn_linear_available(precision: str = "float32") -> bool:
    """Whether this torch has oneDNN's CPU linear with prepacked weights and
    fused activations (the operator torch.compile's CPU backend emits) for
    ``precision`` on this CPU. Asked per precision: oneDNN's bfloat16 path
    needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, and on a CPU with only
    AVX2 it refuses bfloat16 weights while float32 ones work."""
    import torch

    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.zeros(2, 2, dtype=dtype), None)
        torch.ops.mkldnn._linear_pointwise(
            torch.zeros(1, 2, dtype=dtype), w, torch.zeros(2, dtype=dtype), "gelu", [], "none"
        )
    except (AttributeError, RuntimeError):
        return False
    return True


class TorchEncoder:
    """Normalized sentence vectors from a supported model folder, batched
    for throughput."""

    def __init__(
        self,
        spec: NumpyEncoder,
        device: str = "cpu",
        precision: str = "float32",
        onednn: bool | None = None,
    ) -> None:
        """``onednn`` (default: on CPU, where torch has it): linear layers
        through oneDNN with weights packed once into its blocked layout and
        GELU applied to the accumulator. Measured here against ``F.linear``
        (MKL) on 2,048-token batches: 11% faster in float32, 3-5% in
        bfloat16, where it also drops a rounding before GELU."""
        import torch

        self.spec = spec
        self.device = device
        self.low = torch.bfloat16 if precision == "bfloat16" else torch.float32
        if onednn is None:
            onednn = device == "cpu" and onednn_linear_available(precision)
        self.onednn = onednn
        w = spec.w

        def lin(*names: str) -> tuple[torch.Tensor, torch.Tensor]:
            """One linear layer from one or more stacked along the output."""
            weight = _tensor(np.concatenate([w[n + ".weight"] for n in names]), device, self.low)
            if onednn:
                weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            bias = np.concatenate([w[n + ".bias"] for n in names])
            return weight, _tensor(bias, device, self.low)

        def norm(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            return _tensor(w[name + ".weight"], device), _tensor(w[name + ".bias"], device)

        self.word = _tensor(w["embeddings.word_embeddings.weight"], device)
        self.position = _tensor(w["embeddings.position_embeddings.weight"], device)
        # Single texts only: every token has type 0.
        self.token_type = _tensor(w["embeddings.token_type_embeddings.weight"][0], device)
        self.embed_norm = norm("embeddings.LayerNorm")
        self.offset = spec.offset
        self.dense = [
            (
                _tensor(weight, device, self.low),
                None if bias is None else _tensor(bias, device, self.low),
                d.activation,
            )
            for d, (weight, bias) in zip(spec.spec.dense, spec.w.dense, strict=True)
        ]
        self.layers: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        for i in range(spec.layers):
            p = f"encoder.layer.{i}."
            self.layers.append(
                {
                    "qkv": lin(*(f"{p}attention.self.{n}" for n in ("query", "key", "value"))),
                    "attn_out": lin(p + "attention.output.dense"),
                    "attn_norm": norm(p + "attention.output.LayerNorm"),
                    "inter": lin(p + "intermediate.dense"),
                    "out": lin(p + "output.dense"),
                    "out_norm": norm(p + "output.LayerNorm"),
                }
            )

    def _linear(
        self, x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor], gelu: bool = False
    ) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.onednn:
            act, algorithm = ("gelu", "none") if gelu else ("none", "")
            return torch.ops.mkldnn._linear_pointwise(x, *wb, act, [], algorithm)
        y = F.linear(x, *wb)
        return F.gelu(y) if gelu else y

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, padded: bool = True, skip: int = 0
    ) -> torch.Tensor:
        """Pooled, normalized float32 vectors for padded ``ids`` (batch, length);
        the first ``skip`` tokens (a prompt's) left out of pooling.

        ``padded`` is known on the host; asking the mask would wait for the GPU.
        """
        import torch
        import torch.nn.functional as F

        b, n = ids.shape
        dim = self.word.shape[1]
        heads = self.spec.heads
        eps = self.spec.eps
        low = self.low
        x = self.word[ids] + self.position[self.offset : self.offset + n] + self.token_type
        x = F.layer_norm(x, (dim,), *self.embed_norm, eps)
        bias = None
        if padded:
            # Padding keys get the most negative bias: ~0 attention, as in transformers.
            bias = torch.zeros((b, 1, 1, n), dtype=low, device=ids.device)
            bias.masked_fill_(~mask[:, None, None, :], torch.finfo(low).min)
        lin = self._linear
        for p in self.layers:
            qkv = lin(x.to(low), p["qkv"]).view(b, n, 3, heads, dim // heads)
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, batch, heads, length, head dim), a view
            ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
            ctx = ctx.transpose(1, 2).reshape(b, n, dim)
            x = F.layer_norm(x + lin(ctx, p["attn_out"]), (dim,), *p["attn_norm"], eps)
            inter = lin(x.to(low), p["inter"], gelu=True)
            x = F.layer_norm(x + lin(inter, p["out"]), (dim,), *p["out_norm"], eps)
        if skip:
            mask = mask.clone()
            mask[:, :skip] = False
        m = mask[:, :, None]
        pooling = self.spec.pooling
        if pooling == "cls":
            vecs = x[torch.arange(b, device=x.device), mask.int().argmax(1)]
        elif pooling == "max":
            vecs = x.masked_fill(~m, -1e9).amax(1)
        else:
            vecs = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        for weight, dbias, act in self.dense:
            vecs = F.linear(vecs.to(low), weight, dbias).float()
            if act == "tanh":
                vecs = torch.tanh(vecs)
            elif act == "relu":
                vecs = F.relu(vecs)
            elif act == "gelu":
                vecs = F.gelu(vecs)
            elif act == "sigmoid":
                vecs = torch.sigmoid(vecs)
        return F.normalize(vecs, dim=-1)

    def submit(
        self, texts: Sequence[str], batches: Any, prompt: str = ""
    ) -> Callable[[], np.ndarray]:
        """Start embedding ``texts`` (``prompt`` in front of each); the
        returned function gives one normalized row per text.
        ``batches(lengths)`` groups row indices.

        On a GPU nothing here waits for the device: each batch is padded in
        pinned memory and copied asynchronously while earlier batches
        compute, and the vectors come back in one asynchronous copy, so the
        caller can read and chunk the next files meanwhile. On the CPU the
        work is done before this returns.
        """
        import torch

        spec = self.spec
        encs = spec.tokenizer.encode_batch([prompt + t for t in texts] if prompt else list(texts))
        skip = (
            prompt_length(spec.tokenizer, prompt) if prompt and not spec.spec.include_prompt else 0
        )
        lengths = [len(e.ids) for e in encs]
        gpu = self.device != "cpu"
        out = torch.zeros((len(texts), spec.out_dim), device=self.device)
        with torch.inference_mode():
            for rows in batches(lengths):
                n = max(lengths[i] for i in rows)
                # One host buffer per batch: token ids, then each row's length
                # and its place in the output.
                host = np.zeros((len(rows), n + 2), dtype=np.int64)
                for j, i in enumerate(rows):
                    host[j, : lengths[i]] = encs[i].ids
                    host[j, n] = lengths[i]
                    host[j, n + 1] = i
                t = torch.from_numpy(host)
                if self.device == "cuda":
                    t = t.pin_memory()
                t = t.to(self.device, non_blocking=gpu)
                mask = torch.arange(n, device=self.device)[None, :] < t[:, n, None]
                padded = min(lengths[i] for i in rows) < n
                out.index_copy_(0, t[:, n + 1], self.forward(t[:, :n], mask, padded, skip))
        if self.device != "cuda":
            vecs = out.cpu().numpy()
            return lambda: vecs
        back = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        back.copy_(out, non_blocking=True)
        done = torch.cuda.Event()
        done.record()

        def result() -> np.ndarray:
            done.synchronize()
            return back.numpy()

        return result

    def encode(self, texts: Sequence[str], batches: Any, prompt: str = "") -> np.ndarray:
        """``submit`` and wait."""
        return self.submit(texts, batches, prompt)()
