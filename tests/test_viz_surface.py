"""Cortical surface figures (lakepipe.viz.surface): projections onto fsaverage5 and rendered pixels.

Synthetic volumes on a 4 mm MNI grid keep the projections fast; figures are rendered to PNG at a
small dpi and checked by their pixels: drawn (not blank, several colours), coloured where the map is
(a map positive only at x < 0 colours the left-hemisphere panels only), and the views differ.
"""

from __future__ import annotations

import io
import time

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from lakepipe.errors import InputError
from lakepipe.viz.figures import figure_bytes
from lakepipe.viz.surface import (
    fsaverage5,
    grow_labels,
    plot_parcel_surface,
    plot_voxel_surface,
    project_parcels,
    project_voxels,
)

AFFINE = np.array([[4.0, 0, 0, -90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
SHAPE = (46, 55, 46)
DPI = 40  # small renders: the pixel statistics need only the panels' rough content
PANELS = ("left lateral", "left medial", "right lateral", "right medial")


def _xyz():
    ijk = np.indices(SHAPE).reshape(3, -1).T.astype(float)
    return (ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]).reshape(*SHAPE, 3)


def _left_lateral_blob():
    """Positive only at x < -12 mm: a broad Gaussian on the left lateral cortex (x = -45)."""
    xyz = _xyz()
    d2 = np.sum((xyz - [-45.0, -20.0, 15.0]) ** 2, axis=-1)
    vol = 3.0 * np.exp(-d2 / (2 * 18.0**2))
    vol[xyz[..., 0] >= -12] = 0.0
    return nib.Nifti1Image(vol.astype(np.float32), AFFINE)


def _cube_atlas():
    """Cubes of 16 mm filling the box: label = 1 + cube number; the score of a cube is positive when
    its centre is at x < 0 and 0 otherwise (distinct values, so blends are recognisable)."""
    xyz = _xyz()
    cell = np.floor((xyz + [96.0, 128.0, 80.0]) / 16.0).astype(int)
    dims = cell.max(axis=(0, 1, 2)) + 1
    labels = 1 + np.ravel_multi_index(tuple(np.moveaxis(cell, -1, 0)), dims)
    n = int(labels.max()) + 1
    centre_x = np.bincount(labels.ravel(), weights=xyz[..., 0].ravel(), minlength=n) / np.maximum(
        np.bincount(labels.ravel(), minlength=n), 1
    )
    rng = np.random.default_rng(3)
    scores = np.where(centre_x < 0, rng.uniform(1.0, 3.0, n), 0.0)
    scores[0] = 0.0
    return labels.astype(np.int32), scores


def _pixels(fig):
    """The figure as a PNG, decoded: (H, W, 3) floats in [0, 1]."""
    return mpimg.imread(io.BytesIO(figure_bytes(fig, "png")))[..., :3]


def _panel(fig, rgb, label):
    (ax,) = [a for a in fig.axes if a.get_label() == label]
    (x0, y0), (x1, y1) = ax.get_position().get_points()
    h, w = rgb.shape[:2]
    return rgb[int((1 - y1) * h) : int((1 - y0) * h), int(x0 * w) : int(x1 * w)]


def _coloured(px):
    """Pixels that are not grey (the sulcal background, text and paper are grey levels)."""
    return int(np.sum(px.max(axis=-1) - px.min(axis=-1) > 0.15))


def _drawn(px):
    return int(np.sum(px.min(axis=-1) < 0.95))  # not white paper


@pytest.fixture(scope="module", autouse=True)
def meshes():
    fsaverage5()  # load the packaged meshes once, outside the timings


def test_packaged_fsaverage5():
    fs = fsaverage5()
    for hemi in ("left", "right"):
        for kind in ("pial", "white", "infl"):
            coords, faces = fs[f"{kind}_{hemi}"]
            assert coords.shape == (10242, 3) and faces.shape == (20480, 3)
        assert fs[f"sulc_{hemi}"].shape == (10242,)
    # hemispheres where they belong (MNI x < 0 is left)
    assert fs["pial_left"][0][:, 0].mean() < -20 < 20 < fs["pial_right"][0][:, 0].mean()


def test_voxel_map_colours_only_the_left_hemisphere():
    t0 = time.perf_counter()
    img = _left_lateral_blob()
    tex = project_voxels(img)
    assert tex["left"].max() > 2.0 and np.abs(tex["right"]).max() == 0.0
    fig = plot_voxel_surface(img, threshold=0.3, title="FNM zmap", dpi=DPI)
    rgb = _pixels(fig)
    px = {p: _panel(fig, rgb, p) for p in PANELS}
    for p in PANELS:  # every panel shows a brain: a good share of non-white pixels, many colours
        assert _drawn(px[p]) > 0.2 * px[p].shape[0] * px[p].shape[1], p
        assert np.unique(px[p].reshape(-1, 3), axis=0).shape[0] > 20, p
    lateral = _coloured(px["left lateral"])
    assert lateral > 0.05 * px["left lateral"].shape[0] * px["left lateral"].shape[1]
    assert _coloured(px["right lateral"]) + _coloured(px["right medial"]) < 0.01 * lateral
    # the blob sits on the lateral surface: the two views of one hemisphere differ
    assert _coloured(px["left medial"]) < 0.5 * lateral
    assert np.mean(np.abs(px["left lateral"] - px["left medial"][: px["left lateral"].shape[0]])) > 0.02
    # the colour bar and the title are there
    assert len(fig.axes) == 5 and any(t.get_text() == "FNM zmap" for t in fig.texts)
    assert time.perf_counter() - t0 < 10  # ~1-2 s here; generous for a loaded 2-core machine


def test_parcel_projection_takes_one_parcel_per_vertex():
    t0 = time.perf_counter()
    labels, scores = _cube_atlas()
    painted = nib.Nifti1Image(scores[labels].astype(np.float32), AFFINE)
    allowed = set(np.unique(painted.get_fdata()).tolist())  # the float32 painted values
    with_labels = project_parcels(painted, labels_img=nib.Nifti1Image(labels, AFFINE))
    without = project_parcels(painted)
    fs = fsaverage5()
    for hemi in ("left", "right"):
        for tex in (with_labels[hemi], without[hemi]):
            assert set(np.unique(tex).tolist()) <= allowed  # exact parcel values only: no blends
        # independently: the cube under each vertex's mid-thickness point, nearest voxel
        mid = (fs[f"pial_{hemi}"][0] + fs[f"white_{hemi}"][0]) / 2
        ijk = np.rint((mid - AFFINE[:3, 3]) / 4.0).astype(int)
        expected = painted.get_fdata()[tuple(ijk.T)]  # = that cube's score (as float32)
        assert np.mean(with_labels[hemi] == expected) > 0.9  # the rest: vertices near a cube border
    assert (with_labels["left"] > 0).mean() > 0.5 and (with_labels["right"] > 0).mean() < 0.05
    # linear interpolation of the same volume does blend neighbouring parcels' scores
    blended = project_voxels(painted)["left"]
    assert np.mean([v not in allowed for v in blended]) > 0.1
    assert time.perf_counter() - t0 < 10


def test_grow_fills_only_near_background_with_the_nearest_label():
    labels = np.zeros((12, 9, 7), np.int32)
    labels[2:4, 2:4, 2:4] = 5
    labels[8:10, 5:7, 3:5] = 9
    spacing = np.array([2.0, 2.0, 3.0])
    grown = grow_labels(labels, np.diag([*spacing, 1.0]), 4.5)
    # brute force: every voxel's distance (mm) to every labelled voxel
    ijk = np.indices(labels.shape).reshape(3, -1).T * spacing
    lab = labels.ravel()[labels.ravel() > 0]
    d = np.linalg.norm(ijk[:, None] - ijk[labels.ravel() > 0][None], axis=-1)
    closest = np.isclose(d, d.min(axis=1, keepdims=True))
    expected = np.where(d.min(axis=1) <= 4.5, lab[np.argmin(d, axis=1)], 0)
    # voxels equidistant from both parcels may go either way
    tie = np.array([len(set(lab[row])) > 1 for row in closest]) & (d.min(axis=1) <= 4.5)
    assert tie.sum() < 0.05 * tie.size
    np.testing.assert_array_equal(grown.ravel()[~tie], expected[~tie])
    assert set(np.unique(grown.ravel()[tie]).tolist()) <= {5, 9}
    assert (grown > 0).sum() > (labels > 0).sum()


def test_parcel_figure_left_only_and_layouts():
    t0 = time.perf_counter()
    labels, scores = _cube_atlas()
    painted = nib.Nifti1Image(scores[labels].astype(np.float32), AFFINE)
    fig = plot_parcel_surface(painted, labels_img=nib.Nifti1Image(labels, AFFINE), layout="1x4", dpi=DPI)
    assert [a.get_label() for a in fig.axes[:4]] == [
        "left lateral",
        "left medial",
        "right medial",
        "right lateral",
    ]
    rgb = _pixels(fig)
    px = {p: _panel(fig, rgb, p) for p in PANELS}
    left = _coloured(px["left lateral"]) + _coloured(px["left medial"])
    right = _coloured(px["right lateral"]) + _coloured(px["right medial"])
    assert left > 0.1 * px["left lateral"].size / 3 and right < 0.05 * left
    with pytest.raises(InputError, match="hides the whole map"):
        plot_parcel_surface(painted, threshold=5.0)
    with pytest.raises(InputError, match="layout"):
        plot_voxel_surface(painted, layout="3x3")
    assert time.perf_counter() - t0 < 10


def test_parcels_of_a_partial_field_of_view():
    """An image that does not cover the whole cortex (only x < 0 here) still projects."""
    labels, scores = _cube_atlas()
    painted = scores[labels].astype(np.float32)
    full = project_parcels(nib.Nifti1Image(painted, AFFINE), fill_mm=0)
    half = project_parcels(nib.Nifti1Image(painted[:23], AFFINE), fill_mm=0)  # x <= -2 mm
    assert np.mean(half["left"] == full["left"]) > 0.99  # only ties at the cut may differ
    assert np.mean(half["right"] == full["right"]) > 0.99 and np.mean(half["right"] != 0) < 0.01
