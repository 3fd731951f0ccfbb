"""siibra-style assignment to probabilistic and label atlases (lakepipe.compute.assign.assign_maps).

Every metric is recomputed here from its definition with plain boolean masks and numpy sums, on
two Gaussian probability maps and input blobs that straddle them, with the atlas on the map's grid
and on another grid (1 mm, offset by fractions of a voxel, other orientation).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import resample_img
from scipy import ndimage

from lakepipe.compute.assign import (
    MAPS_COLUMNS,
    SIIBRA_COLUMN_NAMES,
    assign,
    assign_maps,
    assign_maps_images,
    validate_probabilistic_atlas,
)

# the map: 2 mm, x flipped (LAS), offset origin
MAP_AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2, 0, -30], [0, 0, 2, -25], [0, 0, 0, 1]])
MAP_SHAPE = (32, 30, 28)
# the atlas: 1 mm, RAS, voxel centres offset from the map's by fractions of a voxel (so resampling
# really interpolates), covering the map's field of view
ATLAS_AFFINE = np.array([[1.0, 0, 0, -36.5], [0, 1, 0, -33.25], [0, 0, 1, -28.75], [0, 0, 0, 1]])
ATLAS_SHAPE = (70, 66, 62)
CENTRES = np.array([[-8.0, 0.0, 2.0], [8.0, 0.0, 2.0]])  # mm
SIGMA, AMPLITUDE, CUT = 6.0, 0.9, 0.05
THRESHOLD = 1.5
TABLE = pd.DataFrame({"index": [3, 7], "name": ["left_blob", "right_blob"], "hemisphere": ["L", "R"]})

# float64 sums of at most ~27,000 terms of size <= 5: relative rounding error <= n * 2^-53 ~ 3e-12 of
# the sum of |terms|; the correlation from moments loses at most a few more digits (E[p] ~ 0.03 against
# sd(p) ~ 0.1, so the cancellation in E[p^2] - E[p]^2 costs < 1 digit); 1e-9 leaves a wide margin
RTOL = 1e-9


def _world(shape, affine):
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    return (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)


def _gaussian_maps(shape, affine):
    """(X, Y, Z, 2) probabilities: 0.9 exp(-d^2 / 2 sigma^2), cut to 0 below 0.05 (finite supports)."""
    xyz = _world(shape, affine)
    maps = []
    for c in CENTRES:
        d2 = np.sum((xyz - c) ** 2, axis=-1)
        p = AMPLITUDE * np.exp(-d2 / (2 * SIGMA**2))
        maps.append(np.where(p >= CUT, p, 0.0))
    return np.stack(maps, axis=-1)


def _input_map():
    """Noise below the threshold, a positive cone straddling both maps, a negative cone in map 1's
    tail, a small positive box outside both maps, and a slab of NaN (no data)."""
    rng = np.random.default_rng(7)
    v = rng.uniform(-1.0, 1.0, MAP_SHAPE)
    xyz = _world(MAP_SHAPE, MAP_AFFINE)
    d = np.linalg.norm(xyz - [0.0, 0.0, 2.0], axis=-1)
    v = np.where(d < 10, 5.0 - d / 2.5, v)  # straddles the two maps, peak 5 at x = 0
    d = np.linalg.norm(xyz - [-14.0, -8.0, 2.0], axis=-1)
    v = np.where(d < 5, -(4.0 - d / 2.0), v)  # negative, partly inside map 1's support
    box = (np.abs(xyz[..., 0] - 20) <= 2) & (np.abs(xyz[..., 1] - 20) <= 2) & (np.abs(xyz[..., 2] + 15) <= 2)
    v[box] = 2.0  # positive, outside both supports
    v[:, :, -2:] = np.nan
    return v


def _structure_mask(v, row, whole):
    """The row's structure, found independently: the 26-connected supra-threshold component holding
    the peak voxel, or (whole) the sign's supra-threshold set."""
    sign = row["sign"]
    supra = np.nan_to_num(sign * v, nan=-np.inf) > THRESHOLD
    if whole:
        return supra
    ijk = np.rint(np.linalg.solve(MAP_AFFINE, [row["peak_x"], row["peak_y"], row["peak_z"], 1.0])[:3])
    lab, _ = ndimage.label(supra, structure=np.ones((3, 3, 3)))
    k = lab[tuple(ijk.astype(int))]
    assert k > 0
    return lab == k


