"""Parcel time series and group functional connectivity (the ``parcellate`` method).

Per subject: parcel series = mean of the raw series of the parcel's in-mask voxels, r between
parcels, Fisher z. Over subjects: mean z in float64 (DESIGN section 3).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from lakepipe.compute.correlation import fisher_z, pearson_matrix
from lakepipe.compute.parcel_sums import block_sums


def subject_fc_z(parcel_ts: np.ndarray) -> np.ndarray:
    """Fisher z of the Pearson correlation between parcel series, diagonal 0.

    Parameters
    ----------
    parcel_ts
        (T, N) parcel time series.

    Returns
    -------
    numpy.ndarray
        (N, N) float64.
    """
    z = fisher_z(pearson_matrix(parcel_ts))
    np.fill_diagonal(z, 0.0)
    return z


def parcel_averaging_matrix(labels: np.ndarray, n_regions: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse (V, n_regions) matrix whose column p averages the voxels labelled p + 1.

    Returns
    -------
    W : scipy.sparse.csr_matrix
        ``W[v, p] = 1 / n_p`` where ``labels[v] == p + 1`` (``n_p`` voxels in parcel p), else 0.
    counts : numpy.ndarray
        (n_regions,) voxels per parcel.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError("labels must be a 1-D integer array")
    if labels.size and (labels.min() < 0 or labels.max() > n_regions):
        raise ValueError(f"labels must lie in 0..{n_regions}, got {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=n_regions + 1)[1:]
    rows = np.flatnonzero(labels)
    cols = labels[rows].astype(np.int64) - 1
    data = 1.0 / counts[cols]
    w = sp.csr_matrix((data, (rows, cols)), shape=(labels.size, n_regions))
    return w, counts


try:  # y += A @ x for a CSR matrix, accumulating into y (what scipy's own ``A @ x`` calls)
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - private in scipy; fall back to the public product
    _csr_matvec = None

# voxels per column block of an in-memory (T, V) array: the float64 copy of one row's block stays in L2
_BLOCK = 16384


class ParcelAverager:
    """Parcel means of the raw series of many subjects under one labelling, from unit-norm series.

    Parameters
    ----------
    labels
        (V,) parcel label of each voxel, 0 = no parcel, otherwise 1..n_regions.
    n_regions
        Number of parcels (column p is label p + 1).
    block
        Voxels per column block (the store's chunk length when streaming).
    use_numba
        Sum with :func:`lakepipe.compute.parcel_sums.block_sums` where numba is available (the same
        sums, 2.6x faster); False: scipy's CSR mat-vec, a row block at a time.

    Notes
    -----
    ``raw_v = unit_v * scale_v + mean_v``; the means are ``unit @ (W * scale) + mean @ W`` with
    the sparse averaging matrix ``W`` of :func:`parcel_averaging_matrix`, in float64, a block of
    voxels at a time; a parcel with no voxel is a column of NaN. The sparse
    averaging matrix is built once (and split into column blocks) and reused for every subject.
    :meth:`series` takes the series a block of voxels at a time, so a subject can stream from a
    chunked store without being assembled in memory; ``block`` is then the store's chunk
    length along the voxel axis.
    """

    def __init__(self, labels: np.ndarray, n_regions: int, block: int | None = None, use_numba: bool = True):
        self.w, self.counts = parcel_averaging_matrix(labels, n_regions)
        self.n_regions = n_regions
        self.n_voxels = int(np.size(labels))
        self.block = int(block or _BLOCK)
        w_t = self.w.T.tocsr()  # (n_regions, V); per row the parcel's voxels in ascending order
        w_t.sort_indices()
        # column blocks that hold a labelled voxel: (start, stop, csr of the block, voxel of each entry)
        self.blocks = []
        for start in range(0, self.n_voxels, self.block):
            stop = min(start + self.block, self.n_voxels)
            sub = w_t[:, start:stop].tocsr()
            sub.sort_indices()
            if sub.nnz:
                self.blocks.append((start, stop, sub, sub.indices + start))
        self._kernel = block_sums() if use_numba else None
        # the same entries voxel by voxel, for the numba kernel: (block voxel, parcel, 1 / n_p)
        labels = np.asarray(labels)
        self._by_voxel = []
        for start, stop, _, _ in self.blocks if self._kernel is not None else ():
            local = np.flatnonzero(labels[start:stop])
            cols = labels[start:stop][local].astype(np.int64) - 1
            self._by_voxel.append((local, cols, 1.0 / self.counts[cols]))

    @property
    def spans(self) -> list[tuple[int, int]]:
        """The (start, stop) voxel blocks :meth:`series` asks for, in order (blocks without a
        labelled voxel are never asked for)."""
        return [(start, stop) for start, stop, _, _ in self.blocks]

    def series(
        self, get_block: Callable[[int, int], np.ndarray], scale: np.ndarray, mean: np.ndarray, n_time: int
    ) -> np.ndarray:
        """Parcel means from ``get_block(start, stop)`` -> (T, stop - start) unit series.

        Per parcel the float64 products ``(scale_v / n_p) * unit_tv`` are summed over its voxels in
        ascending order, block after block: the same sums, in the same order, as
        ``unit @ (W * scale)`` with scipy.
        """
        scale = np.asarray(scale, dtype=np.float64)
        mean = np.asarray(mean, dtype=np.float64)
        if scale.shape != (self.n_voxels,) or mean.shape != (self.n_voxels,):
            raise ValueError("scale, mean and labels must have one entry per voxel (column of unit)")
        if self._kernel is not None:
            out_t = np.zeros((self.n_regions, n_time))  # per parcel its T sums, contiguous
            for (start, stop, _, _), (local, cols, inv_n) in zip(self.blocks, self._by_voxel, strict=True):
                x = self._block(get_block, start, stop, n_time)
                # W * scale: the same float64 products as the mat-vec's below
                self._kernel(x, local, cols, inv_n * scale[local + start], out_t)
            out = np.ascontiguousarray(out_t.T)
        else:
            out = np.zeros((n_time, self.n_regions), dtype=np.float64)
            row = np.empty(self.block, dtype=np.float64)
            for start, stop, sub, voxels in self.blocks:
                x = self._block(get_block, start, stop, n_time)
                data = sub.data * scale[voxels]  # W * scale, the same float64 products as (diag(scale) @ W)
                buf = row[: stop - start]
                if _csr_matvec is None:  # pragma: no cover
                    ws = sp.csr_matrix((data, sub.indices, sub.indptr), shape=sub.shape)
                    for t in range(n_time):
                        np.copyto(buf, x[t])
                        out[t] += ws @ buf
                    continue
                for t in range(n_time):  # one cache-resident row block at a time
                    np.copyto(buf, x[t])
                    _csr_matvec(self.n_regions, stop - start, sub.indptr, sub.indices, data, buf, out[t])
        out += self.w.T @ mean
        out[:, self.counts == 0] = np.nan
        return out

    @staticmethod
    def _block(get_block: Callable[[int, int], np.ndarray], start: int, stop: int, n_time: int) -> np.ndarray:
        x = np.asarray(get_block(start, stop))
        if x.shape != (n_time, stop - start):
            want = (n_time, stop - start)
            raise ValueError(f"voxel block {start}:{stop} has shape {x.shape}, expected {want}")
        return x

    def __call__(self, unit: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """(T, n_regions) float64 parcel means of one subject's (T, V) unit series."""
        unit = np.asarray(unit)
        if unit.ndim != 2 or unit.shape[1] != self.n_voxels:
            raise ValueError("scale, mean and labels must have one entry per voxel (column of unit)")
        return self.series(lambda a, b: unit[:, a:b], scale, mean, unit.shape[0])


def finalize_group_fc(sum_z: np.ndarray, n_subjects: int) -> tuple[np.ndarray, np.ndarray]:
    """Group matrices from the sum of subject z matrices.

    Parameters
    ----------
    sum_z
        (N, N) sum over subjects of :func:`subject_fc_z`.
    n_subjects
        Number of subjects summed (> 0).

    Returns
    -------
    fcgroupz : numpy.ndarray
        (N, N) float64 mean z, diagonal 0.
    fcgroupr : numpy.ndarray
        (N, N) float64 ``tanh(mean z)``, diagonal 1.
    """
    if n_subjects < 1:
        raise ValueError("group FC needs at least one subject")
    fcgroupz = np.asarray(sum_z, dtype=np.float64) / n_subjects
    np.fill_diagonal(fcgroupz, 0.0)
    fcgroupr = np.tanh(fcgroupz)
    np.fill_diagonal(fcgroupr, 1.0)
    return fcgroupz, fcgroupr
