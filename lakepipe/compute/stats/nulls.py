"""Random-lesion null: control lesion sets matched on volume to the cases, and percentiles.

Matching (:func:`random_lesion_sets`), draw ``d`` with its own generator ``default_rng([seed, d])``
(so draws can be split over workers and stay the same):

1. each control volume is jittered, ``v_j * exp(e_j)``, ``e_j ~ Normal(0, jitter^2)`` afresh per draw
   (default ``jitter = 0.1``, about 10 % of the volume; 0 turns it off);
2. the cases are visited in a random order; each takes the unused control whose jittered volume
   is nearest (absolute difference) to its own volume, exact ties broken uniformly at random.

With ``jitter = 0`` and distinct volumes the draws still differ through the visiting order when
cases compete for the same control; the jitter makes near-equal controls interchangeable, so
repeated draws explore the controls of about the same volume instead of always returning one set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.validation import StatsInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def _volumes(v: npt.ArrayLike, what: str) -> FloatArray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise StatsInputError(f"{what} lesion volumes must be a non-empty vector, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
    if bad.size:
        raise StatsInputError(
            f"{what} lesion volumes of rows {bad.tolist()[:10]} are missing or negative", indices=bad.tolist()
        )
    return a


def random_lesion_sets(
    case_volumes: npt.ArrayLike,
    control_volumes: npt.ArrayLike,
    n_draws: int,
    seed: int,
    jitter: float = 0.1,
    start: int = 0,
) -> IntArray:
    """Sets of control lesions matched on volume to the cases.

    Parameters
    ----------
    case_volumes
        (n,) lesion volume of each case (voxels or mm^3).
    control_volumes
        (m,) lesion volumes of the control lesions, ``m >= n``.
    n_draws
        Number of sets.
    seed
        Non-negative integer seed.
    jitter
        Standard deviation of the log-volume jitter of the controls (>= 0).
    start
        Index of the first draw (draw ``d`` depends only on ``(seed, d)``).

    Returns
    -------
    numpy.ndarray
        (n_draws, n) indices into the controls; row d, column i is the control matched to case i.
    """
    cv = _volumes(case_volumes, "case")
    ctl = _volumes(control_volumes, "control")
    if ctl.size < cv.size:
        raise StatsInputError(
            f"{ctl.size} control lesions cannot be matched to {cv.size} cases without reuse"
        )
    if n_draws < 1 or start < 0:
        raise StatsInputError(f"need n_draws >= 1 and start >= 0, got {n_draws} and {start}")
    if not (jitter >= 0 and np.isfinite(jitter)):
        raise StatsInputError(f"jitter must be a non-negative number, got {jitter}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise StatsInputError(f"the seed must be a non-negative integer, got {seed!r}")
    out = np.empty((n_draws, cv.size), dtype=np.intp)
    for row, d in enumerate(range(start, start + n_draws)):
        rng = np.random.default_rng([int(seed), d])
        vol = ctl * np.exp(rng.normal(0.0, jitter, ctl.size)) if jitter > 0 else ctl.copy()
        free = np.ones(ctl.size, dtype=bool)
        for i in rng.permutation(cv.size):
            dist = np.where(free, np.abs(vol - cv[i]), np.inf)
            best = np.flatnonzero(dist == dist.min())
            j = int(best[rng.integers(best.size)]) if best.size > 1 else int(best[0])
            out[row, i] = j
            free[j] = False
    return out


@dataclass(frozen=True)
class NullComparison:
    """Where observed values fall in a null distribution (arrays shaped like ``observed``).

    Attributes
    ----------
    percentile : numpy.ndarray
        ``100 * (#{null < obs} + 0.5 #{null == obs}) / n`` (``scipy.stats.percentileofscore``, kind ``mean``).
    p_greater, p_less : numpy.ndarray
        ``(1 + #{null >= obs}) / (1 + n)`` and ``(1 + #{null <= obs}) / (1 + n)``.
    n : int
        Null draws.
    """

    percentile: FloatArray
    p_greater: FloatArray
    p_less: FloatArray
    n: int


def null_percentile(observed: npt.ArrayLike, null: npt.ArrayLike) -> NullComparison:
    """Percentile and p of observed statistics among the same statistics over null draws.

    Parameters
    ----------
    observed
        Scalar or array of statistics (e.g. a map).
    null
        (n_draws, ...) the statistics on each null draw, trailing shape that of ``observed``.
    """
    obs = np.asarray(observed, dtype=np.float64)
    nul = np.asarray(null, dtype=np.float64)
    if nul.ndim != obs.ndim + 1 or nul.shape[1:] != obs.shape or nul.shape[0] == 0:
        raise StatsInputError(
            f"null draws of shape {nul.shape} do not match observed values of shape {obs.shape}"
        )
    if np.isnan(nul).any() or np.isnan(obs).any():
        raise StatsInputError("observed or null statistics contain NaN")
    n = nul.shape[0]
    below = np.count_nonzero(nul < obs, axis=0)
    equal = np.count_nonzero(nul == obs, axis=0)
    above = n - below - equal
    return NullComparison(
        percentile=100.0 * (below + 0.5 * equal) / n,
        p_greater=(1.0 + above + equal) / (1.0 + n),
        p_less=(1.0 + below + equal) / (1.0 + n),
        n=n,
    )
