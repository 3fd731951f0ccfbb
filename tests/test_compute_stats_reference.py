"""Naive references for the group-statistics kernels, and their own checks against the field's libraries.

Everything here is deliberately straightforward and imports nothing from ``lakepipe.compute.stats``:
per-voxel ``numpy.linalg.lstsq`` fits, loops over permutations, ``np.corrcoef`` per voxel, a
Benjamini-Hochberg loop, a cross-validation loop that refits the model map. The tests at the bottom
check the references themselves against statsmodels (if installed), scipy and sklearn, so that the
kernel tests that use them compare against something known to be right.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

# --- synthetic data


def smooth_noise(rng: np.random.Generator, n: int, shape: tuple[int, ...], sigma: float = 1.0) -> np.ndarray:
    """(n, prod(shape)) Gaussian noise smoothed on a grid (spatially correlated), unit variance."""
    out = np.empty((n, int(np.prod(shape))))
    for i in range(n):
        g = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        out[i] = g.ravel() / g.std()
    return out


def group_data(
    seed: int,
    n_cases: int = 11,
    n_controls: int = 14,
    shape: tuple[int, ...] = (5, 5, 4),
    k: int = 2,
    effect: float = 0.0,
    n_effect: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Maps of cases and controls: smooth noise, covariate effects, a planted group effect in the
    first ``n_effect`` voxels; covariate 0 differs between the groups (as lesion volume would)."""
    rng = np.random.default_rng(seed)
    n = n_cases + n_controls
    is_case = np.zeros(n, dtype=bool)
    is_case[rng.choice(n, n_cases, replace=False)] = True
    maps = smooth_noise(rng, n, shape)
    cov = None
    if k:
        cov = rng.standard_normal((n, k)) * [10.0, 3.0, 1.0][:k] + [50.0, 0.0, 1.0][:k]
        cov[:, 0] += 4.0 * is_case
        load = rng.uniform(-0.05, 0.05, (k, maps.shape[1]))
        maps += (cov - cov.mean(axis=0)) @ load
    maps[:, :n_effect] += effect * is_case[:, None]
    return maps + 3.0, is_case, cov


# --- linear model


def design_matrix(x: np.ndarray, cov: np.ndarray | None) -> np.ndarray:
    """[1, x, covariates] (covariates as given: the t of x does not depend on their scaling)."""
    cols = [np.ones(x.size), np.asarray(x, float)]
    if cov is not None:
        cols.append(np.asarray(cov, float).reshape(x.size, -1))
    return np.column_stack(cols)


def ols_t(X: np.ndarray, Y: np.ndarray, col: int = 1) -> np.ndarray:
    """t of column ``col`` of X for every column of Y, one ``lstsq`` fit per voxel."""
    n, p = X.shape
    cinv = np.linalg.inv(X.T @ X)[col, col]
    out = np.empty(Y.shape[1])
    for v in range(Y.shape[1]):
        beta, *_ = np.linalg.lstsq(X, Y[:, v], rcond=None)
        resid = Y[:, v] - X @ beta
        out[v] = beta[col] / np.sqrt(resid @ resid / (n - p) * cinv)
    return out


def freedman_lane_max_t(
    x: np.ndarray, cov: np.ndarray | None, Y: np.ndarray, perms: np.ndarray, tail: str = "two-sided"
) -> np.ndarray:
    """Max over voxels of the tail statistic of t per permutation, Freedman-Lane by the book:
    residuals of the covariate model permuted, then the full model refitted (per voxel lstsq).

    ``perms[j]`` as in lakepipe (the permuted design is ``X[perm]``): permuting the data residuals by
    the inverse permutation is the same fit.
    """
    X = design_matrix(x, cov)
    Z = np.delete(X, 1, axis=1)
    gam, *_ = np.linalg.lstsq(Z, Y, rcond=None)
    resid = Y - Z @ gam
    out = np.empty(len(perms))
    for j, perm in enumerate(perms):
        inv = np.argsort(perm)
        t = ols_t(X, resid[inv] + Z @ gam)
        stat = np.abs(t) if tail == "two-sided" else (t if tail == "greater" else -t)
        out[j] = stat.max()
    return out


def max_stat_p(observed: np.ndarray, null_max: np.ndarray, tail: str = "two-sided") -> np.ndarray:
    stat = np.abs(observed) if tail == "two-sided" else (observed if tail == "greater" else -observed)
    return np.array([(1 + np.sum(null_max >= s)) / (1 + null_max.size) for s in stat])


