"""Mass-univariate linear model with Freedman-Lane permutations, batched into GEMMs.

Model, per voxel ``v``: ``M(v) = b0 + b1 * x + sum_k g_k cov_k + e``, ``x`` the tested variable
(case 1 / control 0 for the specificity test, the score for a symptom map), covariates z-scored.
The statistic is the t of ``b1`` with ``df = n - 2 - k``; positive t means M rises with x (cases
above controls).

Algebra (the one of ``nilearn.mass_univariate.permuted_ols``). With ``Q`` an orthonormal basis
of the centred covariates (orthogonal to the intercept), ``R`` the residual-forming matrix of
``[1, Q]``, ``x_r = R x / ||R x||`` and ``y = R M(v) / ||R M(v)||``:

- observed: ``u = x_r . y`` is the partial correlation of M and x given the covariates and
  ``t = u * sqrt(df / (1 - u^2))``;
- permutation ``P`` (Freedman-Lane: the covariate-model residuals ``y`` permuted, the full model
  refitted; equivalently ``y`` regressed on the permuted design ``[P x_r, P Q]``, which is
  orthonormal): ``a = (P x_r) . y``, ``b_k = (P Q_k) . y``, and ``u_P = a / sqrt(1 - sum_k b_k^2)``
  is the partial correlation of that fit, ``t_P = u_P * sqrt(df / (1 - u_P^2))``.

``nilearn.mass_univariate.permuted_ols`` permutes ``x_r`` *and* the orthonormalised covariates
together and subtracts ``||(P Q)' y||^2`` from the residual sum of squares, which is exactly the
Freedman-Lane t above (not an approximation); the tests check both against a naive per-voxel
``numpy.linalg.lstsq`` loop over the same permutations. The cost of the exact residual variance is
``k`` more rows in the GEMM per permutation (the intercept column is invariant under permutation
and orthogonal to ``y``, so it costs nothing); we pay it rather than approximate.

Why by hand: ``permuted_ols`` loops over permutations with one matrix-vector product over all the
data each (memory bound: the data are read once per permutation; 10-50x slower than this kernel on
200 maps x 235,375 voxels, see ``benchmarks/bench_stats.py``). Here the permuted designs of a
block of permutations are one ``(P (1 + k), n)`` matrix and
the products for a voxel tile are one GEMM ``y_tile (V_t, n) @ A.T``; ``|t|`` is monotone in
``|u|``, so the max over voxels is taken on ``u`` (two column reductions when there are no
covariates) and converted once per permutation.

Precision. The observed statistic is float64 throughout. The null products run in ``dtype``
(float32 by default, from float64-residualised unit-norm data rounded once): each of ``a`` and
``b_k`` is a sum of n products with ``sum |x_i y_i| <= 1`` (Cauchy-Schwarz), so its error is below
``(n + 3) * 2**-24`` (n = 200: 1.2e-5; typically ``sqrt(n) * 2**-24``, 1e-6), and
``dt/du = sqrt(df) / (1 - u^2)^1.5``: about 1e-5 in a null maximum t near 5. Null values within
that bound of the observed statistic count as ties (:func:`null_tie_tol`), so rounding never makes
p smaller; it can make it larger by the null maxima within ~1e-4 of the observed, far below the
Monte-Carlo error of p. ``dtype=numpy.float64`` gives ~1e-15 at about half the speed; all
relabellings enumerated (tiny n) always run in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lakepipe.compute.stats.fdr import fdr_q
from lakepipe.compute.stats.permutations import (
    TIE_TOL,
    PermutationPlan,
    check_tail,
    combine_voxel_blocks,
    exceedance_pvalues,
    max_statistic_pvalues,
    permutation_plan,
    tail_statistic,
)
from lakepipe.compute.stats.validation import (
    StatsInputError,
    check_covariates,
    check_groups,
    check_maps,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: |t| is capped here (a voxel the model fits exactly); the FNM maps use the same cap
T_MAX = 1e6

# voxels per tile of the residualisation (float64 temporaries of n x this); blocks of a multiple of
# this (and of _NULL_VOXEL_TILE) waste no padding
_PREP_TILE = 2048
# voxel x permutation tile of the null GEMM: its float32 output (4 MB) is reduced while in cache
_NULL_VOXEL_TILE = 2048
_NULL_PERM_TILE = 512
# a residual norm below this fraction of the centred norm is rounding noise: zero variance
_ZERO_VAR_RTOL = 1e-10

GLM_CONVENTIONS: dict[str, Any] = {
    "model": "M(v) = b0 + b1 * x + sum_k g_k cov_k + e, covariates z-scored (ddof 0)",
    "statistic": "t of b1, df = n - 2 - n_covariates; positive = cases above controls "
    "(or M rising with the score)",
    "permutation": "Freedman-Lane (residuals of the covariate model permuted; = permuted_ols of nilearn)",
    "fwe": "max over voxels of |t| (two-sided), t (greater) or -t (less) per permutation",
    "p_value": "(1 + #{null >= observed}) / (1 + n_permutations), compared as partial correlations, "
    "null values within tie_tol of the observed counted as ties (tie_tol: the rounding error bound of "
    "the permutation products, see null_tie_tol)",
    "zero_variance": "a voxel whose residual variance is 0 has t = 0 (p = 1)",
    "t_cap": T_MAX,
    "fdr": "Benjamini-Hochberg over the voxels (scipy.stats.false_discovery_control)",
    "precision": "observed statistic float64; permutation products in the requested dtype (float64 when "
    "all relabellings are enumerated)",
}


@dataclass(frozen=True)
class LinearDesign:
    """The design of one test, prepared once and shared by every voxel and permutation block.

    Attributes
    ----------
    x : numpy.ndarray
        (n,) tested variable residualised on ``[1, covariates]``, unit norm.
    confounds : numpy.ndarray
        (n, k) orthonormal basis of the centred covariates (orthogonal to the intercept).
    df : int
        Residual degrees of freedom, ``n - 2 - k``.
    covariate_names : tuple of str
        For metadata.
    """

    x: FloatArray
    confounds: FloatArray
    df: int
    covariate_names: tuple[str, ...] = field(default=())

    @property
    def n(self) -> int:
        return int(self.x.size)

    @property
    def n_covariates(self) -> int:
        return int(self.confounds.shape[1])


def linear_design(
    tested: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    covariate_names: Sequence[str] | None = None,
    tested_name: str = "group",
) -> LinearDesign:
    """Prepare the design for :func:`prepare_maps` and :func:`null_max_block`.

    Parameters
    ----------
    tested
        (n,) tested variable (case 1 / control 0, or scores).
    covariates
        (n, k) covariates (z-scored here), or None.
    covariate_names
        For error messages and metadata.
    tested_name
        Name of the tested variable in error messages.

    Raises
    ------
    StatsInputError
        Covariates unusable (see :func:`~lakepipe.compute.stats.validation.check_covariates`).
    """
    x = np.asarray(tested, dtype=np.float64)
    if x.ndim != 1:
        raise StatsInputError(f"{tested_name} must be one value per map, got shape {x.shape}")
    n = x.size
    z = check_covariates(covariates, n, covariate_names, tested=x, tested_name=tested_name)
    k = z.shape[1]
    if k:
        u, _, _ = np.linalg.svd(z, full_matrices=False)  # z is centred: the basis is orthogonal to 1
        q = np.ascontiguousarray(u[:, :k])
    else:
        q = np.zeros((n, 0))
    xr = x - x.mean()
    xr = xr - q @ (q.T @ xr)
    norm = float(np.linalg.norm(xr))
    if norm == 0:
        raise StatsInputError(f"{tested_name} is the same for every map")
    names = (
        tuple(covariate_names) if covariate_names is not None else tuple(f"covariate {j}" for j in range(k))
    )
    return LinearDesign(x=xr / norm, confounds=q, df=n - 2 - k, covariate_names=names)


@dataclass(frozen=True)
class PreparedMaps:
    """A voxel block residualised on the covariate model, ready for the permutation products.

    Attributes
    ----------
    u : numpy.ndarray
        (V_b,) float64 observed partial correlation of the maps with the tested variable.
    y : numpy.ndarray
        (V_b, n) residualised, unit-norm data (voxel-major, C order) in the null dtype; zero rows for
        voxels of zero residual variance.
    offset : int
        Index of the block's first voxel among all voxels (places it on the global tile grid).
    """

    u: FloatArray
    y: npt.NDArray[np.floating]
    offset: int = 0

    @property
    def n_voxels(self) -> int:
        return int(self.u.size)


def _grid(offset: int, size: int, tile: int) -> Iterator[tuple[int, int, int]]:
    """Tiles of a global grid of width ``tile`` met by items ``offset .. offset + size - 1``:
    ``(lo, hi, at)``, the block-local range and where it starts inside its tile."""
    lo = 0
    while lo < size:
        at = (offset + lo) % tile
        hi = min(size, lo + tile - at)
        yield lo, hi, at
        lo = hi


def prepare_maps(
    design: LinearDesign, maps: npt.ArrayLike, dtype: npt.DTypeLike = np.float32, offset: int = 0
) -> PreparedMaps:
    """Residualise a block of voxel columns and compute its observed statistic.

    Parameters
    ----------
    design
        From :func:`linear_design`.
    maps
        (n, V_b) maps (rows in the order of the design), float32 or float64.
    dtype
        Precision of the permutation products (float32 or float64).
    offset
        Index of the block's first column among all voxels.

    Returns
    -------
    PreparedMaps
        Each voxel's values are the same bits whatever block it comes in (see :func:`null_max_block`).
    """
    m = check_maps(maps, design.n)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    n, nv = m.shape
    u = np.empty(nv)
    y = np.empty((nv, n), dtype=dt)
    q = design.confounds
    yc = np.empty((n, _PREP_TILE))
    for lo, hi, at in _grid(offset, nv, _PREP_TILE):
        w = hi - lo
        yc[:] = 0.0
        yc[:, at : at + w] = m[:, lo:hi]
        yc -= yc.mean(axis=0)
        ref = np.linalg.norm(yc, axis=0)
        if q.shape[1]:
            yc -= q @ (q.T @ yc)
        norm = np.linalg.norm(yc, axis=0)
        ok = norm > _ZERO_VAR_RTOL * ref
        yc *= np.where(ok, 1.0 / np.where(ok, norm, 1.0), 0.0)
        u[lo:hi] = (design.x @ yc)[at : at + w]
        y[lo:hi] = yc[:, at : at + w].T
    np.clip(u, -1.0, 1.0, out=u)
    return PreparedMaps(u=u, y=y, offset=int(offset))


def null_tie_tol(design: LinearDesign, dtype: npt.DTypeLike) -> float:
    """Null statistics (partial correlations) within this of an observed one count as ties.

    A relabelling that ties with the observed one in exact arithmetic (the identity or, for equal
    groups, the complement, drawn at random; tied ranks) must count whatever the rounding. float64:
    :data:`~lakepipe.compute.stats.permutations.TIE_TOL` (1e-10, far above ~n * 1e-16). float32: the
    error bound of the null products (module notes), ``2 (1 + sqrt(k)) (n + 3) 2^-24`` (covers
    ``sum b^2 <= 0.3``; ~5e-5 for n = 200, k = 2): this makes p conservative by the null values within
    that of the observed, ~1e-4 at most, far below its Monte-Carlo error.
    """
    if np.dtype(dtype) == np.float64:
        return TIE_TOL
    return float(2 * (1 + np.sqrt(design.n_covariates)) * (design.n + 3) * 2.0**-24 + TIE_TOL)


def t_from_u(u: npt.ArrayLike, df: int) -> FloatArray:
    """t of b1 from the partial correlation: ``u * sqrt(df / (1 - u^2))``, |t| capped at :data:`T_MAX`."""
    uu = np.asarray(u, dtype=np.float64)
    den = np.maximum(1.0 - uu * uu, df / T_MAX**2)
    return np.clip(uu * np.sqrt(df / den), -T_MAX, T_MAX)


def parametric_p(t: npt.ArrayLike, df: int, tail: str = "two-sided") -> FloatArray:
    """Uncorrected p per voxel from Student's t with ``df`` degrees of freedom."""
    from scipy import stats  # imported on use: 1.5-3 s at import

    tt = np.asarray(t, dtype=np.float64)
    side = check_tail(tail)
    if side == "two-sided":
        return np.asarray(2.0 * stats.t.sf(np.abs(tt), df))
    return np.asarray(stats.t.sf(tt if side == "greater" else -tt, df))


