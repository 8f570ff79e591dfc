"""Text to vectors: everything that knows about models.

- ``spec``: what a sentence-transformers folder says about itself, read once;
- ``locate``: where a model is (cache, hub, bundled fallback), its record
  and fingerprint;
- ``policy``: precision, device and batches;
- ``tokenizer``: the model's own tokenizer, as sentence-transformers sets it up;
- ``weights``: weights read in place from safetensors;
- ``numpy_encoder``, ``torch_encoder``, ``st_encoder``: the encoders;
- ``model``: the one place that decides which encoder runs.
"""

from msearch.encoders.locate import (
    BUNDLED_MODEL,
    BUNDLED_SOURCE,
    DEFAULT_MODEL,
    ModelRecord,
    bundled_model_path,
    fast_locate,
    fingerprint,
    locate_recorded,
    network_available,
    resolve_model,
    weights_stat,
)
from msearch.encoders.model import (
    Embedder,
    Model,
    Pending,
    embed_async,
    load_model,
    load_recorded,
    token_counter,
)
from msearch.encoders.policy import (
    BATCH_TOKENS,
    CPU_BATCH,
    GPU_BATCH,
    PRECISIONS,
    SMALL_JOB,
    check_device,
    check_precision,
    cpu_has_bfloat16,
    device_batches,
    pick_device,
    quiet_libraries,
    resolve_precision,
    token_batches,
)
from msearch.encoders.spec import ModelSpec, read_spec

__all__ = [
    "BATCH_TOKENS",
    "BUNDLED_MODEL",
    "BUNDLED_SOURCE",
    "CPU_BATCH",
    "DEFAULT_MODEL",
    "GPU_BATCH",
    "PRECISIONS",
    "SMALL_JOB",
    "Embedder",
    "Model",
    "ModelRecord",
    "ModelSpec",
    "Pending",
    "bundled_model_path",
    "check_device",
    "check_precision",
    "cpu_has_bfloat16",
    "device_batches",
    "embed_async",
    "fast_locate",
    "fingerprint",
    "load_model",
    "load_recorded",
    "locate_recorded",
    "network_available",
    "pick_device",
    "quiet_libraries",
    "read_spec",
    "resolve_model",
    "resolve_precision",
    "token_batches",
    "token_counter",
    "weights_stat",
]
