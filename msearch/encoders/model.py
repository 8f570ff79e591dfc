"""A model, and the one place that decides which encoder runs for it.

For passages (indexing): msearch's torch forward pass (torch_encoder) where
the model is one it reproduces exactly, the numpy one for a small job (no
torch import), sentence-transformers otherwise. For queries: the numpy
forward pass where it is exact (and no GPU was asked for),
sentence-transformers otherwise. Every fall-back to sentence-transformers
is said once, in one line, with the reason (``ModelSpec.unsupported``):
never a silent guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from msearch.chunking import HFTokenCounter, TokenCounter
from msearch.encoders.locate import (
    ModelRecord,
    Notice,
    fast_locate,
    fingerprint,
    locate_recorded,
    resolve_model,
    stderr,
    weights_stat,
)
from msearch.encoders.policy import (
    CPU_BATCH,
    SMALL_JOB,
    check_precision,
    device_batches,
    pick_device,
    resolve_precision,
)
from msearch.encoders.spec import ModelSpec, SpecError, read_spec
from msearch.encoders.tokenizer import load_tokenizer, prompt_tokens
from msearch.errors import ModelMismatch, ModelUnavailable
from msearch.storage.layout import FIX_HINT

if TYPE_CHECKING:
    import numpy as np

# Vectors on their way: calling it waits for them (see embed_async).
Pending = Callable[[], "np.ndarray"]


class Embedder(Protocol):
    """What indexing needs from a model: the record the index keeps, a token
    counter for chunking, how many tokens the document prompt takes from
    each passage, and passage vectors (normalized float32, a row a text)."""

    @property
    def record(self) -> ModelRecord: ...

    @property
    def counter(self) -> TokenCounter: ...

    @property
    def document_prompt_tokens(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray: ...

    def query_cache_name(self) -> str | None:
        """A folder name for what queries of this model want cached in the
        index (its vocabulary), or None for nothing."""
        ...

    def write_query_cache(self, folder: Path) -> None:
        """Write that cache into ``folder`` (new, empty, the index's)."""
        ...


def embed_async(embedder: Embedder, texts: Sequence[str], batch_size: int | None = None) -> Pending:
    """Start embedding passages; call the result for the vectors.

    Why: on a GPU the indexer reads and chunks the next files while the
    device works on this window. Embedders that can run ahead of the host
    declare a ``submit``; any other embeds now.
    """
    start = getattr(embedder, "submit", None)
    if start is not None:
        return start(texts, batch_size)  # type: ignore[no-any-return]
    vecs = embedder.encode(texts, batch_size)
    return lambda: vecs


class Model:
    """A resolved model folder: cheap facts now, torch on first use.

    Chunking needs only the tokenizer and the index only the record, so a
    re-index with nothing to embed never imports torch, and a query never
    does unless the model is one only sentence-transformers runs.
    """

    def __init__(
        self,
        name: str,
        source: str,
        folder: Path,
        device: str = "auto",
        precision: str = "float32",
        trust_remote_code: bool = False,
        notice: Notice = stderr,
        vocab_cache: Path | None = None,
    ) -> None:
        """``vocab_cache``: an index's cache of this model's vocabulary
        (msearch.encoders.vocab_cache), for queries."""
        check_precision(precision)
        self.name = name
        self.vocab_cache = vocab_cache
        self.source = source
        self.folder = folder
        self.device = device
        self.precision = precision
        self.trust_remote_code = trust_remote_code
        self.notice = notice
        try:
            self.spec: ModelSpec = read_spec(folder)
        except SpecError as exc:
            raise ModelUnavailable(f"model {name!r}: {exc}") from None
        # The prompts this model puts before queries and passages; an index's
        # model keeps those it was built with (see load_recorded).
        self.query_prompt = self.spec.query_prompt()
        self.document_prompt = self.spec.document_prompt()
        self._record: ModelRecord | None = None
        self._counter: TokenCounter | None = None
        self._numpy: Any = None  # NumpyEncoder; False when the model is not one it runs
        self._torch: Any = None
        self._st: Any = None
        self._said = False

    # ------------------------------------------------------------ facts

    @property
    def counter(self) -> TokenCounter:
        """Token counts for chunking, with the model's own tokenizer (for
        every model: sentence-transformers' own tokenizer where there is no
        ``tokenizer.json``)."""
        if self._counter is None:
            self._counter = HFTokenCounter(self._tokenizer(truncate=False))
        return self._counter

    def _tokenizer(self, truncate: bool) -> Any:
        if (self.spec.transformer_folder / "tokenizer.json").exists():
            return load_tokenizer(self.spec, truncate=truncate)
        st = self._sentence_transformers()
        tok = st.model.tokenizer.backend_tokenizer  # transformers' fast tokenizer, converted
        tok.no_padding()
        tok.no_truncation()
        return tok

    @property
    def document_prompt_tokens(self) -> int:
        """Tokens the document prompt puts before every passage: a passage
        leaves room for them."""
        return prompt_tokens(self.counter.tok, self.document_prompt)  # type: ignore[attr-defined]

    @property
    def record(self) -> ModelRecord:
        if self._record is None:
            dim = self.spec.dim if self.spec.fast else self._sentence_transformers().dim
            self._record = ModelRecord(
                name=self.name,
                source=self.source,
                dim=int(dim),
                max_seq_length=int(self.spec.max_seq_length),
                normalized=bool(self.spec.normalize),
                fingerprint=fingerprint(self.folder),
                precision=self.precision,
                path=str(self.folder),
                weights_stat=weights_stat(self.folder),
                query_prompt=self.query_prompt,
                document_prompt=self.document_prompt,
                trust_remote_code=self.trust_remote_code,
            )
        return self._record

    def _adopt(self, record: ModelRecord) -> None:
        """Use an index's record: its prompts, so queries are prompted as its
        passages were (whatever the folder says now)."""
        self._record = record
        self.query_prompt = record.query_prompt
        self.document_prompt = record.document_prompt

    def with_precision(self, precision: str) -> Model:
        """The same model folder, computing in ``precision``."""
        return Model(
            self.name,
            self.source,
            self.folder,
            self.device,
            precision,
            self.trust_remote_code,
            self.notice,
        )

    # ------------------------------------------------------------ encoders

    def _numpy_encoder(self) -> Any:
        if self._numpy is None:
            from msearch.encoders.numpy_encoder import NumpyEncoder
            from msearch.encoders.weights import Unsupported

            try:
                self._numpy = NumpyEncoder(
                    self.spec, self.precision, tokenizer=self._cached_vocab()
                )
            except Unsupported:
                self._numpy = False
        return self._numpy or None

    def _cached_vocab(self) -> Any:
        """The tokenizer over the index's vocabulary cache, where there is
        an intact one for this model (see vocab_cache); None to load the
        model's own."""
        if self.vocab_cache is None or self.spec.do_lower_case:
            return None
        from msearch.encoders.vocab_cache import CACHE_FILES, CachedVocab, cache_key

        if not self.vocab_cache.name.startswith(f"{cache_key(self.record.fingerprint)}-"):
            return None  # another model's (the index names it; it can come from anywhere)
        from msearch.storage.disk import DataFolder

        try:
            with DataFolder(self.vocab_cache, parent=self.vocab_cache.parent) as folder:
                if not folder.intact(CACHE_FILES):
                    return None
                tok = CachedVocab(
                    folder,
                    self.spec.transformer_folder / "tokenizer.json",
                    int(self.spec.config.get("vocab_size") or 0),
                )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            # Damaged or crafted (a Rust panic included): the full tokenizer is exact too.
            return None
        tok.enable_truncation(self.spec.max_seq_length)
        return tok

    def query_cache_name(self) -> str | None:
        """The key of this model's vocabulary cache (vocab_cache.cache_key)
        if its tokenizer is worth caching; None otherwise."""
        from msearch.encoders.vocab_cache import cache_key, worth_caching

        path = self.spec.transformer_folder / "tokenizer.json"
        if self.spec.do_lower_case or not self.spec.fast or not worth_caching(path):
            return None
        return cache_key(self.record.fingerprint)

    def write_query_cache(self, folder: Path) -> None:
        from msearch.encoders.vocab_cache import write_cache

        write_cache(self.spec.transformer_folder / "tokenizer.json", folder)

    def _sentence_transformers(self) -> Any:
        if self._st is None:
            from msearch.encoders.st_encoder import SentenceTransformerEncoder

            if self.spec.custom_code and not self.trust_remote_code:
                raise ModelUnavailable(
                    f"model {self.name!r} runs code of its own; allow it with --trust-remote-code"
                )

            self._st = SentenceTransformerEncoder(
                self.name, self.folder, self.device, self.precision, self.trust_remote_code
            )
        return self._st

    def _fallback(self) -> Any:
        """sentence-transformers, said once: why msearch's own encoders do not run."""
        if not self._said:
            self._said = True
            reason = "; ".join(self.spec.unsupported) or "a GPU was asked for"
            self.notice(
                f"msearch: {self.name}: msearch's own encoders do not cover this model "
                f"({reason}); sentence-transformers runs it"
            )
        return self._sentence_transformers()

    def _torch_encoder(self) -> Any:
        if self._torch is None:
            from msearch.encoders.torch_encoder import TorchEncoder, keep_freed_memory

            device = pick_device(self.device)
            if device == "cpu":
                keep_freed_memory()
            numpy_encoder = self._numpy_encoder()
            assert numpy_encoder is not None
            self._torch = (TorchEncoder(numpy_encoder, device, self.precision), device)
        return self._torch

    # ------------------------------------------------------------ passages

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self.submit(texts, batch_size)()

    def passage_encoder(self) -> Any:
        """An object whose ``encode(texts, batch_size)`` is what ``msearch
        index`` uses for a large job (never the numpy small-job path): for
        the Ray actors (``msearch index --ray``), benchmarks and the
        retrieval evaluation."""
        model = self

        class BigJobs:
            def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
                return model.submit(texts, batch_size, small_jobs=False)()

        return BigJobs()

    def submit(
        self, texts: Sequence[str], batch_size: int | None = None, small_jobs: bool = True
    ) -> Pending:
        """Passage vectors (the document prompt before each), returning
        before they are ready where the encoder can (a GPU).

        Small jobs (a re-index after a few edits) skip the torch import:
        loading it costs seconds, embedding one passage with numpy ~0.1 s
        more than with torch, so below SMALL_JOB passages numpy finishes first.
        """
        prompt = self.document_prompt
        fast = self._numpy_encoder()
        if fast is not None:
            small = small_jobs and len(texts) <= SMALL_JOB
            if self._torch is None and small and self.device in ("auto", "cpu"):
                vecs = fast.encode(texts, prompt, batch_size or CPU_BATCH)
                return lambda: vecs
            encoder, device = self._torch_encoder()
            max_len = self.spec.max_seq_length
            return encoder.submit(  # type: ignore[no-any-return]
                texts,
                lambda lengths: device_batches(lengths, device, batch_size, max_len),
                prompt,
            )
        st = self._fallback()
        lengths = [min(n + 2, self.spec.max_seq_length) for n in self.counter.count(texts)]
        vecs = st.encode_documents(texts, lengths, batch_size)
        return lambda: vecs

    # ------------------------------------------------------------ queries

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (the query prompt before each): numpy where it is
        exact and no GPU was asked for, sentence-transformers otherwise."""
        fast = self._numpy_encoder() if self.device in ("auto", "cpu") else None
        if fast is not None:
            return fast.encode(texts, self.query_prompt)  # type: ignore[no-any-return]
        return self._fallback().encode_queries(texts)  # type: ignore[no-any-return]

    def query_token_count(self, text: str) -> int:
        """Tokens of a query with its prompt, before truncation."""
        fast = self._numpy_encoder()
        if fast is not None:
            return fast.token_count(self.query_prompt + text)  # type: ignore[no-any-return]
        return self.counter.count([self.query_prompt + text])[0] + 2


def token_counter(folder: Path) -> HFTokenCounter:
    """The token counter of a model folder (its own tokenizer, no truncation)."""
    return HFTokenCounter(load_tokenizer(read_spec(folder), truncate=False))


def load_model(
    name: str | None,
    device: str = "auto",
    notice: Notice = stderr,
    precision: str = "float32",
    trust_remote_code: bool = False,
) -> Model:
    """A model by name (see resolve_model), in ``precision`` where the
    hardware has it (see resolve_precision)."""
    recorded, source, folder = resolve_model(name, notice)
    return Model(
        recorded,
        source,
        folder,
        device,
        resolve_precision(precision, device, notice),
        trust_remote_code,
        notice,
    )


def load_recorded(
    record: ModelRecord,
    device: str = "auto",
    trust_remote_code: bool = False,
    notice: Notice = stderr,
    vocab_cache: Path | None = None,
) -> Model:
    """The exact model an index was built with, or an error: never a substitute.

    A model that runs its own code runs only if this command allows it
    (``trust_remote_code``): an index can come from anywhere, and what it
    records must not make msearch run code nobody asked for.
    """
    if record.trust_remote_code and not trust_remote_code:
        raise ModelUnavailable(
            f"this index's model {record.name} runs its own code; allow it with "
            "--trust-remote-code (or MSEARCH_TRUST_REMOTE_CODE=1)"
        )
    folder = fast_locate(record)
    if folder is not None:  # unchanged since indexing (same size and mtime): no rehash
        model = Model(
            record.name,
            record.source,
            folder,
            device,
            record.precision,
            trust_remote_code,
            notice,
            vocab_cache,
        )
        model._adopt(record)
        return model
    model = Model(
        record.name,
        record.source,
        locate_recorded(record),
        device,
        record.precision,
        trust_remote_code,
        notice,
        vocab_cache,
    )
    if model.record.fingerprint != record.fingerprint:
        raise ModelMismatch(
            f"the model {record.name} on this machine is not the one that built this index "
            f"(its weights differ); {FIX_HINT}"
        )
    model._adopt(record)
    return model