def _permuted_design(
    design: LinearDesign, perms: IntArray, at: int, dtype: np.dtype[Any]
) -> npt.NDArray[np.floating]:
    """(P_t (1 + k), n): the permuted tested variable, then each permuted confound column, P_t rows
    each, the given permutations at rows ``at ..`` of the tile, identity rows elsewhere (dropped)."""
    full = np.broadcast_to(np.arange(design.n, dtype=np.intp), (_NULL_PERM_TILE, design.n)).copy()
    full[at : at + perms.shape[0]] = perms
    rows = [design.x[full]] + [design.confounds[:, j][full] for j in range(design.n_covariates)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=dtype)


class _Workspace:
    """Buffers of one null kernel call: the GEMM output, temporaries and a padded voxel tile."""

    def __init__(self, dtype: np.dtype[Any], k: int, n: int) -> None:
        self.c = np.empty((_NULL_VOXEL_TILE, _NULL_PERM_TILE * (1 + k)), dtype=dtype)
        self.ss = np.empty((_NULL_VOXEL_TILE, _NULL_PERM_TILE), dtype=dtype) if k else self.c[:0]
        self.tmp = np.empty_like(self.ss) if k > 1 else self.c[:0]
        self.y = np.zeros((_NULL_VOXEL_TILE, n), dtype=dtype)


