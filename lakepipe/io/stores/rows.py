"""Reading a connectome's subjects row by row, whatever the store: what the methods' worker tasks use.

:func:`open_rows` gives a :class:`RowReader` for a connectome store: a copied store's Zarr arrays
(:class:`ZarrRows`), or the HDF5 batches of an in-place connectome centred on the fly
(:class:`lakepipe.io.stores.inplace.InplaceRows`). Both deliver the same unit-norm float32 series,
per-voxel ``scale`` and ``mean``, and time point counts.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lakepipe.io.storage import StoreRef, get_array, read_array
from lakepipe.io.stores.direct import direct_chunks

if TYPE_CHECKING:
    import zarr


class BlockGetter(Protocol):
    def __call__(self, row: int, start: int, out: np.ndarray) -> np.ndarray:
        """Row ``row``'s unit-norm float32 series of the feature block that starts at ``start`` (a
        multiple of the reader's ``block``), into ``out`` (C-contiguous float32, (time, block));
        returns ``out`` cut to the block (narrower at the last one)."""
        ...


class RowReader(Protocol):
    """One connectome's rows (subjects): ``shape`` is (rows, time, features)."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    #: feature-axis block length that reads (and parcel sums) work in
    block: int
    #: each row's number of time points (rows are zero past them); None: all ``shape[1]``
    n_valid: np.ndarray | None

    def read_into(self, row: int, out: np.ndarray) -> np.ndarray:
        """Row ``row``'s centred unit-norm (time, feature) float32 series into ``out``; returns ``out``."""
        ...

    def block_getter(self) -> BlockGetter | None:
        """A reader of single feature blocks (``get(row, start, out)``, see :class:`BlockGetter`)
        where a block is a cheap read of its own (local uncompressed chunk files), else None: whole
        rows are then the read to make."""
        ...

    def scale(self, row: int) -> np.ndarray:
        """Per-feature norm of the centred raw series of row ``row``."""
        ...

    def mean(self, row: int) -> np.ndarray:
        """Per-feature mean of the raw series of row ``row``."""
        ...

    def close(self) -> None: ...


class ZarrRows:
    """A copied connectome store's rows (series as stored: float32, or float16 converted)."""

    def __init__(self, group: zarr.Group):
        self._ts = get_array(group, "timeseries")
        self._scale, self._mean = get_array(group, "scale"), get_array(group, "mean")
        s = self._ts.shape
        self.shape = (int(s[0]), int(s[1]), int(s[2]))
        self.dtype = np.dtype(self._ts.dtype)
        self.block = int(self._ts.chunks[2])
        self.n_valid = read_array(group, "n_valid") if "n_valid" in group else None
        self._direct = direct_chunks(self._ts)
        self._stored = threading.local()  # float16 rows as read, before conversion (one per thread)

    def read_into(self, row: int, out: np.ndarray) -> np.ndarray:
        if self._direct is not None and out.flags.c_contiguous:  # local uncompressed chunks: preadv
            if self.dtype == np.float32:
                return self._direct.read_into(row, out)
            stored = getattr(self._stored, "buf", None)
            if stored is None:
                stored = self._stored.buf = np.empty(self.shape[1:], self.dtype)
            np.copyto(out, self._direct.read_into(row, stored))  # float16 storage: converted
            return out
        if self.dtype == np.float32:
            from zarr.core.buffer import default_buffer_prototype

            # all of the row's chunks fetched at once, straight into the caller's (reused) buffer
            self._ts.get_basic_selection(row, out=default_buffer_prototype().nd_buffer.from_numpy_array(out))
        else:  # float16 storage: converted into the float32 buffer
            np.copyto(out, np.asarray(self._ts[row]))
        return out

    def block_getter(self) -> BlockGetter | None:
        direct = self._direct
        if direct is None:
            return None

        def get(row: int, start: int, out: np.ndarray) -> np.ndarray:
            if self.dtype == np.float32:
                return direct.read_block(row, start, out)
            stored = getattr(self._stored, "block", None)
            if stored is None:
                stored = self._stored.block = np.empty(out.shape, self.dtype)
            block = direct.read_block(row, start, stored)  # float16 storage: converted
            np.copyto(out[:, : block.shape[1]], block)
            return out[:, : block.shape[1]]

        return get

    def scale(self, row: int) -> np.ndarray:
        return np.asarray(self._scale[row])

    def mean(self, row: int) -> np.ndarray:
        return np.asarray(self._mean[row])

    def close(self) -> None:
        pass


def open_rows(ref: StoreRef) -> RowReader:
    """The row reader of the connectome store ``ref`` (copied or in place)."""
    group = ref.group()
    from lakepipe.io.stores.inplace import InplaceRows, is_inplace

    if is_inplace(group.attrs):
        return InplaceRows(group, ref.url)
    return ZarrRows(group)
