"""A model's weights as numpy arrays, read in place from ``.safetensors``.

Both of msearch's encoders read weights here: the numpy query encoder uses
them as they are (memory-mapped: a cold query touches only what it needs),
the torch indexing encoder copies them into tensors once.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from msearch.encoders.spec import ModelSpec
from msearch.errors import ModelUnavailable


class Unsupported(Exception):
    """msearch's own encoders cannot reproduce this model; sentence-transformers runs it."""


_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}


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


# The transformer's weights under these prefixes, whichever class saved them.
PREFIXES = ("bert.", "roberta.", "")


class Weights:
    """The transformer's weights (names without a model prefix) and each
    Dense layer's (weight, bias)."""

    def __init__(self, spec: ModelSpec) -> None:
        raw = read_safetensors(spec.transformer_folder / "model.safetensors")
        for prefix in PREFIXES:
            if f"{prefix}embeddings.word_embeddings.weight" in raw:
                break
        else:
            raise Unsupported("unexpected weight names")
        self.w = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
        self.dense: list[tuple[np.ndarray, np.ndarray | None]] = []
        for d in spec.dense:
            dw = read_safetensors(d.folder / "model.safetensors")
            weight = dw.get("linear.weight")
            if weight is None or weight.shape != (d.out_features, d.in_features):
                raise Unsupported(f"Dense weights in {d.folder} do not match its config")
            self.dense.append((weight, dw.get("linear.bias") if d.bias else None))
        self.dim = int(self.w["embeddings.word_embeddings.weight"].shape[1])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.w[name]