def _tiles(
    design: LinearDesign, prep: PreparedMaps, perms: IntArray, perm_offset: int
) -> Iterator[tuple[int, int, int, int, npt.NDArray[np.floating]]]:
    """Yield ``(plo, phi, lo, hi, u)``: the (hi - lo, phi - plo) permuted partial correlations of
    voxels ``lo:hi`` for permutations ``plo:phi`` (block-local indices).

    Determinism: the GEMMs run on a global grid of tiles, voxel ``v`` (of all voxels) always at row
    ``v % _NULL_VOXEL_TILE`` and permutation ``k`` at column ``k % _NULL_PERM_TILE`` of a GEMM of one
    fixed shape, ``(_NULL_VOXEL_TILE, n) @ (n, _NULL_PERM_TILE (1 + k))``, the rest of a tile
    padded (zero voxels, identity permutations) and dropped. Some BLAS kernels (OpenBLAS's Haswell
    SGEMM) round an element differently with its position in the product, so this makes a (voxel,
    permutation) value the same bits whatever blocks it is computed in, for a given BLAS kernel and
    thread count. Without covariates ``u`` is the GEMM output; with them ``a / sqrt(1 - sum b^2)``,
    in place. |u| <= 1 exactly; rounding can exceed it by ~1e-6 in float32 where
    ``1 - sum b^2 ~ a^2``: callers clip.
    """
    p = np.asarray(perms, dtype=np.intp)
    if p.ndim != 2 or p.shape[1] != design.n:
        raise ValueError(f"permutations must be a (P, {design.n}) index array, got shape {p.shape}")
    if perm_offset < 0:
        raise ValueError(f"perm_offset must be >= 0, got {perm_offset}")
    k, dt, pt = design.n_covariates, prep.y.dtype, _NULL_PERM_TILE
    ws = _Workspace(dt, k, design.n)
    for plo, phi, pat in _grid(perm_offset, p.shape[0], pt):
        a = _permuted_design(design, p[plo:phi], pat, dt)
        for lo, hi, at in _grid(prep.offset, prep.n_voxels, _NULL_VOXEL_TILE):
            if hi - lo == _NULL_VOXEL_TILE:
                yt = prep.y[lo:hi]
            else:
                ws.y[:] = 0
                ws.y[at : at + hi - lo] = prep.y[lo:hi]
                yt = ws.y
            c = ws.c
            np.matmul(yt, a.T, out=c)  # one GEMM: (V_t, n) @ (n, P_t (1 + k))
            if k == 0:
                yield plo, phi, lo, hi, c[at : at + hi - lo, pat : pat + phi - plo]
                continue
            ss = ws.ss
            b = c[:, pt : 2 * pt]
            np.multiply(b, b, out=ss)
            for j in range(2, k + 1):
                b = c[:, j * pt : (j + 1) * pt]
                np.multiply(b, b, out=ws.tmp)
                ss += ws.tmp
            np.subtract(1, ss, out=ss)
            np.maximum(ss, np.finfo(ss.dtype).tiny, out=ss)
            np.sqrt(ss, out=ss)
            np.divide(c[:, :pt], ss, out=ss)
            yield plo, phi, lo, hi, ss[at : at + hi - lo, pat : pat + phi - plo]


