"""Weighted parcel sums of a block of voxel series, the inner loop of
:class:`~lakepipe.compute.groupfc.ParcelAverager` (``parcellate``), as one numba pass.

For each time point t and each labelled voxel j of the block (ascending), ``out_t[col_j, t] +=
float64(x[t, v_j]) * data_j``: the same products, added in the same order per parcel, as scipy's
CSR mat-vec over the parcel's voxels, so the sums are equal bit for bit (no FMA contraction).
scipy's mat-vec adds one parcel's voxels in a chain (each add waits for the previous one) and needs
a float64 copy of each row; here 8 time points are summed side by side (8 independent chains), read
straight from the float32 block: 2.6x faster on one thread (120 x 235,375 voxels, 400 parcels:
30 vs 78 ms a subject, AMD EPYC Zen 4). numba is optional: :func:`block_sums` returns None without
it, and the caller keeps scipy's mat-vec.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from lakepipe.compute.jit import njit_cached

log = logging.getLogger(__name__)

#: ``fn(x, idx, cols, data, out_t)``: x (T, w) block, idx (k,) its labelled voxels (ascending), cols
#: (k,) their parcels, data (k,) float64 weights, out_t (n_parcels, T) float64 sums (added to).
BlockSums = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def _sums(x: Any, idx: Any, cols: Any, data: Any, out_t: Any) -> None:
    n_time = x.shape[0]
    k = idx.size
    t0 = 0
    while t0 + 8 <= n_time:
        for j in range(k):
            v = idx[j]
            o = out_t[cols[j]]
            d = data[j]
            for tt in range(8):  # 8 independent float64 sums: no chain of dependent adds
                o[t0 + tt] += np.float64(x[t0 + tt, v]) * d
        t0 += 8
    for t in range(t0, n_time):
        for j in range(k):
            out_t[cols[j], t] += np.float64(x[t, idx[j]]) * data[j]


@functools.cache
def block_sums() -> BlockSums | None:
    """The compiled kernel (loaded from numba's cache after the first compile), or None where numba
    is missing or cannot compile (logged)."""
    try:
        fn = njit_cached(_sums, nogil=True, error_model="numpy")
        probe = np.zeros((9, 2), np.float32)  # compile now, for the float32 blocks of a store
        fn(probe, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), np.zeros((1, 9)))
    except ImportError:
        log.info("numba is not installed: parcel sums by scipy's mat-vec")
        return None
    except Exception as exc:  # numba present but cannot compile here
        log.warning("parcel sums kernel unavailable (%s): scipy's mat-vec instead", exc)
        return None
    return fn  # type: ignore[no-any-return]
