"""Conjunction of sensitivity and specificity, and the agreement map.

- conjunction: ``|dominant| >= criterion`` AND ``p_fwe < alpha`` AND ``sign(t) == sign(dominant)``;
- agreement: ``zscore(dominant) * zscore(t)`` where ``sign(dominant) == sign(t)`` (the raw values'
  signs, both non-zero), else 0. z-scores over the voxels given, ddof 0 (``scipy.stats.zscore``);
  a constant map has z-score 0 everywhere.

Both need every voxel (the z-scores are over voxels): call them on the assembled maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.sensitivity import DEFAULT_CRITERION, meets_criterion
from lakepipe.compute.stats.validation import StatsInputError

FloatArray = npt.NDArray[np.float64]

CONJUNCTION_CONVENTIONS: dict[str, Any] = {
    "conjunction": "|dominant| >= criterion and p_fwe < alpha and sign(t) == sign(dominant)",
    "agreement": "zscore(dominant) * zscore(t) where sign(dominant) == sign(t) != 0, else 0",
    "zscore": "over voxels, ddof 0; 0 for a constant map",
}


@dataclass(frozen=True)
class Conjunction:
    """Conjunction mask and agreement map, (V,) each."""

    mask: npt.NDArray[np.bool_]
    agreement: FloatArray
    criterion: float
    alpha: float


def _zscore(x: FloatArray) -> FloatArray:
    if x.size == 0 or np.all(x == x[0]):
        return np.zeros_like(x)
    from scipy import stats  # imported on use: 1.5-3 s at import

    return np.asarray(stats.zscore(x), dtype=np.float64)


def agreement_map(dominant: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
    """``zscore(dominant) * zscore(t)`` where the signs of dominant and t agree, else 0."""
    d = np.asarray(dominant, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64)
    if d.shape != tt.shape or d.ndim != 1:
        raise StatsInputError(f"dominant {d.shape} and t {tt.shape} must be maps over the same voxels")
    same = (np.sign(d) == np.sign(tt)) & (d != 0)
    return np.where(same, _zscore(d) * _zscore(tt), 0.0)


def conjunction(
    dominant: npt.ArrayLike,
    t: npt.ArrayLike,
    p_fwe: npt.ArrayLike,
    criterion: float = DEFAULT_CRITERION,
    alpha: float = 0.05,
) -> Conjunction:
    """Voxels that are both sensitive and specific, with the same sign.

    Parameters
    ----------
    dominant
        (V,) from :func:`~lakepipe.compute.stats.sensitivity.sensitivity`.
    t, p_fwe
        (V,) specificity t and FWE p (:func:`~lakepipe.compute.stats.glm.specificity`).
    criterion
        Sensitivity criterion on ``|dominant|`` (default 0.75).
    alpha
        FWE level (default 0.05).
    """
    d = np.asarray(dominant, dtype=np.float64)
    tt = np.asarray(t, dtype=np.float64)
    p = np.asarray(p_fwe, dtype=np.float64)
    if not (d.shape == tt.shape == p.shape) or d.ndim != 1:
        raise StatsInputError(
            f"dominant {d.shape}, t {tt.shape} and p {p.shape} must be maps over the same voxels"
        )
    if not 0 < alpha < 1:
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha}")
    mask = meets_criterion(d, criterion) & (p < alpha) & (np.sign(tt) == np.sign(d)) & (d != 0)
    return Conjunction(
        mask=mask, agreement=agreement_map(d, tt), criterion=float(criterion), alpha=float(alpha)
    )