@dataclass(frozen=True)
class NullBlock:
    """One (voxel block, permutation block) piece of a max-statistic null distribution.

    Attributes
    ----------
    max_u : numpy.ndarray
        (P,) float64 maximum over the block's voxels of ``tail_statistic(u)`` per permutation;
        combine voxel blocks with :func:`~lakepipe.compute.stats.permutations.combine_voxel_blocks`.
    exceed : numpy.ndarray or None
        (V_b,) int64 count of permutations whose statistic at the voxel is >= the observed one
        (uncorrected permutation p); add over permutation blocks. None unless asked for.
    """

    max_u: FloatArray
    exceed: npt.NDArray[np.int64] | None


def null_max_block(
    design: LinearDesign,
    prep: PreparedMaps,
    perms: IntArray,
    tail: str = "two-sided",
    exceedances: bool = False,
    perm_offset: int = 0,
) -> NullBlock:
    """Max statistic over a voxel block for a block of permutations (the FWE kernel).

    Parameters
    ----------
    design, prep
        From :func:`linear_design` and :func:`prepare_maps` (its dtype is the precision).
    perms
        (P, n) permutation index arrays (:meth:`PermutationPlan.block`).
    tail
        ``two-sided`` (max ``|u|``), ``greater`` (max ``u``) or ``less`` (max ``-u``).
    exceedances
        Also count per voxel how often the permuted statistic reaches the observed one.
    perm_offset
        Index of the first of ``perms`` in the plan (``start`` of :meth:`PermutationPlan.block`).

    Returns
    -------
    NullBlock
        In partial-correlation units; :func:`t_from_u` (with ``design.df``) turns ``max_u`` into t.
        With ``prep.offset`` and ``perm_offset`` given, the values are the same bits for any split
        into blocks (see ``_tiles``); blocks of multiples of 2048 voxels and 512 permutations waste
        no padding.
    """
    side = check_tail(tail)
    p = np.asarray(perms, dtype=np.intp)
    max_u = np.full(p.shape[0], -np.inf)
    exceed = np.zeros(prep.n_voxels, dtype=np.int64) if exceedances else None
    obs = (tail_statistic(prep.u, side) - null_tie_tol(design, prep.y.dtype)).astype(prep.y.dtype)
    for plo, phi, lo, hi, u in _tiles(design, prep, p, perm_offset):
        best = max_u[plo:phi]
        # max is exact, so the order of tiles does not matter
        if side != "less":
            np.maximum(best, u.max(axis=0), out=best)
        if side != "greater":
            np.maximum(best, -u.min(axis=0), out=best)
        if exceed is not None:
            stat = np.abs(u) if side == "two-sided" else (u if side == "greater" else -u)
            exceed[lo:hi] += np.count_nonzero(stat >= obs[lo:hi, None], axis=1)
    np.clip(max_u, -1.0, 1.0, out=max_u)
    return NullBlock(max_u=max_u, exceed=exceed)