def _expected(v, row, p, domain, whole=False):
    """Every metric from its definition (assign_maps docstring), with boolean masks."""
    c = _structure_mask(v, row, whole)
    x = np.where(c, row["sign"] * np.nan_to_num(v), 0.0)
    s = p > 0
    inter = np.sum(c & s)
    ijk = np.argwhere(c)
    centroid = np.floor(ijk.mean(axis=0) + 0.5).astype(int)
    peak = np.unravel_index(np.argmax(np.where(c, x, -np.inf)), v.shape)
    return {
        "n_voxels": c.sum(),
        "overlap_voxels": inter,
        "map_voxels": s.sum(),
        "intersection_over_union": inter / np.sum(c | s),
        "map_containedness": inter / s.sum(),
        "input_containedness": inter / c.sum(),
        "map_weighted_mean": np.sum(p * x) / np.sum(x),
        "input_weighted_mean": np.sum(p * x) / np.sum(p),
        "correlation": np.corrcoef(p[domain], x[domain])[0, 1],
        "map_value_at_peak": p[peak],
        "map_value_at_centroid": p[tuple(centroid)],
        "centroid": MAP_AFFINE[:3, :3] @ ijk.mean(axis=0) + MAP_AFFINE[:3, 3],
        "unlabelled_fraction": None,  # checked separately
    }


def _check_rows(df, v, maps_on_grid, ids, domain, whole=False):
    assert list(df.columns) == list(MAPS_COLUMNS)
    checked = 0
    for _, row in df[df["rank"] > 0].iterrows():
        p = maps_on_grid[..., list(ids).index(row["region"])]
        exp = _expected(v, row, p, domain, whole)
        for key, want in exp.items():
            if key == "centroid":
                got = row[["centroid_x", "centroid_y", "centroid_z"]].to_numpy(float)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
            elif want is not None:
                assert row[key] == pytest.approx(want, rel=RTOL, abs=1e-12), key
        checked += 1
    return checked


@pytest.fixture(scope="module")
def data():
    v = _input_map()
    return v, np.isfinite(v)


def test_hand_computed_example():
    """Eight voxels in a row: input [0 3 2 2 1 0 0 0] (threshold 0.5), map [0 0 .5 1 1 .5 .25 0]."""
    v = np.array([0, 3, 2, 2, 1, 0, 0, 0], float).reshape(8, 1, 1)
    p = np.array([0, 0, 0.5, 1, 1, 0.5, 0.25, 0]).reshape(8, 1, 1, 1)
    row = assign_maps(v, np.eye(4), p, threshold=0.5).iloc[0]
    # C = voxels 1-4, S = voxels 2-6
    assert (row["n_voxels"], row["overlap_voxels"], row["map_voxels"], row["region"]) == (4, 3, 5, 1)
    assert row["intersection_over_union"] == pytest.approx(3 / 6)  # |C & S| = 3, |C | S| = 6
    assert row["map_containedness"] == pytest.approx(3 / 5)  # / |S|
    assert row["input_containedness"] == pytest.approx(3 / 4)  # / |C|
    assert row["map_weighted_mean"] == pytest.approx(4 / 8)  # sum p x = 1 + 2 + 1, sum x = 8
    assert row["input_weighted_mean"] == pytest.approx(4 / 3.25)  # sum p = 3.25
    assert row["map_value_at_peak"] == 0.0  # peak (value 3) at voxel 1
    assert row["map_value_at_centroid"] == 1.0  # centroid 2.5 -> voxel 3
    # over all 8 voxels: E[x] = 1, E[p] = 3.25/8, E[px] = 4/8, E[x^2] = 18/8, E[p^2] = 2.5625/8
    cov = 4 / 8 - 3.25 / 8
    var_x, var_p = 18 / 8 - 1, 2.5625 / 8 - (3.25 / 8) ** 2
    assert row["correlation"] == pytest.approx(cov / np.sqrt(var_x * var_p))
    assert row["centroid_x"] == pytest.approx(2.5) and row["volume_mm3"] == 4.0


