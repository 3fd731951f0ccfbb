"""Region assignment against atlases of the lake with siibra's metrics, and the figures of derived
atlases and task contrasts.

- :func:`assign_image_maps`: :func:`lakepipe.compute.assign.assign_maps` of an image against a lake
  atlas: its probability maps (a probabilistic atlas, read one map at a time from the store) or its
  labels (each region as its indicator map);
- :func:`task_network_data`: a task contrast's per-participant values as a (seed, region) array for the
  network x hemisphere bars of :func:`lakepipe.viz.networks.plot_network_summary`
  (:func:`plot_task_contrast`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe.io.stores import Atlas

#: columns ``lakepipe assign`` prints for siibra-style assignments
SIIBRA_PRINT_COLUMNS = (
    "component",
    "sign",
    "n_voxels",
    "volume_mm3",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "region_name",
    "correlation",
    "intersection_over_union",
    "map_value_at_peak",
    "map_weighted_mean",
    "map_containedness",
    "input_weighted_mean",
    "input_containedness",
)


def assign_image_maps(
    img: Any,
    atlas: Atlas,
    maps: Any = None,
    *,
    threshold: float,
    mode: str = "signed",
    mask: Any = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """siibra-style assignment of ``img`` to the regions of ``atlas``.

    ``maps`` are the atlas's 4D probability maps (:func:`lakepipe.io.stores.atlases.atlas_maps`, a
    lazy array read a map at a time); without them the label volume is used (regions as indicator
    maps). The correlation's brain domain defaults to the image's non-zero finite voxels.
    """
    from lakepipe.compute.assign import assign_maps

    data = np.asarray(img.dataobj, dtype=np.float64)
    if mask is None:
        mask = np.isfinite(data) & (data != 0)
    return assign_maps(
        data,
        np.asarray(img.affine, float),
        maps if maps is not None else atlas.labels,
        atlas.table,
        atlas_affine=atlas.grid.affine,
        threshold=threshold,
        mode=mode,
        mask=mask,
        **kwargs,
    )


def task_network_data(ds: xr.Dataset) -> xr.DataArray:
    """A task contrast store's ``subject_contrast`` as (seed, region) with the region's network and
    hemisphere coordinates (participants as seeds)."""
    da = ds["subject_contrast"].rename(participant="seed")
    return da.assign_coords(participant=("seed", [str(v) for v in ds["participant"].values])).assign_attrs(
        statistic=f"{ds.attrs.get('task')} {ds.attrs.get('contrast')}", method="task-contrast"
    )


def plot_task_contrast(
    ds: xr.Dataset, *, title: str | None = None, figsize: tuple[float, float] | None = None
) -> Any:
    """Network x hemisphere bars of a task contrast: mean over participants of their per-network means,
    error bars SEM over participants."""
    from lakepipe.viz.networks import plot_network_summary

    units = (ds.attrs.get("parameters") or {}).get("units", "psc")
    ylabel = f"{ds.attrs.get('contrast')} ({'% signal change' if units == 'psc' else 'signal'})"
    n = ds.sizes["participant"]
    return plot_network_summary(
        task_network_data(ds),
        title=title
        or f"{ds.attrs.get('task')} contrast '{ds.attrs.get('contrast')}' per network and hemisphere "
        f"({n} participants, error bars: SEM)",
        ylabel=ylabel,
        figsize=figsize,
    )