def permuted_u_maps(
    design: LinearDesign, prep: PreparedMaps, perms: IntArray, perm_offset: int = 0
) -> FloatArray:
    """(P, V_b) float64 permuted partial correlations of a voxel block (for TFCE, which needs maps).

    Same arithmetic as :func:`null_max_block`; :func:`t_from_u` gives the t maps.
    """
    p = np.asarray(perms, dtype=np.intp)
    out = np.empty((p.shape[0], prep.n_voxels))
    for plo, phi, lo, hi, u in _tiles(design, prep, p, perm_offset):
        out[plo:phi, lo:hi] = u.T
    return np.clip(out, -1.0, 1.0, out=out)


@dataclass(frozen=True)
class PermutationTestResult:
    """Result of a max-statistic permutation test over voxels.

    Attributes
    ----------
    statistic : numpy.ndarray
        (V,) observed statistic (t for :func:`specificity`, r for a symptom map).
    p_fwe : numpy.ndarray
        (V,) family-wise corrected p (max statistic).
    p_uncorrected : numpy.ndarray
        (V,) uncorrected p: parametric (Student t, ``df``) or permutation (per-voxel counts).
    q_fdr : numpy.ndarray
        (V,) Benjamini-Hochberg q of ``p_uncorrected`` over the voxels.
    null_max : numpy.ndarray
        (n_perm,) null distribution of the max over voxels of ``|statistic|`` (two-sided),
        ``statistic`` (greater) or ``-statistic`` (less).
    df : int
        Residual degrees of freedom.
    tail : str
    plan : PermutationPlan
    conventions : dict
        For output metadata.
    """

    statistic: FloatArray
    p_fwe: FloatArray
    p_uncorrected: FloatArray
    q_fdr: FloatArray
    null_max: FloatArray
    df: int
    tail: str
    plan: PermutationPlan
    conventions: dict[str, Any]


