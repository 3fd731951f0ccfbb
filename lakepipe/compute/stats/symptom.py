"""Symptom maps: correlation over patients between each voxel's map value and a behavioural score.

``r(v)`` is Pearson's r over patients of ``M_i(v)`` and ``s_i`` (or Spearman's: Pearson of the
ranks of both, average ranks for ties, the maps ranked over patients per voxel). With covariates it
is the partial correlation (both residualised on ``[1, covariates]``), which is a monotone function
of the t of ``s`` in ``M = b0 + b1 s + g cov + e``: ``r = t / sqrt(t^2 + df)``, ``df = n - 2 - k``.
So the symptom map is the same linear model as the specificity test with the score as the tested
variable (:mod:`lakepipe.compute.stats.glm`): FWE from the max ``|r|`` over voxels under score
permutation (Freedman-Lane with covariates, plain score permutation without), batched into GEMMs
and split by voxel and permutation blocks the same way. The parametric p (for reference) is the
t test of r with ``df`` degrees of freedom (for Spearman the approximation ``scipy.stats.spearmanr``
uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.fdr import fdr_q
from lakepipe.compute.stats.glm import (
    GLM_CONVENTIONS,
    LinearDesign,
    PermutationTestResult,
    PreparedMaps,
    linear_design,
    null_tie_tol,
    parametric_p,
    prepare_maps,
    run_permutation_test,
    t_from_u,
)
from lakepipe.compute.stats.permutations import (
    exceedance_pvalues,
    max_statistic_pvalues,
    permutation_plan,
)
from lakepipe.compute.stats.validation import StatsInputError, check_maps, check_scores

FloatArray = npt.NDArray[np.float64]
METHODS = ("pearson", "spearman")

SYMPTOM_CONVENTIONS: dict[str, Any] = {
    "statistic": "Pearson r over patients (Spearman: Pearson of average ranks of maps and scores); "
    "partial correlation with covariates (both residualised on [1, covariates])",
    "permutation": "scores permuted (with covariates: Freedman-Lane, as for the GLM t)",
    "fwe": "max over voxels of |r| (two-sided), r (greater) or -r (less) per permutation",
    "p_value": GLM_CONVENTIONS["p_value"],
    "parametric_p": "t = r sqrt(df / (1 - r^2)), Student t with df = n - 2 - n_covariates",
    "zero_variance": "a voxel whose (residual) variance over patients is 0 has r = 0 (p = 1)",
}


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise StatsInputError(f"correlation method must be one of {METHODS}, got {method!r}")
    return method


def rank_maps(maps: npt.ArrayLike) -> FloatArray:
    """Average ranks over patients (rows) of each voxel column, float64 (the Spearman transform)."""
    from scipy import stats  # imported on use: 1.5-3 s at import

    return np.asarray(stats.rankdata(check_maps(maps), axis=0), dtype=np.float64)


def symptom_design(
    scores: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    covariate_names: Sequence[str] | None = None,
    method: str = "pearson",
) -> LinearDesign:
    """Design of a symptom map (scores ranked for Spearman), for :func:`symptom_prepare`.

    Raises
    ------
    StatsInputError
        Missing or constant scores (``indices``), unusable covariates (``names``).
    """
    s = check_scores(scores)
    if _check_method(method) == "spearman":
        from scipy import stats  # imported on use: 1.5-3 s at import

        s = np.asarray(stats.rankdata(s), dtype=np.float64)
    return linear_design(s, covariates, covariate_names, tested_name="score")


def symptom_prepare(
    design: LinearDesign, maps: npt.ArrayLike, method: str = "pearson", dtype: npt.DTypeLike = np.float32
) -> PreparedMaps:
    """:func:`~lakepipe.compute.stats.glm.prepare_maps` for a voxel block (ranked for Spearman).

    ``prep.u`` is the observed r; feed ``prep`` to :func:`~lakepipe.compute.stats.glm.null_max_block`,
    whose ``max_u`` is then the null max of ``|r|`` (or r, -r).
    """
    block = rank_maps(maps) if _check_method(method) == "spearman" else maps
    return prepare_maps(design, block, dtype)


def symptom_map(
    maps: npt.ArrayLike,
    scores: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    covariate_names: Sequence[str] | None = None,
    method: str = "pearson",
    n_perm: int = 5000,
    seed: int = 0,
    tail: str = "two-sided",
    dtype: npt.DTypeLike = np.float32,
    voxel_block: int = 65536,
    perm_block: int = 1024,
    uncorrected: str = "parametric",
) -> PermutationTestResult:
    """Symptom map with FWE-corrected p from score permutations.

    Parameters
    ----------
    maps
        (n, V) patient maps.
    scores
        (n,) behavioural scores (finite, not constant).
    covariates, covariate_names
        Optional (n, k) covariates for a partial correlation.
    method
        ``pearson`` or ``spearman``.
    n_perm, seed, tail, dtype, voxel_block, perm_block, uncorrected
        As for :func:`~lakepipe.compute.stats.glm.specificity` (all ``n!`` orderings are enumerated
        when ``n_perm >= n! - 1``).

    Returns
    -------
    PermutationTestResult
        ``statistic`` is r, ``null_max`` the null max of ``|r|`` (or r, -r).
    """
    design = symptom_design(scores, covariates, covariate_names, method)
    m = check_maps(maps, design.n)
    plan = permutation_plan(design.n, n_perm, seed)
    transform = rank_maps if method == "spearman" else None
    dt = np.float64 if plan.exact else dtype
    r, null_r, counts = run_permutation_test(
        design, m, plan, tail, dt, voxel_block, perm_block, uncorrected, transform=transform
    )
    p_unc = (
        parametric_p(t_from_u(r, design.df), design.df, tail)
        if counts is None
        else exceedance_pvalues(counts, plan.n_perm)
    )
    return PermutationTestResult(
        statistic=r,
        p_fwe=max_statistic_pvalues(r, null_r, tail, tie_tol=null_tie_tol(design, dt)),
        p_uncorrected=p_unc,
        q_fdr=fdr_q(p_unc),
        null_max=null_r,
        df=design.df,
        tail=tail,
        plan=plan,
        conventions={
            **SYMPTOM_CONVENTIONS,
            "method": method,
            "uncorrected_p": uncorrected,
            "tail": tail,
            "dtype": np.dtype(dt).name,
            "tie_tol": null_tie_tol(design, dt),
        },
    )
