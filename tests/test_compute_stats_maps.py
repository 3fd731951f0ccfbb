"""Sensitivity, conjunction, FDR/pfdrmap, the random-lesion null and TFCE."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage, stats

from lakepipe.compute.stats import (
    StatsInputError,
    agreement_map,
    conjunction,
    fdr_q,
    linear_design,
    max_statistic_pvalues,
    meets_criterion,
    null_percentile,
    permuted_u_maps,
    pfdrmap,
    prepare_maps,
    random_lesion_sets,
    sensitivity,
    t_from_u,
    tfce_maps,
    tfce_null_max,
)
from tests.test_compute_stats_reference import bh_loop

# --- sensitivity


def test_sensitivity_fractions_exact_on_planted_maps():
    """8 case maps; voxel v has exactly a[v] maps above +T and b[v] below -T (values placed at
    T +- 0.5, plus values exactly at +-T, which do not count: strict inequalities)."""
    n, T = 8, 7.0
    a = np.array([0, 8, 6, 3, 4, 2, 0, 5])
    b = np.array([0, 0, 2, 5, 4, 0, 7, 3])
    rng = np.random.default_rng(0)
    maps = rng.uniform(-T + 1, T - 1, (n, a.size))
    for v in range(a.size):
        rows = rng.permutation(n)
        maps[rows[: a[v]], v] = T + 0.5
        maps[rows[a[v] : a[v] + b[v]], v] = -T - 0.5
    maps[0, 0], maps[1, 0] = T, -T  # on the threshold: neither
    res = sensitivity(maps, T)
    np.testing.assert_array_equal(res.pos, a / n)
    np.testing.assert_array_equal(res.neg, b / n)
    np.testing.assert_array_equal(res.combined, (a - b) / n)
    np.testing.assert_array_equal(res.dominant, np.where(a >= b, a, -b) / n)  # tie (voxel 4) -> pos
    np.testing.assert_array_equal(meets_criterion(res.dominant), np.abs(res.dominant) >= 0.75)
    assert meets_criterion(res.dominant).tolist() == [False, True, True, False, False, False, True, False]


def test_sensitivity_split_by_voxel_blocks():
    maps = np.random.default_rng(1).normal(0, 8, (12, 50))
    whole = sensitivity(maps)
    parts = [sensitivity(maps[:, s]) for s in (slice(0, 17), slice(17, 50))]
    np.testing.assert_array_equal(whole.dominant, np.concatenate([p.dominant for p in parts]))


# --- conjunction


def test_conjunction_and_agreement_on_planted_maps():
    rng = np.random.default_rng(2)
    v = 60
    dominant = rng.uniform(-0.5, 0.5, v)
    t = rng.normal(0, 1, v)
    p = rng.uniform(0.2, 1, v)
    dominant[:10], t[:10], p[:10] = 0.9, 5.0, 0.001  # sensitive, specific, same sign: in
    dominant[10:15], t[10:15], p[10:15] = -0.8, -4.0, 0.01  # negative: in
    dominant[15:20], t[15:20], p[15:20] = 0.9, -5.0, 0.001  # opposite signs: out
    dominant[20:25], t[20:25], p[20:25] = 0.9, 5.0, 0.2  # not specific: out
    dominant[25:30], t[25:30], p[25:30] = 0.6, 5.0, 0.001  # not sensitive: out
    res = conjunction(dominant, t, p)
    assert np.flatnonzero(res.mask).tolist() == list(range(15))
    # agreement: z-scores over voxels (ddof 0) multiplied where the raw signs agree
    zd = (dominant - dominant.mean()) / dominant.std()
    zt = (t - t.mean()) / t.std()
    np.testing.assert_allclose(
        res.agreement, np.where(np.sign(dominant) == np.sign(t), zd * zt, 0), rtol=1e-12
    )
    assert np.all(res.agreement[15:20] == 0)
    np.testing.assert_array_equal(agreement_map(dominant, t), res.agreement)


def test_agreement_of_constant_map_is_zero():
    np.testing.assert_array_equal(agreement_map(np.full(5, 0.8), np.arange(1.0, 6.0)), np.zeros(5))


# --- FDR


def test_fdr_equals_scipy_and_textbook_loop():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=900), rng.uniform(0, 1e-4, 100)])
    q = fdr_q(p)
    np.testing.assert_array_equal(q, stats.false_discovery_control(p, method="bh"))
    np.testing.assert_allclose(q, bh_loop(p), rtol=1e-14)  # same products p m / rank, other order of min


def test_pfdrmap_row_wise():
    rng = np.random.default_rng(4)
    pmaps = rng.uniform(size=(3, 200)) ** np.array([[1.0], [3.0], [6.0]])
    q = pfdrmap(pmaps)
    for row in range(3):
        np.testing.assert_array_equal(q[row], stats.false_discovery_control(pmaps[row], method="bh"))
    np.testing.assert_array_equal(pfdrmap(pmaps[1]), q[1])


def test_pfdrmap_rejects_bad_p():
    pmaps = np.full((3, 4), 0.5)
    pmaps[2, 1] = np.nan
    pmaps[0, 0] = 1.5
    with pytest.raises(StatsInputError, match="rows") as err:
        pfdrmap(pmaps)
    assert err.value.indices == (0, 2)


# --- random-lesion null


def _greedy_reference(cases, controls, order, jittered):
    """Each case in ``order`` takes the nearest unused jittered control (ties: lowest index)."""
    free = list(range(controls.size))
    out = np.empty(cases.size, dtype=int)
    for i in order:
        j = min(free, key=lambda c: (abs(jittered[c] - cases[i]), c))
        out[i] = j
        free.remove(j)
    return out


def test_random_lesion_sets_without_jitter_match_greedy_nearest():
    rng = np.random.default_rng(5)
    cases = rng.lognormal(8, 1, 12)
    controls = rng.lognormal(8, 1, 80)
    sets = random_lesion_sets(cases, controls, n_draws=20, seed=3, jitter=0.0)
    for d, row in enumerate(sets):
        order = np.random.default_rng([3, d]).permutation(cases.size)  # the documented visiting order
        np.testing.assert_array_equal(row, _greedy_reference(cases, controls, order, controls))
        assert np.unique(row).size == cases.size  # no control used twice in a set


def test_random_lesion_sets_are_matched_deterministic_and_vary():
    rng = np.random.default_rng(6)
    cases = rng.lognormal(8, 1, 15)
    controls = rng.lognormal(8, 1, 200)
    sets = random_lesion_sets(cases, controls, n_draws=50, seed=1)
    np.testing.assert_array_equal(sets, random_lesion_sets(cases, controls, n_draws=50, seed=1))
    np.testing.assert_array_equal(
        sets[20:30], random_lesion_sets(cases, controls, n_draws=10, seed=1, start=20)
    )
    assert len({tuple(r) for r in sets}) > 40  # draws differ
    # matched: median |log volume ratio| far below that of random control sets
    matched = np.median(np.abs(np.log(controls[sets] / cases)))
    unmatched = np.median(np.abs(np.log(rng.choice(controls, (50, 15)) / cases)))
    assert matched < 0.2 < unmatched


def test_random_lesion_sets_break_ties_at_random():
    sets = random_lesion_sets([100.0], [50.0, 100.0, 100.0, 300.0], n_draws=200, seed=0, jitter=0.0)
    counts = np.bincount(sets[:, 0], minlength=4)
    assert counts[0] == counts[3] == 0
    assert stats.binomtest(int(counts[1]), 200, 0.5).pvalue > 0.001  # fair coin between the two ties


def test_random_lesion_sets_bad_input():
    with pytest.raises(StatsInputError, match="without reuse"):
        random_lesion_sets([1.0, 2.0, 3.0], [1.0, 2.0], n_draws=2, seed=0)
    with pytest.raises(StatsInputError, match="rows") as err:
        random_lesion_sets([1.0], [1.0, np.nan, -2.0], n_draws=2, seed=0)
    assert err.value.indices == (1, 2)


def test_null_percentile_matches_scipy():
    rng = np.random.default_rng(7)
    null = np.round(rng.normal(size=(400, 5)), 1)  # ties
    observed = np.array([-1.0, 0.0, 0.3, 1.7, 5.0])
    res = null_percentile(observed, null)
    ref = [stats.percentileofscore(null[:, j], observed[j], kind="mean") for j in range(5)]
    np.testing.assert_allclose(res.percentile, ref, rtol=1e-12)
    np.testing.assert_array_equal(res.p_greater, (1 + (null >= observed).sum(axis=0)) / 401)
    np.testing.assert_array_equal(res.p_less, (1 + (null <= observed).sum(axis=0)) / 401)
    assert null_percentile(2.0, np.arange(5.0)).percentile == 50.0


# --- TFCE


def _grid_maps(seed, n=16, shape=(7, 7, 6)):
    """Group maps on a small 3D grid: smooth noise, a planted blob for cases, a mask with a hole."""
    rng = np.random.default_rng(seed)
    mask = np.ones(shape, dtype=bool)
    mask[0, 0, :] = False
    ijk = np.argwhere(mask)
    is_case = np.arange(n) < n // 2
    maps = np.empty((n, ijk.shape[0]))
    blob = np.exp(-((ijk - [3, 3, 3]) ** 2).sum(axis=1) / 2.0)
    for i in range(n):
        g = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
        maps[i] = g[mask] / g.std() + 3.0 * blob * is_case[i]
    return maps, is_case, mask, ijk


def test_tfce_matches_nilearn_permuted_ols():
    from nibabel import Nifti1Image
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    maps, is_case, mask, ijk = _grid_maps(8)
    masker = NiftiMasker(Nifti1Image(mask.astype(np.uint8), np.eye(4))).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = permuted_ols(
            is_case[:, None].astype(float),
            maps,
            n_perm=200,
            random_state=0,
            masker=masker,
            tfce=True,
            n_jobs=1,
        )
    design = linear_design(is_case.astype(float))
    prep = prepare_maps(design, maps, np.float64)
    t = t_from_u(prep.u, design.df)
    obs = tfce_maps(t, ijk, mask.shape)
    # same t (float64) and nilearn's own TFCE on it (voxel order: C order of the mask, nilearn's too)
    np.testing.assert_allclose(obs, ref["tfce"][0], rtol=1e-6)
    # FWE p from the TFCE max null of our permutations vs nilearn's: within Monte-Carlo error
    from lakepipe.compute.stats import permutation_plan

    plan = permutation_plan(is_case.size, 200, seed=1)
    perm_t = t_from_u(permuted_u_maps(design, prep, plan.block(0, 200)), design.df)
    null = tfce_null_max(perm_t, ijk, mask.shape)
    p = max_statistic_pvalues(obs, null)
    p_nl = 10 ** -ref["logp_max_tfce"][0]
    sd = np.sqrt(2 * p_nl * (1 - p_nl) / 200)  # two independent binomial proportions over 200
    assert np.all(np.abs(p - p_nl) <= 5 * sd + 1 / 201)
    assert p[np.argmax(obs)] < 0.05  # the blob


def test_tfce_tails():
    maps, is_case, mask, ijk = _grid_maps(9)
    t = t_from_u(prepare_maps(linear_design(is_case.astype(float)), maps, np.float64).u, 14)
    two = tfce_maps(t, ijk, mask.shape)
    pos = tfce_maps(t, ijk, mask.shape, tail="greater")
    neg = tfce_maps(t, ijk, mask.shape, tail="less")
    assert np.all(pos >= 0) and np.all(neg <= 0)
    np.testing.assert_allclose(tfce_maps(-t, ijk, mask.shape, tail="greater"), -neg, rtol=1e-12)
    assert np.all((two > 0) == (pos > 0))
    np.testing.assert_allclose(tfce_null_max(t[None], ijk, mask.shape), np.abs(two).max(), rtol=1e-12)
