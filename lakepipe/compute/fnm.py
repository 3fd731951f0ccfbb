"""Classic functional network mapping (FNM) for many seeds in one pass over a connectome.

Per subject ``s`` with unit-norm centred voxel series ``U`` (T x V) and per-voxel ``scale``:

1. seed series ``S = U @ (W * scale) / sum(W)`` (T x L): the (weighted) mean of the seed voxels'
   centred raw series (the voxel means drop out because correlation centres), one float32 sparse
   (or dense) product over the seed voxels only;
2. ``S`` centred and scaled to unit norm (float64), then ``r = S_unit.T @ U`` (L x V), float32
   GEMMs over voxel tiles;
3. per tile, ``z = arctanh(clip(r))`` and float64 accumulation of ``sum z``, ``sum z^2`` (and
   ``sum r``) by a :mod:`lakepipe.compute.fisher` kernel (chosen and self-checked for the CPU),
   so the (L, V) float32 r is never materialised.

:class:`FnmSums` holds the sums; partial sums add (``a + b``), so a scheduler can tree-reduce them,
and :func:`finalize_fnm` turns them into the maps.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped, unused-ignore]
from scipy import special  # type: ignore[import-untyped, unused-ignore]

from lakepipe.compute.bh import bh_q_rows
from lakepipe.compute.correlation import unit_columns
from lakepipe.compute.fisher import FisherKernel, fisher_kernel
from lakepipe.compute.fnm_conventions import T_MAX

# seeds x voxels per tile of the r = S.T @ U GEMM: the float32 tile (and the numpy kernels' work
# buffers) and the block of the three float64 sums (~2 MB) stay in cache while the subjects of one
# add_many call are added to it
_TILE_ELEMENTS = 2**16
# most seeds per tile (more seeds are tiled in blocks of rows)
_TILE_ROWS = 128
# seeds' weight matrices denser than this use a dense GEMM for the seed series
_DENSE_FRACTION = 0.05
# sparse seed weights with at least this many entries per seed voxel gather the voxels first
_GATHER_NNZ_PER_VOXEL = 3


@dataclass(frozen=True)
class SeedWeights:
    """Seed weight matrix prepared once for many subjects (see :func:`prepare_seeds`)."""

    rows: np.ndarray  # (K,) voxels used by at least one seed
    weights: sp.csr_matrix | np.ndarray  # float32, sparse (L, K) or dense (K, L)
    total: np.ndarray  # (L,) sum of each seed's weights
    n_voxels: int

    @property
    def n_seeds(self) -> int:
        return self.total.size

    @functools.cached_property
    def by_voxel(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """Sparse weights as a (K, L) CSR matrix, and the seed-voxel row of each of its entries
        (made once, on first use, for :func:`seed_series`)."""
        wt = sp.csr_matrix(self.weights.T)
        wt.sort_indices()
        return wt, np.repeat(np.arange(wt.shape[0]), np.diff(wt.indptr))


#: A (V, L) seed weight matrix (dense or scipy.sparse; rows = voxels) or prepared weights.
SeedWeightsLike: TypeAlias = "np.ndarray | sp.spmatrix | sp.sparray | SeedWeights"


def prepare_seeds(W: SeedWeightsLike) -> SeedWeights:
    """Check a (V, L) seed weight matrix (rows = voxels) and keep only the voxels it uses.

    Raises
    ------
    ValueError
        When a seed has zero total weight (no voxel in the connectome mask).
    """
    if isinstance(W, SeedWeights):
        return W
    if not sp.issparse(W):
        W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"seed weights must be a (voxel, seed) matrix, got shape {W.shape}")
    n_voxels, n_seeds = W.shape
    if sp.issparse(W):
        csr = sp.csr_matrix(W, dtype=np.float64)
        csr.eliminate_zeros()
        rows = np.flatnonzero(np.diff(csr.indptr))
        sub = csr[rows]
        total = np.asarray(sub.sum(axis=0), dtype=np.float64).ravel()
        density = sub.nnz / max(sub.shape[0] * n_seeds, 1)
        weights = sub.toarray() if density > _DENSE_FRACTION else sub.T.tocsr()
    else:
        dense = np.asarray(W, dtype=np.float64)
        rows = np.flatnonzero(np.any(dense != 0, axis=1))
        sub = dense[rows]
        total = sub.sum(axis=0)
        density = np.count_nonzero(sub) / max(sub.size, 1)
        weights = sub if density > _DENSE_FRACTION else sp.csr_matrix(sub.T)
    weights = weights.astype(np.float32)
    empty = np.flatnonzero(total == 0)
    if empty.size:
        raise ValueError(
            f"seed(s) {empty.tolist()[:10]} have no voxel (zero total weight) in the connectome mask"
        )
    return SeedWeights(rows=rows, weights=weights, total=total, n_voxels=n_voxels)


def seed_series(unit: np.ndarray, scale: np.ndarray, W: SeedWeightsLike) -> np.ndarray:
    """Seed mean series of the centred raw data of one subject.

    Parameters
    ----------
    unit
        (T, V) unit-norm centred voxel series (float32).
    scale
        (V,) norm of each voxel's centred raw series.
    W
        (V, L) seed weights (scipy.sparse or dense; rows = voxels), or a :class:`SeedWeights`.

    Returns
    -------
    numpy.ndarray
        (T, L) float64 ``unit @ (W * scale[:, None]) / W.sum(0)``, computed over the seed voxels
        only in float32 (one sparse or dense product; relative error ~1e-6).
    """
    seeds = prepare_seeds(W)
    unit = np.asarray(unit)
    if unit.ndim != 2 or unit.shape[1] != seeds.n_voxels:
        raise ValueError(f"unit has shape {unit.shape}, seed weights have {seeds.n_voxels} voxels")
    scale_k = np.asarray(scale, dtype=np.float32)[seeds.rows]
    if isinstance(seeds.weights, np.ndarray):  # dense (K, L): one float32 GEMM
        sub = np.take(unit, seeds.rows, axis=1)  # (T, K): the seed voxels only
        out = sub @ (seeds.weights * scale_k[:, None])
        return np.asarray(out.astype(np.float64) / seeds.total)
    w = seeds.weights
    if w.nnz < _GATHER_NNZ_PER_VOXEL * seeds.rows.size:
        # sparse (L, K) with the scale folded into its values (O(nnz)), on the voxel axis of unit; one
        # sparse mat-vec per time point on its contiguous row: T x nnz scattered loads, no copy
        w_full = sp.csr_matrix(
            (w.data * scale_k[w.indices], seeds.rows[w.indices], w.indptr), shape=(w.shape[0], seeds.n_voxels)
        )
        out = np.empty((unit.shape[0], w.shape[0]), np.result_type(w_full.dtype, unit.dtype))
        for t in range(unit.shape[0]):
            out[t] = w_full @ unit[t]
    else:
        # seeds sharing many voxels (many overlapping lesions): the seed voxels' columns gathered
        # once (T, K, streamed), times the sparse (K, L) weights with the scale folded in (scipy's
        # dense x sparse product: contiguous length-T vectors per entry); at 1,000 lesions (6 entries
        # per voxel) twice as fast as the mat-vecs
        wt, entry_rows = seeds.by_voxel
        ws = sp.csr_matrix((wt.data * scale_k[entry_rows], wt.indices, wt.indptr), shape=wt.shape)
        out = np.asarray(np.take(unit, seeds.rows, axis=1) @ ws)
    # either way the float32 sums over each seed's voxels in ascending order
    return np.asarray(out.astype(np.float64) / seeds.total)


def restore_unit_norm(x: np.ndarray) -> np.ndarray:
    """Rescale each column of a (T, V) float32 array to unit L2 norm, in place (zero columns stay 0).

    For unit-norm series stored at lower precision (float16): the rounding moves each column's norm
    off 1 by up to ~2^-11, which moves r by as much times |r| and, through arctanh, z by up to ~1
    near |r| = 1 (a voxel of the seed itself); rescaled, only the rounding's turn of the direction
    (<= 2 x 2^-11) remains. The norms are float32 sums of T squares (relative error <= T 2^-24).

    Returns
    -------
    numpy.ndarray
        ``x`` itself.
    """
    if x.dtype != np.float32 or x.ndim != 2:
        raise TypeError(f"expected a 2-d float32 array, got {x.dtype} {x.shape}")
    norm = np.sqrt(np.einsum("tv,tv->v", x, x))
    inv = np.divide(np.float32(1), norm, out=np.ones_like(norm), where=norm > 0)
    np.multiply(x, inv, out=x)
    return x


@dataclass
class FnmSums:
    """Running sums over subjects of z, z^2 (and r) for L seeds x V voxels.

    Attributes
    ----------
    sum_z, sum_z2 : numpy.ndarray
        (L, V) float64 sums of Fisher z and z^2.
    sum_r : numpy.ndarray or None
        (L, V) float64 sum of r (needed for ``avgr``); None when not tracked.
    n : int
        Subjects added.
    """

    sum_z: np.ndarray
    sum_z2: np.ndarray
    sum_r: np.ndarray | None
    n: int = 0

    @classmethod
    def zeros(cls, n_seeds: int, n_voxels: int, with_r: bool = True) -> FnmSums:
        """Empty sums; ``with_r=False`` skips ``sum_r`` (no ``avgr``, one pass less per subject)."""
        shape = (n_seeds, n_voxels)
        return cls(np.zeros(shape), np.zeros(shape), np.zeros(shape) if with_r else None, 0)

    @property
    def shape(self) -> tuple[int, int]:
        return self.sum_z.shape

    def add_mean(self, runs: FnmSums) -> None:
        """Add, in place, the mean over ``runs``' subjects as one subject: a participant whose runs
        were kept apart counts once, with the mean of its runs' z (and r) maps (the Lead-DBS
        convention); ``sum_z2`` gets the square of that mean."""
        if runs.shape != self.shape or runs.n < 1:
            raise ValueError(f"cannot add the mean of {runs.n} run(s) of shape {runs.shape} to {self.shape}")
        mean = runs.sum_z / runs.n
        self.sum_z += mean
        np.multiply(mean, mean, out=mean)
        self.sum_z2 += mean
        if self.sum_r is not None:
            if runs.sum_r is None:
                raise ValueError("these sums track r; the runs' sums do not")
            self.sum_r += runs.sum_r / runs.n
        self.n += 1

    def merge(self, other: FnmSums) -> FnmSums:
        """New sums = self + other (inputs untouched, so safe as a Dask reduction)."""
        if self.shape != other.shape:
            raise ValueError(f"cannot merge FNM sums of shapes {self.shape} and {other.shape}")
        sum_r = None if self.sum_r is None or other.sum_r is None else self.sum_r + other.sum_r
        return FnmSums(self.sum_z + other.sum_z, self.sum_z2 + other.sum_z2, sum_r, self.n + other.n)

    def __add__(self, other: FnmSums) -> FnmSums:
        return self.merge(other)

    def __radd__(self, other: object) -> FnmSums:
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def add_many(
        self,
        units: Iterable[np.ndarray],
        seeds_units: Iterable[np.ndarray],
        *,
        kernel: str | FisherKernel | None = None,
    ) -> None:
        """Add several subjects in place from their unit voxel series ((T, V) float32; V may be a
        voxel block) and unit seed series ((T, L), :func:`~lakepipe.compute.correlation.unit_columns`).

        The voxels are processed in blocks, every subject within a block before the next block, so
        the block's part of the large (L, V) sums stays in cache while all the subjects' r, z and z^2
        are added to it. z comes from :func:`~lakepipe.compute.fisher.fisher_kernel` (``kernel``: a
        name of :data:`~lakepipe.compute.fisher.KERNELS` to prefer, or a kernel): |z error| <= 1e-6
        against float64 ``arctanh`` of the same float32 r.
        """
        n_seeds, n_voxels = self.shape
        pairs = []
        for unit, seeds_unit in zip(units, seeds_units, strict=True):
            unit = np.asarray(unit, dtype=np.float32)
            seeds_unit = np.asarray(seeds_unit)
            if unit.ndim != 2 or unit.shape[1] != n_voxels or seeds_unit.shape != (unit.shape[0], n_seeds):
                raise ValueError(
                    f"unit {unit.shape} and seeds {seeds_unit.shape} do not fit sums {self.shape}"
                )
            pairs.append((unit, np.ascontiguousarray(seeds_unit.T, dtype=np.float32)))
        if not pairs or n_voxels == 0:
            self.n += len(pairs)
            return
        fisher = kernel if isinstance(kernel, FisherKernel) else fisher_kernel(kernel)
        # tiles of at most _TILE_ROWS seeds x block voxels: with many seeds, the seeds are tiled too,
        # so that a tile's float64 sums stay in cache (1,000 seeds x 256 voxels went to memory: z
        # cost 4.4 instead of 0.8 ns an element); a voxel block's series are reused by every seed tile
        rows = int(min(n_seeds, _TILE_ROWS))
        block = int(min(n_voxels, max(256, _TILE_ELEMENTS // max(rows, 1))))
        r = np.empty(rows * block, np.float32)
        work = fisher.workspace(rows, block)
        with_r = self.sum_r is not None
        # the numpy kernels make several passes over the sums: into contiguous, cache-resident tile
        # sums when several subjects share them; the fused kernel makes one pass, straight into the
        # sums (when they are C-contiguous, as FnmSums makes them; a block of rows is too)
        targets = self._targets()
        contiguous = all(t.flags.c_contiguous for t in targets)
        staged = (len(pairs) > 1 and not fisher.fused) or (fisher.fused and not contiguous)
        if staged:
            acc = [np.empty(rows * block) for _ in targets]
        for start in range(0, n_voxels, block):
            stop = min(start + block, n_voxels)
            w = stop - start
            for r0 in range(0, n_seeds, rows):
                r1 = min(r0 + rows, n_seeds)
                rb = r[: (r1 - r0) * w].reshape(r1 - r0, w)  # C-contiguous
                if staged:
                    acc_b = [a[: (r1 - r0) * w].reshape(r1 - r0, w) for a in acc]
                    for a in acc_b:
                        a[...] = 0.0
                    sz, sz2, sr, col = acc_b[0], acc_b[1], acc_b[2] if with_r else None, 0
                else:
                    sr = None if self.sum_r is None else self.sum_r[r0:r1]
                    sz, sz2, col = self.sum_z[r0:r1], self.sum_z2[r0:r1], start
                for unit, s_t in pairs:
                    np.matmul(s_t[r0:r1], unit[:, start:stop], out=rb)
                    fisher.accumulate(rb, sz, sz2, sr, col, work)
                if staged:
                    for t, a in zip(targets, acc_b, strict=True):
                        t[r0:r1, start:stop] += a
        self.n += len(pairs)

    def _targets(self) -> list[np.ndarray]:
        return [self.sum_z, self.sum_z2] + ([] if self.sum_r is None else [self.sum_r])

    def add_subjects(
        self,
        units: Sequence[np.ndarray],
        scales: Sequence[np.ndarray],
        seeds: SeedWeightsLike,
        *,
        kernel: str | FisherKernel | None = None,
    ) -> None:
        """Add a group of subjects in place, the step the FNM method runs per group: each subject's
        seed series (:func:`seed_series`), centred and unit-norm, then r, z and the sums
        (:meth:`add_many`).

        Parameters
        ----------
        units
            Each subject's (T, V) unit-norm centred voxel series (float32).
        scales
            Each subject's (V,) per-voxel scale (norm of the centred raw series).
        seeds
            (V, L) seed weights (sparse or dense) or a :class:`SeedWeights` (prepared once for many groups).
        kernel
            The Fisher z kernel (default: the fastest that passes its self-check on this CPU).
        """
        prepared = prepare_seeds(seeds)
        if len(units) != len(scales):
            raise ValueError(f"{len(units)} unit series but {len(scales)} scales")
        seeds_units = [unit_columns(seed_series(u, s, prepared)) for u, s in zip(units, scales, strict=True)]
        self.add_many(units, seeds_units, kernel=kernel)


def _t_and_p(mean: np.ndarray, sum_z2: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t (mean z against 0) and its two-sided p, with the zero-variance convention."""
    mean = np.asarray(mean, np.float64)
    t, p = np.empty(mean.shape), np.empty(mean.shape)
    _t_and_p_into(
        mean.reshape(-1),
        np.asarray(sum_z2, np.float64).reshape(-1),
        n,
        t.reshape(-1),
        p.reshape(-1),
        mean.size >= _P_TABLE_MIN,
    )
    return t, p


