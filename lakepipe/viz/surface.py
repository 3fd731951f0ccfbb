"""Cortical surface figures: volumes projected onto fsaverage5 and drawn on its inflated cortex.

One figure shows the left and right hemispheres in lateral and medial view (``layout="2x2"``: columns
left/right, rows lateral/medial; ``"1x4"``: left lateral, left medial, right medial, right lateral),
drawn with ``nilearn.plotting.plot_surf_stat_map`` (matplotlib engine, on an Agg canvas) over the
sulcal depth, with one symmetric colour scale ``[-vmax, vmax]``, a threshold (``|value| < threshold``
is transparent, as in nilearn), a title and one colour bar (the hidden band greyed).

Projection (``nilearn.surface.vol_to_surf``), with the fsaverage5 meshes that nilearn ships inside
the package (``nilearn.datasets.load_fsaverage("fsaverage5")``: no download), volumes in MNI152
space (fsaverage's coordinates are MNI305: a few mm apart, the usual approximation):

- **voxel maps** (FNM): ``interpolation="linear"``, sampled between the pial and the white surface
  (``inner_mesh``, so ``kind="depth"``: 10 points across the cortical ribbon), averaged; faces are
  coloured by the mean of their vertices.
- **parcel maps** (AFNM scores painted onto the atlas volume): ``interpolation="nearest_most_frequent"``
  with the same depth sampling, so each vertex takes the value of the one parcel most of its samples
  fall in: a vertex never gets a blend of two parcels' scores (linear interpolation would average
  across a border), and faces are coloured by the median of their three vertices (always one of
  them). Because the volume atlas and fsaverage do not match exactly, many vertices sample mostly
  background: with Schaefer-400 at 1 mm, 12.5 % of the vertices stay blank (the medial wall
  included), so the parcels are first grown into the background by at most ``fill_mm`` (each
  background voxel within that distance takes its nearest parcel's label: still one parcel per
  voxel, no blending): 8.9 % blank at 1 mm, 6.8 % at the default 2 mm, 5.7 % at 3 mm (measured),
  larger values start to paint the medial wall. With ``labels_img`` (the atlas) the labels are
  projected and each vertex looks up its parcel's score, so parcels scoring exactly 0 keep their
  place; without it the painted values themselves are projected (a zero-scored parcel is background).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from lakepipe.errors import InputError
from lakepipe.viz.figures import new_figure
from lakepipe.viz.maps import resolve_threshold

HEMISPHERES = ("left", "right")
SURFACE_VIEWS = ("lateral", "medial")
LAYOUTS = ("2x2", "1x4")
#: panels of each layout: (row, column) -> (hemisphere, view)
_PANELS = {
    "2x2": {
        (0, 0): ("left", "lateral"),
        (0, 1): ("right", "lateral"),
        (1, 0): ("left", "medial"),
        (1, 1): ("right", "medial"),
    },
    "1x4": {
        (0, 0): ("left", "lateral"),
        (0, 1): ("left", "medial"),
        (0, 2): ("right", "medial"),
        (0, 3): ("right", "lateral"),
    },
}
#: default parcel growth into the background before projection, mm (see the module notes)
FILL_MM = 2.0


@lru_cache(maxsize=1)
def fsaverage5() -> dict[str, Any]:
    """nilearn's packaged fsaverage5 meshes (pial, white, inflated) and sulcal depth, loaded once.

    Keys ``pial_left``, ``white_left``, ``infl_left``, ``sulc_left`` (and ``_right``); meshes as
    ``(coordinates, faces)`` arrays (10,242 vertices per hemisphere).
    """
    from nilearn import datasets, surface

    files = datasets.fetch_surf_fsaverage("fsaverage5")  # files inside the nilearn package
    out: dict[str, Any] = {}
    for hemi in HEMISPHERES:
        for kind in ("pial", "white", "infl"):
            mesh = surface.load_surf_mesh(files[f"{kind}_{hemi}"])
            out[f"{kind}_{hemi}"] = (np.asarray(mesh.coordinates, float), np.asarray(mesh.faces))
        out[f"sulc_{hemi}"] = np.asarray(surface.load_surf_data(files[f"sulc_{hemi}"]), float)
    return out


def _mesh(key: str) -> Any:
    from nilearn.surface import InMemoryMesh

    coords, faces = fsaverage5()[key]
    return InMemoryMesh(coordinates=coords.copy(), faces=faces)  # nilearn centres plotted meshes in place


def _volume(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"a 3D image is needed for a surface figure, got shape {data.shape}")
    return np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)


def project_voxels(img: nib.spatialimages.SpatialImage) -> dict[str, np.ndarray]:
    """A voxel map on each hemisphere's fsaverage5 vertices (linear, across the cortical ribbon).

    Returns ``{"left": (10242,), "right": (10242,)}``; vertices with no sample inside the image are 0.
    """
    from nilearn.surface import vol_to_surf

    vol = nib.Nifti1Image(_volume(img).astype(np.float32), img.affine)
    out = {}
    for hemi in HEMISPHERES:
        tex = vol_to_surf(
            vol, _mesh(f"pial_{hemi}"), inner_mesh=_mesh(f"white_{hemi}"), interpolation="linear"
        )
        out[hemi] = np.nan_to_num(np.asarray(tex, float), nan=0.0)
    return out


def grow_labels(labels: np.ndarray, affine: np.ndarray, fill_mm: float) -> np.ndarray:
    """Grow parcels into the background: each 0 voxel within ``fill_mm`` of a parcel takes the label
    of the nearest parcel voxel (Euclidean distance in mm between voxel centres, through the voxel
    sizes of ``affine``; between equidistant parcels one is picked). Labelled voxels keep theirs."""
    from scipy import ndimage

    if fill_mm <= 0 or not labels.any():
        return labels
    spacing = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    # work in the parcels' bounding box, widened by the fill distance
    pad = np.ceil(fill_mm / spacing).astype(int) + 1
    nz = np.argwhere(labels != 0)
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + pad + 1, labels.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub = labels[box]
    dist, idx = ndimage.distance_transform_edt(sub == 0, sampling=spacing, return_indices=True)
    grown = labels.copy()
    grown[box] = np.where(dist <= fill_mm, sub[tuple(idx)], sub)
    return grown


def _cover_cortex(codes: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad a volume so that every pial and white vertex (plus a voxel) lies inside its grid.

    nilearn's ``nearest_most_frequent`` fails on a vertex whose samples all fall outside the image;
    padding with background is exact (such samples are background either way)."""
    fs = fsaverage5()
    xyz = np.concatenate([fs[f"{k}_{h}"][0] for k in ("pial", "white") for h in HEMISPHERES])
    inv = np.linalg.inv(affine)
    ijk = xyz @ inv[:3, :3].T + inv[:3, 3]
    before = np.maximum(0, -np.floor(ijk.min(axis=0)).astype(int) + 1)
    after = np.maximum(0, np.ceil(ijk.max(axis=0)).astype(int) + 2 - np.array(codes.shape))
    if not (before.any() or after.any()):
        return codes, affine
    shift = np.eye(4)
    shift[:3, 3] = -before
    padded = np.pad(codes, list(zip(before, after, strict=True)))
    return padded, affine @ shift


