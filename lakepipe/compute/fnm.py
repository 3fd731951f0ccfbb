"""Classic functional network mapping (FNM) for many seeds in one pass over a connectome.

Per subject ``s`` with unit-norm centred voxel series ``U`` (T x V) and per-voxel ``scale``:

1. seed series ``S = U @ (W * scale) / sum(W)`` (T x L): the (weighted) mean of the seed voxels'
   centred raw series (the voxel means drop out because correlation centres), one float32 sparse
   (or dense) product over the seed voxels only;
2. ``S`` centred and scaled to unit norm (float64), then ``r = S_unit.T @ U`` (L x V), float32
   GEMMs over voxel tiles;
3. per tile, ``z = arctanh(clip(r))`` and float64 accumulation of ``sum z``, ``sum z^2`` (and
   ``sum r``), so the (L, V) float32 r is never materialised.

:class:`FnmSums` holds the sums; partial sums add (``a + b``), so a scheduler can tree-reduce them,
and :func:`finalize_fnm` turns them into the maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import special

from lakepipe.compute.correlation import R_CLIP, Z_MAX, clip_above, unit_columns
from lakepipe.errors import InputError

#: |t| is capped at this value; it is also the t of a voxel whose z has zero variance and
#: non-zero mean (all subjects agree exactly).
T_MAX = 1e6

#: The conventions of these maps, for output metadata.
FNM_CONVENTIONS: dict = {
    "correlation": "pearson, each series centred over time",
    "constant_series_r": 0.0,
    "fisher_z": "arctanh(clip(r, -r_clip, r_clip)); float32 r clipped just above r_clip, then z "
    "clipped at arctanh(r_clip), so clipped cells have exactly that z",
    "r_clip": R_CLIP,
    "seed_series": "(weighted) mean of the seed voxels' raw series",
    "zmap": "mean z over subjects",
    "rmap": "tanh(mean z)",
    "tmap": "mean z / (sd z / sqrt(n)), sd with ddof=1",
    "ddof": 1,
    "pmap": "two-sided, Student t with n-1 degrees of freedom",
    "avgr": "mean r over subjects (Lead-DBS convention)",
    "zero_variance_t": f"0 where mean z == 0, else sign(mean z) * {T_MAX:g}; |t| capped at {T_MAX:g}",
    "n_below_2": "tmap 0 and pmap 1 (no variance estimate)",
    "accumulation": "float32 seed series and correlations (float32 unit series), float64 sums of z, "
    "z^2 and r",
}

# seeds x voxels per tile of the r = S.T @ U GEMM: the float32 tile, its float64 z and the three
# float64 tile accumulators (~2.5 MB) stay in cache while z and the sums are updated
_TILE_ELEMENTS = 2**16
# seeds' weight matrices denser than this use a dense GEMM for the seed series
_DENSE_FRACTION = 0.05


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


def prepare_seeds(W: np.ndarray | sp.spmatrix | sp.sparray | SeedWeights) -> SeedWeights:
    """Check a (V, L) seed weight matrix (rows = voxels) and keep only the voxels it uses.

    Raises
    ------
    InputError
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
        raise InputError(
            f"seed(s) {empty.tolist()[:10]} have no voxel (zero total weight) in the connectome mask"
        )
    return SeedWeights(rows=rows, weights=weights, total=total, n_voxels=n_voxels)


def seed_series(unit: np.ndarray, scale: np.ndarray, W) -> np.ndarray:
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
        return out.astype(np.float64) / seeds.total
    # sparse (L, K) with the scale folded into its values (O(nnz)), on the voxel axis of unit; one
    # sparse mat-vec per time point on its contiguous row: the float32 sums of the (L, K) x (K, T)
    # product, in the same order, without gathering and transposing the seed voxels' columns
    w = seeds.weights
    w_full = sp.csr_matrix(
        (w.data * scale_k[w.indices], seeds.rows[w.indices], w.indptr), shape=(w.shape[0], seeds.n_voxels)
    )
    out = np.empty((unit.shape[0], w.shape[0]), np.result_type(w_full.dtype, unit.dtype))
    for t in range(unit.shape[0]):
        out[t] = w_full @ unit[t]
    return out.astype(np.float64) / seeds.total


