"""Brain maps: lakepipe outputs as in-memory NIfTI images, drawn with nilearn.

- FNM maps: a seed's row of a (seed, voxel) store written back onto the connectome grid;
- AFNM scores (and any parcel-level values): painted onto the atlas volume, each region's voxels
  taking its value (regions without a value and the background stay 0, i.e. transparent);
- group means: the mean over seeds of a collection (NaN-aware), region or voxel level.

:func:`plot_brain_map` draws an image as nilearn ``plot_stat_map`` slices, a ``plot_glass_brain``, or
both stacked, with one symmetric colour scale, an optional threshold (``|value| <= threshold`` is
transparent) and markers (sphere seeds: their centre). Without a threshold, only exact zeros (outside
the brain mask or the atlas) are transparent.
"""

from __future__ import annotations

from functools import lru_cache

import nibabel as nib
import numpy as np
import xarray as xr

from lakepipe.errors import InputError
from lakepipe.io.stores import Atlas
from lakepipe.viz.figures import new_figure

VIEWS = ("both", "stat", "glass")
#: colour of seed markers
MARKER_COLOUR = "lime"


# ------------------------------------------------------------------------------------------ images


def voxel_volume(values: np.ndarray, ijk: np.ndarray, shape, fill: float = np.nan) -> np.ndarray:
    """A (voxel,) vector written onto its grid (``ijk`` = voxel indices), ``fill`` elsewhere."""
    vol = np.full(tuple(int(s) for s in shape), fill, np.float32)
    ijk = np.asarray(ijk).astype(int)
    vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = np.asarray(values, np.float32)
    return vol


def to_image(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A float32 NIfTI image in memory; NaN (no data) becomes 0, which displays as transparent."""
    data = np.nan_to_num(np.asarray(volume, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    img = nib.Nifti1Image(data, np.asarray(affine, float))
    img.set_sform(img.affine, code=4)
    img.set_qform(img.affine, code=4)
    return img


def seed_position(ds: xr.Dataset | xr.DataArray, seed: int | str) -> int:
    """Row of ``seed`` (an integer position or a seed key) in a store or collection."""
    if isinstance(seed, (int, np.integer)):
        if not 0 <= int(seed) < ds.sizes["seed"]:
            raise InputError(f"seed position {seed} out of range (0..{ds.sizes['seed'] - 1})")
        return int(seed)
    keys = [str(k) for k in ds["seed"].values]
    if seed not in keys:
        raise InputError(f"no seed {seed!r} here; seeds: {keys[:10]}{' ...' if len(keys) > 10 else ''}")
    return keys.index(seed)


def fnm_image(ds: xr.Dataset, statistic: str = "zmap", seed: int | str = 0) -> nib.Nifti1Image:
    """One seed's FNM map (``zmap``, ``rmap``, ``tmap``, ``pmap``, ``avgr``) as a NIfTI image."""
    from lakepipe.io.stores import voxel_volume

    if statistic not in ds:
        raise InputError(f"this FNM store has no {statistic!r} map (has {list(ds.data_vars)})")
    i = seed_position(ds, seed)
    return to_image(voxel_volume(ds, statistic, i), np.asarray(ds.attrs["grid"]["affine"]))


def sphere_markers(
    ds: xr.Dataset | xr.DataArray, seed: int | str
) -> list[tuple[tuple[float, float, float], float]]:
    """``[(centre_mm, radius_mm)]`` when the seed is a sphere (from the store's ``spheres`` attribute)."""
    key = str(ds["seed"].values[seed_position(ds, seed)])
    sphere = (ds.attrs.get("spheres") or {}).get(key)
    if not sphere:
        return []
    cx, cy, cz = (float(c) for c in sphere["center_mm"])
    return [((cx, cy, cz), float(sphere.get("radius_mm", 0)))]


def parcel_image(values, atlas: Atlas, regions=None) -> nib.Nifti1Image:
    """Parcel values painted onto the atlas volume (a NIfTI image on the atlas grid, in memory).

    Parameters
    ----------
    values
        One value per region: a 1D :class:`xarray.DataArray` over ``region`` (label values in the
        ``region`` coordinate), or an array with ``regions`` giving the label value of each entry.
    atlas
        The atlas whose label volume receives the values (regions without a value stay 0).
    """
    if isinstance(values, xr.DataArray):
        if values.dims != ("region",):
            raise InputError(f"parcel values need the single dimension 'region', got {values.dims}")
        regions = values["region"].values
        values = values.values
    values = np.asarray(values, np.float64).reshape(-1)
    regions = np.asarray(regions if regions is not None else atlas.table["index"].to_numpy()).astype(int)
    if regions.size != values.size:
        raise InputError(f"{values.size} values for {regions.size} regions")
    lut = np.zeros(int(max(atlas.labels.max(initial=0), regions.max(initial=0))) + 1, np.float32)
    lut[regions] = np.nan_to_num(values, nan=0.0)
    lut[0] = 0.0
    return to_image(lut[atlas.labels], atlas.grid.affine)


def group_mean(da: xr.DataArray) -> xr.DataArray:
    """Mean over seeds of a collection (NaN ignored), keeping the region/voxel coordinates and attrs."""
    if "seed" not in da.dims:
        return da
    mean = da.mean("seed", skipna=True, keep_attrs=True)
    mean.attrs = {**da.attrs, "reduction": f"mean over {da.sizes['seed']} seeds"}
    return mean.compute()


def collection_image(
    da: xr.DataArray, *, atlas: Atlas | None = None, ijk: np.ndarray | None = None
) -> nib.Nifti1Image:
    """A 1D region- or voxel-level result (e.g. :func:`group_mean`) as a NIfTI image.

    Region-level values need the ``atlas``; voxel-level values need the grid (``attrs['grid']``)
    and the voxel indices (an ``ijk`` coordinate, or ``ijk``).
    """
    if "region" in da.dims:
        if atlas is None:
            raise InputError("painting parcel values needs the atlas")
        return parcel_image(da, atlas)
    if "voxel" not in da.dims:
        raise InputError(f"expected a region or voxel dimension, got {da.dims}")
    if ijk is None:
        if "ijk" not in da.coords:
            raise InputError("voxel values without voxel coordinates (ijk)")
        ijk = da["ijk"].values
    grid = da.attrs.get("grid")
    if not grid:
        raise InputError("voxel values without their grid (attrs['grid'])")
    return to_image(voxel_volume(da.values, ijk, grid["shape"]), np.asarray(grid["affine"]))


# ---------------------------------------------------------------------------------------- plotting


@lru_cache(maxsize=1)
def template() -> nib.Nifti1Image:
    """nilearn's MNI152 template (1 mm, as shipped), the slices' background; loaded once per process
    (nilearn's default background is resampled to 2 mm on every call, 1.5 s or more)."""
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=1)


