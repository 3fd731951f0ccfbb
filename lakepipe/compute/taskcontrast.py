"""Task contrasts on parcel time series (the HCP seminar's block averages), pure numpy/scipy.

Conventions (every step of ``lakepipe task contrast --model mean``):

1. **Frames of a condition** (:func:`condition_frames`), as Neuromatch Academy's HCP loaders take
   them: a block with onset ``o`` and duration ``d`` (s) covers frames
   ``floor(o / TR) + delay + arange(ceil(d / TR))``, ``delay`` the haemodynamic delay in frames; a
   condition's frames are the union over its blocks; frames past the run's end are dropped (counted).
   (``o / TR`` is taken with a 1e-6 guard, so an onset on an exact multiple of the TR is that frame
   whatever the float rounding.)
2. **Condition means** (:func:`condition_means`), per run and parcel: the mean of the signal over the
   condition's frames. ``units="psc"`` (default): the signal is first expressed in percent of the run's
   mean, ``100 * (x / mean_t(x) - 1)`` (nilearn's ``signal_scaling=0``); ``"raw"``: ``x - mean_t(x)``.
3. **Contrast** (:func:`parse_contrast`, :func:`apply_contrast`): a linear combination of condition
   means, ``"lh - rh"``, ``"2*t - lh - rh"``, ``"0.5*lf + 0.5*rf - t"``.
4. **Subjects and group** (:func:`one_sample_t`): a participant's value is the mean over its runs of
   the task; over participants, the mean, the one-sample ``t = mean / (sd / sqrt(n))`` (sd with
   ddof 1) and its two-sided p with ``n - 1`` degrees of freedom.
5. **Networks** (:func:`group_summary`): per participant the mean over the parcels of each (network,
   hemisphere) group, then the same one-sample statistics over participants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

UNITS = ("psc", "raw")
#: guard added to ``onset / TR`` before taking the floor (see the module notes)
FRAME_GUARD = 1e-6

_TERM = re.compile(r"(?P<sign>[+-]?)(?:(?P<coef>\d+(?:\.\d*)?|\.\d+)\*)?(?P<name>[A-Za-z0-9_]+)")

__all__ = [
    "UNITS",
    "apply_contrast",
    "condition_frames",
    "condition_means",
    "contrast_vector",
    "group_summary",
    "one_sample_t",
    "parse_contrast",
]


def condition_frames(
    onsets: Sequence[float] | np.ndarray,
    durations: Sequence[float] | np.ndarray,
    t_r: float,
    delay_frames: int,
    n_frames: int,
) -> tuple[np.ndarray, int]:
    """The frames of one condition in one run (step 1 of the module notes).

    Returns
    -------
    frames
        Sorted unique int64 frame indices in ``[0, n_frames)``.
    dropped
        How many block frames fell past the run's end (or before its start) and were left out.
    """
    if not t_r > 0:
        raise ValueError(f"t_r must be positive, got {t_r}")
    on = np.asarray(onsets, np.float64).reshape(-1)
    du = np.asarray(durations, np.float64).reshape(-1)
    if on.shape != du.shape:
        raise ValueError(f"{on.size} onsets for {du.size} durations")
    if np.any(~np.isfinite(on)) or np.any(~np.isfinite(du)) or np.any(du < 0):
        raise ValueError("onsets and durations must be finite, durations >= 0")
    start = np.floor(on / t_r + FRAME_GUARD).astype(np.int64) + int(delay_frames)
    length = np.ceil(du / t_r - FRAME_GUARD).astype(np.int64)
    parts = [s + np.arange(max(int(n), 0), dtype=np.int64) for s, n in zip(start, length, strict=True)]
    every = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    inside = (every >= 0) & (every < n_frames)
    return np.unique(every[inside]), int(np.count_nonzero(~inside))


def condition_means(series: np.ndarray, frames: Sequence[np.ndarray], units: str = "psc") -> np.ndarray:
    """Mean signal of each condition's frames, per parcel (step 2 of the module notes).

    Parameters
    ----------
    series
        One run's raw parcel series, shape (T, P).
    frames
        One array of frame indices per condition (:func:`condition_frames`).
    units
        ``psc`` (percent of the run's mean per parcel) or ``raw`` (minus that mean).

    Returns
    -------
    numpy.ndarray
        (C, P) float64; NaN for a condition without frames.

    Raises
    ------
    ValueError
        Unknown units, or ``psc`` with a parcel whose run mean is not positive.
    """
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    x = np.asarray(series, np.float64)
    if x.ndim != 2:
        raise ValueError(f"series must be (time, parcel), got shape {x.shape}")
    mean = x.mean(axis=0)
    if units == "psc":
        if not np.all(mean > 0):
            bad = int(np.count_nonzero(~(mean > 0)))
            raise ValueError(
                f"percent signal change needs series with a positive mean; {bad} parcel(s) have a "
                "run mean <= 0 "
                "(centred data: use units raw)"
            )
        y = 100.0 * (x / mean - 1.0)
    else:
        y = x - mean
    out = np.full((len(frames), x.shape[1]), np.nan)
    for c, f in enumerate(frames):
        f = np.asarray(f, np.int64)
        if f.size:
            out[c] = y[f].mean(axis=0)
    return out


def parse_contrast(expression: str, conditions: Sequence[str]) -> dict[str, float]:
    """Condition weights of a contrast expression: ``"lh - rh"``, ``"2*t - lh - rh"``, ``"0.5*lf+0.5*rf"``.

    Terms are ``[coefficient *] condition`` joined by ``+`` and ``-``; a condition named twice adds up.

    Raises
    ------
    ValueError
        A malformed expression, or a condition not in ``conditions`` (the message lists them).
    """
    text = str(expression).strip()
    if not text:
        raise ValueError("empty contrast")
    known = list(dict.fromkeys(str(c) for c in conditions))
    compact = re.sub(r"\s*([+*-])\s*", r"\1", text)
    weights: dict[str, float] = {}
    pos = 0
    while pos < len(compact):
        m = _TERM.match(compact, pos)
        if m is None or (pos > 0 and not m["sign"]):
            raise ValueError(
                f"cannot read the contrast {text!r} at {compact[pos:]!r} (terms: [+-][number*]condition)"
            )
        name = m["name"]
        if name not in known:
            raise ValueError(
                f"unknown condition {name!r} in the contrast {text!r}; known: {', '.join(known)}"
            )
        coef = float(m["coef"]) if m["coef"] else 1.0
        weights[name] = weights.get(name, 0.0) + (-coef if m["sign"] == "-" else coef)
        pos = m.end()
    if all(w == 0 for w in weights.values()):
        raise ValueError(f"the contrast {text!r} has all weights 0")
    return weights


def contrast_vector(weights: Mapping[str, float], conditions: Sequence[str]) -> np.ndarray:
    """The weights as a vector over ``conditions`` (0 for conditions the contrast does not name)."""
    return np.array([float(weights.get(c, 0.0)) for c in conditions], np.float64)


def apply_contrast(means: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``sum_c w_c * means[..., c, :]``: (..., C, P) condition means -> (..., P) contrast values.

    NaN where a condition with a non-zero weight has no frames.
    """
    m = np.asarray(means, np.float64)
    w = np.asarray(vector, np.float64)
    if m.shape[-2] != w.size:
        raise ValueError(f"{w.size} weights for {m.shape[-2]} conditions")
    used = w != 0
    out: np.ndarray = np.einsum("...cp,c->...p", np.where(used[:, None], m, 0.0), w)
    missing = np.any(np.isnan(m[..., used, :]), axis=-2)
    out[missing] = np.nan
    return out


def one_sample_t(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sd (ddof 1), one-sample t and two-sided p over the first axis (participants).

    ``values`` is (n, ...); NaN entries are left out per column. With fewer than 2 values, or sd 0,
    t and p are NaN.
    """
    v = np.asarray(values, np.float64)
    n = np.sum(np.isfinite(v), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(v, axis=0) if v.size else np.full(v.shape[1:], np.nan)
        dev = np.where(np.isfinite(v), v - mean, 0.0)
        sd = np.sqrt(np.sum(dev**2, axis=0) / (n - 1))
        t = mean / (sd / np.sqrt(n))
    ok = (n >= 2) & (sd > 0)
    t = np.where(ok, t, np.nan)
    sd = np.where(n >= 2, sd, np.nan)
    from scipy import stats  # imported on use: 1.5-3 s at import

    p = np.where(ok, 2.0 * stats.t.sf(np.abs(np.where(ok, t, 0.0)), np.maximum(n - 1, 1)), np.nan)
    return mean, sd, t, p


def group_summary(
    values: np.ndarray, groups: Sequence[tuple[str, str]]
) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Per participant, the mean over the parcels of each group (step 5 of the module notes).

    Parameters
    ----------
    values
        (n, P) per participant and parcel.
    groups
        The (network, hemisphere) of each parcel.

    Returns
    -------
    keys
        The groups, in order of first appearance.
    per_subject
        (n, G) parcel means (NaN parcels left out).
    n_parcels
        (G,) parcels per group.
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape[1] != len(groups):
        raise ValueError(f"values {v.shape} and {len(groups)} parcel groups do not match")
    keys = list(dict.fromkeys(groups))
    index = {k: i for i, k in enumerate(keys)}
    member = np.array([index[g] for g in groups], np.int64)
    out = np.full((v.shape[0], len(keys)), np.nan)
    counts = np.bincount(member, minlength=len(keys))
    for g in range(len(keys)):
        cols = v[:, member == g]
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(cols)
            s = np.where(finite, cols, 0.0).sum(axis=1)
            k = finite.sum(axis=1)
            out[:, g] = np.where(k > 0, s / np.maximum(k, 1), np.nan)
    return keys, out, counts.astype(np.int64)
