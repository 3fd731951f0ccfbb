"""Fisher z of float32 correlation tiles, accumulated into float64 sums (the FNM inner loop).

Convention (DESIGN section 3): ``z = arctanh(clip(r, -R_CLIP, R_CLIP))``. For a float32 ``r`` this
is applied as in :func:`~lakepipe.compute.correlation.fisher_z`: r is clipped at ``hi``, the smallest
float32 >= ``R_CLIP``, and z at ``±Z_MAX`` (so clipped cells get exactly ``±Z_MAX``). The reference
for every kernel here is ``clip(arctanh(float64(clip(r, -hi, hi))), -Z_MAX, Z_MAX)``; each kernel
adds z, z^2 (and optionally r) of a tile to float64 sums and meets ``|z - reference| <= Z_TOL``
(1e-6) for every float32 r, ±1, ±inf and values beyond them included; NaN stays NaN.

Kernels, fastest first (figures: ``benchmarks/bench_kernels.py``):

``fused``
    One numba pass (numba is optional: wheels only, no compiler needed). With ``c = clip(r)``,
    ``a = 1 + c`` and ``b = 1 - c`` (float32), split ``a = ma 2^ea``, ``b = mb 2^eb`` (exponent
    bits), balance so ``ma / mb`` lies in ``[1/sqrt 2, sqrt 2]`` (a factor 2 moved between them,
    exact), then ``z = d ln2 / 2 + atanh(s)`` with ``d = ea - eb`` and ``s = (ma - mb) / (ma + mb)``,
    ``|s| <= 0.1716``, ``atanh(s) = s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9)`` in float32, and
    ``z = float64(d HI) + float64(d LO + atanh(s))`` (``HI + LO = ln2 / 2``, ``d HI`` exact).
    Error bound (u = 2^-24, |z error| against the float64 reference): ``a`` and ``b`` are rounded
    once at most (one of them is exact when ``|c| >= 1/2``): <= u; ``ma - mb`` is exact (Sterbenz),
    ``ma + mb`` and the division: 2u relative in s, times ``atanh'(s) |s| <= 0.177``: 0.36u; the
    polynomial and the product (2.06u relative of ``|atanh(s)| <= 0.1734``): 0.36u; ``d LO + atanh s``
    rounded: 0.17u; series truncation ``|s|^11 / 11 / (1 - s^2) < 3.6e-10``; the float64 steps:
    < 1e-15. Total ``<= 1.89 u + 3.6e-10 < 1.2e-7`` (``FUSED_BOUND``). Measured on all 2.1e9
    float32 in [-1, 1] (AVX-512 and AVX2 code): 7.1e-8. FMA contraction only removes roundings.
``log32``
    numpy only: ``z = 0.5 log((1 + c) / (1 - c))`` in float32 on numpy's SIMD ``log`` (AVX2 and
    AVX-512 both have one, unlike float32 ``arctanh`` which is scalar libm below AVX-512), a few
    in-place passes per tile. Error: <= 3 roundings of the quotient (1.5 u in z) plus half the
    error of float32 ``log`` at values up to 14.5 (k ulp = k 2^-20): ``1.5 u + k 2^-21``; numpy's
    SIMD log measured k <= 1 here (total 2.9e-7 on all float32 in [-1, 1], AVX-512 and AVX2); k is
    the library's, so this kernel is held to ``Z_TOL`` only.
``exact``
    ``arctanh`` in float64 (the reference itself; scalar libm on AVX2 CPUs: slow).

:func:`fisher_kernel` picks one once per process: the first of ``fused`` (when numba imports and
compiles), ``log32``, ``exact`` whose :func:`self_check` passes on this CPU (a fixed grid of ~164k r
values, every float32 in [0.999, 1] among them, against float64 ``arctanh``); a failing kernel is
logged as a warning and skipped. ``LAKEPIPE_FISHER_KERNEL`` (or the ``name`` argument) forces one,
still self-checked.

Sums: each call adds z and z^2 (the float64 square of the float64 z) and ``float64(r)`` to the
float64 sums, in place.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lakepipe.compute.correlation import Z_MAX, clip_above
from lakepipe.compute.jit import njit_cached

log = logging.getLogger(__name__)

#: |z error| every kernel must meet against float64 arctanh of the same float32 r (DESIGN contract).
Z_TOL = 1e-6
#: Proven |z error| bound of the ``fused`` kernel (see the module notes).
FUSED_BOUND = 1.2e-7
#: Kernel names, fastest first.
KERNELS = ("fused", "log32", "exact")
#: Environment variable that forces a kernel.
KERNEL_ENV = "LAKEPIPE_FISHER_KERNEL"

_HI = clip_above(np.float32)  # 0.99999905: smallest float32 >= R_CLIP

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


# ------------------------------------------------------------------------------------------ kernels


class Workspace:
    """Reusable float32 and float64 buffers of the numpy kernels (one tile; grown on demand)."""

    def __init__(self, size: int) -> None:
        self.f32 = np.empty(size, F32)
        self.f64 = np.empty(size, F64)

    def views(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        n = shape[0] * shape[1]
        if n > self.f32.size:
            self.f32, self.f64 = np.empty(n, F32), np.empty(n, F64)
        return self.f32[:n].reshape(shape), self.f64[:n].reshape(shape)


AccumulateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None", int, Workspace], None]


@dataclass(frozen=True)
class FisherKernel:
    """A Fisher z accumulation kernel.

    Attributes
    ----------
    name
        One of :data:`KERNELS`.
    bound
        The |z error| it is held to (by :func:`self_check`).
    """

    name: str
    bound: float
    _fn: AccumulateFn = field(repr=False)

    @property
    def fused(self) -> bool:
        """True for the one-pass kernel (it adds straight into the sums; the others make passes)."""
        return self.name == "fused"

    def workspace(self, n_seeds: int, block: int) -> Workspace:
        """Buffers for tiles of up to ``n_seeds x block`` cells (reuse them across calls)."""
        return Workspace(n_seeds * block if self.name != "fused" else 0)

    def accumulate(
        self,
        r: np.ndarray,
        sum_z: np.ndarray,
        sum_z2: np.ndarray,
        sum_r: np.ndarray | None,
        col: int = 0,
        work: Workspace | None = None,
    ) -> None:
        """Add z, z^2 (and r) of an r tile into columns ``col:col + w`` of float64 sums.

        Parameters
        ----------
        r
            (L, w) float32 C-contiguous correlations; overwritten (scratch).
        sum_z, sum_z2, sum_r
            (L, V) float64 sums, V >= col + w; ``sum_r`` None: not tracked.
        col
            First column of the tile in the sums.
        work
            Buffers from :meth:`workspace` (made here when None).
        """
        if r.dtype != F32 or r.ndim != 2 or not r.flags.c_contiguous:
            raise TypeError(f"r must be a C-contiguous 2-d float32 array, got {r.dtype} {r.shape}")
        n, w = r.shape
        targets = [sum_z, sum_z2] + ([] if sum_r is None else [sum_r])
        for t in targets:
            if t.dtype != F64 or t.ndim != 2 or t.shape[0] != n or t.shape[1] < col + w or col < 0:
                raise TypeError(f"sums must be (L, >= {col + w}) float64 arrays, got {t.dtype} {t.shape}")
        if work is None:
            work = self.workspace(n, w)
        if self.name == "fused" and not all(t.flags.c_contiguous for t in targets):
            # the numba loop is compiled for C-contiguous sums only: go through contiguous copies
            tmp = [np.zeros((n, w)) for _ in targets]
            self._fn(r, tmp[0], tmp[1], tmp[2] if sum_r is not None else None, 0, work)
            for t, a in zip(targets, tmp, strict=True):
                t[:, col : col + w] += a
            return
        self._fn(r, sum_z, sum_z2, sum_r, col, work)

    def z(self, r: np.ndarray) -> np.ndarray:
        """float64 z of float32 values of any shape (through :meth:`accumulate`; for checks)."""
        r = np.asarray(r, F32)
        flat = np.ascontiguousarray(r.reshape(1, -1)).copy()
        sz, sz2 = np.zeros(flat.shape), np.zeros(flat.shape)
        self.accumulate(flat, sz, sz2, None)
        return sz.reshape(r.shape)


def _accumulate_exact(
    r: np.ndarray, sum_z: np.ndarray, sum_z2: np.ndarray, sum_r: np.ndarray | None, col: int, work: Workspace
) -> None:
    _, z = work.views(r.shape)
    cols = slice(col, col + r.shape[1])
    if sum_r is not None:
        np.add(sum_r[:, cols], r, out=sum_r[:, cols])
    np.clip(r, -_HI, _HI, out=r)
    np.copyto(z, r)
    np.arctanh(z, out=z)
    np.clip(z, -Z_MAX, Z_MAX, out=z)
    _add_z_terms(z, sum_z[:, cols], sum_z2[:, cols])


def _accumulate_log32(
    r: np.ndarray, sum_z: np.ndarray, sum_z2: np.ndarray, sum_r: np.ndarray | None, col: int, work: Workspace
) -> None:
    d, z = work.views(r.shape)
    cols = slice(col, col + r.shape[1])
    if sum_r is not None:
        np.add(sum_r[:, cols], r, out=sum_r[:, cols])
    # the clips are no-ops unless some |r| reaches hi: two reductions instead of two passes (NaN
    # compares false and stays NaN through the log)
    clip = bool(r.size) and bool(r.max() >= _HI or r.min() <= -_HI)
    if clip:
        np.clip(r, -_HI, _HI, out=r)
    np.subtract(1, r, out=d)  # 1 - c: exact for c >= 1/2
    np.add(r, 1, out=r)  # 1 + c: exact for c <= -1/2
    np.divide(r, d, out=r)
    np.log(r, out=r)  # 2 z, float32
    np.multiply(r, 0.5, out=z)  # exact, into float64
    if clip:
        np.clip(z, -Z_MAX, Z_MAX, out=z)
    _add_z_terms(z, sum_z[:, cols], sum_z2[:, cols])


def _add_z_terms(z: np.ndarray, tz: np.ndarray, tz2: np.ndarray) -> None:
    np.add(tz, z, out=tz)
    np.multiply(z, z, out=z)
    np.add(tz2, z, out=tz2)


# --------------------------------------------------------------------------------- the numba kernel

# float32 constants of the fused kernel (numba freezes module globals at compile time; numpy
# scalars keep their dtype, so the arithmetic stays float32)
_ONE = np.float32(1.0)
_ONE_I = np.int32(1)
_SQRT2 = np.float32(math.sqrt(2.0))
_C3, _C5, _C7, _C9 = (np.float32(1 / k) for k in (3, 5, 7, 9))
_MANT = np.int32(0x007FFFFF)
_ONE_BITS = np.int32(0x3F800000)
_SHIFT = np.int32(23)
# ln2 / 2 = _HL_HI + _HL_LO, _HL_HI with 17 fraction bits: d * _HL_HI is exact for |d| < 2^6
_HL_HI = np.float32(round(math.log(2.0) / 2 * 2**17) / 2**17)
_HL_LO = np.float32(math.log(2.0) / 2 - float(_HL_HI))
_ZMAX = np.float64(Z_MAX)

# set by _build_fused (module globals, so that numba can cache the compiled functions)
_nb_bits: Any = None
_nb_float: Any = None
_nb_z_pair: Any = None
_nb_accumulate: Any = None
_nb_run: Any = None


def _build_fused() -> AccumulateFn:
    """The numba kernel, compiled on first use (ImportError without numba)."""
    global _nb_bits, _nb_float, _nb_z_pair, _nb_accumulate, _nb_run
    if _nb_run is not None:
        return _nb_run  # type: ignore[no-any-return]
    from llvmlite import ir  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from numba import types  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from numba.extending import intrinsic as _intrinsic  # type: ignore[import-untyped, import-not-found, unused-ignore]

    Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
    intrinsic: Decorator = _intrinsic

    def jit(**kw: Any) -> Decorator:
        # FMA contraction only: no reassociation, NaN and inf keep their IEEE meaning
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            return njit_cached(fn, error_model="numpy", fastmath={"contract"}, **kw)  # type: ignore[no-any-return]

        return decorate

    @intrinsic
    def bits(typingctx: Any, x: Any) -> Any:  # float32 -> its int32 bit pattern
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(types.float32), codegen

    @intrinsic
    def as_float(typingctx: Any, x: Any) -> Any:  # int32 bit pattern -> float32
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    _nb_bits, _nb_float = bits, as_float

    @jit(inline="always")
    def z_pair(x: Any, hi: Any) -> Any:  # z as a float32 pair (d * HI, d * LO + atanh(s))
        c = hi if x > hi else x
        c = -hi if c < -hi else c
        a = _ONE + c
        b = _ONE - c
        ia = _nb_bits(a)
        ib = _nb_bits(b)
        d = (ia >> _SHIFT) - (ib >> _SHIFT)
        ma = _nb_float((ia & _MANT) | _ONE_BITS)
        mb = _nb_float((ib & _MANT) | _ONE_BITS)
        up = np.int32(ma > _SQRT2 * mb)
        dn = np.int32(mb > _SQRT2 * ma)
        mb = mb * np.float32(_ONE_I + up)
        ma = ma * np.float32(_ONE_I + dn)
        d = d + up - dn
        s = (ma - mb) / (ma + mb)
        s2 = s * s
        p = s * (_ONE + s2 * (_C3 + s2 * (_C5 + s2 * (_C7 + s2 * _C9))))
        df = np.float32(d)
        lo = df * _HL_LO + p
        return df * _HL_HI, (c if c != c else lo)  # NaN stays NaN

    _nb_z_pair = z_pair

    @jit(nogil=True)
    def accumulate(r: Any, sz: Any, sz2: Any, sr: Any, col: Any, hi: Any, with_r: Any) -> None:
        n, w = r.shape
        z_hi = np.empty(w, np.float32)
        z_lo = np.empty(w, np.float32)
        for i in range(n):
            ri = r[i]
            for j in range(w):  # float32 only: vectorises at full width
                z_hi[j], z_lo[j] = _nb_z_pair(ri[j], hi)
            if with_r:
                rsi = sr[i][col : col + w]
                for j in range(w):
                    rsi[j] += ri[j]
            zi = sz[i][col : col + w]
            z2i = sz2[i][col : col + w]
            for j in range(w):
                z = np.float64(z_hi[j]) + np.float64(z_lo[j])
                z = _ZMAX if z > _ZMAX else z
                z = -_ZMAX if z < -_ZMAX else z
                zi[j] += z
                z2i[j] += z * z

    _nb_accumulate = accumulate

    def run(
        r: np.ndarray,
        sum_z: np.ndarray,
        sum_z2: np.ndarray,
        sum_r: np.ndarray | None,
        col: int,
        work: Workspace,
    ) -> None:
        with_r = sum_r is not None
        accumulate(r, sum_z, sum_z2, sum_r if with_r else sum_z, col, _HI, with_r)

    # compile now (not in the middle of a run); the types are those FnmSums passes
    tile = np.zeros((1, 1), F32)
    accumulate(tile, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), 0, _HI, True)
    _nb_run = run
    return run


# --------------------------------------------------------------------------------------- selection


def check_grid() -> np.ndarray:
    """float32 r values of the self-check: every float32 in [0.999, 1], a fixed sample of [0, 1)
    (every 2^14-th float32), the edges (0, tiny, ±1/2, the clip and its neighbours, ±1, beyond 1,
    ±inf), and the negatives of all."""
    near_one = np.arange(np.float32(0.999).view(np.int32), np.float32(1.0).view(np.int32) + 1, dtype=np.int32)
    sample = np.arange(0, np.float32(1.0).view(np.int32), 2**14, dtype=np.int32)
    one = np.float32(1.0)
    edges = np.array(
        [
            0.0,
            1e-30,
            1e-42,
            1e-8,
            0.5,
            np.nextafter(np.float32(0.5), one),
            np.nextafter(np.float32(0.5), np.float32(0)),
            _HI,
            np.nextafter(_HI, np.float32(0)),
            np.nextafter(_HI, np.float32(2)),
            1.0,
            np.nextafter(one, np.float32(2)),
            1.5,
            np.inf,
        ],
        np.float32,
    )
    pos = np.concatenate([near_one.view(np.float32), sample.view(np.float32), edges])
    return np.concatenate([pos, -pos])


def reference_z(r: np.ndarray) -> np.ndarray:
    """The convention in float64: ``clip(arctanh(float64(clip(r, -hi, hi))), -Z_MAX, Z_MAX)``."""
    c = np.clip(np.asarray(r, F32), -_HI, _HI).astype(F64)
    return np.clip(np.arctanh(c), -Z_MAX, Z_MAX)


def self_check(kernel: FisherKernel) -> float:
    """Check a kernel on :func:`check_grid` against :func:`reference_z`.

    Returns
    -------
    float
        The largest |z error|, or inf when the kernel fails any check: error above its bound,
        clipped cells not exactly ``±Z_MAX``, NaN not kept, or sums that do not add z, z^2 and r
        to what they held (also on a column offset).
    """
    r = check_grid()
    ref = reference_z(r)
    try:
        z = kernel.z(r)
        err = float(np.max(np.abs(z - ref)))
        clipped = np.abs(r) >= _HI
        ok = err <= kernel.bound and bool(np.all(z[clipped] == np.sign(r[clipped]).astype(F64) * Z_MAX))
        ok = ok and bool(np.isnan(kernel.z(np.array([np.nan], F32))[0]))
        # the sums: start from non-zero values, write at a column offset, leave the rest alone
        tile = r[: 3 * 500].reshape(3, 500)
        base = np.arange(3 * 700, dtype=F64).reshape(3, 700) / 7
        sums = [base.copy() for _ in range(3)]
        kernel.accumulate(tile.copy(), sums[0], sums[1], sums[2], col=100)
        zt = kernel.z(tile)
        for s, add in zip(sums, (zt, zt * zt, tile.astype(F64)), strict=True):
            want = base.copy()
            want[:, 100:600] += add
            # float64 rounding of the square and the sum (one rounding fewer with an FMA)
            tol = 4 * np.finfo(F64).eps * (np.abs(base) + np.abs(want))
            ok = ok and bool(np.all(np.abs(s - want) <= tol))
    except Exception as exc:  # a kernel that cannot run on this machine is not used
        log.warning("Fisher z kernel %r failed to run: %s", kernel.name, exc)
        return math.inf
    return err if ok else math.inf


def _make(name: str) -> FisherKernel:
    if name == "fused":
        return FisherKernel("fused", FUSED_BOUND, _build_fused())
    if name == "log32":
        return FisherKernel("log32", Z_TOL, _accumulate_log32)
    if name == "exact":
        return FisherKernel("exact", Z_TOL, _accumulate_exact)
    raise ValueError(f"unknown Fisher z kernel {name!r}; expected one of {KERNELS}")


_LOCK = threading.Lock()
_CHOSEN: dict[str | None, FisherKernel] = {}


def fisher_kernel(name: str | None = None) -> FisherKernel:
    """The Fisher z kernel for this process and CPU (chosen, and self-checked, once).

    Parameters
    ----------
    name
        Prefer this kernel (one of :data:`KERNELS`); None: ``$LAKEPIPE_FISHER_KERNEL`` if set,
        else the fastest.

    Returns
    -------
    FisherKernel
        :func:`choose_kernel` of the preferred kernel and the slower ones after it.
    """
    key = name if name is not None else os.environ.get(KERNEL_ENV) or None
    if key is not None and key not in KERNELS:
        raise ValueError(f"unknown Fisher z kernel {key!r}; expected one of {KERNELS}")
    with _LOCK:
        if key not in _CHOSEN:
            _CHOSEN[key] = choose_kernel(KERNELS[KERNELS.index(key) :] if key else KERNELS)
        return _CHOSEN[key]


def choose_kernel(candidates: Sequence[str | FisherKernel] = KERNELS) -> FisherKernel:
    """The first candidate that is available and passes :func:`self_check` (else ``exact``).

    Parameters
    ----------
    candidates
        Kernel names (of :data:`KERNELS`) or kernels, in order of preference; ``exact`` (the
        float64 reference itself) is taken without a check.

    Returns
    -------
    FisherKernel
        The kernel. An unavailable one (numba missing: logged at INFO) or one failing its
        self-check (a WARNING is logged) is skipped.
    """
    for cand in candidates:
        if isinstance(cand, str):
            if cand == "exact":
                break
            try:
                kernel = _make(cand)
            except ImportError:
                log.info("Fisher z kernel %r unavailable (numba is not installed)", cand)
                continue
            except Exception as exc:  # numba present but cannot compile here
                log.warning("Fisher z kernel %r unavailable: %s", cand, exc)
                continue
        else:
            kernel = cand
        err = self_check(kernel)
        if err <= kernel.bound:
            log.debug("Fisher z kernel %r selected (self-check max |z error| %.3g)", kernel.name, err)
            return kernel
        log.warning(
            "Fisher z kernel %r failed its self-check on this CPU (max |z error| %.3g > %.3g): "
            "falling back to a slower kernel",
            kernel.name,
            err,
            kernel.bound,
        )
    return _make("exact")
