"""JSON from untrusted sources (an index's ``meta.json``, an MCP client's
messages), parsed with its nesting bounded.

Why: Python's ``json`` parses nesting by recursion, so a document of
100,000 ``[`` ends in ``RecursionError``, which is no ``ValueError`` and
stopped every command with "internal error". Here it is a ``ValueError``
like any other malformed JSON; a caller that wants a tighter bound (a
server reading a client's messages) has the depth measured first
(strings blanked out by one regular expression, then a running count of
brackets, all in C).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")


def depth(raw: bytes) -> int:
    """How deeply ``raw``'s arrays and objects nest (0 for a scalar); an
    estimate for malformed JSON, which the parser refuses anyway."""
    if b"[" not in raw and b"{" not in raw:
        return 0
    brackets = _STRING.sub(b"", raw).translate(_STEP, _NOT_BRACKETS)  # 2: open, 0: close
    step = np.frombuffer(brackets, dtype=np.uint8).astype(np.int32) - 1
    return int(np.cumsum(step).max(initial=0))


def loads(raw: bytes | str, max_depth: int | None = None) -> Any:
    """``json.loads`` (orjson where installed), but nesting too deep is a
    ``ValueError``, never a ``RecursionError``: deeper than ``max_depth``
    (measured first, see :func:`depth`), or than the parser can recurse."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if max_depth is not None and depth(data) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    try:
        import orjson  # bounds its own nesting (1024), without recursing

        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # orjson refuses "\udcXX" escapes (file names that are not UTF-8)
    except ImportError:
        pass
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
