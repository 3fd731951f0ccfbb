"""Cross-validated prediction of a score from patient maps, with a permutation p.

In each fold the model map is the symptom map of the training patients, ``R(v) = corr_i(T_i(v), s_i)``
over the training patients (``T = M`` for Pearson; ranks over the training patients of M and s for
Spearman); a held-out patient's prediction is the Pearson correlation over voxels of ``M_i`` with
``R``; the result is the Pearson correlation of the predictions with the observed scores over all
held-out patients (every patient is held out exactly once). The p-value repeats the whole
cross-validation, with the same folds, on permuted scores: ``(1 + #{null >= observed}) / (1 + n_perm)``
(one-sided: only a positive relation is a prediction).

Why by hand (and how it stays fast): with ``c_j(v)`` the training maps centred over the training
patients and ``w(v) = 1 / ||c(v)||``, the model map is ``R(v) = w(v) sum_j s~_j c_j(v)`` for the
centred unit-norm training scores ``s~``. Every voxel sum a prediction needs is then a quadratic form
in ``s~`` of fold matrices that do not depend on the scores:

- ``sum_v M_i(v) R(v) = s~ . G[:, i]`` with ``G = (c w) M_H'`` (training x held-out),
- ``sum_v R(v) = s~ . U`` with ``U = (c w) 1``, and ``sum_v R(v)^2 = s~' K s~`` with ``K = (c w)(c w)'``,
- plus ``sum_v M_i`` and ``sum_v M_i^2``.

These :class:`FoldGrams` are sums over voxels (add them over voxel blocks) computed once; each
permutation then costs O(n^2) per fold, and the permutations of a block are a few small GEMMs
``(P, n_T) @ (n_T, n_T)``. sklearn's cross-validation would refit a full map per fold and permutation.
The sums are float64; their last bits depend on the voxel-block partition (not on the number of workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.permutations import TIE_TOL, PermutationPlan, permutation_plan
from lakepipe.compute.stats.validation import StatsInputError, check_maps, check_scores

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

SCHEMES = ("loo", "kfold", "group")
_TILE = 8192
_ZERO_VAR_RTOL = 1e-10

PREDICT_CONVENTIONS: dict[str, Any] = {
    "model_map": "symptom map (Pearson, or Spearman of ranks within the training patients) of the "
    "training fold",
    "prediction": "Pearson correlation over voxels of the held-out map with the model map "
    "(0 if either is constant)",
    "statistic": "Pearson correlation of predictions with observed scores over all held-out patients",
    "p_value": "(1 + #{null >= observed - tie_tol}) / (1 + n_permutations), one-sided, whole CV repeated "
    f"on permuted scores, tie_tol = {TIE_TOL:g}",
    "folds": "loo: one patient each; kfold: numpy default_rng(seed).permutation(n) split by "
    "numpy.array_split; group: one fold per group (sorted group labels)",
}


def loo_folds(n: int) -> list[IntArray]:
    """Leave-one-out: fold i holds out patient i."""
    if n < 4:
        raise StatsInputError(f"leave-one-out prediction needs at least 4 patients, got {n}")
    return [np.array([i], dtype=np.intp) for i in range(n)]


def kfold_folds(n: int, k: int, seed: int) -> list[IntArray]:
    """k folds from ``default_rng(seed).permutation(n)`` cut by ``numpy.array_split``; each sorted."""
    if not 2 <= k <= n:
        raise StatsInputError(f"k-fold needs 2 <= k <= {n} patients, got k = {k}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(f).astype(np.intp) for f in np.array_split(order, k)]


def group_folds(groups: npt.ArrayLike) -> list[IntArray]:
    """Leave-one-group-out (e.g. groups = cohorts): one fold per distinct label, in sorted label order."""
    g = np.asarray(groups)
    if g.ndim != 1:
        raise StatsInputError(f"groups must be one label per patient, got shape {g.shape}")
    labels = np.unique(g)
    if labels.size < 2:
        raise StatsInputError("leave-one-group-out needs at least 2 groups")
    return [np.flatnonzero(g == lab).astype(np.intp) for lab in labels]


def cv_folds(
    n: int, scheme: str = "loo", k: int = 10, seed: int = 0, groups: npt.ArrayLike | None = None
) -> list[IntArray]:
    """Held-out indices of each fold for ``scheme`` ``loo``, ``kfold`` or ``group``; checks each
    training set keeps at least 3 patients."""
    if scheme == "loo":
        folds = loo_folds(n)
    elif scheme == "kfold":
        folds = kfold_folds(n, k, seed)
    elif scheme == "group":
        if groups is None:
            raise StatsInputError("leave-one-group-out needs the group of each patient")
        folds = group_folds(groups)
        if sum(f.size for f in folds) != n:
            raise StatsInputError(f"got {sum(f.size for f in folds)} group labels for {n} patients")
    else:
        raise StatsInputError(f"cross-validation scheme must be one of {SCHEMES}, got {scheme!r}")
    small = [i for i, f in enumerate(folds) if n - f.size < 3]
    if small:
        raise StatsInputError(f"folds {small[:10]} leave fewer than 3 training patients")
    return folds


@dataclass(frozen=True)
class FoldGrams:
    """Score-independent voxel sums of every fold (see the module notes); ``a + b`` adds voxel blocks.

    Attributes
    ----------
    test, train : tuple of numpy.ndarray
        Held-out and training indices per fold.
    k_train, g_test, u_train : tuple of numpy.ndarray
        Per fold ``K`` (n_T, n_T), ``G`` (n_T, n_H), ``U`` (n_T,).
    m1, m2 : numpy.ndarray
        (n,) sums over voxels of each map and of its square.
    n_voxels : int
    method : str
    """

    test: tuple[IntArray, ...]
    train: tuple[IntArray, ...]
    k_train: tuple[FloatArray, ...]
    g_test: tuple[FloatArray, ...]
    u_train: tuple[FloatArray, ...]
    m1: FloatArray
    m2: FloatArray
    n_voxels: int
    method: str

    def __add__(self, other: FoldGrams) -> FoldGrams:
        if self.method != other.method or len(self.test) != len(other.test):
            raise ValueError("cannot add fold sums of different folds or methods")
        if any(not np.array_equal(a, b) for a, b in zip(self.test, other.test, strict=True)):
            raise ValueError("cannot add fold sums of different folds")
        return FoldGrams(
            test=self.test,
            train=self.train,
            k_train=tuple(a + b for a, b in zip(self.k_train, other.k_train, strict=True)),
            g_test=tuple(a + b for a, b in zip(self.g_test, other.g_test, strict=True)),
            u_train=tuple(a + b for a, b in zip(self.u_train, other.u_train, strict=True)),
            m1=self.m1 + other.m1,
            m2=self.m2 + other.m2,
            n_voxels=self.n_voxels + other.n_voxels,
            method=self.method,
        )


def fold_grams(maps: npt.ArrayLike, folds: list[IntArray], method: str = "pearson") -> FoldGrams:
    """Fold sums of a block of voxel columns (float64 arithmetic).

    Parameters
    ----------
    maps
        (n, V_b) patient maps.
    folds
        Held-out indices per fold (:func:`cv_folds`).
    method
        ``pearson`` or ``spearman`` (the model map's correlation).
    """
    if method not in ("pearson", "spearman"):
        raise StatsInputError(f"correlation method must be 'pearson' or 'spearman', got {method!r}")
    m = check_maps(maps)
    n, nv = m.shape
    test = tuple(np.asarray(f, dtype=np.intp) for f in folds)
    train = tuple(np.setdiff1d(np.arange(n), f).astype(np.intp) for f in test)
    ks = [np.zeros((t.size, t.size)) for t in train]
    gs = [np.zeros((t.size, h.size)) for t, h in zip(train, test, strict=True)]
    us = [np.zeros(t.size) for t in train]
    m1, m2 = np.zeros(n), np.zeros(n)
    for lo in range(0, nv, _TILE):
        tile = m[:, lo : min(lo + _TILE, nv)].astype(np.float64)
        m1 += tile.sum(axis=1)
        m2 += np.einsum("ij,ij->i", tile, tile)
        for f, (tr, te) in enumerate(zip(train, test, strict=True)):
            c = tile[tr]
            if method == "spearman":
                from scipy import stats  # imported on use: 1.5-3 s at import

                c = np.asarray(stats.rankdata(c, axis=0), dtype=np.float64)
            ref = np.abs(c).max(axis=0)
            c = c - c.mean(axis=0)
            sd = np.linalg.norm(c, axis=0)
            ok = sd > _ZERO_VAR_RTOL * np.sqrt(tr.size) * ref
            c *= np.where(ok, 1.0 / np.where(ok, sd, 1.0), 0.0)
            ks[f] += c @ c.T
            gs[f] += c @ tile[te].T
            us[f] += c.sum(axis=1)
    return FoldGrams(test, train, tuple(ks), tuple(gs), tuple(us), m1, m2, nv, method)


def _unit_rows(s: FloatArray, ranks: bool) -> FloatArray:
    """Rows centred and scaled to unit norm (ranked first for Spearman); constant rows become 0."""
    if ranks:
        from scipy import stats  # imported on use: 1.5-3 s at import

        s = np.asarray(stats.rankdata(s, axis=1), dtype=np.float64)
    c = s - s.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    ok = norm > _ZERO_VAR_RTOL * np.maximum(np.abs(s).max(axis=1, keepdims=True), 1e-300)
    return np.where(ok, c / np.where(ok, norm, 1.0), 0.0)


def cv_predictions(grams: FoldGrams, scores: npt.ArrayLike) -> FloatArray:
    """Held-out predictions for each row of (possibly permuted) scores.

    Parameters
    ----------
    grams
        Fold sums over all voxels.
    scores
        (P, n) scores, one relabelling per row (or (n,)).

    Returns
    -------
    numpy.ndarray
        (P, n) prediction of each patient in the fold that holds it out.
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    nv = grams.n_voxels
    out = np.zeros((s.shape[0], grams.m1.size))
    for tr, te, k, g, u in zip(
        grams.train, grams.test, grams.k_train, grams.g_test, grams.u_train, strict=True
    ):
        st = _unit_rows(s[:, tr], grams.method == "spearman")
        sum_r = st @ u
        var_r = np.einsum("pi,pi->p", st @ k, st) - sum_r**2 / nv
        var_m = grams.m2[te] - grams.m1[te] ** 2 / nv
        cov = st @ g - np.outer(sum_r, grams.m1[te]) / nv
        den = np.sqrt(np.maximum(var_r, 0)[:, None] * np.maximum(var_m, 0)[None, :])
        ok = den > 0
        out[:, te] = np.where(ok, cov / np.where(ok, den, 1.0), 0.0)
    return out


def cv_statistic(predictions: npt.ArrayLike, scores: npt.ArrayLike) -> FloatArray:
    """(P,) Pearson correlation of each row of predictions with the same row of scores (0 if constant)."""
    a = _unit_rows(np.atleast_2d(np.asarray(predictions, dtype=np.float64)), False)
    b = _unit_rows(np.atleast_2d(np.asarray(scores, dtype=np.float64)), False)
    return np.asarray(np.einsum("pi,pi->p", a, b))


@dataclass(frozen=True)
class PredictionResult:
    """Cross-validated prediction.

    Attributes
    ----------
    r : float
        Correlation of held-out predictions with observed scores.
    p : float
        Permutation p (one-sided).
    predictions : numpy.ndarray
        (n,) held-out prediction of each patient.
    null : numpy.ndarray
        (n_perm,) the statistic on permuted scores.
    folds : list of numpy.ndarray
        Held-out indices per fold.
    plan : PermutationPlan
    conventions : dict
    """

    r: float
    p: float
    predictions: FloatArray
    null: FloatArray
    folds: list[IntArray]
    plan: PermutationPlan
    conventions: dict[str, Any]


def permuted_statistic(grams: FoldGrams, scores: npt.ArrayLike, perms: IntArray) -> FloatArray:
    """(P,) CV statistic for a block of score permutations ``scores[perms]`` (the null kernel)."""
    s = np.asarray(scores, dtype=np.float64)
    sp = s[np.asarray(perms, dtype=np.intp)]
    return cv_statistic(cv_predictions(grams, sp), sp)


def predict(
    maps: npt.ArrayLike,
    scores: npt.ArrayLike,
    scheme: str = "loo",
    k: int = 10,
    groups: npt.ArrayLike | None = None,
    seed: int = 0,
    n_perm: int = 1000,
    method: str = "pearson",
    voxel_block: int = 65536,
    perm_block: int = 1024,
) -> PredictionResult:
    """Cross-validated prediction of scores from maps, with its permutation p.

    Parameters
    ----------
    maps
        (n, V) patient maps.
    scores
        (n,) scores (finite, not constant).
    scheme
        ``loo``, ``kfold`` (``k`` folds from ``seed``) or ``group`` (leave one of ``groups`` out).
    seed
        Seed of the k-fold split and of the permutations.
    n_perm
        Permutations of the scores (all ``n!`` when ``n_perm >= n! - 1``).
    method
        Model map correlation, ``pearson`` or ``spearman``.
    voxel_block, perm_block
        Work split (fold sums are added over voxel blocks).
    """
    s = check_scores(scores)
    m = check_maps(maps, s.size)
    folds = cv_folds(s.size, scheme, k, seed, groups)
    nv = m.shape[1]
    grams: FoldGrams | None = None
    for lo in range(0, nv, voxel_block):
        part = fold_grams(m[:, lo : min(lo + voxel_block, nv)], folds, method)
        grams = part if grams is None else grams + part
    assert grams is not None
    pred = cv_predictions(grams, s)[0]
    r = float(cv_statistic(pred, s)[0])
    plan = permutation_plan(s.size, n_perm, seed)
    null = np.concatenate(
        [permuted_statistic(grams, s, plan.block(a, b)) for a, b in plan.blocks(perm_block)]
    )
    p = (1.0 + np.count_nonzero(null >= r - TIE_TOL)) / (1.0 + plan.n_perm)
    return PredictionResult(
        r=r,
        p=float(p),
        predictions=pred,
        null=null,
        folds=folds,
        plan=plan,
        conventions={
            **PREDICT_CONVENTIONS,
            "scheme": scheme,
            "method": method,
            "k": k if scheme == "kfold" else None,
        },
    )
