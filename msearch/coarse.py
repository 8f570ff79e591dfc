"""The first stage of a large dense search: which rows are candidates (then
estimated from their int8 codes, msearch.int8, and the best scored exactly).

Every segment stores the sign of each vector component (``bits.npy``, 1/32
of the float32 vectors). The first stage scores every row by the query's
own components against the row's signs, ``q . sign(x)``: an asymmetric
estimate of the cosine, far closer to it than the Hamming distance between
the query's signs and the row's (on the eval collections' real passages and
queries, 1 in 200 rows by this estimate hold 99.6% of the exact top 10;
by Hamming distance it takes 1 in 50 for 99.5%: bench/coarse_recall.py).

The estimate runs on faiss's fast-scan kernel (``IndexPQFastScan``: 4-bit
codes, 16-entry tables held in SIMD registers): each half-byte of sign
bits is a code whose 16 "centroids" are the 16 sign patterns of four
components. That kernel wants the codes in its own block order, so each
segment also stores the bits in that order (``scan.npy``, written with the
segment); a segment without it, or whose file does not match its bits, has
them reordered in memory when first searched (0.12 s a million rows).

A segment where most rows must not be found (dead, or left out by a path
filter) is searched by Hamming distance over every row instead, the
unusable rows pushed beyond any: fast-scan cannot skip rows, and asking it
for that many more would cost more than the full pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

SCAN_NAME = "scan.npy"
# faiss's fast-scan block: codes of this many rows are interleaved.
BLOCK = 32
# The Hamming fallback is a coarser estimate: it takes this many times more
# (1 in 50 rows by Hamming distance hold 99.5% of the exact top 10 of the
# real eval set).
HAMMING_FACTOR = 4
# The Hamming distance of rows that must not be candidates: beyond any.
FAR = 1 << 30


class Codes(Protocol):
    """A segment's second-stage codes, as this stage asks them
    (msearch.int8.Int8Codes)."""

    def nearest(
        self, scan: ScanIndex, vec: np.ndarray, want: int, keep: int
    ) -> tuple[np.ndarray, np.ndarray]: ...


class Scanned(Protocol):
    """What the first stage reads of a segment (msearch.storage.segment.Segment):
    its place among all rows, its sign bits, their fast-scan order, its codes."""

    offset: int

    @property
    def rows(self) -> int: ...

    def bits(self) -> np.ndarray | None: ...

    def scan(self) -> ScanIndex | None: ...

    def int8(self) -> Codes | None: ...


def sign_bits(vectors: np.ndarray) -> np.ndarray:
    """One bit per component, set where it is positive, packed eight to a
    byte (the first component in the high bit): what the first stage reads."""
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


def scannable(dim: int) -> bool:
    """Whether vectors of ``dim`` components can use the fast-scan kernel
    (whole bytes of bits, an even number of half-byte codes)."""
    return dim > 0 and dim % 8 == 0


def _whole_blocks(rows: int) -> int:
    """``rows`` rounded up to whole blocks: the rows the kernel's layout holds."""
    return -(-rows // BLOCK) * BLOCK


def scan_bytes(rows: int, dim: int) -> int:
    """The size of a segment's ``scan.npy``: whole blocks of rows."""
    return _whole_blocks(rows) * (dim // 8)


def _new_index(dim: int) -> Any:
    """An empty fast-scan index whose code ``c`` of each group of four
    components stands for the signs ``(+1 if bit 3-t of c else -1)``."""
    import faiss

    m = dim // 4
    index = faiss.IndexPQFastScan(dim, m, 4, faiss.METRIC_INNER_PRODUCT, BLOCK)
    signs = np.array(
        [[1.0 if (c >> (3 - t)) & 1 else -1.0 for t in range(4)] for c in range(16)],
        dtype=np.float32,
    )
    faiss.copy_array_to_vector(np.tile(signs, (m, 1)).ravel(), index.pq.centroids)
    index.is_trained = True
    return index


def pack(bits: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Sign bits in fast-scan block order (uint8, ``scan_bytes`` long).

    faiss does the reordering (from an ``IndexPQ`` holding the bits as its
    codes: the low half-byte of byte j is code 2j, the high one 2j+1), a
    chunk of rows at a time: blocks do not straddle chunks, so memory stays
    bounded by the chunk.
    """
    import faiss

    rows, width = bits.shape
    out = np.empty(scan_bytes(rows, width * 8), dtype=np.uint8)
    at = 0
    for start in range(0, rows, chunk):
        part = np.ascontiguousarray(bits[start : start + chunk], dtype=np.uint8)
        flat = faiss.IndexPQ(width * 8, width * 2, 4, faiss.METRIC_INNER_PRODUCT)
        flat.is_trained = True
        faiss.copy_array_to_vector(part.ravel(), flat.codes)
        flat.ntotal = len(part)
        # Keep the index alive while its codes are copied out: a temporary
        # would be freed under the copy (malloc's bookkeeping in block 0).
        fast = faiss.IndexPQFastScan(flat)  # type: ignore[arg-type]
        packed = faiss.AlignedTable_to_array(fast.codes)
        del fast
        out[at : at + len(packed)] = packed
        at += len(packed)
    return out


def _query_order(dim: int) -> np.ndarray:
    """The query's components in code order: code 2j (the low half-byte of
    byte j) holds components 8j+4..8j+7, code 2j+1 components 8j..8j+3."""
    base = np.arange(dim).reshape(-1, 2, 4)
    return base[:, ::-1, :].ravel()


class ScanIndex:
    """One segment's sign bits, ready for the fast-scan kernel."""

    def __init__(self, packed: np.ndarray, rows: int, dim: int) -> None:
        import faiss

        self.rows = rows
        self.order = _query_order(dim)
        index = _new_index(dim)
        faiss.copy_array_to_AlignedTable(np.ascontiguousarray(packed), index.codes)
        index.ntotal = rows
        index.ntotal2 = _whole_blocks(rows)
        self.index = index

    @classmethod
    def open(cls, bits: np.ndarray, stored: np.ndarray | None) -> ScanIndex:
        """From the stored block order when it matches ``bits``: right size,
        and its first and last blocks equal to reordering those rows now (a
        faiss whose layout changed, or a file from elsewhere, fails this);
        else reordered from ``bits`` here."""
        rows, width = bits.shape
        dim = width * 8
        size = scan_bytes(rows, dim)
        if (
            stored is None
            or stored.dtype != np.uint8
            or stored.shape != (size,)
            or not _ends_match(bits, stored)
        ):
            stored = pack(bits)
        return cls(stored, rows, dim)

    def nearest(self, vec: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` rows with the highest ``vec . sign(row)`` (unordered)."""
        q = np.ascontiguousarray(vec[self.order], dtype=np.float32)[None, :]
        _, idx = self.index.search(q, min(k, self.rows))
        found = idx[0]
        return found[found >= 0]


def _ends_match(bits: np.ndarray, stored: np.ndarray) -> bool:
    rows, width = bits.shape
    block = BLOCK * width
    last = (rows - 1) // BLOCK * BLOCK
    head = pack(np.asarray(bits[: min(BLOCK, rows)]))
    tail = pack(np.asarray(bits[last:]))
    return bool(np.array_equal(stored[: len(head)], head) and np.array_equal(stored[-block:], tail))


def nearest_rows(
    vec: np.ndarray,
    segments: Sequence[Scanned],
    k: int,
    unusable: np.ndarray | None = None,
    bad_counts: Sequence[int] | None = None,
    keep: int | None = None,
    *,
    candidates: Callable[[int], int],
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate rows (across segments, ascending) for the query vector
    ``vec``, and each one's int8 estimate of its cosine (NaN for a row of a
    segment without usable codes: it needs an exact score).

    In each segment its share of usable rows (``max(candidates(rows), k)``)
    with the best sign-bit estimate; of those, in a segment with int8 codes
    (:mod:`msearch.int8`), only the ``keep`` best by the codes' estimate
    (None: all of them, estimated). ``unusable`` (over all rows) marks dead
    and filtered-out rows, ``bad_counts`` how many of them each segment
    holds. ``candidates(rows)``: how many of a segment's rows go on
    (``TwoStage.candidates``).

    Each segment picks its own: a row of the exact top k is among its
    segment's top k, so a per-segment share keeps the recall of one
    segment that size, and sign-bit estimates of two segments never need
    comparing (the int8 estimates do compare: they estimate the cosine).
    """
    qbits = None
    found: list[np.ndarray] = []
    estimates: list[np.ndarray] = []
    for n, seg in enumerate(segments):
        n_bad = 0 if bad_counts is None else bad_counts[n]
        usable = seg.rows - n_bad
        if usable <= 0:
            continue
        want = max(candidates(seg.rows), k)
        bad = None if unusable is None else unusable[seg.offset : seg.offset + seg.rows]
        est = None
        if usable <= want:
            rows = np.arange(seg.rows) if bad is None else np.flatnonzero(~bad)
        elif n_bad <= 4 * want and (scan := seg.scan()) is not None:
            codes = seg.int8()
            if codes is not None:
                rows, est = codes.nearest(
                    scan, vec, want + n_bad, (want if keep is None else min(keep, want)) + n_bad
                )
            else:
                rows = scan.nearest(vec, want + n_bad)
            if bad is not None and n_bad:
                ok = ~bad[rows]
                rows = rows[ok]
                est = None if est is None else est[ok]
        else:
            if qbits is None:
                qbits = np.ascontiguousarray(sign_bits(vec[None, :])[0])
            rows = _hamming_nearest(qbits, seg, HAMMING_FACTOR * want, bad)
        found.append(rows.astype(np.int64) + seg.offset)
        estimates.append(np.full(len(rows), np.nan, np.float32) if est is None else est)
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    rows = np.concatenate(found)
    order = np.argsort(rows, kind="stable")
    return rows[order], np.concatenate(estimates)[order]


def _hamming_nearest(
    qbits: np.ndarray, seg: Scanned, want: int, bad: np.ndarray | None
) -> np.ndarray:
    """The ``want`` usable rows of ``seg`` nearest to ``qbits`` by Hamming
    distance: every distance (faiss's SIMD popcount), unusable rows set
    beyond any, one partial sort."""
    import faiss

    bits = seg.bits()
    assert bits is not None  # the caller's two_stage_ready checked every segment
    plain = np.asarray(bits)
    dist = np.empty(seg.rows, dtype=np.int32)
    faiss.hammings(  # type: ignore[attr-defined]
        faiss.swig_ptr(qbits),
        faiss.swig_ptr(plain),
        1,
        seg.rows,
        plain.shape[1],
        faiss.swig_ptr(dist),
    )
    if bad is not None:
        np.copyto(dist, np.int32(FAR), where=bad)
    want = min(want, seg.rows)
    rows = np.argpartition(dist, want - 1)[:want]
    return rows[dist[rows] < FAR]