def project_parcels(
    img: nib.spatialimages.SpatialImage,
    *,
    labels_img: nib.spatialimages.SpatialImage | None = None,
    fill_mm: float = FILL_MM,
) -> dict[str, np.ndarray]:
    """Parcel values (painted onto the atlas volume) on each hemisphere's fsaverage5 vertices.

    Every vertex gets exactly one parcel's value, or 0 (see the module notes).

    Parameters
    ----------
    img
        The painted volume (one value per parcel, 0 = none).
    labels_img
        The atlas label volume on the same grid: labels are projected and looked up (exact; parcels
        scoring 0 keep their place). Without it the painted values are projected.
    fill_mm
        Parcels grow into the background by at most this distance before projection (0: not at all).
    """
    from nilearn.surface import vol_to_surf

    values = _volume(img)
    if labels_img is None:
        # the distinct painted values play the labels' part
        lut, inverse = np.unique(values, return_inverse=True)
        zero = np.flatnonzero(lut == 0)
        codes = inverse.reshape(values.shape).astype(np.int32) + 1
        if zero.size:
            codes[codes == zero[0] + 1] = 0
        table = np.concatenate([[0.0], lut])
        affine = np.asarray(img.affine, float)
    else:
        labels = np.asarray(labels_img.dataobj)
        if labels.shape[:3] != values.shape or not np.allclose(labels_img.affine, img.affine, atol=1e-4):
            raise InputError("the painted parcel image and the atlas labels are on different grids")
        if not np.array_equal(labels, np.round(labels)) or labels.min(initial=0) < 0:
            raise InputError("atlas labels must be non-negative integers")
        codes = labels.astype(np.int32)
        n = int(codes.max(initial=0)) + 1
        counts = np.bincount(codes.ravel(), minlength=n)
        sums = np.bincount(codes.ravel(), weights=values.ravel(), minlength=n)
        table = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)  # a parcel's (constant) value
        table[0] = 0.0
        affine = np.asarray(labels_img.affine, float)
    codes, affine = _cover_cortex(grow_labels(codes, affine, float(fill_mm)), affine)
    grown = nib.Nifti1Image(codes, affine)
    out = {}
    for hemi in HEMISPHERES:
        tex = vol_to_surf(
            grown,
            _mesh(f"pial_{hemi}"),
            inner_mesh=_mesh(f"white_{hemi}"),
            interpolation="nearest_most_frequent",
        )
        out[hemi] = table[np.asarray(tex).astype(np.int64)]
    return out


