"""Benjamini-Hochberg q of each row of float32 p maps (FNM's ``pfdrmap``: one row per seed), equal to
``scipy.stats.false_discovery_control(row.astype(float64), method="bh")`` rounded to float32.

Ordering the p values is nearly all the cost. At 235,375 voxels a row, one thread, AMD EPYC Zen 4
(``benchmarks/bench_kernels.py``, AVX-512 / AVX2 classes): scipy 30 / 31 ms a row, numpy's sort of
64-bit keys ``bits(p) << 32 | index`` 13 / 5.5 ms (more than the rest of
:func:`~lakepipe.compute.fnm.finalize_fnm` together), the radix sort below 1.6 / 1.8 ms. Two
implementations:

``radix`` (numba, compiled once and cached; numba ships as wheels, no compiler needed)
    A least-significant-digit radix sort of the keys ``bits(p) << 32 | index`` on their upper 32
    bits (non-negative float32 order as their bits), 3 passes of 11 bits, the 3 histograms made in
    one sweep; stable, so tied p values keep the index order of the key sort. Written by hand because
    neither numpy nor scipy has a radix argsort of float32 (numpy's ``kind="stable"`` radix sort
    is for 16-bit types and smaller).
``keysort``
    numpy only: the 64-bit key sort above.

Both then do scipy's arithmetic in the same order: ``p_(i) * (m / i)`` in float64, the running
minimum from the largest p down, clipped to [0, 1], so they give the same float32 q bit for bit
(tied p values get the q of the last of them either way). :func:`bh_q_rows` uses ``radix`` where
numba imports and compiles, else ``keysort``.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from lakepipe.compute.jit import njit_cached

log = logging.getLogger(__name__)

#: Implementations, fastest first.
IMPLEMENTATIONS = ("radix", "keysort")

RowsFn = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def bh_q_rows(p: np.ndarray, implementation: str | None = None) -> np.ndarray:
    """Benjamini-Hochberg q of each row of p values.

    Parameters
    ----------
    p
        (L, m) or (m,) float32 p values in [0, 1] (a row per seed, its voxels along the last axis).
    implementation
        One of :data:`IMPLEMENTATIONS` (default: the fastest available).

    Returns
    -------
    numpy.ndarray
        float32 q of the same shape.

    Raises
    ------
    ValueError
        p not float32, or values outside [0, 1] or NaN.
    """
    p = np.asarray(p)
    if p.dtype != np.float32 or p.ndim not in (1, 2):
        raise ValueError(f"p must be a 1-d or 2-d float32 array, got {p.dtype} {p.shape}")
    rows = np.ascontiguousarray(p.reshape(-1, p.shape[-1]))
    out = np.empty(rows.shape, np.float32)
    if rows.size == 0:
        return out.reshape(p.shape)
    if not (rows.min() >= 0 and rows.max() <= 1):  # NaN fails both
        raise ValueError("p values must lie in [0, 1] (no NaN)")
    _, factors = _constants(rows.shape[1])
    _implementation(implementation)(rows, factors, out)
    return out.reshape(p.shape)


@functools.lru_cache(maxsize=4)
def _constants(m: int) -> tuple[np.ndarray, np.ndarray]:
    """The voxel indices (uint64, for the key sort) and scipy's ``m / rank`` factors, made once per
    row length (every seed of a run has the same voxels)."""
    index = np.arange(m, dtype=np.uint64)
    factors = m / np.arange(1, m + 1, dtype=np.float64)
    index.flags.writeable = factors.flags.writeable = False
    return index, factors


def _keysort_rows(rows: np.ndarray, factors: np.ndarray, out: np.ndarray) -> None:
    index, _ = _constants(rows.shape[1])
    q_row = np.empty(rows.shape[1])
    for j in range(rows.shape[0]):
        keys = rows[j].view(np.uint32).astype(np.uint64)
        keys <<= np.uint64(32)
        keys |= index
        keys.sort()
        if sys.byteorder == "little":  # each key's two 32-bit words, read in place: (index, bits of p)
            words = keys.view(np.uint32)
            order: np.ndarray = words[0::2]
            q = words[1::2].view(np.float32).astype(np.float64)
        else:  # pragma: no cover - big-endian machines
            order = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
            q = (keys >> np.uint64(32)).astype(np.uint32).view(np.float32).astype(np.float64)
        q *= factors
        np.minimum.accumulate(q[::-1], out=q[::-1])
        q_row[order] = q
        np.clip(q_row, 0.0, 1.0, out=q_row)
        out[j] = q_row


# set by _build_radix (a module global, so that numba can cache the compiled function)
_nb_rows: Any = None


def _build_radix() -> RowsFn:
    """The numba radix implementation, compiled (or loaded from numba's cache) on first use
    (ImportError without numba)."""
    global _nb_rows
    if _nb_rows is not None:
        return _nb_rows  # type: ignore[no-any-return]

    def rows_q(bits: Any, factors: Any, out: Any) -> None:
        n_rows, m = bits.shape
        # keys bits(p) << 32 | index: one 8-byte move per element and pass, the index carried along
        keys, keys2 = np.empty(m, np.uint64), np.empty(m, np.uint64)
        sorted_bits = np.empty(1, np.uint32)  # a key's p, read back as float32 through a view
        sorted_p = sorted_bits.view(np.float32)
        counts = np.empty((3, 2048), np.int64)
        for row in range(n_rows):
            b, o = bits[row], out[row]
            counts[:] = 0
            for i in range(m):  # the keys, and the three digits' histograms, in one sweep
                k = b[i]
                keys[i] = (np.uint64(k) << np.uint64(32)) | np.uint64(i)
                counts[0, k & 2047] += 1
                counts[1, (k >> 11) & 2047] += 1
                counts[2, k >> 22] += 1
            for d in range(3):  # bucket starts
                total = 0
                for c in range(2048):
                    n = counts[d, c]
                    counts[d, c] = total
                    total += n
            src, dst = keys, keys2
            for d in range(3):  # stable passes, least significant digit first
                shift = np.uint64(32 + 11 * d)
                for i in range(m):
                    v = src[i]
                    digit = (v >> shift) & np.uint64(2047)
                    j = counts[d, digit]
                    counts[d, digit] = j + 1
                    dst[j] = v
                src, dst = dst, src
            # scipy's arithmetic, p_(i) m / i in float64 and its running minimum from the largest
            # p down, in one backward sweep; written to each voxel's place, clipped to [0, 1]
            running = np.inf
            for i in range(m - 1, -1, -1):
                v = src[i]
                sorted_bits[0] = np.uint32(v >> np.uint64(32))
                qi = np.float64(sorted_p[0]) * factors[i]
                running = qi if qi < running else running
                clipped = 0.0 if running < 0.0 else (1.0 if running > 1.0 else running)
                o[np.int64(v & np.uint64(0xFFFFFFFF))] = np.float32(clipped)

    kernel = njit_cached(rows_q, nogil=True, error_model="numpy")

    def run(rows: np.ndarray, factors: np.ndarray, out: np.ndarray) -> None:
        kernel(rows.view(np.uint32), factors, out)

    probe = np.array([[0.5, 0.25, 0.5]], np.float32)  # compile now, on the types bh_q_rows passes
    run(probe, _constants(3)[1], np.empty_like(probe))
    _nb_rows = run
    return run


_LOCK = threading.Lock()


@functools.cache
def _implementation(name: str | None) -> RowsFn:
    if name not in (None, *IMPLEMENTATIONS):
        raise ValueError(f"unknown BH implementation {name!r}; expected one of {IMPLEMENTATIONS}")
    if name == "keysort":
        return _keysort_rows
    with _LOCK:
        try:
            return _build_radix()
        except ImportError:
            if name == "radix":
                raise
            log.info("BH radix sort unavailable (numba is not installed): numpy's key sort instead")
        except Exception as exc:  # numba present but cannot compile here
            if name == "radix":
                raise
            log.warning("BH radix sort unavailable: %s; numpy's key sort instead", exc)
    return _keysort_rows


def warm() -> None:
    """Load (or compile) the fastest implementation now, not in the middle of a run."""
    _implementation(None)