def test_probabilistic_same_grid_matches_definitions(data):
    v, finite = data
    maps = _gaussian_maps(MAP_SHAPE, MAP_AFFINE)
    df = assign_maps(v, MAP_AFFINE, maps, TABLE, threshold=THRESHOLD)
    # the straddling cone (component 1, peak 5) meets both maps; the negative cone meets map 1 only;
    # the box meets none
    assert df.loc[df["component"] == 1, "region_name"].tolist() == ["left_blob", "right_blob"] or df.loc[
        df["component"] == 1, "region_name"
    ].tolist() == ["right_blob", "left_blob"]
    neg = df[df["sign"] == -1]
    assert neg["region_name"].tolist() == ["left_blob"] and neg["hemisphere"].tolist() == ["L"]
    box = df[(df["sign"] == 1) & (df["peak_value"] == 2.0)]
    assert box["rank"].tolist() == [0] and box["unlabelled_fraction"].tolist() == [1.0]
    assert _check_rows(df, v, maps, TABLE["index"], finite) == 3
    # symmetric maps, symmetric cone on a grid symmetric about x = 0: both regions score alike
    c1 = df[df["component"] == 1]
    assert c1["map_weighted_mean"].iloc[0] == pytest.approx(c1["map_weighted_mean"].iloc[1], rel=1e-12)
    # a brain mask restricts the correlation's domain only
    mask = np.zeros(MAP_SHAPE, bool)
    mask[2:30, 2:28, :14] = True  # cuts the straddling cone (k = 13.5 +- 5) in two
    masked = assign_maps(v, MAP_AFFINE, maps, TABLE, threshold=THRESHOLD, mask=mask)
    assert _check_rows(masked, v, maps, TABLE["index"], finite & mask) == 3
    np.testing.assert_array_equal(masked["input_containedness"], df["input_containedness"])
    assert not np.allclose(masked["correlation"].dropna(), df["correlation"].dropna())


def test_probabilistic_other_grid_matches_definitions(data):
    """Atlas at 1 mm on another grid: resampled linearly (nilearn) onto the 2 mm map grid."""
    v, finite = data
    maps = _gaussian_maps(ATLAS_SHAPE, ATLAS_AFFINE)
    df = assign_maps(v, MAP_AFFINE, maps, TABLE, threshold=THRESHOLD, atlas_affine=ATLAS_AFFINE)
    img = nib.Nifti1Image(maps, ATLAS_AFFINE)
    on_grid = resample_img(
        img,
        target_affine=MAP_AFFINE,
        target_shape=MAP_SHAPE,
        interpolation="linear",
        force_resample=True,
        copy_header=True,
    ).get_fdata()
    assert _check_rows(df, v, on_grid, TABLE["index"], finite) == 3
    # geometry, independently of nilearn: the resampled maps are the analytic Gaussians at the map's
    # voxel centres up to the trilinear interpolation error h^2/8 * sum_axes max|d2p/dx2| with h = 1 mm,
    # |d2p/dx2| <= A / sigma^2: 3/8 * 0.9/36 ~ 0.0094 (away from the cut at p = 0.05)
    analytic = _gaussian_maps(MAP_SHAPE, MAP_AFFINE)
    for _, row in df[df["rank"] > 0].iterrows():
        j = list(TABLE["index"]).index(row["region"])
        ijk = np.rint(np.linalg.solve(MAP_AFFINE, [row["peak_x"], row["peak_y"], row["peak_z"], 1.0])[:3])
        want = analytic[(*ijk.astype(int), j)]
        if want > 2 * CUT:
            assert row["map_value_at_peak"] == pytest.approx(want, abs=0.0094)
    # the same atlas sampled on the map grid directly gives nearly the same numbers
    direct = assign_maps(v, MAP_AFFINE, analytic, TABLE, threshold=THRESHOLD)
    np.testing.assert_allclose(df["map_weighted_mean"], direct["map_weighted_mean"], atol=0.0094)