def run_permutation_test(
    design: LinearDesign,
    maps: npt.ArrayLike,
    plan: PermutationPlan,
    tail: str = "two-sided",
    dtype: npt.DTypeLike = np.float32,
    voxel_block: int = 65536,
    perm_block: int = 1024,
    uncorrected: str = "parametric",
    transform: Callable[[npt.NDArray[np.floating]], npt.ArrayLike] | None = None,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64] | None]:
    """All voxel blocks x permutation blocks in this process, as a scheduler would run them.

    Returns ``(u, null_max_u, exceedance_counts or None)``; the blocks are independent, so the
    result is bit-identical for any ``voxel_block`` and ``perm_block``. ``transform`` (optional)
    maps each (n, V_b) block before :func:`prepare_maps` (e.g. ranks for Spearman). An exact plan
    (few relabellings, tiny n) always runs in float64, so that exactly tied relabellings tie
    within :data:`~lakepipe.compute.stats.permutations.TIE_TOL`. Compare the results with
    ``tie_tol=null_tie_tol(design, dtype)`` (float64 when ``plan.exact``).
    """
    check_tail(tail)
    if uncorrected not in ("parametric", "permutation"):
        raise ValueError(f"uncorrected must be 'parametric' or 'permutation', got {uncorrected!r}")
    m = check_maps(maps, design.n)
    if plan.exact:
        dtype = np.float64
    nv = m.shape[1]
    vblocks = [(lo, min(lo + voxel_block, nv)) for lo in range(0, nv, voxel_block)]
    pblocks = plan.blocks(perm_block)
    u = np.empty(nv)
    parts: list[list[FloatArray]] = [[] for _ in pblocks]
    counts = np.zeros(nv, dtype=np.int64) if uncorrected == "permutation" else None
    for lo, hi in vblocks:
        block = m[:, lo:hi] if transform is None else transform(m[:, lo:hi])
        prep = prepare_maps(design, block, dtype, offset=lo)
        u[lo:hi] = prep.u
        for j, (plo, phi) in enumerate(pblocks):
            res = null_max_block(
                design, prep, plan.block(plo, phi), tail, exceedances=counts is not None, perm_offset=plo
            )
            parts[j].append(res.max_u)
            if counts is not None and res.exceed is not None:
                counts[lo:hi] += res.exceed
    null = np.concatenate([combine_voxel_blocks(p) for p in parts])
    return u, null, counts