def _t_and_p_into(
    mean: np.ndarray,
    sum_z2: np.ndarray,
    n: int,
    t: np.ndarray,
    p: np.ndarray,
    table: bool,
    tmp: np.ndarray | None = None,
    ss: np.ndarray | None = None,
    zv: np.ndarray | None = None,
    work: tuple[np.ndarray, ...] | None = None,
) -> None:
    """:func:`_t_and_p` of 1-d arrays into ``t`` and ``p``, with optional work buffers (in workers,
    where glibc's trim setting makes every large temporary a fresh mmap, buffers save ~40%)."""
    if n < 2:
        t[...] = 0.0
        p[...] = 1.0
        return
    k = mean.size
    tmp = np.empty(k) if tmp is None else tmp[:k]
    ss = np.empty(k) if ss is None else ss[:k]
    zv = np.empty(k, bool) if zv is None else zv[:k]
    np.multiply(mean, n, out=tmp)
    np.multiply(tmp, mean, out=tmp)
    np.subtract(sum_z2, tmp, out=ss)  # sum of squared deviations
    # below this, ss is rounding noise of identical values (the sums are float64)
    np.multiply(sum_z2, 64 * np.finfo(np.float64).eps, out=tmp)
    np.less_equal(ss, tmp, out=zv)
    np.copyto(ss, 1.0, where=zv)
    np.divide(ss, n - 1, out=ss)
    np.divide(ss, n, out=ss)
    np.sqrt(ss, out=ss)  # the standard error
    np.divide(mean, ss, out=t)
    np.sign(mean, out=tmp)
    np.multiply(tmp, T_MAX, out=tmp)
    np.copyto(t, tmp, where=zv)
    np.clip(t, -T_MAX, T_MAX, out=t)
    if table:
        _two_sided_p(n - 1)(t, out=p, work=work)
    else:
        p[...] = 2.0 * special.stdtr(n - 1, -np.abs(t))


