"""Region assignment (lakepipe.compute.assign): known blobs in known atlas regions are recovered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lakepipe.compute.assign import COLUMNS, assign, component_summary
from lakepipe.compute.resample import resample_nearest, voxel_to_world
from tests.conftest import shared_atlas

# a flipped, offset 2 mm grid: centroids must go through the affine
AFFINE = np.array([[-2.0, 0, 0, 40], [0, 2, 0, -50], [0, 0, 2, -30], [0, 0, 0, 1]])
SHAPE = (40, 40, 40)


def _ball(shape, centre, radius):
    ijk = np.indices(shape)
    d2 = sum((ijk[a] - centre[a]) ** 2 for a in range(3))
    return d2, d2 <= radius**2


def _toy_atlas():
    """Four boxes: label 1 + (i >= 20) + 2 * (j >= 20) for 5 <= k < 35, background elsewhere."""
    i, j, k = np.indices(SHAPE)
    labels = (1 + (i >= 20) + 2 * (j >= 20)).astype(np.int32)
    labels[(k < 5) | (k >= 35)] = 0
    table = pd.DataFrame(
        {
            "index": [1, 2, 3, 4],
            "name": ["A", "B", "C", "D"],
            "network": ["net1", "net1", "net2", None],
            "hemisphere": ["R", "L", "R", "L"],
        }
    )
    return labels, table


@pytest.fixture(scope="module")
def toy():
    labels, table = _toy_atlas()
    rng = np.random.default_rng(0)
    v = rng.uniform(-1.0, 1.0, SHAPE)  # noise: never above the threshold of 1.5
    d2, ball_a = _ball(SHAPE, (10, 10, 15), 3)  # positive cone in region 1, peak 5 at the centre
    v[ball_a] = 5 - np.sqrt(d2[ball_a])
    d2, ball_b = _ball(SHAPE, (30, 30, 15), 2)  # negative cone in region 4, peak -4
    v[ball_b] = -(4 - np.sqrt(d2[ball_b]))
    v[14:24, 5:8, 25:28] = 3.0  # straddles regions 1 (i < 20: 6 of 10 columns) and 2 (4 of 10)
    v[5:8, 30:33, 20:23] = 2.5  # positive box touching ...
    v[8:11, 30:33, 20:23] = -2.5  # ... a negative box (both in region 3)
    v[30:33, 5:8, 2:8] = 2.0  # half outside the atlas (k < 5)
    v[:, :, 38:] = np.nan  # no data
    return v, labels, table, int(ball_a.sum()), int(ball_b.sum())


def test_components_centroids_volumes_and_regions(toy):
    v, labels, table, n_a, n_b = toy
    df = assign(v, AFFINE, labels, table, threshold=1.5)
    assert list(df.columns) == list(COLUMNS)
    best = component_summary(df)
    assert len(best) == 6  # A, B, straddling box, +box, -box, half-outside box
    # numbered by decreasing |peak|
    assert best["peak_value"].tolist()[:3] == [5.0, -4.0, 3.0]
    a, b = best.iloc[0], best.iloc[1]
    assert a["n_voxels"] == n_a == 123 and a["volume_mm3"] == pytest.approx(123 * 8.0)
    np.testing.assert_allclose(
        a[["centroid_x", "centroid_y", "centroid_z"]].astype(float),
        voxel_to_world(AFFINE, [10, 10, 15]),
        atol=1e-9,
    )
    np.testing.assert_allclose(
        a[["peak_x", "peak_y", "peak_z"]].astype(float), voxel_to_world(AFFINE, [10, 10, 15])
    )
    assert (a["region_name"], a["network"], a["hemisphere"], a["overlap_fraction"]) == ("A", "net1", "R", 1.0)
    assert a["region_coverage"] == pytest.approx(n_a / (labels == 1).sum())
    assert (b["sign"], b["n_voxels"], b["region_name"]) == (-1, n_b, "D") and pd.isna(b["network"])
    np.testing.assert_allclose(
        b[["centroid_x", "centroid_y", "centroid_z"]].astype(float),
        voxel_to_world(AFFINE, [30, 30, 15]),
        atol=1e-9,
    )
    # the straddling cluster: both regions, ranked by overlap fraction
    c = df[df["component"] == 3].sort_values("rank")
    assert c["region_name"].tolist() == ["A", "B"]
    np.testing.assert_allclose(c["overlap_fraction"], [0.6, 0.4])
    assert c["overlap_voxels"].tolist() == [54, 36]
    np.testing.assert_allclose(c["mean_value"], [3.0, 3.0])
    # half outside the atlas
    h = best[best["n_voxels"] == 54].iloc[-1]
    assert h["unlabelled_fraction"] == pytest.approx(0.5) and h["region_name"] == "B"


def test_correlation_definition(toy):
    """Pearson r of sign*map with the region indicator over the finite voxels (point-biserial)."""
    v, labels, table, _, _ = toy
    df = assign(v, AFFINE, labels, table, threshold=1.5)
    ok = np.isfinite(v)
    for _, row in df.iterrows():
        x = row["sign"] * v[ok]
        expected = np.corrcoef(x, (labels[ok] == row["region"]).astype(float))[0, 1]
        assert row["correlation"] == pytest.approx(expected, abs=1e-10)
    # a brain mask restricts the domain
    mask = np.zeros(SHAPE, bool)
    mask[:, :, 10:30] = True
    masked = assign(v, AFFINE, labels, table, threshold=1.5, mask=mask)
    row = masked[(masked["component"] == 1)].iloc[0]
    expected = np.corrcoef(v[mask], (labels[mask] == 1).astype(float))[0, 1]
    assert row["correlation"] == pytest.approx(expected, abs=1e-10)
    # the cluster's own region correlates positively, for negative clusters too
    best = component_summary(df)
    assert (best.loc[best["component"] <= 2, "correlation"] > 0).all()


def test_modes_and_filters(toy):
    v, labels, table, _, _ = toy
    signed = component_summary(assign(v, AFFINE, labels, table, threshold=1.5))
    absolute = component_summary(assign(v, AFFINE, labels, table, threshold=1.5, mode="absolute"))
    assert len(absolute) == len(signed) - 1  # the touching +/- boxes merge
    assert 54 in absolute["n_voxels"].tolist() and 27 in signed["n_voxels"].tolist()
    positive = component_summary(assign(v, AFFINE, labels, table, threshold=1.5, mode="positive"))
    negative = component_summary(assign(v, AFFINE, labels, table, threshold=1.5, mode="negative"))
    assert (positive["sign"] == 1).all() and (negative["sign"] == -1).all()
    assert len(positive) + len(negative) == len(signed)
    big = component_summary(assign(v, AFFINE, labels, table, threshold=1.5, min_voxels=100))
    assert big["n_voxels"].tolist() == [123]
    top1 = assign(v, AFFINE, labels, table, threshold=1.5, max_regions=1)
    assert top1.groupby("component").size().max() == 1
    # 6-connectivity splits a diagonal pair that 26-connectivity joins
    w = np.zeros((5, 5, 5))
    w[1, 1, 1] = w[2, 2, 2] = 1.0
    assert len(assign(w, np.eye(4), np.ones((5, 5, 5), int), threshold=0.5)) == 1
    assert len(assign(w, np.eye(4), np.ones((5, 5, 5), int), threshold=0.5, connectivity=6)) == 2
    # nothing above threshold: an empty table with the same columns
    empty = assign(v, AFFINE, labels, table, threshold=10.0)
    assert empty.empty and list(empty.columns) == list(COLUMNS)
    with pytest.raises(ValueError):
        assign(v, AFFINE, labels, table, threshold=1.5, mode="both")


def test_tsv_round_trip(toy, tmp_path):
    from lakepipe.io.bidsout import write_tsv

    v, labels, table, _, _ = toy
    df = assign(v, AFFINE, labels, table, threshold=1.5)
    path = write_tsv(tmp_path / "assign.tsv", df, {"Threshold": 1.5})
    back = pd.read_csv(path, sep="\t", na_values="n/a")
    assert list(back.columns) == list(COLUMNS) and len(back) == len(df)
    np.testing.assert_allclose(back["overlap_fraction"], df["overlap_fraction"].astype(float), rtol=1e-5)
    assert (tmp_path / "assign.json").exists()


def test_schaefer_blobs_recovered():
    """Gaussian blobs deep inside three Schaefer-100 parcels, on the 2 mm grid (atlas at 1 mm)."""
    import nibabel as nib

    from lakepipe.io.labels import read_label_table
    from lakepipe.space import mni152_grid

    nii, txt = shared_atlas("100Parcels7Networks")
    if not nii.exists():
        pytest.skip(f"shared atlas missing: {nii}")
    img = nib.load(str(nii))
    atlas = np.asarray(img.dataobj).astype(np.int32)
    table = read_label_table(txt)
    grid = mni152_grid(2)
    on_grid = resample_nearest(atlas, img.affine, grid.shape, grid.affine)
    targets = {"7Networks_LH_SomMot_1": 4.0, "7Networks_RH_Default_Par_1": 3.5, "7Networks_LH_Vis_3": -4.0}
    rng = np.random.default_rng(1)
    v = rng.normal(0, 0.2, grid.shape).clip(-0.6, 0.6)
    ijk = np.indices(grid.shape)
    sigma = 1.5  # voxels; with threshold 1.5 and peaks >= 3, each cluster is the ball d^2 <= 4 (33 voxels)
    centres = {}
    for name, peak in targets.items():
        label = int(table.loc[table["name"] == name, "index"].iloc[0])
        box = ndimage.find_objects((on_grid == label).astype(int))[0]
        box = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in box)
        depth = ndimage.distance_transform_edt(on_grid[box] == label)
        centre = np.array(np.unravel_index(np.argmax(depth), depth.shape)) + [s.start for s in box]
        assert depth.max() >= 3, f"{name} has no voxel 3 voxels deep"
        d2 = sum((ijk[a] - centre[a]) ** 2 for a in range(3))
        blob = peak * np.exp(-d2 / (2 * sigma**2))
        v = np.where(d2 <= 16, blob, v)
        centres[name] = (centre, peak, int((np.abs(blob) > 1.5).sum()))
    df = assign(v, grid.affine, atlas, table, labels_affine=img.affine, threshold=1.5)
    best = component_summary(df).set_index("region_name", drop=False)
    assert sorted(best.index) == sorted(targets)
    for name, (centre, peak, n) in centres.items():
        row = best.loc[name]
        assert row["overlap_fraction"] == 1.0
        assert row["n_voxels"] == n and row["volume_mm3"] == pytest.approx(n * 8.0)
        dist = np.linalg.norm(
            row[["centroid_x", "centroid_y", "centroid_z"]].astype(float)
            - voxel_to_world(grid.affine, centre)
        )
        assert dist <= 2.0  # within one 2 mm voxel
        assert row["peak_value"] == pytest.approx(peak)
        assert row["sign"] == np.sign(peak)
        assert row["network"] == name.split("_")[2]
        assert row["correlation"] > 0
