"""The second stage of a large dense search: int8 estimates of the
candidates' cosines, so that only the best few are read as float32.

Why: the first stage (:mod:`msearch.coarse`) hands on 1 row in 200.
Scoring those from the float32 vectors reads 50,000 scattered rows a query
at ten million, and the kernel's readahead brings nearly the whole float32
file into memory within 20 queries (bench/big_search.py). An int8 copy of
the vectors (a quarter of float32) estimates each candidate's cosine to
about 0.001; only the best hundred rows by that estimate
(``TwoStage.rescored``, msearch.config) are then read as float32 and
scored exactly. A search so holds the sign bits (1/32), the codes (1/4)
and a few hundred float32 rows a query.

Codes: component i of a row is stored as ``round(x_i * s_i)``, where
``s_i = 127 / (the segment's largest |x_i|)``: a scale per component,
because some components of sentence embeddings range several times wider
than the rest. The query is divided by the same scales, so the integer dot
product estimates the cosine itself, and estimates from different
segments compare.

Files: ``int8.faiss`` is faiss's own serialization of an
``IndexScalarQuantizer`` (``QT_8bit_direct_signed``: code = value + 128,
inner product), so that faiss maps it (``IO_FLAG_MMAP_IFC``) instead of
copying a quarter of the float32 size into memory at each open.
``int8_scale.npy`` holds the scales. An index may come from elsewhere, so
faiss reads the file only after it passes a check here: exactly the header
plus ``rows * dim`` codes long, and its header byte for byte what this
faiss writes for such an index (any byte is a valid code). A segment
without the files, or whose files fail the check, or a faiss that cannot
map them, scores its candidates from float32 as before.

Both stages run in one faiss call (``IndexRefine``): the base is the
fast-scan index of the sign bits behind a linear map that undoes the
query's scaling and puts its components in the kernel's order, the
refinement is the codes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msearch import npyfile

if TYPE_CHECKING:
    from msearch.coarse import ScanIndex

CODES_NAME = "int8.faiss"
SCALE_NAME = "int8_scale.npy"
LEVELS = 127
# Components smaller than this in every row of a segment are not told
# apart (they add at most 1e-4 x |q_i| to a cosine); it bounds the scales.
FLOOR = 1e-4
MAX_SCALE = LEVELS / FLOOR
CHUNK = 1 << 16


def _faiss() -> Any | None:
    """faiss, where it can map a scalar quantizer's codes; else None."""
    import faiss

    if not hasattr(faiss, "IO_FLAG_MMAP_IFC") or not hasattr(
        faiss.ScalarQuantizer, "QT_8bit_direct_signed"
    ):
        return None
    return faiss


def header(rows: int, dim: int) -> bytes | None:
    """What this faiss writes before the codes of ``rows`` rows: its
    serialization of the empty index with the row count and the codes'
    length filled in. None where that serialization is not laid out as
    known here (fourcc, dimension, row count, and the codes' length last),
    so a faiss that changed its format is never handed a file it may read
    differently."""
    faiss = _faiss()
    if faiss is None or rows < 0 or dim <= 0:
        return None
    empty = faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
    )
    blob = faiss.serialize_index(empty).tobytes()
    if (
        blob[:4] != b"IxSQ"
        or blob[4:8] != dim.to_bytes(4, "little")
        or blob[8:16] != bytes(8)
        or blob[-8:] != bytes(8)
    ):
        return None
    return blob[:8] + rows.to_bytes(8, "little") + blob[16:-8] + (rows * dim).to_bytes(8, "little")


def writable(dim: int) -> bool:
    """Whether :func:`write` writes codes for vectors of ``dim`` components
    with this faiss."""
    return header(0, dim) is not None


def scales(max_abs: np.ndarray) -> np.ndarray:
    """Per-component scales from each component's largest magnitude."""
    return (LEVELS / np.maximum(np.asarray(max_abs, dtype=np.float32), FLOOR)).astype(np.float32)