# above this many cells, p comes from a table (scipy's stdtr costs ~300 ns a cell: 7 s for 100 seeds)
_P_TABLE_MIN = 2**16


class _TwoSidedP:
    """``2 * stdtr(df, -|t|)`` for many t at once, ~10x faster than scipy's ``stdtr``.

    Cubic Hermite interpolation of log p in ``u = log1p(|t|)`` on nodes 1/1024 apart (|t| up to
    ``T_MAX``), with values from ``stdtr`` and slopes from the density: relative error below
    1e-11 for df from 1 to 5000 (float32 p equal to scipy's). p below 1e-52 (0 in float32) is 0.
    Where numpy has no SIMD float64 ``log1p`` (below AVX-512: :func:`numpy_avx512`), a lookup
    takes ``u = log(1 + |t|)`` on its SIMD ``log`` instead (4.8 against 12.4 ns a cell, AMD EPYC
    Zen 3, AVX2): rounding ``1 + |t|`` adds at most 2^-53 to u, which moves log p by at most
    ``|d log p / du| 2^-53``: below ``6 * 2^-53 < 1e-15`` where |t| < e - 1 (df up to 5000), and
    less than ``log``'s own rounding of u beyond.
    """

    H = 1.0 / 1024
    BLOCK = 2**15  # cells per pass: the temporaries stay in cache

    def __init__(self, df: int):
        u = np.arange(int(np.ceil(np.log1p(T_MAX) / self.H)) + 2) * self.H
        x = np.expm1(u)
        with np.errstate(divide="ignore"):  # sf underflows to 0 far beyond the -120 floor below
            logsf = np.log(special.stdtr(df, -x))
        logpdf = (
            special.gammaln((df + 1) / 2)
            - special.gammaln(df / 2)
            - 0.5 * np.log(df * np.pi)
            - (df + 1) / 2 * np.log1p(x * x / df)
        )
        f = np.log(2.0) + logsf
        with np.errstate(over="ignore", invalid="ignore"):
            d = -np.exp(logpdf - logsf) * (1.0 + x) * self.H  # d log p / du, per node step
        low = ~(f > -120.0)
        f[low], d[low] = -120.0, 0.0
        f0, f1, d0, d1 = f[:-1], f[1:], d[:-1], d[1:]
        self.coef = (f0, d0, 3 * (f1 - f0) - 2 * d0 - d1, 2 * (f0 - f1) + d0 + d1)
        self.last = f0.size - 1

    def work(self, size: int) -> tuple[np.ndarray, ...]:
        """Work buffers for calls on up to ``size`` cells at a time (callers may keep them)."""
        n = min(self.BLOCK, max(size, 1))
        return np.empty(n), np.empty(n, np.intp), np.empty(n), np.empty(n)

    def __call__(
        self, t: np.ndarray, out: np.ndarray | None = None, work: tuple[np.ndarray, ...] | None = None
    ) -> np.ndarray:
        t = np.asarray(t, np.float64).ravel()
        out = np.empty(t.size) if out is None else out
        w, i, acc, tmp = work if work is not None else self.work(t.size)
        n = w.size
        c0, c1, c2, c3 = self.coef
        for a in range(0, t.size, n):
            k = min(n, t.size - a)
            w_, i_, acc_, tmp_ = w[:k], i[:k], acc[:k], tmp[:k]
            _log1p_inplace(np.abs(t[a : a + k], out=w_))
            np.multiply(w_, 1.0 / self.H, out=w_)
            np.copyto(i_, w_, casting="unsafe")  # node below (truncation of a non-negative value)
            np.minimum(i_, self.last, out=i_)
            np.subtract(w_, i_, out=w_)  # position within the interval, 0..1
            np.take(c3, i_, out=acc_)
            for c in (c2, c1, c0):  # Horner
                np.multiply(acc_, w_, out=acc_)
                np.add(acc_, np.take(c, i_, out=tmp_), out=acc_)
            np.exp(acc_, out=out[a : a + k])
        return out


