"""Pearson correlation with per-series centring and the shared Fisher z convention.

Conventions (DESIGN section 3): every series is centred over time; a constant series has r = 0 with
everything (including itself); Fisher z = arctanh(clip(r, -R_CLIP, R_CLIP)) everywhere.
"""

from __future__ import annotations

import numpy as np

#: |r| is clipped to this value before arctanh, so z is finite (|z| <= Z_MAX).
R_CLIP = 0.999999
#: arctanh(R_CLIP) ~ 7.2543, the z of every clipped r, whatever the float dtype.
Z_MAX = float(np.arctanh(R_CLIP))

# A centred series whose norm is below this fraction of sqrt(T) * max|x| is rounding noise of a
# constant series (float64 centring leaves ~1e-16 relative residue); it is treated as constant.
_CONST_RTOL = 1e3 * np.finfo(np.float64).eps


def fisher_z(r: np.ndarray | float) -> np.ndarray:
    """Fisher z transform with the lakepipe clip.

    Parameters
    ----------
    r
        Correlation values.

    Returns
    -------
    numpy.ndarray
        ``arctanh(clip(r, -R_CLIP, R_CLIP))``; float arrays keep their dtype, anything else
        becomes float64.

    Notes
    -----
    The clip acts on the value of ``r`` as given: ``R_CLIP`` itself is not representable in
    float32 (or float16), so ``r`` is clipped just above it and z is then clipped to ``±Z_MAX``
    (rounded to the dtype). A float32 r thus has the z of the same r in float64, up to rounding,
    and a perfect correlation has the same z whatever the precision.
    """
    r = np.asarray(r)
    if r.dtype.kind != "f":
        r = r.astype(np.float64)
    hi = clip_above(r.dtype)
    zmax = r.dtype.type(Z_MAX)
    with np.errstate(divide="ignore"):
        z = np.arctanh(np.clip(r, -hi, hi))
    return np.asarray(np.clip(z, -zmax, zmax))


def clip_above(dtype: np.dtype | type) -> np.floating:
    """Smallest value of ``dtype`` that is >= ``R_CLIP``: clipping r there, then z at ``Z_MAX``,
    is the float64 convention applied to r values of that dtype."""
    hi: np.floating = np.dtype(dtype).type(R_CLIP)
    return hi if float(hi) >= R_CLIP else np.nextafter(hi, np.dtype(dtype).type(2))


def center_unit(
    x: np.ndarray, axis: int = 0, dtype: np.dtype | type = np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre series along ``axis`` and scale them to unit L2 norm.

    Parameters
    ----------
    x
        Raw series, time along ``axis``.
    axis
        The time axis.
    dtype
        Dtype of the three outputs; the arithmetic is float64.

    Returns
    -------
    unit : numpy.ndarray
        Same shape as ``x``: ``(x - mean) / scale``; all zeros for a constant series.
    scale : numpy.ndarray
        ``x.shape`` without ``axis``: L2 norm of the centred series (0 for a constant series).
    mean : numpy.ndarray
        ``x.shape`` without ``axis``: mean over time.

    Notes
    -----
    ``x == unit * scale + mean`` (up to ``dtype`` rounding), so any quantity defined on the raw
    series stays computable from the stored unit series.
    """
    x = np.asarray(x)
    if x.ndim == 2 and axis in (0, -2) and x.shape[1] > _COLUMN_BLOCK_MIN:
        return _center_unit_columns(x, np.dtype(dtype))
    return _center_unit(x, axis, dtype)


def _center_unit(
    x: np.ndarray, axis: int, dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.mean(axis=axis, keepdims=True)
    unit = x64 - mean
    scale = np.sqrt(np.square(unit).sum(axis=axis, keepdims=True))
    n = x64.shape[axis]
    peak = np.abs(x64).max(axis=axis, keepdims=True) if n else np.zeros_like(mean)
    const = scale <= _CONST_RTOL * np.sqrt(max(n, 1)) * peak
    scale[const] = 0.0
    unit /= np.where(const, 1.0, scale)
    unit *= ~const
    return (
        unit.astype(dtype, copy=False),
        np.squeeze(scale, axis).astype(dtype),
        np.squeeze(mean, axis).astype(dtype),
    )


# column blocks of (time, series) arrays: float64 temporaries of ~2 MB stay in cache
_BLOCK_ELEMENTS = 2**18
_COLUMN_BLOCK_MIN = 4096


def _center_unit_columns(x: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`center_unit` along axis 0 of a (T, V) array, a block of columns at a time.

    Every column goes through the same float64 operations as in :func:`_center_unit`, in the same
    order, so the results are identical; but the float64 temporaries are one cache-sized block
    instead of several (T, V) arrays (an ingest subject of 120 x 235,375 voxels needed ~1 GB of
    them), and fewer passes are made over the data.
    """
    t, v = x.shape
    unit = np.empty((t, v), dtype)
    scale = np.empty(v, dtype)
    mean = np.empty(v, dtype)
    # even blocks, none narrower than half a block (a single column would be reduced in another order)
    n_blocks = -(-v // max(256, _BLOCK_ELEMENTS // max(t, 1)))
    bounds = np.linspace(0, v, n_blocks + 1).round().astype(int)
    tol = _CONST_RTOL * np.sqrt(max(t, 1))
    sq = np.empty((t, int(np.diff(bounds).max())), np.float64)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        x64 = x[:, a:b].astype(np.float64)
        m = x64.mean(axis=0, keepdims=True)
        # max |x| without an |x| temporary: the larger of |max| and |min|
        peak = np.maximum(np.abs(x64.max(axis=0, keepdims=True)), np.abs(x64.min(axis=0, keepdims=True)))
        x64 -= m
        sc = np.sqrt(np.square(x64, out=sq[:, : b - a]).sum(axis=0, keepdims=True))
        const = sc <= tol * peak
        sc[const] = 0.0
        # divided in float64, rounded to ``dtype`` on the way out (as unit.astype(dtype))
        out = unit[:, a:b]
        np.divide(x64, np.where(const, 1.0, sc), out=out, casting="same_kind")
        if const.any():
            out *= ~const
        scale[a:b] = sc[0]
        mean[a:b] = m[0]
    return unit, scale, mean


def unit_columns(s: np.ndarray) -> np.ndarray:
    """Centre the columns of a (T, L) matrix and scale them to unit norm (float64).

    Constant columns become zeros, so their dot product (their r) with anything is 0.
    """
    return center_unit(np.asarray(s), axis=0, dtype=np.float64)[0]


def pearson_matrix(ts: np.ndarray) -> np.ndarray:
    """Pearson r between the columns of a (T, N) array.

    Parameters
    ----------
    ts
        Time series, time along axis 0.

    Returns
    -------
    numpy.ndarray
        (N, N) float64, symmetric. The diagonal is exactly 1 for non-constant columns; a constant
        column has r = 0 everywhere, its diagonal entry included.
    """
    ts = np.asarray(ts)
    if ts.ndim != 2:
        raise ValueError(f"expected a (time, series) array, got shape {ts.shape}")
    u = unit_columns(ts)
    r: np.ndarray = u.T @ u
    np.clip(r, -1.0, 1.0, out=r)
    r = 0.5 * (r + r.T)
    live = np.any(u != 0, axis=0)
    np.fill_diagonal(r, live.astype(np.float64))
    return r