def _image_range(img: nib.Nifti1Image) -> float:
    data = np.asarray(img.dataobj)
    finite = np.abs(data[np.isfinite(data)])
    vmax = float(finite.max()) if finite.size else 0.0
    return vmax if vmax > 0 else 1.0


def resolve_threshold(threshold: float | str | None, data_max: float) -> float:
    """A display threshold: a number, ``"P%"`` of ``data_max``, or None (a tiny one hiding exact zeros)."""
    if threshold is None:
        return 1e-6 * data_max
    if isinstance(threshold, str):
        text = threshold.strip()
        try:
            value = float(text[:-1]) / 100.0 * data_max if text.endswith("%") else float(text)
        except ValueError:
            raise InputError(
                f"threshold must be a number or a percentage like 20%, got {threshold!r}"
            ) from None
    else:
        value = float(threshold)
    if not np.isfinite(value) or value < 0:
        raise InputError(f"threshold must be >= 0, got {threshold!r}")
    return value


def plot_brain_map(
    img: nib.Nifti1Image,
    *,
    view: str = "both",
    threshold: float | str | None = None,
    vmax: float | None = None,
    title: str | None = None,
    markers=None,
    cut_coords=None,
    display_mode: str | None = None,
    cmap: str = "RdBu_r",
    colorbar: bool = True,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    bg_img=None,
):
    """nilearn stat-map slices and/or glass brain of ``img`` in one figure.

    Parameters
    ----------
    view
        ``both`` (slices above a glass brain), ``stat`` or ``glass``.
    threshold
        Values with ``|value| <= threshold`` are not drawn; a string ``"20%"`` means that share of
        the largest ``|value|``; default: only exact zeros are hidden.
    vmax
        Colour scale limit (symmetric, ``[-vmax, vmax]``); default the largest ``|value|``.
    markers
        ``[(x, y, z), ...]`` or ``[((x, y, z), radius_mm), ...]`` in mm, drawn on every panel.
    cut_coords, display_mode
        Passed to nilearn (slices default ``ortho`` through the first marker or the peak;
        glass brain ``lyrz``).
    bg_img
        Background of the slices (default nilearn's MNI152 template).
    """
    from nilearn import plotting

    if view not in VIEWS:
        raise InputError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    data_max = _image_range(img)
    vmax = float(vmax) if vmax else data_max
    thr = resolve_threshold(threshold, data_max)
    if thr >= vmax:
        raise InputError(f"threshold {thr:g} hides the whole map (largest |value| {vmax:g})")
    centres = _marker_centres(markers)
    if cut_coords is None and centres and (display_mode in (None, "ortho")):
        cut_coords = centres[0]
    panels = ["stat", "glass"] if view == "both" else [view]
    height = {"stat": 3.0, "glass": 3.0}
    figsize = figsize or (11.0, sum(height[p] for p in panels) + (0.4 if title else 0.1))
    fig = new_figure(figsize, dpi=dpi)
    top = 1.0 - (0.4 / figsize[1] if title else 0.02)
    fractions = np.array([height[p] for p in panels]) / sum(height[p] for p in panels) * top
    y = top
    for panel, frac in zip(panels, fractions, strict=True):
        y -= frac
        ax = fig.add_axes((0.0, y, 1.0, frac))
        common = {
            "figure": fig,
            "axes": ax,
            "threshold": thr,
            "vmax": vmax,
            "cmap": cmap,
            "colorbar": colorbar,
            "annotate": True,
        }
        if panel == "stat":
            display = plotting.plot_stat_map(
                img,
                bg_img=template() if bg_img is None else bg_img,
                display_mode=display_mode or "ortho",
                cut_coords=cut_coords,
                symmetric_cbar=True,
                draw_cross=False,
                black_bg=False,
                dim=-0.3,
                **common,
            )
        else:
            display = plotting.plot_glass_brain(
                img,
                display_mode="lyrz" if display_mode in (None, "ortho") else display_mode,
                plot_abs=False,
                symmetric_cbar=True,
                black_bg=False,
                **common,
            )
        if centres:
            display.add_markers(
                centres, marker_color=MARKER_COLOUR, marker_size=60, edgecolor="black", linewidth=0.6
            )
    if title:
        fig.text(0.01, 1.0 - 0.05 / figsize[1], title, ha="left", va="top", fontsize=11)
    return fig