@functools.lru_cache(maxsize=8)
def _two_sided_p(df: int) -> _TwoSidedP:
    return _TwoSidedP(df)


def finalize_fnm(sums: FnmSums, with_avgr: bool = False, with_pfdr: bool = False) -> dict[str, np.ndarray]:
    """FNM maps from accumulated sums.

    Parameters
    ----------
    sums
        Sums over n >= 1 subjects.
    with_avgr
        Also return ``avgr`` (needs ``sums.sum_r``).
    with_pfdr
        Also return ``pfdrmap``: each seed's (row's) Benjamini-Hochberg q over its voxels (the
        in-brain voxels), ``scipy.stats.false_discovery_control(pmap, method="bh")`` of the float32
        ``pmap`` as returned here.

    Returns
    -------
    dict of str to numpy.ndarray
        (L, V) float32 maps: ``zmap`` (mean z), ``rmap`` (tanh of mean z), ``tmap``
        (mean z / (sd z / sqrt(n)), sd with ddof=1), ``pmap`` (two-sided, n - 1 df) and, when asked,
        ``avgr`` (mean r) and ``pfdrmap`` (BH q per seed).

    Notes
    -----
    Conventions (also in :data:`FNM_CONVENTIONS`): where z has zero variance over subjects, t is 0
    if mean z is 0 and ``sign(mean z) * T_MAX`` otherwise (p then ~0); |t| is capped at ``T_MAX``;
    with fewer than 2 subjects there is no variance estimate: t = 0 and p = 1 everywhere. No NaN.
    """
    n = sums.n
    if n < 1:
        raise ValueError("no subject was accumulated")
    if with_avgr and sums.sum_r is None:
        raise ValueError("avgr asked but sum_r was not accumulated (FnmSums.zeros(with_r=False))")
    names = ["zmap", "rmap", "tmap", "pmap"] + (["avgr"] if with_avgr else [])
    out = {k: np.empty(sums.shape, np.float32) for k in names}
    flat = {k: v.reshape(-1) for k, v in out.items()}
    sum_z = np.ascontiguousarray(sums.sum_z).reshape(-1)
    sum_z2 = np.ascontiguousarray(sums.sum_z2).reshape(-1)
    sum_r = np.ascontiguousarray(sums.sum_r).reshape(-1) if with_avgr else None
    table = sum_z.size >= _P_TABLE_MIN
    # cells a block at a time, every float64 temporary in a buffer made once (each cell is computed
    # on its own, so the blocks change nothing)
    size = min(_FINALIZE_BLOCK, max(sum_z.size, 1))
    mean, t, p, tmp, ss = (np.empty(size) for _ in range(5))
    zv = np.empty(size, bool)
    work = _two_sided_p(n - 1).work(size) if table and n >= 2 else None
    for a in range(0, sum_z.size, size):
        sl = slice(a, a + size)
        k = min(size, sum_z.size - a)
        m = np.divide(sum_z[sl], n, out=mean[:k])
        _t_and_p_into(m, sum_z2[sl], n, t[:k], p[:k], table, tmp, ss, zv, work)
        flat["zmap"][sl] = m
        flat["rmap"][sl] = _tanh_into(m, tmp[:k], ss[:k], zv[:k])
        flat["tmap"][sl] = t[:k]
        flat["pmap"][sl] = p[:k]
        if sum_r is not None:
            flat["avgr"][sl] = np.divide(sum_r[sl], n, out=tmp[:k])
    if with_pfdr:
        out["pfdrmap"] = bh_q_rows(out["pmap"].reshape(-1, sums.shape[-1])).reshape(sums.shape)
    return out


