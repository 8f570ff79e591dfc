"""Which model a job uses, and where models come from.

- :class:`Models`: the source of models, the seam a caller replaces (a
  test passes a fake instead of patching msearch.encoders);
  :class:`EncoderModels`, msearch.encoders itself, by default.
- :func:`model_for_update`: the one policy for the model and precision an
  update embeds with (``msearch index`` and ``watch``, ``query --refresh``,
  the MCP server's ``reindex`` and first index).
- :func:`query_encoder`: an index's own model, as a query encoder.
- :func:`check_model`: a model named for a query must be the index's.

The heavy parts (msearch.encoders, tokenizers, torch) are imported only
when a model is first asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from msearch.errors import ModelMismatch, MsearchError
from msearch.query import QueryEncoder

if TYPE_CHECKING:
    from msearch.encoders import ModelRecord
    from msearch.storage.reader import IndexReader

Notice = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


class Models(Protocol):
    """Where models come from. What either method returns is used both for
    passages (``msearch.encoders.Embedder``: record, counter, encode, ...,
    plus ``precision`` and ``with_precision``) and for queries
    (``encode_queries``, ``query_token_count``): an ``encoders.Model``."""

    def load(
        self,
        name: str | None,
        device: str,
        precision: str,
        trust_remote_code: bool,
        notice: Notice,
    ) -> Any:
        """The model ``name`` (None: the default), in ``precision`` where the
        hardware has it."""
        ...

    def load_recorded(
        self,
        record: ModelRecord,
        device: str,
        trust_remote_code: bool,
        notice: Notice,
        vocab_cache: Path | None = None,
    ) -> Any:
        """The exact model an index records (never a substitute), or an
        ``MsearchError`` saying why it cannot be had here."""
        ...


class EncoderModels:
    """The real models: msearch.encoders' ``load_model`` and ``load_recorded``."""

    def load(
        self,
        name: str | None,
        device: str,
        precision: str,
        trust_remote_code: bool,
        notice: Notice,
    ) -> Any:
        from msearch.encoders import load_model

        return load_model(
            name, device, notice=notice, precision=precision, trust_remote_code=trust_remote_code
        )

    def load_recorded(
        self,
        record: ModelRecord,
        device: str,
        trust_remote_code: bool,
        notice: Notice,
        vocab_cache: Path | None = None,
    ) -> Any:
        from msearch.encoders import load_recorded

        return load_recorded(
            record, device, trust_remote_code, notice=notice, vocab_cache=vocab_cache
        )


@dataclass(frozen=True)
class ModelWanted:
    """What an update was asked for about its model."""

    name: str | None = None  # --model: None keeps the index's (else the default)
    precision: str | None = None  # --precision/--fast: None keeps the index's (else float32)
    device: str = "auto"
    trust_remote_code: bool = False


def model_for_update(
    models: Models,
    recorded: ModelRecord | None,
    wanted: ModelWanted,
    notice: Notice = _quiet,
    strict: bool = False,
) -> Any:
    """The model an update embeds with, and its precision: the one policy.

    - A model named: that one, in the precision asked for, else the index's,
      else float32 (a model other than the index's rebuilds it).
    - None named and the index records one: that very model (its weights,
      its prompts), in the precision asked for, else its own. Where it
      cannot be had here: with ``strict`` (an update of the index as it
      is: ``query --refresh``, the MCP ``reindex``) that is the error;
      otherwise (``msearch index``/``watch DIR``) the default model
      rebuilds the index.
    - No index yet: the default model, in the precision asked for, else
      float32.

    A model that runs its own code is refused unless this command allows
    it, whatever the index records.
    """
    from msearch.encoders import check_device

    check_device(wanted.device)
    if wanted.name is None and recorded is not None:
        if recorded.trust_remote_code and not wanted.trust_remote_code:
            models.load_recorded(
                recorded, wanted.device, False, notice
            )  # one line: allow it or not
        try:
            model = models.load_recorded(recorded, wanted.device, wanted.trust_remote_code, notice)
        except MsearchError:
            if strict:
                raise
            model = None
        if model is not None:
            if wanted.precision is not None:
                from msearch.encoders import resolve_precision

                got = resolve_precision(wanted.precision, wanted.device, notice=notice)
                if got != model.precision:
                    model = model.with_precision(got)
            return model
    keep = recorded.precision if recorded is not None else "float32"
    return models.load(
        wanted.name, wanted.device, wanted.precision or keep, wanted.trust_remote_code, notice
    )


def query_encoder(
    index: IndexReader,
    device: str = "auto",
    notice: Notice | None = None,
    trust_remote_code: bool = False,
    warm: bool = False,
    models: Models | None = None,
) -> QueryEncoder:
    """The index's model as a query encoder (``msearch.encoders.Model``
    decides which encoder runs, and says so when it is not msearch's own),
    with the query prompt the index was built with, and a notice for a
    query longer than the model sees.

    ``warm``: for a process that answers many queries, which loads the full
    tokenizer once instead of building one per query from the index's
    vocabulary cache (what makes a single cold query fast)."""
    from msearch.encoders import ModelRecord

    say = notice or _quiet
    record = ModelRecord.from_json(index.meta.model)
    cache = index.dir / index.meta.vocab_cache if index.meta.vocab_cache and not warm else None
    model = (models or EncoderModels()).load_recorded(
        record, device, trust_remote_code, say, vocab_cache=cache
    )
    limit = record.max_seq_length

    def encode(texts: Sequence[str]) -> np.ndarray:
        for t in texts:
            if len(t) > limit - 2 and model.query_token_count(t) > limit:
                say(
                    f"msearch: query is longer than the model's {limit} tokens; "
                    "only its beginning is used (as sentence-transformers does)"
                )
        return model.encode_queries(texts)  # type: ignore[no-any-return]

    return encode


def check_model(index: IndexReader, model: str | None) -> None:
    """Refuse a malformed model record, and a ``--model`` that is not the
    index's model."""
    from msearch.encoders import ModelRecord

    ModelRecord.from_json(index.meta.model)  # IndexCorrupt if malformed
    if not model:
        return
    rec = index.meta.model
    if model in (rec.get("name"), rec.get("source")):
        return
    if rec.get("name", "").endswith("/" + model):
        return
    from msearch.encoders import fingerprint, resolve_model

    try:
        _, _, folder = resolve_model(model, notice=_quiet)
        same = fingerprint(folder) == rec.get("fingerprint")
    except Exception:
        same = False
    if not same:
        raise ModelMismatch(
            f"this index was built with {rec.get('name')}, not {model}; "
            f"query without --model, or re-index with `msearch index --model {model} DIR`"
        )