def test_label_atlas_equals_its_indicator_maps(data):
    v, finite = data
    p = _gaussian_maps(ATLAS_SHAPE, ATLAS_AFFINE)
    labels = np.zeros(ATLAS_SHAPE, np.int16)
    labels[p[..., 0] > 0.3] = 3
    labels[p[..., 1] > 0.3] = 7  # the two overlap near x = 0: region 7 wins there
    indicators = np.stack([labels == 3, labels == 7], axis=-1).astype(np.float32)
    # other grid: nearest neighbour for labels; the same for the indicators with interpolation="nearest"
    by_label = assign_maps(v, MAP_AFFINE, labels, TABLE, threshold=THRESHOLD, atlas_affine=ATLAS_AFFINE)
    by_maps = assign_maps(
        v,
        MAP_AFFINE,
        indicators,
        TABLE,
        threshold=THRESHOLD,
        atlas_affine=ATLAS_AFFINE,
        interpolation="nearest",
    )
    assert len(by_label) >= 3
    pd.testing.assert_frame_equal(by_label, by_maps, check_exact=False, rtol=1e-12)
    # ... and both follow the definitions on nilearn's nearest-neighbour resampling of the labels
    on_grid = resample_img(
        nib.Nifti1Image(labels, ATLAS_AFFINE),
        target_affine=MAP_AFFINE,
        target_shape=MAP_SHAPE,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    ).get_fdata()
    ind_on_grid = np.stack([on_grid == 3, on_grid == 7], axis=-1).astype(float)
    assert _check_rows(by_label, v, ind_on_grid, [3, 7], finite) == len(by_label[by_label["rank"] > 0])
    # the counts agree with the label-atlas assign: containedness = its overlap fraction / coverage
    old = assign(v, MAP_AFFINE, labels, TABLE, threshold=THRESHOLD, labels_affine=ATLAS_AFFINE)
    hits = by_label[by_label["rank"] > 0]
    merged = hits.merge(old[old["rank"] > 0], on=["component", "region"], suffixes=("", "_old"))
    assert len(merged) == len(hits)
    np.testing.assert_allclose(merged["input_containedness"], merged["overlap_fraction"], rtol=1e-12)
    np.testing.assert_allclose(merged["map_containedness"], merged["region_coverage"], rtol=1e-12)
    # same grid
    same_l = assign_maps(v, MAP_AFFINE, on_grid.astype(int), TABLE, threshold=THRESHOLD)
    same_m = assign_maps(v, MAP_AFFINE, ind_on_grid, TABLE, threshold=THRESHOLD)
    pd.testing.assert_frame_equal(same_l, same_m, check_exact=False, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:Resampling binary images:UserWarning")  # nilearn's, intended here
def test_equal_shapes_with_different_affines_are_different_grids(data):
    """A label volume stored RAS on the map's (LAS) shape is the mirror image of the same array."""
    v, _ = data
    i = np.indices(MAP_SHAPE)[0]
    labels = np.where(i < MAP_SHAPE[0] // 2, 3, 7).astype(np.int32)  # i < 16: x > 0 on the map grid
    flipped = MAP_AFFINE @ np.array(
        [[-1.0, 0, 0, MAP_SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )  # the same voxel centres, i reversed
    table = pd.DataFrame({"index": [3, 7], "name": ["x_positive", "x_negative"]})
    ref = assign_maps(v, MAP_AFFINE, labels, table, threshold=THRESHOLD)
    mirrored = assign_maps(v, MAP_AFFINE, labels[::-1], table, threshold=THRESHOLD, atlas_affine=flipped)
    pd.testing.assert_frame_equal(ref, mirrored)
    # the same for a 4D atlas (voxel centres coincide, so linear interpolation is exact too)
    maps = np.stack([labels[::-1] == 3, labels[::-1] == 7], axis=-1).astype(float)
    for interpolation in ("nearest", "linear"):
        as_maps = assign_maps(
            v, MAP_AFFINE, maps, table, threshold=THRESHOLD, atlas_affine=flipped, interpolation=interpolation
        )
        pd.testing.assert_frame_equal(ref, as_maps, check_exact=False, rtol=1e-12)
    wrong = assign_maps(v, MAP_AFFINE, labels[::-1], table, threshold=THRESHOLD)  # affine ignored
    neg = lambda df: df.loc[df["sign"] == -1, "region_name"].tolist()  # noqa: E731
    # the negative cone lies at x = -14 mm: i > 16 on the LAS map grid, label 7 there
    assert neg(ref) == ["x_negative"] and neg(wrong) == ["x_positive"]


def test_whole_map_mode(data):
    """split_components=False: one structure per sign (siibra's split_components=False)."""
    v, finite = data
    maps = _gaussian_maps(MAP_SHAPE, MAP_AFFINE)
    df = assign_maps(v, MAP_AFFINE, maps, TABLE, threshold=THRESHOLD, split_components=False)
    assert sorted(set(df["sign"])) == [-1, 1] and df["component"].nunique() == 2
    pos = df[df["sign"] == 1]
    assert pos["n_voxels"].iloc[0] == int(np.sum(np.nan_to_num(v, nan=0) > THRESHOLD))
    assert _check_rows(df, v, maps, TABLE["index"], finite, whole=True) == len(df[df["rank"] > 0])
    # the box is part of the positive structure now: not every voxel is in a region
    assert 0 < pos["unlabelled_fraction"].iloc[0] < 1


def test_map_threshold_and_continuous_interpolation(data):
    v, finite = data
    maps = _gaussian_maps(MAP_SHAPE, MAP_AFFINE)
    df = assign_maps(v, MAP_AFFINE, maps, TABLE, threshold=THRESHOLD, map_threshold=0.4)
    cut = np.where(maps > 0.4, maps, 0.0)
    assert _check_rows(df, v, cut, TABLE["index"], finite) >= 2
    atlas = _gaussian_maps(ATLAS_SHAPE, ATLAS_AFFINE)
    cont = assign_maps(
        v,
        MAP_AFFINE,
        atlas,
        TABLE,
        threshold=THRESHOLD,
        atlas_affine=ATLAS_AFFINE,
        interpolation="continuous",
    )
    ref = resample_img(
        nib.Nifti1Image(atlas, ATLAS_AFFINE),
        target_affine=MAP_AFFINE,
        target_shape=MAP_SHAPE,
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    ).get_fdata()
    assert _check_rows(cont, v, np.clip(ref, 0.0, 1.0), TABLE["index"], finite) == len(cont)
    # the cubic spline rings: tiny non-zero probabilities far from the maps (so every cluster, the box
    # too, now meets both regions), which linear interpolation does not produce ...
    lin = assign_maps(v, MAP_AFFINE, atlas, TABLE, threshold=THRESHOLD, atlas_affine=ATLAS_AFFINE)
    assert len(cont) > len(lin[lin["rank"] > 0]) and (cont["rank"] > 0).all()
    assert cont["map_voxels"].min() > lin["map_voxels"].max()
    # ... and map_threshold removes
    cut = assign_maps(
        v,
        MAP_AFFINE,
        atlas,
        TABLE,
        threshold=THRESHOLD,
        atlas_affine=ATLAS_AFFINE,
        interpolation="continuous",
        map_threshold=0.01,
    )
    pairs = lambda df: sorted(zip(df["component"], df["region"].fillna(0), strict=True))  # noqa: E731
    assert pairs(cut) == pairs(lin)


def test_images_wrapper_and_siibra_names(data):
    v, _ = data
    maps = _gaussian_maps(ATLAS_SHAPE, ATLAS_AFFINE).astype(np.float32)
    df = assign_maps_images(
        nib.Nifti1Image(v, MAP_AFFINE), nib.Nifti1Image(maps, ATLAS_AFFINE), TABLE, threshold=THRESHOLD
    )
    ref = assign_maps(v, MAP_AFFINE, maps, TABLE, threshold=THRESHOLD, atlas_affine=ATLAS_AFFINE)
    pd.testing.assert_frame_equal(df, ref)
    assert set(SIIBRA_COLUMN_NAMES) <= set(df.columns)


def test_validation():
    maps = np.zeros((4, 4, 4, 3))
    with pytest.raises(ValueError, match=r"2 rows.*3 maps"):
        validate_probabilistic_atlas(maps, TABLE)
    with pytest.raises(ValueError, match=r"2 rows.*3 maps"):
        assign_maps(np.ones((4, 4, 4)), np.eye(4), maps, TABLE, threshold=0.5)
    assert validate_probabilistic_atlas(maps, ["a", "b", "c"]) == 3
    bad = maps.copy()
    bad[0, 0, 0, 1] = 1.5
    with pytest.raises(ValueError, match="map 1"):
        validate_probabilistic_atlas(bad)
    bad[0, 0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        validate_probabilistic_atlas(bad)
    # round-off above 1 is tolerated
    ok = maps.copy()
    ok[0, 0, 0, 0] = np.float32(1.0) + np.float32(2**-23)
    assert validate_probabilistic_atlas(ok) == 3
    with pytest.raises(ValueError, match="4D"):
        validate_probabilistic_atlas(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="integer labels"):
        assign_maps(np.ones((4, 4, 4)), np.eye(4), np.full((4, 4, 4), 0.5), threshold=0.5)
    with pytest.raises(ValueError, match="interpolation"):
        assign_maps(np.ones((4, 4, 4)), np.eye(4), maps, threshold=0.5, interpolation="cubic")
