"""How and where embedding runs: precision, device, batches.

Decided without importing torch wherever possible (bfloat16 support is read
from /proc/cpuinfo), so that choosing costs nothing on the query path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from msearch.errors import UsageError

PRECISIONS = ("float32", "bfloat16")
SMALL_JOB = 64  # passages: below this, embedding on numpy beats importing torch
# Tokens per forward pass (padded batch x length). Smaller batches keep the
# activations in cache: 2,048 tokens ran 1.15x faster than sentence-
# transformers' 32 x 256 on these machines (bench/embed_speed.py).
BATCH_TOKENS = 2048
# Texts per batch when none is asked for. On a GPU, batches of 1,024
# length-sorted passages are where a bare forward pass reaches its rate (the
# issue's measurement on an H200); 32 leaves most of the device idle.
CPU_BATCH = 32
GPU_BATCH = 1024

Notice = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def quiet_libraries() -> None:
    """No download attempts, progress bars or info logs from the HF stack.

    The folder is already resolved on disk, so the hub is never needed here;
    offline mode turns a missing file into an immediate error, not a hang.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:
        pass


def token_batches(lengths: Sequence[int], max_batch: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each at most ``max_batch``
    texts and (padded) ``max_tokens`` tokens, but never empty.

    Why: the cost of a batch is its padded size, and on CPU small batches of
    long texts run faster than large ones (the activations stay in cache),
    while short texts still go in large batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * max(width, 1) > max_tokens):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def device_batches(
    lengths: Sequence[int], device: str, batch_size: int | None, max_len: int
) -> list[list[int]]:
    """``token_batches`` with the budget for ``device``: BATCH_TOKENS on CPU,
    where it is a cache effect; whole batches of ``batch_size`` on a GPU.
    Without a ``batch_size``, CPU_BATCH or GPU_BATCH."""
    if batch_size is None:
        batch_size = CPU_BATCH if device == "cpu" else GPU_BATCH
    budget = BATCH_TOKENS if device == "cpu" else batch_size * max_len
    return token_batches(lengths, batch_size, budget)


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Read from /proc/cpuinfo rather than asked of torch, so that deciding the
    precision of an index never imports torch. Without these instructions
    torch emulates bfloat16, slower than float32.
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r} (use {' or '.join(PRECISIONS)})")


def resolve_precision(requested: str, device: str, notice: Notice = _stderr) -> str:
    """The precision to index in: bfloat16 only where the hardware has it."""
    check_precision(requested)
    if requested == "float32":
        return requested
    if device in ("auto", "cuda"):
        import torch  # only asked for bfloat16, a big job: the import is paid anyway

        if torch.cuda.is_available():
            if torch.cuda.is_bf16_supported():
                return requested
            device = "cuda"
    if device != "cuda" and cpu_has_bfloat16():
        return requested
    notice(
        "msearch: this machine has no native bfloat16 (AVX-512 BF16, AMX or a recent GPU); "
        "indexing in float32"
    )
    return "float32"


def pick_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise UsageError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    return device


def check_device(device: str) -> None:
    """A device that was asked for by name must exist: one line, not torch's
    assertion deep inside the first batch."""
    if device not in ("cuda", "mps"):
        return
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device"
        raise UsageError(f"--device cuda: {why}; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: not available here; use --device cpu or auto")
