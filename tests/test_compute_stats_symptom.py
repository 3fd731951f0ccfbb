"""Symptom maps: r against scipy per voxel, partial r, FWE against naive score-permutation loops,
exact enumeration, block determinism and calibration under the null."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from lakepipe.compute.stats import StatsInputError, symptom_map
from tests.test_compute_stats_reference import (
    corr_per_voxel,
    freedman_lane_max_t,
    partial_corr_per_voxel,
    smooth_noise,
)


def _patients(seed: int, n: int = 26, shape=(5, 5, 4), strength: float = 0.0, k: int = 0):
    """Patient maps with a planted brain-behaviour relation in voxels 0..9 (score loads on them)."""
    rng = np.random.default_rng(seed)
    maps = smooth_noise(rng, n, shape) + 2.0
    score = rng.gamma(3.0, 4.0, n)  # skewed, like a deficit score
    maps[:, :10] += strength * ((score - score.mean()) / score.std())[:, None]
    cov = None
    if k:
        cov = rng.standard_normal((n, k)) + 0.3 * score[:, None] / score.std()
        maps += cov @ rng.uniform(-0.3, 0.3, (k, maps.shape[1]))
    return maps, score, cov


def _tail(r, tail):
    return np.abs(r) if tail == "two-sided" else (r if tail == "greater" else -r)


def _naive_fwe(r_obs, null_max, ties=0.0):
    return np.array([(1 + np.sum(null_max >= s - ties)) / (1 + null_max.size) for s in r_obs])


def test_pearson_r_and_p_match_scipy():
    maps, score, _ = _patients(1, strength=0.8)
    res = symptom_map(maps, score, n_perm=10, seed=0)
    ref = [stats.pearsonr(maps[:, v], score) for v in range(maps.shape[1])]
    # float64 throughout: r to ~n eps; the p of a t with n-2 df is scipy's exact beta p for Pearson
    np.testing.assert_allclose(res.statistic, [x.statistic for x in ref], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.p_uncorrected, [x.pvalue for x in ref], rtol=1e-6)
    assert np.all(res.statistic[:10] > 0.3)


def test_spearman_r_matches_scipy():
    maps, score, _ = _patients(2, strength=0.8)
    score = np.round(score)  # ties in the score
    maps[:3, 4] = maps[3, 4]  # and ties in a voxel
    res = symptom_map(maps, score, method="spearman", n_perm=10, seed=0)
    ref = [stats.spearmanr(maps[:, v], score) for v in range(maps.shape[1])]
    np.testing.assert_allclose(res.statistic, [x.statistic for x in ref], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.p_uncorrected, [x.pvalue for x in ref], rtol=1e-6)


def test_partial_r_matches_residualised_correlation():
    maps, score, cov = _patients(3, strength=0.8, k=2)
    res = symptom_map(maps, score, cov, n_perm=10, seed=0)
    np.testing.assert_allclose(res.statistic, partial_corr_per_voxel(maps, score, cov), rtol=1e-9, atol=1e-12)
    assert res.df == score.size - 4


def test_partial_r_matches_statsmodels_t():
    sm = pytest.importorskip("statsmodels.api")
    maps, score, cov = _patients(4, strength=0.5, k=1)
    res = symptom_map(maps, score, cov, n_perm=10, seed=0)
    X = np.column_stack([np.ones(score.size), score, cov])
    fits = [sm.OLS(maps[:, v], X).fit() for v in range(maps.shape[1])]
    t = np.array([f.tvalues[1] for f in fits])
    np.testing.assert_allclose(res.statistic, t / np.sqrt(t**2 + res.df), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.p_uncorrected, [f.pvalues[1] for f in fits], rtol=1e-6)


@pytest.mark.parametrize("tail", ["two-sided", "greater", "less"])
def test_fwe_equals_naive_score_permutation_loop(tail):
    maps, score, _ = _patients(5, strength=1.0)
    res = symptom_map(maps, score, n_perm=200, seed=7, tail=tail, dtype=np.float64)
    perms = res.plan.block(0, res.plan.n_perm)
    null = np.array([_tail(corr_per_voxel(maps, score[p]), tail).max() for p in perms])
    np.testing.assert_allclose(res.null_max, null, rtol=1e-9)  # float64 both, ~n eps
    r_ref = corr_per_voxel(maps, score)
    stat = _tail(r_ref, tail)
    assert np.abs(null[:, None] - stat[None, :]).min() > 1e-7  # no near-ties: equality is meaningful
    np.testing.assert_array_equal(res.p_fwe, _naive_fwe(stat, null))


def test_spearman_fwe_equals_naive_loop():
    maps, score, _ = _patients(6, shape=(4, 4, 4), strength=1.0)
    res = symptom_map(maps, score, method="spearman", n_perm=80, seed=8, dtype=np.float64)
    perms = res.plan.block(0, res.plan.n_perm)
    null = np.array(
        [
            np.abs([stats.spearmanr(maps[:, v], score[p]).statistic for v in range(maps.shape[1])]).max()
            for p in perms
        ]
    )
    np.testing.assert_allclose(res.null_max, null, rtol=1e-9)
    stat = np.abs([stats.spearmanr(maps[:, v], score).statistic for v in range(maps.shape[1])])
    # rank correlations are discrete (steps of 6 / (n (n^2 - 1)) ~ 3e-4): null maxima tie observed
    # values exactly in exact arithmetic, and float64 rounding (~1e-15) must not decide those ties
    gaps = np.abs(null[:, None] - stat[None, :])
    assert np.any(gaps < 1e-12) and not np.any((gaps > 1e-12) & (gaps < 1e-6))
    np.testing.assert_array_equal(res.p_fwe, _naive_fwe(stat, null, ties=1e-9))


def test_fwe_with_covariates_is_freedman_lane_of_the_score():
    maps, score, cov = _patients(7, strength=1.0, k=2)
    res = symptom_map(maps, score, cov, n_perm=120, seed=9, dtype=np.float64)
    perms = res.plan.block(0, res.plan.n_perm)
    null_t = freedman_lane_max_t(score, cov, maps, perms)
    # max |r| = g(max |t|) with g(t) = t / sqrt(t^2 + df) increasing
    np.testing.assert_allclose(res.null_max, null_t / np.sqrt(null_t**2 + res.df), rtol=1e-9)


def test_exact_enumeration_of_score_orderings():
    maps, score, _ = _patients(8, n=6, shape=(3, 3, 3), strength=2.0)
    score[1] = score[0]  # a tie: each distinct relabelling appears twice among the 6! orderings
    res = symptom_map(maps, score, n_perm=10_000, seed=0)
    assert res.plan.exact and res.plan.n_perm == math.factorial(6) - 1
    r_obs = np.abs(corr_per_voxel(maps, score))
    null = np.array(
        [np.abs(corr_per_voxel(maps, score[list(p)])).max() for p in itertools.permutations(range(6))]
    )
    ref = np.array([np.sum(null >= r - 1e-9) for r in r_obs]) / 720  # exact p, tied relabellings counted
    np.testing.assert_allclose(res.p_fwe, ref, rtol=1e-12)


def test_result_independent_of_block_split():
    maps, score, cov = _patients(9, strength=0.5, k=1)
    a = symptom_map(maps.astype(np.float32), score, cov, n_perm=600, seed=2)
    b = symptom_map(maps.astype(np.float32), score, cov, n_perm=600, seed=2, voxel_block=17, perm_block=129)
    np.testing.assert_array_equal(a.p_fwe, b.p_fwe)
    np.testing.assert_array_equal(a.null_max, b.null_max)


def test_constant_or_missing_score_names_patients():
    maps, score, _ = _patients(10)
    bad = score.copy()
    bad[[3, 7]] = np.nan
    with pytest.raises(StatsInputError, match="rows 3, 7") as err:
        symptom_map(maps, bad, n_perm=10)
    assert err.value.indices == (3, 7)
    with pytest.raises(StatsInputError, match="same") as err:
        symptom_map(maps, np.full(score.size, 4.0), n_perm=10)
    assert err.value.indices == tuple(range(score.size))


@pytest.mark.integration
@pytest.mark.parametrize(("method", "k"), [("pearson", 0), ("spearman", 0), ("pearson", 2)])
def test_fwe_calibrated_under_the_null(method, k):
    """300 null data sets (no relation; covariates related to the score and loading on the maps):
    the rate of any voxel with p_fwe <= 0.05 (199 permutations) is in the binomial 95% interval."""
    n_sets, alpha = 300, 0.05
    hits = 0
    for s in range(n_sets):
        maps, score, cov = _patients(2000 + s, n=22, strength=0.0, k=k)
        res = symptom_map(maps.astype(np.float32), score, cov, method=method, n_perm=199, seed=s)
        hits += res.p_fwe.min() <= alpha
    lo, hi = stats.binom.ppf([0.025, 0.975], n_sets, alpha)
    assert lo <= hits <= hi, (hits, lo, hi)
