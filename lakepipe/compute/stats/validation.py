"""Checks on the inputs of the group statistics, with messages a caller can pass on to users.

Every check raises :class:`StatsInputError`, a ``ValueError`` that also carries the offending
row indices (participants, in the order the caller passed them) and/or covariate names, so the
method layer can name participants instead of row numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: fewest cases (and fewest controls) a group comparison accepts
MIN_GROUP_SIZE = 3

# A tested variable (or covariate) whose residual on the other columns has a norm below this
# fraction of its centred norm is treated as exactly collinear (float64 rounding leaves ~1e-15).
COLLINEAR_RTOL = 1e-6


class StatsInputError(ValueError):
    """Bad input to a statistic.

    Attributes
    ----------
    indices : tuple of int
        Offending rows (participants) in the order the caller passed them; empty if not row-specific.
    names : tuple of str
        Offending covariates, if any.
    """

    def __init__(self, message: str, indices: Sequence[int] = (), names: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.indices = tuple(int(i) for i in indices)
        self.names = tuple(str(n) for n in names)


def _list(items: Sequence[int] | Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def check_groups(is_case: npt.ArrayLike, min_size: int = MIN_GROUP_SIZE) -> BoolArray:
    """Case/control labels as a boolean vector with at least ``min_size`` of each.

    Parameters
    ----------
    is_case
        (n,) booleans, or 0/1 numbers (1 = case).
    min_size
        Fewest cases and fewest controls accepted (default 3).

    Returns
    -------
    numpy.ndarray
        (n,) bool, True for cases.

    Raises
    ------
    StatsInputError
        Labels other than 0/1 (``indices`` = those rows), or too few cases or controls.
    """
    lab = np.asarray(is_case)
    if lab.ndim != 1:
        raise StatsInputError(f"case labels must be one value per map, got shape {lab.shape}")
    if lab.dtype != np.bool_:
        bad = np.flatnonzero(~np.isin(lab, (0, 1)))
        if bad.size:
            raise StatsInputError(
                f"case labels must be 1 (case) or 0 (control); rows {_list(bad.tolist())} are not",
                indices=bad.tolist(),
            )
        lab = lab == 1
    n_cases, n_controls = int(lab.sum()), int((~lab).sum())
    if n_cases < min_size or n_controls < min_size:
        raise StatsInputError(
            f"a group comparison needs at least {min_size} cases and {min_size} controls; "
            f"got {n_cases} cases and {n_controls} controls"
        )
    return lab


def check_scores(scores: npt.ArrayLike, name: str = "score") -> FloatArray:
    """A behavioural score per patient: finite and not constant.

    Returns
    -------
    numpy.ndarray
        (n,) float64 copy of the scores.

    Raises
    ------
    StatsInputError
        Missing (NaN) or infinite scores (``indices`` = those rows), or a constant score
        (``indices`` = all rows).
    """
    s = np.array(scores, dtype=np.float64)
    if s.ndim != 1:
        raise StatsInputError(f"{name} must be one value per patient, got shape {s.shape}")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise StatsInputError(
            f"{name} is missing or not finite for rows {_list(bad.tolist())}", indices=bad.tolist()
        )
    if s.size < MIN_GROUP_SIZE:
        raise StatsInputError(f"{name} needs at least {MIN_GROUP_SIZE} patients, got {s.size}")
    if np.all(s == s[0]):
        raise StatsInputError(
            f"{name} is the same ({s[0]:g}) for every patient: no relation can be estimated",
            indices=range(s.size),
        )
    return s


def check_maps(maps: npt.ArrayLike, n_rows: int | None = None) -> npt.NDArray[np.floating]:
    """(n_maps, n_voxels) real maps without NaN or infinity.

    Parameters
    ----------
    maps
        One map per row (a block of voxel columns is fine).
    n_rows
        Expected number of rows (participants), if known.

    Returns
    -------
    numpy.ndarray
        The maps as a float32 or float64 array (float32 kept, anything else becomes float64).

    Raises
    ------
    StatsInputError
        Wrong shape, or rows with NaN/inf (``indices`` = those rows).
    """
    m = np.asarray(maps)
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float64)
    if m.ndim != 2:
        raise StatsInputError(f"maps must be a (map, voxel) matrix, got shape {m.shape}")
    if n_rows is not None and m.shape[0] != n_rows:
        raise StatsInputError(f"got {m.shape[0]} maps for {n_rows} participants")
    bad = np.flatnonzero(~np.isfinite(m).all(axis=1))
    if bad.size:
        raise StatsInputError(
            f"maps of rows {_list(bad.tolist())} contain NaN or infinity", indices=bad.tolist()
        )
    return m


def _residual_ratio(y: FloatArray, others: FloatArray) -> float:
    """||residual of y (centred) on [1, others]|| / ||y centred||; 0 for a constant y."""
    yc = y - y.mean()
    norm = float(np.linalg.norm(yc))
    if norm == 0:
        return 0.0
    if others.shape[1] == 0:
        return 1.0
    oc = others - others.mean(axis=0)
    coef, *_ = np.linalg.lstsq(oc, yc, rcond=None)
    return float(np.linalg.norm(yc - oc @ coef)) / norm


def check_covariates(
    covariates: npt.ArrayLike | None,
    n_rows: int,
    names: Sequence[str] | None = None,
    tested: npt.ArrayLike | None = None,
    tested_name: str = "group",
) -> FloatArray:
    """Covariates z-scored, after checking they can enter the model.

    Parameters
    ----------
    covariates
        (n, k) covariate values (or (n,) for one), or None for none.
    n_rows
        Number of participants.
    names
        Covariate names for the messages (default ``covariate 0``, ``covariate 1``, ...).
    tested
        (n,) tested variable (case labels or scores): covariates must not be collinear with it.
    tested_name
        Its name in the messages.

    Returns
    -------
    numpy.ndarray
        (n, k) float64, each column centred and divided by its standard deviation (ddof 0).

    Raises
    ------
    StatsInputError
        Missing values (``indices`` = rows, ``names`` = covariates), a constant covariate, covariates
        collinear with each other, or the tested variable collinear with the covariates (``names``
        = the covariates responsible: those whose removal makes it estimable).
    """
    if covariates is None:
        return np.zeros((n_rows, 0))
    z = np.array(covariates, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[0] != n_rows:
        raise StatsInputError(f"covariates must be a ({n_rows}, k) matrix, got shape {z.shape}")
    k = z.shape[1]
    label = list(names) if names is not None else [f"covariate {j}" for j in range(k)]
    if len(label) != k:
        raise StatsInputError(f"{len(label)} covariate names for {k} covariates")
    bad_rows, bad_cols = np.nonzero(~np.isfinite(z))
    if bad_rows.size:
        rows = np.unique(bad_rows).tolist()
        cols = [label[j] for j in np.unique(bad_cols)]
        raise StatsInputError(
            f"covariate(s) {_list(cols)} missing or not finite for rows {_list(rows)}",
            indices=rows,
            names=cols,
        )
    sd = z.std(axis=0)
    const = [label[j] for j in np.flatnonzero(sd == 0)]
    if const:
        raise StatsInputError(f"covariate(s) {_list(const)} are constant over participants", names=const)
    z = (z - z.mean(axis=0)) / sd
    if k > 1:
        tied = [
            label[j] for j in range(k) if _residual_ratio(z[:, j], np.delete(z, j, axis=1)) < COLLINEAR_RTOL
        ]
        if tied:
            raise StatsInputError(f"covariates {_list(tied)} are collinear with each other", names=tied)
    if k and tested is not None:
        x = np.asarray(tested, dtype=np.float64)
        if _residual_ratio(x, z) < COLLINEAR_RTOL:
            culprits = [
                label[j] for j in range(k) if _residual_ratio(x, np.delete(z, j, axis=1)) >= COLLINEAR_RTOL
            ]
            culprits = culprits or label  # only dropping several at once helps: all take part
            raise StatsInputError(
                f"{tested_name} is collinear with covariate(s) {_list(culprits)}: its effect cannot be "
                "separated from theirs",
                names=culprits,
            )
    if n_rows - 2 - k < 1:
        raise StatsInputError(
            f"{n_rows} participants are too few for {k} covariates (no residual degrees of freedom)"
        )
    return np.asarray(z, dtype=np.float64)