def encode(vectors: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The codes of ``vectors`` (uint8: the rounded, scaled value + 128)."""
    v = np.asarray(vectors, dtype=np.float32) * scale
    np.rint(v, out=v)
    np.nan_to_num(v, copy=False, nan=0.0)
    np.clip(v, -LEVELS, LEVELS, out=v)
    # Two's complement int8 with its top bit flipped is the value + 128.
    return v.astype(np.int8).view(np.uint8) ^ np.uint8(0x80)


def write(folder: Path, vectors: np.ndarray, max_abs: np.ndarray) -> bool:
    """Write a segment's codes and scales (new files); False, writing
    nothing, where this faiss cannot map them."""
    rows, dim = vectors.shape
    head = header(rows, dim)
    if head is None:
        return False
    scale = scales(max_abs)
    with open(folder / SCALE_NAME, "xb") as out:
        npyfile.save(out, scale)
    with open(folder / CODES_NAME, "xb") as out:
        out.write(head)
        for start in range(0, rows, CHUNK):
            out.write(encode(vectors[start : start + CHUNK], scale).tobytes())
    return True


def _fd_path(fd: int) -> str | None:
    """A name by which faiss opens exactly the file ``fd`` is open on (not
    whatever a path names by the time faiss opens it)."""
    for base in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(base):
            return f"{base}/{fd}"
    return None


class Int8Codes:
    """One segment's codes, mapped by faiss, and their scales."""

    def __init__(self, index: Any, scale: np.ndarray, fd: int | None = None, size: int = 0) -> None:
        """``fd``: the codes file of ``size`` bytes, kept open (this object
        closes it) so that :meth:`intact` can tell whether it was cut short
        under faiss's mapping."""
        self._index = index
        self._fd = fd
        self._size = size
        self.scale = scale
        self.rows = int(index.ntotal)
        self._refine: Any = None
        self._refine_scan: ScanIndex | None = None
        self._keep: list[Any] = []

    @classmethod
    def open(cls, folder: Any, rows: int, dim: int) -> Int8Codes | None:
        """From an open segment folder (:class:`msearch.storage.disk.DataFolder`);
        None where the files are missing, damaged, or not what this faiss
        maps (the float32 vectors then serve)."""
        from msearch.errors import IndexCorrupt

        head = header(rows, dim)
        if head is None or rows == 0:
            return None
        try:
            if not (folder.exists(CODES_NAME) and folder.exists(SCALE_NAME)):
                return None
            scale = np.asarray(folder.npy(SCALE_NAME, mmap=False))
            if scale.shape != (dim,) or scale.dtype != np.float32:
                return None
            if not bool(np.all((scale >= 1) & (scale <= MAX_SCALE))):  # NaN fails too
                return None
            fh, st = folder.open(CODES_NAME)
            with fh:
                if st.st_size != len(head) + rows * dim:
                    return None
                if os.pread(fh.fileno(), len(head), 0) != head:
                    return None
                where = _fd_path(fh.fileno())
                faiss = _faiss()
                if where is None or faiss is None:
                    return None
                index = faiss.read_index(where, faiss.IO_FLAG_MMAP_IFC)
                fd = os.dup(fh.fileno())
        except (IndexCorrupt, OSError, ValueError, RuntimeError):
            return None
        if (
            not isinstance(index, faiss.IndexScalarQuantizer)
            or index.ntotal != rows
            or index.d != dim
            or index.code_size != dim
        ):
            os.close(fd)
            return None
        return cls(index, scale, fd, st.st_size)

    def intact(self) -> bool:
        """Whether the codes file still holds every code (one ``fstat``): a
        read past its end, once it was cut short, would be SIGBUS."""
        if self._fd is None:
            return True
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return False
        return size >= self._size

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def populate(self) -> None:
        """Touch every page of the mapped codes (see
        :func:`msearch.storage.segment.populate`: what a long-running process does
        once per index generation, here for the codes instead of float32)."""
        import faiss

        size = self.rows * len(self.scale)
        if size:
            codes = faiss.rev_swig_ptr(self._index.codes.data(), size)
            int(np.add.reduce(codes[::4096], dtype=np.int64))

    def _refiner(self, scan: ScanIndex) -> Any:
        """``IndexRefine`` of ``scan``'s fast-scan index by these codes (built
        once per open segment)."""
        if self._refine is None or self._refine_scan is not scan:
            import faiss

            dim = len(self.scale)
            # The query arrives divided by the scales (see _query); the
            # sign-bit kernel wants it whole and in its own component order.
            matrix = np.zeros((dim, dim), dtype=np.float32)
            matrix[np.arange(dim), scan.order] = self.scale[scan.order]
            lt = faiss.LinearTransform(dim, dim, False)
            faiss.copy_array_to_vector(matrix.ravel(), lt.A)
            lt.is_trained = True
            base = faiss.IndexPreTransform(lt, scan.index)
            refine = faiss.IndexRefine(base, self._index)
            self._keep = [lt, base, scan]  # faiss holds raw pointers to these
            self._refine, self._refine_scan = refine, scan
        return self._refine

    def _query(self, vec: np.ndarray) -> tuple[np.ndarray, float]:
        """The query as faiss is handed it, and the factor its estimates
        are then divided by: divided by the scales, stretched to +-127 and
        rounded. Why rounded: faiss's SIMD code for these codes truncates
        the query to integers (1.15; older ones multiply floats), and
        rounding first makes both exact and halves the error truncation
        gives (bench/coarse_recall.py: the estimate within 0.0006 of the
        cosine, standard deviation, on the eval collections)."""
        q = np.asarray(vec, dtype=np.float32) / self.scale
        top = float(np.abs(q).max())
        stretch = LEVELS / top if top > 0 else 1.0
        return np.rint(q * np.float32(stretch)).astype(np.float32), stretch

    def nearest(
        self, scan: ScanIndex, vec: np.ndarray, want: int, keep: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` rows the sign bits estimate best for ``vec``, and of
        them the ``keep`` best by the codes' estimate: (rows, estimates),
        best first."""
        import faiss

        want = min(want, self.rows)
        keep = max(1, min(keep, want))
        query, stretch = self._query(vec)
        # k_base = int(keep * k_factor): half a row over, so rounding keeps want.
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = (want + 0.5) / keep
        est, rows = self._refiner(scan).search(query[None, :], keep, params=params)
        found = rows[0] >= 0
        return rows[0][found], est[0][found] / np.float32(stretch)

    def estimate(self, vec: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The codes' estimate of the cosine of each of ``rows`` with ``vec``
        (for rows that did not come through :meth:`nearest`: a few)."""
        if not len(rows):
            return np.zeros(0, dtype=np.float32)
        query, stretch = self._query(vec)
        decoded = self._index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))
        return np.asarray((decoded @ query) / np.float32(stretch), dtype=np.float32)