def _marker_centres(markers) -> list[tuple[float, ...]]:
    out = []
    for m in markers or []:
        if len(m) == 2 and np.ndim(m[0]) == 1:  # (centre, radius)
            m = m[0]
        out.append(tuple(float(c) for c in m))
    return out


def plot_fnm(
    ds: xr.Dataset,
    seed: int | str = 0,
    statistic: str = "zmap",
    *,
    threshold: float | str | None = None,
    view: str = "both",
    title: str | None = None,
    **kwargs,
):
    """One seed's FNM map; sphere seeds are marked at their centre."""
    img = fnm_image(ds, statistic, seed)
    i = seed_position(ds, seed)
    markers = kwargs.pop("markers", None) or sphere_markers(ds, i)
    if title is None:
        key = str(ds["seed"].values[i])
        extra = ""
        if markers:
            ((c, r),) = markers[:1]
            extra = f"  (sphere at {tuple(round(x, 1) for x in c)} mm, radius {r:g} mm)"
        n = ds.attrs.get("n_subjects")
        title = f"FNM {statistic}: {key}" + (f", {n} connectome subjects" if n else "") + extra
    return plot_brain_map(img, view=view, threshold=threshold, title=title, markers=markers, **kwargs)


def plot_parcel_map(
    values,
    atlas: Atlas,
    *,
    threshold: float | None = None,
    view: str = "both",
    title: str | None = None,
    **kwargs,
):
    """Parcel values (AFNM scores, FNM parcel summaries, a group mean) painted onto the atlas."""
    return plot_brain_map(parcel_image(values, atlas), view=view, threshold=threshold, title=title, **kwargs)


def plot_afnm(
    scores: xr.Dataset | xr.DataArray,
    atlas: Atlas,
    seed: int | str = 0,
    *,
    threshold: float | None = None,
    view: str = "both",
    title: str | None = None,
    **kwargs,
):
    """One lesion's AFNM scores painted onto the atlas volume.

    ``scores`` is an AFNM store (variable ``score``) or a (seed, region) collection.
    """
    da = scores["score"] if isinstance(scores, xr.Dataset) else scores
    i = seed_position(da, seed)
    row = da.isel(seed=i).compute()
    if title is None:
        title = f"AFNM score: {da['seed'].values[i]} on {atlas.name}"
    return plot_parcel_map(row, atlas, threshold=threshold, view=view, title=title, **kwargs)


def plot_group_mean(
    da: xr.DataArray,
    *,
    atlas: Atlas | None = None,
    ijk: np.ndarray | None = None,
    threshold: float | None = None,
    view: str = "both",
    title: str | None = None,
    **kwargs,
):
    """Mean over the seeds of a collection (region level: painted on ``atlas``; voxel level: on its grid)."""
    mean = group_mean(da)
    if title is None:
        stat = da.attrs.get("statistic") or da.name or "value"
        n = da.sizes.get("seed", 1)
        title = f"group mean of {da.attrs.get('method', '').upper()} {stat} over {n} seed(s)"
    return plot_brain_map(
        collection_image(mean, atlas=atlas, ijk=ijk), view=view, threshold=threshold, title=title, **kwargs
    )


def assign_image(
    img: nib.Nifti1Image, atlas: Atlas, *, threshold: float, mode: str = "signed", mask=None, **kwargs
):
    """Region assignment (:func:`lakepipe.compute.assign.assign`) of an image against an atlas of the lake.

    The correlation's brain domain defaults to the image's non-zero finite voxels (images made by
    :func:`to_image` hold 0 where there is no data).
    """
    from lakepipe.compute.assign import assign

    data = np.asarray(img.dataobj, dtype=np.float64)
    if mask is None:
        mask = np.isfinite(data) & (data != 0)
    return assign(
        data,
        img.affine,
        atlas.labels,
        atlas.table,
        labels_affine=atlas.grid.affine,
        threshold=threshold,
        mode=mode,
        mask=mask,
        **kwargs,
    )