_FINALIZE_BLOCK = 2**16

#: below this |x|, :func:`_tanh_on_exp_into` returns x itself (tanh x = x (1 - x^2/3 + ...): relative
#: error <= x^2 / 3 < 4e-13)
_TANH_LINEAR = 2.0**-20


@functools.cache
def numpy_dispatch(ufunc: str) -> str | None:
    """The code numpy runs its float64 ``ufunc`` on here (``opt_func_info``'s ``current``, e.g.
    ``X86_V3`` or ``baseline(X86_V2)``), None where numpy cannot tell (numpy 1.x)."""
    try:
        from numpy.lib.introspect import opt_func_info

        current = opt_func_info(func_name=f"^{ufunc}$", signature="float64")[ufunc]["dd"]["current"]
    except Exception:  # noqa: BLE001 - an older or newer numpy: unknown
        return None
    return str(current)


def numpy_avx512(ufunc: str) -> bool:
    """Whether numpy runs its float64 ``ufunc`` on its AVX-512 code here (False where it cannot
    tell). It follows numpy's dispatch, not the CPU alone (``NPY_DISABLE_CPU_FEATURES`` turns it
    off): below AVX-512, numpy's float64 ``log1p`` is scalar libm and its ``tanh`` costs 13.5 ns a
    cell (AMD EPYC Zen 3), so :func:`finalize_fnm` uses forms on its SIMD ``log`` and ``exp``."""
    current = numpy_dispatch(ufunc) or ""
    return "X86_V4" in current or "AVX512" in current  # also a baseline(X86_V4) build