def seed_voxel_r(unit: np.ndarray, seeds_unit: np.ndarray) -> np.ndarray:
    """Correlation of each seed with each voxel: (L, V) float32 ``seeds_unit.T @ unit``.

    ``unit`` (T, V) and ``seeds_unit`` (T, L) are centred unit-norm series
    (:func:`~lakepipe.compute.correlation.unit_columns`).
    """
    s = np.ascontiguousarray(np.asarray(seeds_unit).T, dtype=np.float32)
    return s @ np.asarray(unit, dtype=np.float32)


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

    def merge(self, other: FnmSums) -> FnmSums:
        """New sums = self + other (inputs untouched, so safe as a Dask reduction)."""
        if self.shape != other.shape:
            raise ValueError(f"cannot merge FNM sums of shapes {self.shape} and {other.shape}")
        sum_r = None if self.sum_r is None or other.sum_r is None else self.sum_r + other.sum_r
        return FnmSums(self.sum_z + other.sum_z, self.sum_z2 + other.sum_z2, sum_r, self.n + other.n)

    def __add__(self, other: FnmSums) -> FnmSums:
        return self.merge(other)

    def __radd__(self, other) -> FnmSums:
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def add_seed_units(self, unit: np.ndarray, seeds_unit: np.ndarray) -> None:
        """Add one subject, in place, from its unit voxel series and unit seed series.

        Parameters
        ----------
        unit
            (T, V) unit-norm centred voxel series (float32; V may be a voxel block).
        seeds_unit
            (T, L) unit-norm centred seed series (:func:`~lakepipe.compute.correlation.unit_columns`).
        """
        self.add_many([unit], [seeds_unit])

    def add_many(self, units, seeds_units) -> None:
        """Add several subjects in place (see :meth:`add_seed_units`).

        The voxels are processed in blocks; within a block every subject's r, z and z^2 go into
        small cache-resident float64 accumulators, so the large (L, V) sums are read and written
        once per call rather than once per subject.
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
        if not pairs:
            return
        block = int(min(n_voxels, max(256, _TILE_ELEMENTS // max(n_seeds, 1))))
        r = np.empty((n_seeds, block), np.float32)
        z = np.empty((n_seeds, block), np.float64)
        acc = [np.empty((n_seeds, block), np.float64) for _ in range(3 if len(pairs) > 1 else 0)]
        targets = [self.sum_z, self.sum_z2] + ([self.sum_r] if self.sum_r is not None else [])
        for start in range(0, n_voxels, block):
            stop = min(start + block, n_voxels)
            w = stop - start
            rb, zb = r[:, :w], z[:, :w]
            if len(pairs) == 1:  # one subject: straight into the sums
                unit, s = pairs[0]
                np.matmul(s, unit[:, start:stop], out=rb)
                _r_to_z_terms(
                    rb, zb, [t[:, start:stop] for t in targets], first=False, with_r=self.sum_r is not None
                )
                continue
            acc_b = [a[:, :w] for a in acc]
            for i, (unit, s) in enumerate(pairs):
                np.matmul(s, unit[:, start:stop], out=rb)
                _r_to_z_terms(rb, zb, acc_b, first=i == 0, with_r=self.sum_r is not None)
            for target, a in zip(targets, acc_b, strict=False):  # acc_b may hold an unused r slot
                target[:, start:stop] += a
        self.n += len(pairs)

    def add_subject(self, unit: np.ndarray, scale: np.ndarray, W) -> None:
        """Add one subject in place: seed series -> unit seed series -> r -> z -> sums.

        ``W`` is the (V, L) seed weight matrix or a :class:`SeedWeights` (see :func:`seed_series`).
        """
        self.add_seed_units(unit, unit_columns(seed_series(unit, scale, W)))


def _r_to_z_terms(r: np.ndarray, z: np.ndarray, acc: list[np.ndarray], first: bool, with_r: bool) -> None:
    """Turn an r tile (float32, overwritten) into z, z^2 (and r) added to ``acc`` (float64).

    r is clipped just above ``R_CLIP`` in float32 and z at ``Z_MAX`` in float64: the float64
    convention ``arctanh(clip(r))`` for every float32 r, with exact ``±Z_MAX`` for clipped cells.
    """
    hi = clip_above(np.float32)
    add = np.copyto if first else (lambda dst, src: np.add(dst, src, out=dst))
    if with_r:
        add(acc[2], r)
    # both clips are no-ops unless some |r| reaches hi (float32 arctanh of the value below hi is
    # 7.2477 < Z_MAX): two reductions instead of two full passes in the usual case
    clip = r.size and (r.max() >= hi or r.min() <= -hi)
    if clip:
        np.clip(r, -hi, hi, out=r)
    np.arctanh(r, out=r)
    np.copyto(z, r)
    if clip:
        np.clip(z, -Z_MAX, Z_MAX, out=z)
    add(acc[0], z)
    np.multiply(z, z, out=z)  # exact: the square of a float32 fits in float64
    add(acc[1], z)


def subject_chunk_sums(
    unit_chunk: np.ndarray,
    scale_chunk: np.ndarray,
    W,
    with_r: bool = True,
    sums: FnmSums | None = None,
) -> FnmSums:
    """FNM sums of the subjects of one connectome chunk.

    Parameters
    ----------
    unit_chunk
        (S, T, V) unit-norm centred voxel series of S subjects.
    scale_chunk
        (S, V) per-voxel scale of each subject.
    W
        (V, L) seed weights (sparse or dense) or a :class:`SeedWeights`.
    with_r
        Also accumulate ``sum_r`` (for ``avgr``).
    sums
        Existing sums to add to in place (and return) instead of new zeros: saves allocating and
        first-touching three (L, V) float64 arrays per chunk when one process loops over chunks.

    Returns
    -------
    FnmSums
        Sums over the S subjects (plus ``sums``).
    """
    seeds = prepare_seeds(W)
    unit_chunk = np.asarray(unit_chunk)
    if unit_chunk.ndim != 3 or np.shape(scale_chunk) != (unit_chunk.shape[0], unit_chunk.shape[2]):
        raise ValueError(
            f"expected unit (S, T, V) and scale (S, V), got {unit_chunk.shape} and {np.shape(scale_chunk)}"
        )
    if sums is None:
        sums = FnmSums.zeros(seeds.n_seeds, seeds.n_voxels, with_r=with_r)
    seeds_units = [
        unit_columns(seed_series(unit, scale, seeds))
        for unit, scale in zip(unit_chunk, scale_chunk, strict=True)
    ]
    sums.add_many(unit_chunk, seeds_units)
    return sums


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


def _t_and_p_into(mean, sum_z2, n: int, t, p, table: bool, tmp=None, ss=None, zv=None, work=None) -> None:
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

    def __call__(self, t: np.ndarray, out: np.ndarray | None = None, work=None) -> np.ndarray:
        t = np.asarray(t, np.float64).ravel()
        out = np.empty(t.size) if out is None else out
        w, i, acc, tmp = work if work is not None else self.work(t.size)
        n = w.size
        c0, c1, c2, c3 = self.coef
        for a in range(0, t.size, n):
            k = min(n, t.size - a)
            w_, i_, acc_, tmp_ = w[:k], i[:k], acc[:k], tmp[:k]
            np.abs(t[a : a + k], out=w_)
            np.log1p(w_, out=w_)
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


def finalize_fnm(sums: FnmSums, with_avgr: bool = False) -> dict[str, np.ndarray]:
    """FNM maps from accumulated sums.

    Parameters
    ----------
    sums
        Sums over n >= 1 subjects.
    with_avgr
        Also return ``avgr`` (needs ``sums.sum_r``).

    Returns
    -------
    dict of str to numpy.ndarray
        (L, V) float32 maps: ``zmap`` (mean z), ``rmap`` (tanh of mean z), ``tmap``
        (mean z / (sd z / sqrt(n)), sd with ddof=1), ``pmap`` (two-sided, n - 1 df) and, when asked,
        ``avgr`` (mean r).

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
        flat["rmap"][sl] = np.tanh(m, out=tmp[:k])
        flat["tmap"][sl] = t[:k]
        flat["pmap"][sl] = p[:k]
        if with_avgr:
            flat["avgr"][sl] = np.divide(sum_r[sl], n, out=tmp[:k])
    return out


_FINALIZE_BLOCK = 2**16
