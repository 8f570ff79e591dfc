"""sentence-transformers itself: the reference, and the encoder for every
model msearch's own encoders do not cover.

Queries go through ``encode_query`` and passages through
``encode_document``, so prompts, routing and any module come out exactly as
sentence-transformers makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msearch.encoders.policy import device_batches, pick_device, quiet_libraries
from msearch.errors import ModelUnavailable, UsageError

if TYPE_CHECKING:
    import numpy as np


class SentenceTransformerEncoder:
    """Embeds with sentence-transformers (torch)."""

    def __init__(
        self,
        name: str,
        folder: Path,
        device: str = "cpu",
        precision: str = "float32",
        trust_remote_code: bool = False,
    ) -> None:
        quiet_libraries()
        try:
            import warnings

            import torch
            from sentence_transformers import SentenceTransformer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # float32 whatever the checkpoint stores: transformers 5 would keep
                # float16 weights as they are, which the CPU cannot run mixed
                # with float32 (bfloat16 comes from autocast, see encode).
                self.model = SentenceTransformer(
                    str(folder),
                    device=pick_device(device),
                    model_kwargs={"dtype": torch.float32},
                    trust_remote_code=trust_remote_code,
                    local_files_only=True,
                )
        except UsageError:
            raise
        except Exception as exc:  # safetensors, transformers: any failure to load is the model's
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "trust_remote_code" in first and not trust_remote_code:
                raise ModelUnavailable(
                    f"model {name!r} runs its own code; allow it with --trust-remote-code"
                ) from None
            raise ModelUnavailable(f"could not load model {name!r}: {first}") from None
        self.precision = precision
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim() or 0)
        self.max_seq_length = int(self.model.max_seq_length or 512)

    def _encode(
        self, texts: Sequence[str], kind: str, lengths: Sequence[int], batch_size: int | None
    ) -> np.ndarray:
        """Vectors equal to ``encode_query``'s or ``encode_document``'s
        (float32), or the same under torch's bfloat16 autocast; batched by
        tokens (see BATCH_TOKENS), at most ``batch_size`` texts a batch."""
        import numpy as np
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        device = str(self.model.device).split(":")[0]
        autocast = torch.autocast(
            device_type=device, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"
        )
        encode: Any = self.model.encode_query if kind == "query" else self.model.encode_document
        with autocast:
            for rows in device_batches(lengths, device, batch_size, self.max_seq_length):
                vecs = encode(
                    [texts[i] for i in rows],
                    batch_size=len(rows),
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
                out[rows] = vecs.float().cpu().numpy()
        return out

    def encode_documents(
        self, texts: Sequence[str], lengths: Sequence[int], batch_size: int | None = None
    ) -> np.ndarray:
        return self._encode(texts, "document", lengths, batch_size)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "query", [1] * len(texts), 32)
