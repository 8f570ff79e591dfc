"""Indexes made by older msearch versions: schema 1 (one ``data-<id>``
folder of vectors instead of segments), converted by the next ``msearch
index``.

A schema-1 index is not read as an index (``Meta.from_json`` raises
``IndexOutdated``); the update that converts it builds a new one, and
reuses from the old folder the vectors of passages whose text is still
there, so that converting does not embed everything again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msearch.errors import IndexCorrupt
from msearch.storage.disk import open_folder
from msearch.storage.layout import FOLDER_RE
from msearch.storage.record import read_meta_json
from msearch.storage.safefs import safe_relpath

# text_of(path, size, sha256): the file's text if it is still the file the
# old index recorded (that size, that hash), else None.
TextOf = Callable[[str, int, str], "str | None"]
# keys_of(texts): each passage text's key (msearch.pipeline.passage_keys).
KeysOf = Callable[[Sequence[str]], np.ndarray]


def v1_pool(
    index_dir: Path, model: dict[str, Any], text_of: TextOf, keys_of: KeysOf
) -> dict[bytes, np.ndarray]:
    """For converting an index of schema 1: the vectors of its passages, keyed
    by their text as read from files that are still as they were. Passages
    whose text the new chunking keeps need not be embedded again; only
    vectors of the very model (fingerprint, precision, dimension) are
    reused, and only files inside the root are read (``text_of`` reads
    them). Anything malformed gives an empty pool: the update embeds."""
    pool: dict[bytes, np.ndarray] = {}
    try:
        raw = read_meta_json(index_dir)
        data_name = raw["data"]
        cols = raw["files"]
        old_model = raw["model"]
        same = all(
            old_model.get(k, "float32" if k == "precision" else None)
            == model.get(k, "float32" if k == "precision" else None)
            for k in ("fingerprint", "precision", "dim")
        )
        if not same or not isinstance(data_name, str) or not FOLDER_RE.match(data_name):
            return pool
        with open_folder(index_dir, data_name) as folder:
            emb = folder.npy("embeddings.npy")
            pas = folder.npy("passages.npy")
        shape_ok = emb.ndim == 2 and emb.shape[1] == model.get("dim") and emb.dtype == np.float32
        if not shape_ok or pas.ndim != 2 or pas.shape[1] != 5 or len(emb) != len(pas):
            return pool
        col = np.asarray(pas[:, 0], dtype=np.int64)
        paths, sizes, hashes = cols["path"], cols["size"], cols["sha256"]
        for f, (path, size, digest) in enumerate(zip(paths, sizes, hashes, strict=True)):
            a, b = np.searchsorted(col, [f, f + 1])
            if a == b or not safe_relpath(path) or not isinstance(size, int):
                continue
            text = text_of(path, size, digest)
            if text is None:
                continue
            rows = np.asarray(pas[a:b])
            texts = [text[int(s) : int(e)] for s, e in rows[:, 3:5]]
            for key, vec in zip(keys_of(texts), np.asarray(emb[a:b]), strict=True):
                pool[key.tobytes()] = vec
    except (KeyError, TypeError, ValueError, IndexError, OSError, IndexCorrupt):
        return pool
    return pool
