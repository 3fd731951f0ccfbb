"""Figures of the group statistics: the result map of each test on the brain (slices and glass
brain; parcel results painted on their atlas), significant voxels only where a test has an FWE p,
and the prediction scatter of held-out predictions against observed scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from lakepipe.errors import InputError
from lakepipe.io.stores import Atlas
from lakepipe.viz.figures import new_figure
from lakepipe.viz.maps import parcel_image, plot_brain_map, to_image, voxel_volume

#: the statistic each test's figure shows, and the FWE-p variable that masks it (None: unmasked)
DEFAULT_VIEW: dict[str, tuple[str, str | None]] = {
    "sensitivity": ("dominant", None),
    "specificity": ("t", "p_fwe"),
    "conjunction": ("agreement", None),
    "symptom": ("r", "p_fwe"),
    "predict": ("model", None),
}


def result_values(ds: xr.Dataset, statistic: str, alpha: float | None = None) -> tuple[np.ndarray, str]:
    """A result's values over voxels (regions), zero where its FWE p is not below ``alpha`` (when
    the test has one and ``alpha`` is given), and a note saying what was masked."""
    method = str(ds.attrs.get("method", ""))
    if statistic not in ds:
        known = [str(v) for v in ds.data_vars if ("voxel" in ds[v].dims or "region" in ds[v].dims)]
        raise InputError(f"the {method} result has no {statistic!r}; choose one of {', '.join(known)}")
    values = np.asarray(ds[statistic].values, np.float64)
    mask_var = DEFAULT_VIEW.get(method, ("", None))[1]
    note = ""
    if method == "conjunction" and statistic == "agreement" and alpha is not None:
        conj = np.asarray(ds["conjunction"].values) != 0  # the agreement where the conjunction holds
        values = np.where(conj, values, 0.0)
        note = f", where the conjunction holds: {int(conj.sum())} of {conj.size}"
    if alpha is not None and mask_var and mask_var in ds and statistic not in ("p", "p_fwe", "q_fdr"):
        p = np.asarray(ds["p_fwe_tfce" if statistic == "tfce" else mask_var].values)
        keep = p < alpha
        values = np.where(keep, values, 0.0)
        note = f", FWE p < {alpha:g}: {int(keep.sum())} of {keep.size}"
    return values, note


def result_image(ds: xr.Dataset, values: np.ndarray, atlas: Atlas | None = None) -> Any:
    """Values of a voxel result on its grid, or of a parcel result painted on ``atlas``."""
    if "voxel" in ds.dims:
        grid = ds.attrs["grid"]
        return to_image(
            voxel_volume(values, ds["ijk"].values, grid["shape"], fill=0.0), np.asarray(grid["affine"])
        )
    if atlas is None:
        raise InputError("a parcel result is drawn on its atlas: pass the atlas")
    da = xr.DataArray(values, dims=("region",), coords={"region": ds["region"].values})
    return parcel_image(da, atlas)


def plot_result(
    ds: xr.Dataset,
    statistic: str | None = None,
    *,
    atlas: Atlas | None = None,
    alpha: float | None = 0.05,
    threshold: float | str | None = None,
    view: str = "both",
    title: str | None = None,
    **kwargs: Any,
) -> Figure:
    """The figure of a group test result: its map on the brain, or for ``predict`` the scatter.

    ``statistic`` defaults to the test's main map (sensitivity: dominant; specificity: t; conjunction:
    agreement where the conjunction holds; symptom: r; predict: the scatter). Maps of tests with an
    FWE p show only the features with p < ``alpha`` (``alpha=None``: all).
    """
    method = str(ds.attrs.get("method", ""))
    if method == "predict" and statistic in (None, "prediction"):
        return plot_prediction(ds, title=title)
    stat = statistic or DEFAULT_VIEW.get(method, ("", None))[0]
    values, note = result_values(ds, stat, alpha)
    inputs = ds.attrs.get("inputs", {})
    if title is None:
        groups = f"{inputs.get('n_cases', '?')} cases" + (
            f" vs {inputs['n_controls']} controls" if inputs.get("n_controls") else ""
        )
        title = f"{method} {stat}: {groups} ({inputs.get('source', '')} {inputs.get('statistic', '')}){note}"
    img = result_image(ds, values, atlas)
    return plot_brain_map(img, view=view, threshold=threshold, title=title, **kwargs)


def plot_prediction(ds: xr.Dataset, *, title: str | None = None, dpi: int = 100) -> Figure:
    """Held-out predictions (spatial r with each fold's model map) against the observed scores."""
    pred = np.asarray(ds["prediction"].values, np.float64)
    score = np.asarray(ds["score"].values, np.float64)
    fig = new_figure((5.5, 4.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    folds = np.asarray(ds["fold"].values) if "fold" in ds else np.zeros(pred.size)
    ax.scatter(score, pred, c=folds, cmap="tab20", s=36, edgecolor="k", linewidth=0.5)
    if np.ptp(score) > 0:
        slope, icept = np.polyfit(score, pred, 1)
        xs = np.linspace(score.min(), score.max(), 50)
        ax.plot(xs, slope * xs + icept, color="0.3", lw=1)
    conv = ds.attrs.get("conventions", {})
    ax.set_xlabel(f"observed {ds.attrs.get('parameters', {}).get('score', 'score')}")
    ax.set_ylabel("prediction (spatial r with the fold's model map)")
    r, p = float(ds["r"].values), float(ds["p"].values)
    n_perm = ds.attrs.get("permutations", {}).get("n_permutations")
    ax.set_title(
        title
        or f"{conv.get('scheme', '')} cross-validation: r = {r:.3f}, p = {p:.3g} ({n_perm} permutations)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