def _log1p_inplace(x: np.ndarray) -> np.ndarray:
    """``log1p`` of non-negative float64 ``x`` in place: numpy's where it has AVX-512 code for it,
    else ``log(1 + x)`` on its SIMD ``log`` (error: see :class:`_TwoSidedP`)."""
    if numpy_avx512("log1p"):
        np.log1p(x, out=x)
    else:
        np.add(x, 1.0, out=x)
        np.log(x, out=x)
    return x


def _tanh_into(x: np.ndarray, out: np.ndarray, tmp: np.ndarray, small: np.ndarray) -> np.ndarray:
    """``tanh(x)`` of float64 ``x`` into ``out`` (``tmp`` and the bool ``small`` are scratch of the
    same size): numpy's where it has AVX-512 code for it, else :func:`_tanh_on_exp_into`."""
    if numpy_avx512("tanh"):
        np.tanh(x, out=out)
        return out
    return _tanh_on_exp_into(x, out, tmp, small)


def _tanh_on_exp_into(x: np.ndarray, out: np.ndarray, tmp: np.ndarray, small: np.ndarray) -> np.ndarray:
    """:func:`_tanh_into` on numpy's SIMD ``exp``: 8.2 against 13.5 ns a cell for numpy's ``tanh``
    on AVX2 (AMD EPYC Zen 3).

    ``tanh |x| = (1 - e) / (1 + e)``, ``e = exp(-2 |x|)``, the sign of x put back. With exp within
    4 ulp, e is off by at most ``4 * 2^-53`` (absolute), and ``1 - e >= 2^-19 (1 - 2^-20)`` for
    ``|x| >= 2^-20`` (:data:`_TANH_LINEAR`; below it tanh x = x to 4e-13): relative error below
    2.5e-10, far under float32's half ulp (3e-8) of the maps this makes.
    """
    np.abs(x, out=tmp)
    np.less(tmp, _TANH_LINEAR, out=small)
    np.minimum(tmp, 20.0, out=tmp)  # tanh 20 = 1 in float64; no overflow warning for huge |x|
    np.multiply(tmp, -2.0, out=tmp)
    np.exp(tmp, out=tmp)  # e, in (0, 1]
    np.subtract(1.0, tmp, out=out)
    np.add(tmp, 1.0, out=tmp)
    np.divide(out, tmp, out=out)
    np.copysign(out, x, out=out)
    np.copyto(out, x, where=small)
    return out
