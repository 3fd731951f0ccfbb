"""Specificity GLM: t against per-voxel lstsq and nilearn, FWE against a naive Freedman-Lane loop,
permutation plans (exact enumeration, block determinism) and calibration under the null."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from lakepipe.compute.stats import (
    linear_design,
    max_statistic_pvalues,
    null_max_block,
    null_tie_tol,
    permutation_plan,
    permuted_u_maps,
    prepare_maps,
    specificity,
    t_from_u,
)
from lakepipe.compute.stats.permutations import CHUNK
from tests.test_compute_stats_reference import (
    design_matrix,
    freedman_lane_max_t,
    group_data,
    max_stat_p,
    ols_t,
    smooth_noise,
)

EPS32 = 2.0**-24


def _f32_u_bound(n: int, k: int, b_max: float) -> float:
    """Bound on |u32 - u64| of the null kernel (glm module notes): a and each b_k have error
    <= (n + 3) 2^-24 (n products of unit-norm vectors rounded once), and
    u = a / sqrt(1 - B), du <= eps (1 / sqrt(1 - B) + sqrt(k) / (1 - B)^1.5); + a few ulps for the
    elementwise ops."""
    eps = (n + 3) * EPS32
    return eps * (1 / np.sqrt(1 - b_max) + np.sqrt(k) / (1 - b_max) ** 1.5) + 8 * EPS32


# --- observed t


@pytest.mark.parametrize("k", [0, 1, 3])
def test_t_matches_lstsq_per_voxel(k):
    maps, is_case, cov = group_data(10, k=k, effect=0.8)
    res = specificity(maps, is_case, cov, n_perm=10, seed=0)
    ref = ols_t(design_matrix(is_case.astype(float), cov), maps)
    # float64 throughout (residualisation, normalisation, one dot product of n terms): ~n eps relative
    np.testing.assert_allclose(res.statistic, ref, rtol=1e-6, atol=1e-9)
    assert res.df == is_case.size - 2 - k
    # the planted voxels are cases > controls
    assert np.all(res.statistic[:12] > 0)


def test_t_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    maps, is_case, cov = group_data(11, k=2, effect=0.5)
    res = specificity(maps, is_case, cov, n_perm=10, seed=0)
    X = design_matrix(is_case.astype(float), cov)
    ref = np.array([sm.OLS(maps[:, v], X).fit().tvalues[1] for v in range(maps.shape[1])])
    np.testing.assert_allclose(res.statistic, ref, rtol=1e-6, atol=1e-9)  # float64 solvers, see above
    # and the parametric p is the OLS p
    pref = np.array([sm.OLS(maps[:, v], X).fit().pvalues[1] for v in range(maps.shape[1])])
    np.testing.assert_allclose(res.p_uncorrected, pref, rtol=1e-6)


def test_float32_maps_give_the_float64_t():
    maps, is_case, cov = group_data(12, k=1, effect=0.5)
    m32 = maps.astype(np.float32)
    res = specificity(m32, is_case, cov, n_perm=10, seed=0)
    # the kernel works in float64 from the float32 values: the t of those values, to float64 rounding
    ref = ols_t(design_matrix(is_case.astype(float), cov), m32.astype(np.float64))
    np.testing.assert_allclose(res.statistic, ref, rtol=1e-6, atol=1e-9)


# --- FWE against a naive loop


@pytest.mark.parametrize(("k", "tail"), [(0, "two-sided"), (2, "two-sided"), (2, "greater"), (1, "less")])
def test_fwe_p_equals_naive_freedman_lane_loop(k, tail):
    maps, is_case, cov = group_data(20 + k, k=k, effect=3.0)
    res = specificity(maps, is_case, cov, n_perm=150, seed=5, tail=tail, dtype=np.float64)
    perms = res.plan.block(0, res.plan.n_perm)
    ref_null = freedman_lane_max_t(is_case.astype(float), cov, maps, perms, tail)
    # float64 kernel vs per-voxel lstsq: both within ~1e-13 of the exact t
    np.testing.assert_allclose(res.null_max, ref_null, rtol=1e-9)
    t_ref = ols_t(design_matrix(is_case.astype(float), cov), maps)
    stat = np.abs(t_ref) if tail == "two-sided" else (t_ref if tail == "greater" else -t_ref)
    # equality of p needs no null max within rounding of an observed t (true for this data; checked)
    gaps = np.abs(ref_null[:, None] - stat[None, :])
    assert gaps.min() > 1e-6
    np.testing.assert_array_equal(res.p_fwe, max_stat_p(t_ref, ref_null, tail))
    planted = np.median(res.p_fwe[:12])
    assert planted < 0.05 if tail != "less" else planted > 0.5


def test_float32_null_within_error_bound_of_float64():
    maps, is_case, cov = group_data(30, n_cases=40, n_controls=60, k=2, effect=0.4)
    n, k = is_case.size, 2
    design = linear_design(is_case.astype(float), cov)
    plan = permutation_plan(n, 300, seed=1, cases=is_case, covariates=True)
    perms = plan.block(0, 300)
    p64 = prepare_maps(design, maps, np.float64)
    p32 = prepare_maps(design, maps, np.float32)
    assert np.array_equal(p64.u, p32.u)  # observed statistic is float64 whatever the null dtype
    u64 = permuted_u_maps(design, p64, perms)
    u32 = permuted_u_maps(design, p32, perms)
    # B = sum of squared permuted-confound products, from the float64 run: 1 - B = a^2 / u^2
    a = design.x[perms] @ p64.y.T
    b_max = float((1 - (a / np.where(u64 == 0, 1, u64)) ** 2).max())
    assert np.abs(u32 - u64).max() <= _f32_u_bound(n, k, min(b_max, 0.99))
    m64 = null_max_block(design, p64, perms).max_u
    m32 = null_max_block(design, p32, perms).max_u
    np.testing.assert_array_equal(m64, np.abs(u64).max(axis=1))  # same arithmetic as the maps
    assert np.abs(m32 - m64).max() <= _f32_u_bound(n, k, min(b_max, 0.99))
    # the float32 tie tolerance covers the error (this data has b_max well below its 0.3)
    tie32 = null_tie_tol(design, np.float32)
    assert b_max < 0.3 and _f32_u_bound(n, k, 0.3) <= tie32
    # FWE p: float32 counts null values within tie32 below the observed as ties, so it is never
    # smaller than float64's, and larger only by the null maxima within 2 tie32 of the observed
    p32_fwe = max_statistic_pvalues(p32.u, m32, tie_tol=tie32)
    p64_fwe = max_statistic_pvalues(p64.u, m64, tie_tol=null_tie_tol(design, np.float64))
    near = (np.abs(np.abs(p64.u)[:, None] - m64[None, :]) <= 2 * tie32).sum(axis=1)
    assert np.all(p32_fwe >= p64_fwe)
    assert np.all((p32_fwe - p64_fwe) * 301 <= near + 1e-9)


def test_exceedance_counts_equal_naive_loop():
    maps, is_case, cov = group_data(31, k=1, effect=0.5)
    res = specificity(maps, is_case, cov, n_perm=120, seed=2, dtype=np.float64, uncorrected="permutation")
    perms = res.plan.block(0, res.plan.n_perm)
    X = design_matrix(is_case.astype(float), cov)
    Z = np.delete(X, 1, axis=1)
    gam, *_ = np.linalg.lstsq(Z, maps, rcond=None)
    resid = maps - Z @ gam
    t_obs = ols_t(X, maps)
    counts = np.zeros(maps.shape[1])
    for perm in perms:
        counts += np.abs(ols_t(X, resid[np.argsort(perm)])) >= np.abs(t_obs) - 1e-9
    np.testing.assert_array_equal(res.p_uncorrected, (1 + counts) / (1 + perms.shape[0]))


# --- nilearn


def _nilearn_permutations(seed: int, n: int, n_perm: int) -> np.ndarray:
    """The relabellings permuted_ols(n_jobs=1, random_state=seed) applies, in order (nilearn 0.14):
    one chunk seeded by RandomState(seed).randint(1, int32 max - 1); each step composes a fresh
    rng.permutation(n) with the previous one (tested_vars = tested_vars[shuffle_idx])."""
    chunk_seed = np.random.RandomState(seed).randint(1, np.iinfo(np.int32).max - 1)
    rng = np.random.RandomState(chunk_seed)
    cur = np.arange(n)
    out = np.empty((n_perm, n), dtype=np.intp)
    for j in range(n_perm):
        cur = cur[rng.permutation(n)]
        out[j] = cur
    return out


@pytest.mark.parametrize("k", [0, 2])
def test_matches_nilearn_permuted_ols(k):
    from nilearn.mass_univariate import permuted_ols

    maps, is_case, cov = group_data(40 + k, k=k, effect=0.7)
    n_perm = 400
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(
            is_case[:, None].astype(float),
            maps,
            confounding_vars=cov,
            n_perm=n_perm,
            random_state=9,
            n_jobs=1,
        )
    res = specificity(maps, is_case, cov, n_perm=n_perm, seed=9, dtype=np.float64)
    # observed t: both float64 (nilearn normalises and orthonormalises too)
    np.testing.assert_allclose(res.statistic, ref["t"][0], rtol=1e-6, atol=1e-9)
    # same permutations as nilearn: its null max t is exactly our Freedman-Lane t (residual variance
    # with the permuted confounds subtracted), not an approximation of it
    design = linear_design(is_case.astype(float), cov)
    prep = prepare_maps(design, maps, np.float64)
    ours = t_from_u(
        null_max_block(design, prep, _nilearn_permutations(9, is_case.size, n_perm)).max_u, design.df
    )
    np.testing.assert_allclose(ours, ref["h0_max_t"][0], rtol=1e-9)
    # different permutations: FWE p agree within Monte-Carlo error. Each p is a binomial proportion
    # over 400 permutations; the difference of two independent ones has sd sqrt(2 p (1 - p) / 400);
    # 5 sd (+1/401 discreteness) is never exceeded by chance over these 100 voxels (two-sided 6e-7 each)
    p_nl = 10 ** -ref["logp_max_t"][0]
    sd = np.sqrt(2 * p_nl * (1 - p_nl) / n_perm)
    assert np.all(np.abs(res.p_fwe - p_nl) <= 5 * sd + 1 / (n_perm + 1))


# --- plans, exact enumeration


def test_plan_blocks_depend_only_on_seed_and_index():
    plan = permutation_plan(23, 3000, seed=4)
    full = plan.block(0, 3000)
    for lo, hi in [(0, 1), (5, 17), (CHUNK - 3, CHUNK + 5), (2 * CHUNK, 3000), (2999, 3000)]:
        np.testing.assert_array_equal(plan.block(lo, hi), full[lo:hi])
    assert all(np.array_equal(np.sort(p), np.arange(23)) for p in full[:50])
    assert not np.array_equal(full, permutation_plan(23, 3000, seed=5).block(0, 3000))
    assert len({tuple(p) for p in full}) == 3000  # 23! orderings: no repeats in practice


def _exact_two_group_p(maps, is_case, tail="two-sided"):
    """Brute force over all comb(n, n_cases) labellings, the observed one included."""
    n, n1 = is_case.size, int(is_case.sum())
    X = design_matrix(is_case.astype(float), None)
    t_obs = ols_t(X, maps)
    stat_obs = np.abs(t_obs) if tail == "two-sided" else t_obs
    maxima = []
    for comb in itertools.combinations(range(n), n1):
        x = np.zeros(n)
        x[list(comb)] = 1
        t = ols_t(design_matrix(x, None), maps)
        maxima.append((np.abs(t) if tail == "two-sided" else t).max())
    maxima = np.array(maxima)
    # ties in exact arithmetic (the complement labelling of equal groups) within float64 rounding
    return np.array([np.sum(maxima >= s - 1e-9) for s in stat_obs]) / len(maxima)


@pytest.mark.parametrize(
    ("n_cases", "n_controls", "tail"), [(3, 3, "two-sided"), (4, 5, "two-sided"), (4, 4, "greater")]
)
def test_exact_enumeration_two_groups(n_cases, n_controls, tail):
    maps, is_case, _ = group_data(
        50 + n_cases, n_cases=n_cases, n_controls=n_controls, k=0, effect=1.5, n_effect=5
    )
    n = n_cases + n_controls
    res = specificity(maps, is_case, n_perm=5000, seed=0, tail=tail)
    assert res.plan.exact and res.plan.n_distinct == math.comb(n, n_cases)
    assert res.plan.n_perm == math.comb(n, n_cases) - 1
    perms = res.plan.block(0, res.plan.n_perm)
    labellings = {tuple(np.flatnonzero(is_case[p])) for p in perms}
    assert len(labellings) == res.plan.n_perm and tuple(np.flatnonzero(is_case)) not in labellings
    np.testing.assert_allclose(res.p_fwe, _exact_two_group_p(maps, is_case, tail), rtol=1e-12)


def test_exact_enumeration_with_covariates_uses_all_orderings():
    maps, is_case, cov = group_data(60, n_cases=3, n_controls=3, k=1, effect=1.0, n_effect=5)
    res = specificity(maps, is_case, cov, n_perm=1000, seed=0)
    assert res.plan.exact and res.plan.n_perm == math.factorial(6) - 1
    perms = res.plan.block(0, res.plan.n_perm)
    assert len({tuple(p) for p in perms}) == 719 and tuple(range(6)) not in {tuple(p) for p in perms}
    all_perms = np.array(list(itertools.permutations(range(6))))
    null = freedman_lane_max_t(is_case.astype(float), cov, maps, all_perms)
    t_obs = ols_t(design_matrix(is_case.astype(float), cov), maps)
    ref = np.array([np.sum(null >= abs(t) - 1e-9) for t in t_obs]) / 720
    np.testing.assert_allclose(res.p_fwe, ref, rtol=1e-12)


def test_not_exact_when_relabellings_exceed_request():
    plan = permutation_plan(16, 5000, seed=0, cases=np.arange(16) < 8)
    assert not plan.exact and plan.n_perm == 5000 and plan.n_distinct == math.comb(16, 8)
    assert permutation_plan(9, 125, seed=0, cases=np.arange(9) < 3).exact  # comb(9, 3) = 84


# --- split determinism


@pytest.mark.parametrize("k", [0, 2])
def test_result_independent_of_block_split(k):
    maps, is_case, cov = group_data(70 + k, k=k, effect=0.6)
    one = specificity(
        maps.astype(np.float32), is_case, cov, n_perm=700, seed=3, voxel_block=10**6, perm_block=10**6
    )
    many = specificity(
        maps.astype(np.float32), is_case, cov, n_perm=700, seed=3, voxel_block=33, perm_block=233
    )
    np.testing.assert_array_equal(one.p_fwe, many.p_fwe)
    np.testing.assert_array_equal(one.null_max, many.null_max)
    np.testing.assert_array_equal(one.statistic, many.statistic)


def test_manual_block_schedule_equals_one_call():
    """The split a scheduler would run: voxel blocks x permutation blocks, reduced by max."""
    from lakepipe.compute.stats import combine_voxel_blocks

    maps, is_case, cov = group_data(75, k=1, effect=0.6)
    design = linear_design(is_case.astype(float), cov)
    plan = permutation_plan(is_case.size, 500, seed=8, cases=is_case, covariates=True)
    vblocks = [slice(0, 33), slice(33, 34), slice(34, 100)]
    preps = [prepare_maps(design, maps[:, b], offset=b.start) for b in vblocks]
    null = np.concatenate(
        [
            combine_voxel_blocks(
                [null_max_block(design, p, plan.block(lo, hi), perm_offset=lo).max_u for p in preps]
            )
            for lo, hi in [(0, 200), (200, 201), (201, 500)]
        ]
    )
    u = np.concatenate([p.u for p in preps])
    p_fwe = max_statistic_pvalues(u, null, tie_tol=null_tie_tol(design, np.float32))
    ref = specificity(maps, is_case, cov, n_perm=500, seed=8)
    np.testing.assert_array_equal(p_fwe, ref.p_fwe)
    np.testing.assert_array_equal(t_from_u(null, design.df), ref.null_max)


# --- edge cases


def test_constant_voxel_has_t_zero_and_p_one():
    maps, is_case, _ = group_data(80, k=0)
    maps[:, 3] = 2.5
    res = specificity(maps, is_case, n_perm=50, seed=0)
    assert res.statistic[3] == 0 and res.p_fwe[3] == 1.0


def test_fdr_q_is_bh_of_parametric_p():
    maps, is_case, cov = group_data(81, k=1, effect=0.8)
    res = specificity(maps, is_case, cov, n_perm=20, seed=0)
    np.testing.assert_array_equal(res.q_fdr, stats.false_discovery_control(res.p_uncorrected, method="bh"))
    np.testing.assert_allclose(res.p_uncorrected, 2 * stats.t.sf(np.abs(res.statistic), res.df), rtol=1e-12)


# --- calibration


@pytest.mark.integration
@pytest.mark.parametrize("k", [0, 2])
def test_fwe_calibrated_under_the_null(k):
    """Over 300 null data sets (smooth noise, no group effect; with covariates that differ between the
    groups and load on the maps) the FWE false-positive rate at 0.05 (any voxel p_fwe < 0.05 ... i.e.
    <= 0.05 with 199 permutations, p in steps of 1/200) lies in the binomial 95% interval of 0.05."""
    n_sets, alpha = 300, 0.05
    hits = 0
    for s in range(n_sets):
        maps, is_case, cov = group_data(1000 + s, n_cases=10, n_controls=14, k=k, effect=0.0)
        res = specificity(maps.astype(np.float32), is_case, cov, n_perm=199, seed=s)
        hits += res.p_fwe.min() <= alpha
    lo, hi = stats.binom.ppf([0.025, 0.975], n_sets, alpha)
    assert lo <= hits <= hi, (hits, lo, hi)


def test_planted_effect_detected_with_covariates():
    rng = np.random.default_rng(90)
    n = 40
    is_case = np.arange(n) < 18
    cov = rng.standard_normal((n, 2)) + is_case[:, None]
    maps = smooth_noise(rng, n, (6, 6, 5)) + cov @ rng.uniform(0.2, 0.4, (2, 180))
    maps[:, 20:30] += 2.5 * is_case[:, None]
    res = specificity(maps, is_case, cov, n_perm=500, seed=1)
    assert np.mean(res.p_fwe[20:30] < 0.05) >= 0.7
    assert np.mean(res.p_fwe[np.r_[0:20, 30:180]] < 0.05) < 0.05
