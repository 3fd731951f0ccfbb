"""Tolerances of FNM maps, derived from the float32 arithmetic (not from one machine's output).

The pipeline stores each connectome series as float32 unit vectors and correlates a seed with
every voxel by a float32 dot product over T time points. Whatever the summation order (another
BLAS kernel, another blocking, AVX2 or AVX-512), a dot product of T float32 products of unit vectors
differs from the exact one by at most ``gamma_T = T u / (1 - T u)`` (u = 2^-24; Higham, Accuracy
and Stability of Numerical Algorithms, 3.1, with sum |x_t y_t| <= 1 by Cauchy-Schwarz), and the
rounding of the two unit vectors to float32 adds at most ``2 u``: ``|dr| <= (T + 2) u / (1 - (T + 2) u)``.
From there, per voxel (r_max: the largest |r| over subjects; the clip keeps |r| <= R_CLIP):

- z = arctanh(r): ``|dz| <= |dr| / (1 - r'^2)`` with r' = min(r_max + |dr|, R_CLIP) (mean value theorem);
- the mean of z over subjects (zmap) moves by at most dz; tanh (rmap) by at most dz as well;
- sd of z over n subjects: every deviation moves by at most 2 dz, so ``|dsd| <= 2 dz sqrt(n / (n - 1))``;
- t = m / (s / sqrt(n)): ``|dt| <= sqrt(n) (dz / s + |m| |dsd| / s^2) / (1 - |dsd| / s)`` where
  |dsd| < s, plus the float32 rounding of the stored t (u |t|).

These are worst-case bounds (the usual error is about sqrt(T) u, not T u), so a passing test allows
any summation order, while a real fault (a subject lost or counted twice, a wrong voxel, a wrong
weight) moves z by about |z| / n, orders of magnitude more.
"""

from __future__ import annotations

import numpy as np

U32 = 2.0**-24
R_CLIP = 0.999999


def r_error(n_time: int, seed_voxels: int = 0, seed_condition: float = 1.0) -> float:
    """Bound on |delta r| of one float32 correlation of unit-norm series of ``n_time`` points.

    The seed's series is itself a float32 sum over its ``seed_voxels`` voxels: relative error at
    most ``gamma_K * seed_condition`` (the condition number ``|| sum_k |w_k x_k| || / || sum_k w_k x_k ||``
    of that sum over time, about 1 for a compact lesion whose voxels correlate), which moves r by at
    most twice that (r is a cosine: a relative perturbation d of one vector moves it by <= 2 d).
    """
    k = (n_time + 2) * U32
    s = seed_voxels * U32 * seed_condition
    return k / (1 - k) + 2 * s / (1 - s)


def seed_condition(series: np.ndarray, cols: np.ndarray, weights: np.ndarray | None) -> float:
    """The largest condition number over subjects of the seed's weighted sum of centred voxel series."""
    w = np.ones(len(cols)) if weights is None else np.asarray(weights, np.float64)
    worst = 1.0
    for s in series:
        x = np.asarray(s[:, cols], np.float64)
        x = (x - x.mean(axis=0)) * w
        total = np.linalg.norm(x.sum(axis=1))
        worst = max(worst, float(np.linalg.norm(np.abs(x).sum(axis=1)) / total) if total > 0 else np.inf)
    return worst


def z_error(n_time: int, rmax: np.ndarray, dr: float | None = None) -> np.ndarray:
    """Bound on |delta z| (and on the mean z over subjects) given each voxel's largest |r|."""
    dr = r_error(n_time) if dr is None else dr
    r = np.minimum(np.abs(rmax) + dr, R_CLIP)
    return dr / (1 - r**2)


def t_error(
    n_time: int, n_sub: int, zmean: np.ndarray, zsd: np.ndarray, rmax: np.ndarray, dr: float | None = None
) -> np.ndarray:
    """Bound on |delta t| of the one-sample t over ``n_sub`` subjects (inf where sd is within rounding)."""
    dz = z_error(n_time, rmax, dr)
    dsd = 2 * dz * np.sqrt(n_sub / (n_sub - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        dt = np.sqrt(n_sub) * (dz / zsd + np.abs(zmean) * dsd / zsd**2) / (1 - dsd / zsd)
        t = np.abs(zmean) / (zsd / np.sqrt(n_sub))
    return np.where(dsd < zsd, dt + U32 * t, np.inf)


def fnm_bounds(ref: dict, dr: float, n_time: int, n_sub: int) -> dict:
    """Per-voxel bounds of |pipeline - exact| of one seed's FNM maps, given the reference maps of
    :func:`tests.reference.seed_to_voxel_many` and the seed's bound on |dr|, plus the float32
    rounding of the stored map (u |value|)."""
    dz = z_error(n_time, ref["rmax"], dr)
    dt = t_error(n_time, n_sub, ref["zmap"], ref["zsd"], ref["rmax"], dr)
    return {
        "zmap": dz + U32 * np.abs(ref["zmap"]),
        "rmap": dz + U32,
        "avgr": np.full_like(dz, dr + U32),
        "tmap": dt,
    }


def reference_maps(series: np.ndarray, seeds: list, n_time: int) -> tuple[list[dict], list[float]]:
    """Reference maps (tests/reference.py) of (voxel columns, weights) seeds and each seed's |dr| bound."""
    import warnings

    from tests import reference

    with warnings.catch_warnings():  # scipy's "catastrophic cancellation": r = 1 in every subject
        warnings.simplefilter("ignore", RuntimeWarning)
        maps = reference.seed_to_voxel_many(series, seeds)
    dr = [r_error(n_time, len(c), seed_condition(series, c, w)) for c, w in seeds]
    return maps, dr


def assert_float32_rounding_of(got: np.ndarray, ref: np.ndarray, rtol: float) -> None:
    """``got`` (float32) is ``ref`` rounded to float32, for a ``got`` computed in float64 within
    ``rtol`` (relative) of ``ref``: the two roundings may differ only where ``ref`` lies within
    ``rtol |ref|`` of the midpoint between two float32 values, and then by one ulp (4 float64 ulp
    are added to ``rtol`` for the reference's own rounding)."""
    got = np.asarray(got)
    assert got.dtype == np.float32
    ref = np.asarray(ref, np.float64)
    r32 = ref.astype(np.float32)
    diff = got != r32
    if not diff.any():
        return
    ulps = np.abs(got[diff].view(np.int32).astype(np.int64) - r32[diff].view(np.int32))
    assert ulps.max() <= 1, f"float32 values {ulps.max()} ulp apart"
    mid = (got[diff].astype(np.float64) + r32[diff].astype(np.float64)) / 2
    off = np.abs(ref[diff] - mid) / np.abs(ref[diff])
    assert off.max() <= rtol + 4 * np.finfo(np.float64).eps, (
        f"{diff.sum()} cells round differently, one {off.max():.2e} (relative) from the midpoint"
    )