def plot_surface_textures(
    textures: dict[str, np.ndarray],
    *,
    threshold: float | str | None = None,
    vmax: float | None = None,
    title: str | None = None,
    cmap: str = "RdBu_r",
    colorbar: bool = True,
    layout: str = "2x2",
    parcels: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Figure:
    """Left/right hemisphere, lateral/medial views of per-vertex values on the inflated fsaverage5.

    Parameters
    ----------
    textures
        ``{"left": (10242,), "right": (10242,)}`` (:func:`project_voxels`, :func:`project_parcels`).
    threshold
        ``|value| < threshold`` is not drawn; ``"20%"`` of ``vmax``; default: only exact zeros hidden.
    vmax
        Colour scale limit, symmetric ``[-vmax, vmax]``; default the largest ``|value|`` drawn.
    layout
        ``2x2`` (columns left/right, rows lateral/medial) or ``1x4``.
    parcels
        Colour each face by the median of its vertices (one parcel's value) instead of the mean.

    Returns
    -------
    matplotlib.figure.Figure
        On an Agg canvas; each panel's axes is labelled ``"<hemisphere> <view>"`` (``ax.get_label()``).
    """
    from nilearn import plotting

    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    missing = [h for h in HEMISPHERES if h not in textures]
    if missing:
        raise InputError(f"surface values missing for the {' and '.join(missing)} hemisphere")
    data = {h: np.nan_to_num(np.asarray(textures[h], float), nan=0.0) for h in HEMISPHERES}
    biggest = max(float(np.max(np.abs(d), initial=0.0)) for d in data.values())
    vmax = float(vmax) if vmax else (biggest if biggest > 0 else 1.0)
    thr = resolve_threshold(threshold, vmax)
    if thr >= vmax:
        raise InputError(f"threshold {thr:g} hides the whole map (largest |value| {vmax:g})")
    rows, cols = (2, 2) if layout == "2x2" else (1, 4)
    panel_w, panel_h = (3.2, 2.2) if layout == "2x2" else (2.6, 1.9)
    top = 0.45 if title else 0.1
    bar = 0.9 if colorbar else 0.0
    figsize = figsize or (cols * panel_w + bar, rows * panel_h + top)
    fig = new_figure(figsize, dpi=dpi)
    width, height = figsize
    grid_w = 1.0 - bar / width
    grid_h = 1.0 - top / height
    for (r, c), (hemi, view) in _PANELS[layout].items():
        rect = (c * grid_w / cols, grid_h - (r + 1) * grid_h / rows, grid_w / cols, grid_h / rows)
        ax = fig.add_axes(rect, projection="3d", label=f"{hemi} {view}")
        plotting.plot_surf_stat_map(
            _mesh(f"infl_{hemi}"),
            data[hemi],
            bg_map=fsaverage5()[f"sulc_{hemi}"],
            hemi=hemi,
            view=view,
            engine="matplotlib",
            cmap=cmap,
            colorbar=False,
            avg_method="median" if parcels else "mean",
            threshold=thr,
            vmax=vmax,
            symmetric_cbar=True,
            axes=ax,
            figure=fig,
        )
        ax.set_box_aspect(None, zoom=1.5)  # type: ignore[call-arg]  # fill the panel (nilearn's 1.3 leaves wide margins)
        ax.text2D(  # type: ignore[attr-defined]
            0.5, 0.08, f"{hemi} {view}", transform=ax.transAxes, ha="center", va="bottom", fontsize=8
        )
    if colorbar:
        cax = fig.add_axes((grid_w + 0.25 * bar / width, 0.15 * grid_h, 0.18 * bar / width, 0.7 * grid_h))
        sm = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=cmap)
        cb = fig.colorbar(sm, cax=cax)
        if thr > 0:
            cax.axhspan(-thr, thr, color="0.8", zorder=3)  # hidden values
        cb.ax.tick_params(labelsize=8)
    if title:
        fig.text(0.01, 1.0 - 0.08 / height, title, ha="left", va="top", fontsize=11)
    return fig


def plot_voxel_surface(img: nib.spatialimages.SpatialImage, **kwargs: Any) -> Figure:
    """A voxel map (an FNM map) on the inflated fsaverage5 cortex (see :func:`plot_surface_textures`)."""
    return plot_surface_textures(project_voxels(img), **kwargs)


def plot_parcel_surface(
    img: nib.spatialimages.SpatialImage,
    *,
    labels_img: nib.spatialimages.SpatialImage | None = None,
    fill_mm: float = FILL_MM,
    **kwargs: Any,
) -> Figure:
    """Parcel values painted on their atlas (AFNM scores) on the inflated fsaverage5 cortex.

    Projection as :func:`project_parcels` (one parcel per vertex), faces coloured by the median of
    their vertices; options as :func:`plot_surface_textures`.
    """
    textures = project_parcels(img, labels_img=labels_img, fill_mm=fill_mm)
    return plot_surface_textures(textures, parcels=True, **kwargs)
