"""Cross-validated prediction: the Gram-matrix kernel against a loop that refits the model map per
fold, folds against sklearn, permutation p on planted and shuffled relations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lakepipe.compute.stats import (
    StatsInputError,
    cv_folds,
    cv_predictions,
    cv_statistic,
    fold_grams,
    permutation_plan,
    permuted_statistic,
    predict,
)
from tests.test_compute_stats_reference import cv_predict_loop, smooth_noise


def _cohort(seed: int, n: int = 24, shape=(5, 5, 4), strength: float = 0.0):
    """Maps = smooth noise + score x a fixed spatial pattern (the brain-behaviour relation) + offsets."""
    rng = np.random.default_rng(seed)
    score = rng.normal(20, 5, n)
    pattern = np.zeros(int(np.prod(shape)))
    pattern[:30] = rng.uniform(0.5, 1.5, pattern[:30].size)
    maps = smooth_noise(rng, n, shape) + strength * np.outer((score - 20) / 5, pattern)
    maps += rng.uniform(-2, 2, (n, 1))  # per-patient offsets: the correlation over voxels ignores them
    return maps, score


@pytest.mark.parametrize(
    ("scheme", "method"), [("loo", "pearson"), ("kfold", "pearson"), ("group", "spearman")]
)
def test_predictions_equal_refitting_loop(scheme, method):
    maps, score = _cohort(1, strength=0.6)
    groups = np.repeat([3, 1, 2], 8)
    folds = cv_folds(score.size, scheme, k=5, seed=4, groups=groups)
    res = predict(maps, score, scheme=scheme, k=5, groups=groups, seed=4, n_perm=20, method=method)
    pred, r = cv_predict_loop(maps, score, folds, method)
    # float64 Gram sums over 100 voxels vs direct correlations: both ~1e-14 from exact
    np.testing.assert_allclose(res.predictions, pred, rtol=1e-9, atol=1e-12)
    assert res.r == pytest.approx(r, rel=1e-9)
    # permuted scores: the whole CV refitted on them, same folds
    perms = res.plan.block(0, 5)
    for p, value in zip(perms, res.null[:5], strict=True):
        assert value == pytest.approx(cv_predict_loop(maps, score[p], folds, method)[1], rel=1e-9, abs=1e-12)


def test_folds_match_sklearn():
    from sklearn.model_selection import LeaveOneGroupOut, LeaveOneOut

    groups = np.array(["b", "a", "c", "a", "b", "c", "c", "a"])
    ours = cv_folds(8, "group", groups=groups)
    ref = [test for _, test in LeaveOneGroupOut().split(np.zeros(8), groups=groups)]
    assert [f.tolist() for f in ours] == [f.tolist() for f in ref]
    assert [f.tolist() for f in cv_folds(8, "loo")] == [
        t.tolist() for _, t in LeaveOneOut().split(np.zeros(8))
    ]
    kf = cv_folds(23, "kfold", k=5, seed=3)
    assert sorted(np.concatenate(kf).tolist()) == list(range(23)) and [f.size for f in kf] == [5, 5, 5, 4, 4]
    assert all(np.array_equal(a, b) for a, b in zip(kf, cv_folds(23, "kfold", k=5, seed=3), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(kf, cv_folds(23, "kfold", k=5, seed=4), strict=True))


def test_fold_sums_add_over_voxel_blocks():
    maps, score = _cohort(2, strength=0.5)
    folds = cv_folds(score.size, "kfold", k=4, seed=0)
    whole = fold_grams(maps, folds)
    parts = fold_grams(maps[:, :37], folds) + fold_grams(maps[:, 37:], folds)
    perms = permutation_plan(score.size, 50, seed=1).block(0, 50)
    a = cv_statistic(cv_predictions(whole, score[perms]), score[perms])
    b = cv_statistic(cv_predictions(parts, score[perms]), score[perms])
    np.testing.assert_allclose(a, b, rtol=1e-10)  # float64 sums of 100 terms in another order
    res_a = predict(maps, score, "kfold", k=4, seed=0, n_perm=300)
    res_b = predict(maps, score, "kfold", k=4, seed=0, n_perm=300, voxel_block=13, perm_block=77)
    assert res_a.p == res_b.p


def test_permuted_statistic_depends_only_on_plan():
    maps, score = _cohort(3, strength=0.5)
    folds = cv_folds(score.size, "loo")
    grams = fold_grams(maps, folds)
    plan = permutation_plan(score.size, 200, seed=5)
    whole = permuted_statistic(grams, score, plan.block(0, 200))
    split = np.concatenate(
        [permuted_statistic(grams, score, plan.block(a, b)) for a, b in [(0, 64), (64, 200)]]
    )
    np.testing.assert_allclose(whole, split, rtol=1e-12)  # (P, n) @ (n, n) products per row


def test_planted_relation_detected():
    maps, score = _cohort(4, n=30, strength=0.5)
    res = predict(maps, score, scheme="kfold", k=5, seed=0, n_perm=499)
    assert res.r > 0.4 and res.p < 0.05


def test_null_rejection_rate_is_alpha():
    """Under the null (scores unrelated to the maps) the permutation p is uniform: over 300 null data
    sets with 99 permutations each, the rate of p <= 0.05 (exactly 5/100 for an exact test) lies in
    the binomial 95% interval. Cheap: the fold sums are computed once per data set (~5 ms each)."""
    n_sets, alpha = 300, 0.05
    hits = 0
    for s in range(n_sets):
        maps, score = _cohort(100 + s, n=20, shape=(4, 4, 4), strength=0.0)
        hits += predict(maps, score, scheme="kfold", k=5, seed=s, n_perm=99).p <= alpha
    lo, hi = stats.binom.ppf([0.025, 0.975], n_sets, alpha)
    assert lo <= hits <= hi, (hits, lo, hi)


def test_exact_enumeration_for_tiny_cohort():
    maps, score = _cohort(6, n=6, shape=(3, 3, 3), strength=1.0)
    res = predict(maps, score, scheme="loo", n_perm=10_000)
    assert res.plan.exact and res.plan.n_perm == 719
    assert res.p == pytest.approx((1 + np.sum(res.null >= res.r - 1e-9)) / 720)


def test_bad_inputs():
    maps, score = _cohort(7, n=10)
    with pytest.raises(StatsInputError, match="fewer than 3 training"):
        cv_folds(10, "group", groups=np.r_[np.zeros(8), np.ones(2)])
    with pytest.raises(StatsInputError, match="2 <= k"):
        cv_folds(10, "kfold", k=11)
    bad = score.copy()
    bad[2] = np.nan
    with pytest.raises(StatsInputError) as err:
        predict(maps, bad)
    assert err.value.indices == (2,)
