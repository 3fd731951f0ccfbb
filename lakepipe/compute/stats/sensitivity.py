"""Sensitivity maps: how many case maps exceed +T or fall below -T at each voxel.

``pos(v) = mean_i [M_i(v) > T]``, ``neg(v) = mean_i [M_i(v) < -T]`` (strict inequalities, over the
case maps only); ``combined = pos - neg`` (van den Heuvel et al.); ``dominant = pos`` where
``pos >= neg`` else ``-neg`` (a tie goes to ``pos``). Column-wise: any voxel split gives the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.validation import StatsInputError, check_maps

FloatArray = npt.NDArray[np.float64]

#: default threshold T (t/z units of the FNM maps) and the sensitivity criterion on |dominant|
DEFAULT_THRESHOLD = 7.0
DEFAULT_CRITERION = 0.75

SENSITIVITY_CONVENTIONS: dict[str, Any] = {
    "pos": "mean over cases of [M > T]",
    "neg": "mean over cases of [M < -T]",
    "combined": "pos - neg",
    "dominant": "pos if pos >= neg else -neg",
    "criterion": "|dominant| >= criterion",
}


@dataclass(frozen=True)
class Sensitivity:
    """Fractions of case maps beyond the threshold, per voxel (all (V,) float64)."""

    pos: FloatArray
    neg: FloatArray
    combined: FloatArray
    dominant: FloatArray
    threshold: float


def sensitivity(maps: npt.ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> Sensitivity:
    """Sensitivity of a set of case maps.

    Parameters
    ----------
    maps
        (n_cases, V) case maps (a block of voxel columns is fine).
    threshold
        T > 0.

    Returns
    -------
    Sensitivity
        ``pos``, ``neg``, ``combined``, ``dominant`` as in the module notes.
    """
    if not threshold > 0:
        raise StatsInputError(f"the sensitivity threshold must be positive, got {threshold}")
    m = check_maps(maps)
    if m.shape[0] == 0:
        raise StatsInputError("sensitivity needs at least one case map")
    n = m.shape[0]
    pos = np.count_nonzero(m > threshold, axis=0) / n
    neg = np.count_nonzero(m < -threshold, axis=0) / n
    return Sensitivity(
        pos=pos,
        neg=neg,
        combined=pos - neg,
        dominant=np.where(pos >= neg, pos, -neg),
        threshold=float(threshold),
    )


def meets_criterion(dominant: npt.ArrayLike, criterion: float = DEFAULT_CRITERION) -> npt.NDArray[np.bool_]:
    """Voxels where ``|dominant| >= criterion`` (default 0.75)."""
    if not 0 <= criterion <= 1:
        raise StatsInputError(f"the sensitivity criterion is a fraction in [0, 1], got {criterion}")
    return np.abs(np.asarray(dominant, dtype=np.float64)) >= criterion