# --- correlation


def corr_per_voxel(Y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(Y[:, v], s)[0, 1] if Y[:, v].std() > 0 else 0.0 for v in range(Y.shape[1])])


def partial_corr_per_voxel(Y: np.ndarray, s: np.ndarray, cov: np.ndarray) -> np.ndarray:
    Z = np.column_stack([np.ones(s.size), cov])
    rs = s - Z @ np.linalg.lstsq(Z, s, rcond=None)[0]
    rY = Y - Z @ np.linalg.lstsq(Z, Y, rcond=None)[0]
    return corr_per_voxel(rY, rs)


def bh_loop(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q by the textbook: q_(i) = min_{j >= i} p_(j) m / j, capped at 1."""
    m = p.size
    order = np.argsort(p)
    q_sorted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        running = min(running, p[order[rank - 1]] * m / rank)
        q_sorted[rank - 1] = running
    q = np.empty(m)
    q[order] = q_sorted
    return q


# --- prediction


def cv_predict_loop(
    maps: np.ndarray, scores: np.ndarray, folds: list[np.ndarray], method: str = "pearson"
) -> tuple[np.ndarray, float]:
    """Held-out predictions and their correlation with the scores, refitting the model map per fold."""
    n = scores.size
    pred = np.empty(n)
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        Mt, st = maps[train], scores[train]
        if method == "spearman":
            Mt, st = stats.rankdata(Mt, axis=0), stats.rankdata(st)
        model = corr_per_voxel(Mt, st)
        for i in test:
            pred[i] = np.corrcoef(maps[i], model)[0, 1]
    return pred, float(np.corrcoef(pred, scores)[0, 1])


# --- the references' own checks


def test_ols_t_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    maps, is_case, cov = group_data(1, effect=1.0)
    X = design_matrix(is_case.astype(float), cov)
    t = ols_t(X, maps)
    ref = np.array([sm.OLS(maps[:, v], X).fit().tvalues[1] for v in range(maps.shape[1])])
    # two float64 least-squares solvers (lstsq SVD vs statsmodels pinv) on a condition number ~1e2:
    # both are within ~1e-13 of the exact t
    np.testing.assert_allclose(t, ref, rtol=1e-10)


def test_ols_t_without_covariates_is_welch_free_two_sample_t():
    maps, is_case, _ = group_data(2, k=0, effect=1.0)
    t = ols_t(design_matrix(is_case.astype(float), None), maps)
    ref = stats.ttest_ind(maps[is_case], maps[~is_case], equal_var=True).statistic
    np.testing.assert_allclose(t, ref, rtol=1e-10)  # float64, exact in exact arithmetic


def test_partial_corr_matches_statsmodels_t():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    n = 30
    cov = rng.standard_normal((n, 2))
    s = rng.standard_normal(n) + cov[:, 0]
    Y = rng.standard_normal((n, 20)) + 0.5 * s[:, None] + cov[:, [1]]
    r = partial_corr_per_voxel(Y, s, cov)
    X = design_matrix(s, cov)
    t = np.array([sm.OLS(Y[:, v], X).fit().tvalues[1] for v in range(Y.shape[1])])
    df = n - 4
    np.testing.assert_allclose(r, t / np.sqrt(t**2 + df), rtol=1e-10)  # r = t / sqrt(t^2 + df) exactly


def test_corr_per_voxel_matches_scipy():
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((15, 10))
    s = rng.standard_normal(15)
    ref = [stats.pearsonr(Y[:, v], s).statistic for v in range(10)]
    np.testing.assert_allclose(corr_per_voxel(Y, s), ref, rtol=1e-12)


def test_bh_loop_matches_scipy():
    p = np.random.default_rng(5).uniform(size=300) ** 3
    np.testing.assert_allclose(bh_loop(p), stats.false_discovery_control(p), rtol=1e-14)


def test_freedman_lane_identity_permutation_gives_observed_t():
    maps, is_case, cov = group_data(6)
    X = design_matrix(is_case.astype(float), cov)
    t = ols_t(X, maps)
    ident = np.arange(is_case.size)[None, :]
    np.testing.assert_allclose(
        freedman_lane_max_t(is_case.astype(float), cov, maps, ident), np.abs(t).max(), rtol=1e-12
    )
