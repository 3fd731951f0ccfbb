"""Threshold-free cluster enhancement (TFCE) of voxel maps and its max-statistic null.

The enhancement itself is nilearn's (``nilearn.mass_univariate._utils.calculate_tfce``, the one
``permuted_ols(tfce=True)`` uses: fslmaths-style, ``E = 0.5``, ``H = 2``, 100 steps from 0 to the
map's own max, face connectivity by default); it is not reimplemented here. What lakepipe adds is
the split: TFCE needs the *whole* map of each permutation (clusters cross any voxel block), so it
is a per-permutation-block kernel over full maps, fed by
:func:`~lakepipe.compute.stats.glm.permuted_u_maps` assembled over all voxel blocks.

Voxels are given as (V,) values with their (V, 3) grid indices ``ijk`` on a grid of ``shape``;
voxels outside them are background (0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.permutations import check_tail
from lakepipe.compute.stats.validation import StatsInputError

FloatArray = npt.NDArray[np.float64]

# permutations enhanced per nilearn call (a float64 4D grid of this many maps)
_CHUNK = 8

TFCE_CONVENTIONS: dict[str, Any] = {
    "implementation": "nilearn.mass_univariate._utils.calculate_tfce (as permuted_ols(tfce=True))",
    "E": 0.5,
    "H": 2.0,
    "dh": "auto: 100 steps from 0 to the map's max |value|",
    "connectivity": "scipy.ndimage.generate_binary_structure(3, connectivity); 1 = faces (nilearn's default)",
    "two_sided": "positive and negative clusters enhanced separately, negative ones negative",
}


def _check_grid(ijk: npt.ArrayLike, shape: tuple[int, int, int], n_voxels: int) -> npt.NDArray[np.intp]:
    idx = np.asarray(ijk, dtype=np.intp)
    if idx.shape != (n_voxels, 3):
        raise StatsInputError(f"ijk must be ({n_voxels}, 3) grid indices, got shape {idx.shape}")
    if len(shape) != 3 or (idx < 0).any() or (idx >= np.asarray(shape)).any():
        raise StatsInputError(f"ijk outside the grid of shape {shape}")
    return idx


def tfce_maps(
    stat_maps: npt.ArrayLike,
    ijk: npt.ArrayLike,
    shape: tuple[int, int, int],
    tail: str = "two-sided",
    connectivity: int = 1,
) -> FloatArray:
    """TFCE of each full statistic map.

    Parameters
    ----------
    stat_maps
        (P, V) or (V,) statistic maps (t or z) over all in-brain voxels.
    ijk, shape
        (V, 3) grid index of each voxel and the grid shape.
    tail
        ``two-sided`` (both signs, signed result), ``greater`` (positive clusters) or ``less``
        (negative clusters; result negated back, so <= 0).
    connectivity
        1 (faces), 2 (edges) or 3 (corners).

    Returns
    -------
    numpy.ndarray
        Same shape as ``stat_maps``, float64.
    """
    from nilearn.mass_univariate._utils import calculate_tfce  # type: ignore[import-untyped,unused-ignore]
    from scipy import ndimage  # imported on use, like nilearn and scipy.stats (0.4 s at import)

    side = check_tail(tail)
    maps = np.asarray(stat_maps, dtype=np.float64)
    single = maps.ndim == 1
    maps2 = np.atleast_2d(maps)
    idx = _check_grid(ijk, shape, maps2.shape[1])
    sign = -1.0 if side == "less" else 1.0
    struct = ndimage.generate_binary_structure(3, connectivity)
    out = np.empty_like(maps2)
    for lo in range(0, maps2.shape[0], _CHUNK):
        hi = min(lo + _CHUNK, maps2.shape[0])
        grid = np.zeros((*shape, hi - lo))
        grid[idx[:, 0], idx[:, 1], idx[:, 2]] = sign * maps2[lo:hi].T
        enhanced = calculate_tfce(grid, bin_struct=struct, two_sided_test=side == "two-sided")
        out[lo:hi] = sign * enhanced[idx[:, 0], idx[:, 1], idx[:, 2]].T
    return out[0] if single else out


def tfce_null_max(
    stat_maps: npt.ArrayLike,
    ijk: npt.ArrayLike,
    shape: tuple[int, int, int],
    tail: str = "two-sided",
    connectivity: int = 1,
) -> FloatArray:
    """(P,) max over voxels of ``|TFCE|`` (two-sided), TFCE (greater) or ``-TFCE`` (less) of each
    permuted full map: the null of the TFCE max statistic, for
    :func:`~lakepipe.compute.stats.permutations.max_statistic_pvalues` with the same tail."""
    enhanced = np.atleast_2d(tfce_maps(stat_maps, ijk, shape, tail, connectivity))
    side = check_tail(tail)
    if side == "two-sided":
        return np.asarray(np.abs(enhanced).max(axis=1))
    return np.asarray(enhanced.max(axis=1) if side == "greater" else (-enhanced).max(axis=1))