def specificity(
    maps: npt.ArrayLike,
    is_case: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    covariate_names: Sequence[str] | None = None,
    n_perm: int = 5000,
    seed: int = 0,
    tail: str = "two-sided",
    dtype: npt.DTypeLike = np.float32,
    voxel_block: int = 65536,
    perm_block: int = 1024,
    uncorrected: str = "parametric",
) -> PermutationTestResult:
    """Specificity test: cases against controls per voxel, FWE by max |t|, FDR by BH.

    Parameters
    ----------
    maps
        (n, V) maps of cases and controls.
    is_case
        (n,) True (or 1) for cases; at least 3 cases and 3 controls.
    covariates, covariate_names
        (n, k) covariates (z-scored here) and their names.
    n_perm, seed
        Permutations and their seed (see :func:`~lakepipe.compute.stats.permutations.permutation_plan`;
        all distinct relabellings are enumerated when there are no more than ``n_perm + 1``).
    tail
        ``two-sided`` (default), ``greater`` (cases > controls) or ``less``.
    dtype
        Precision of the permutation products (float32 default; see the module notes).
    voxel_block, perm_block
        Work split (any values give the same result).
    uncorrected
        ``parametric`` (Student t) or ``permutation`` (per-voxel counts) p, the input of the FDR q.

    Returns
    -------
    PermutationTestResult
        ``statistic`` is t; ``null_max`` the null max statistic in t.
    """
    lab = check_groups(is_case)
    design = linear_design(
        lab.astype(np.float64), covariates, covariate_names, tested_name="case/control group"
    )
    plan = permutation_plan(design.n, n_perm, seed, cases=lab, covariates=design.n_covariates > 0)
    dt = np.float64 if plan.exact else dtype
    u, null_u, counts = run_permutation_test(
        design, maps, plan, tail, dt, voxel_block, perm_block, uncorrected
    )
    t = t_from_u(u, design.df)
    null_t = t_from_u(null_u, design.df)  # max of |t|, t or -t: t_from_u is odd and increasing
    p_unc = parametric_p(t, design.df, tail) if counts is None else exceedance_pvalues(counts, plan.n_perm)
    return PermutationTestResult(
        statistic=t,
        p_fwe=max_statistic_pvalues(u, null_u, tail, tie_tol=null_tie_tol(design, dt)),
        p_uncorrected=p_unc,
        q_fdr=fdr_q(p_unc),
        null_max=null_t,
        df=design.df,
        tail=tail,
        plan=plan,
        conventions={
            **GLM_CONVENTIONS,
            "uncorrected_p": uncorrected,
            "tail": tail,
            "dtype": np.dtype(dt).name,
            "tie_tol": null_tie_tol(design, dt),
        },
    )
