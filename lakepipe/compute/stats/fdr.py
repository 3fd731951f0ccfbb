"""Benjamini-Hochberg q-values over voxels (``pfdrmap`` and the specificity FDR).

Thin wrappers around ``scipy.stats.false_discovery_control`` (method ``bh``) that check the input
first, so a bad p map gives a message naming the rows instead of a bare scipy error.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.validation import StatsInputError

FloatArray = npt.NDArray[np.float64]


def fdr_q(p: npt.ArrayLike) -> FloatArray:
    """Benjamini-Hochberg q over all values of a p map.

    Parameters
    ----------
    p
        (V,) p-values in [0, 1] over the in-brain voxels (or regions).

    Returns
    -------
    numpy.ndarray
        (V,) float64 q (``scipy.stats.false_discovery_control(p, method="bh")``).
    """
    pp = np.asarray(p, dtype=np.float64)
    if pp.ndim != 1:
        raise StatsInputError(f"a p map must be one-dimensional, got shape {pp.shape}")
    q: FloatArray = pfdrmap(pp[None, :])[0]
    return q


def pfdrmap(pmaps: npt.ArrayLike) -> FloatArray:
    """Benjamini-Hochberg q over the in-brain voxels of each row of p maps (one row per seed).

    Parameters
    ----------
    pmaps
        (L, V) or (V,) p-values in [0, 1], voxels along the last axis.

    Returns
    -------
    numpy.ndarray
        Same shape, float64 q-values, each row corrected on its own.

    Raises
    ------
    StatsInputError
        Values outside [0, 1] or NaN (``indices`` = the rows holding them).
    """
    pp = np.asarray(pmaps, dtype=np.float64)
    if pp.ndim not in (1, 2) or pp.shape[-1] == 0:
        raise StatsInputError(f"p maps must be (seed, voxel) or (voxel,), got shape {pp.shape}")
    rows = pp.reshape(-1, pp.shape[-1])
    bad = np.flatnonzero(~((rows >= 0) & (rows <= 1)).all(axis=1))  # NaN fails both comparisons
    if bad.size:
        raise StatsInputError(
            f"p maps of rows {bad.tolist()[:10]} have values outside [0, 1] or NaN", indices=bad.tolist()
        )
    from scipy import stats  # imported on use: 1.5-3 s at import

    return np.asarray(stats.false_discovery_control(pp, axis=-1, method="bh"), dtype=np.float64)
