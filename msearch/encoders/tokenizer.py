"""A model's own tokenizer, set up the way sentence-transformers sets it up.

From ``tokenizer.json`` with the ``tokenizers`` library alone (no
transformers import: queries stay fast). sentence-transformers 6 lowercases
by adding a Lowercase normalizer when the model asks for it
(``do_lower_case``), truncates at the model's maximum length counting the
special tokens, and puts a prompt in front of the text as it is.
"""

from __future__ import annotations

from typing import Any

from msearch.encoders.spec import ModelSpec
from msearch.errors import ModelUnavailable


def load_tokenizer(spec: ModelSpec, truncate: bool = True) -> Any:
    """A ``tokenizers.Tokenizer``: no padding, truncation at the model's
    maximum length when ``truncate`` (for encoding; counting wants none)."""
    from tokenizers import Tokenizer, normalizers

    path = spec.transformer_folder / "tokenizer.json"
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type
        raise ModelUnavailable(f"{path}: unusable tokenizer ({exc})") from None
    if spec.do_lower_case and not _lowercases(tok.normalizer):
        current = tok.normalizer
        steps = [normalizers.Lowercase()]
        if current is not None:
            steps.append(current)
        tok.normalizer = normalizers.Sequence(steps)
    tok.no_padding()
    if truncate:
        tok.enable_truncation(max_length=spec.max_seq_length)
    else:
        tok.no_truncation()
    return tok


def _lowercases(normalizer: Any) -> bool:
    """Whether a normalizer is, or holds, a Lowercase: sentence-transformers'
    own test (a BertNormalizer that lowercases does not count, so it adds a
    Lowercase in front, which changes nothing)."""
    from tokenizers import normalizers

    if normalizer is None:
        return False
    if isinstance(normalizer, normalizers.Lowercase):
        return True
    if isinstance(normalizer, normalizers.Sequence):
        return any(isinstance(n, normalizers.Lowercase) for n in normalizer)  # type: ignore[attr-defined]
    return False


def prompt_length(tokenizer: Any, prompt: str) -> int:
    """How many leading tokens of a prompted text are the prompt's, as
    sentence-transformers counts them for pooling that leaves the prompt
    out: the prompt tokenized alone, less a trailing special token."""
    enc = tokenizer.encode(prompt)
    n = len(enc.ids)
    if n and enc.special_tokens_mask[-1]:
        n -= 1
    return n


def prompt_tokens(tokenizer: Any, prompt: str) -> int:
    """Tokens a prompt adds to a text (no special tokens): what a passage
    must leave room for."""
    return len(tokenizer.encode(prompt, add_special_tokens=False).ids) if prompt else 0
