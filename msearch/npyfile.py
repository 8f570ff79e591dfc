"""Writing ``.npy`` files so that a failed write says why.

``np.save`` writes through C's ``fwrite`` and reports a short write as
"30522 requested and 23520 written", without the cause; here the header
is numpy's own and the data goes through Python's file object, whose
failure carries the operating system's reason ("No space left on
device", "File too large"). The files are the same bytes ``np.save``
writes (format 1.0), read back by ``np.load`` and
``msearch.storage.disk.DataFolder.npy``.
"""

from __future__ import annotations

from typing import IO

import numpy as np


def save(fh: IO[bytes], array: np.ndarray) -> None:
    """Write ``array`` to the open file ``fh`` as a ``.npy`` file."""
    from numpy.lib import format as npy_format

    arr = np.ascontiguousarray(array)
    npy_format.write_array_header_1_0(fh, npy_format.header_data_from_array_1_0(arr))
    if arr.size:
        fh.write(memoryview(arr.reshape(-1)).cast("B"))  # type: ignore[arg-type]
