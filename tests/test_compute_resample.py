"""Nearest-neighbour and linear resampling, spheres and sparse lesion moves against nilearn."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn.image import resample_img
from nilearn.maskers import NiftiSpheresMasker

from lakepipe.compute.resample import (
    lesion_to_grid,
    nearest_indices,
    resample_linear,
    resample_nearest,
    sphere_voxels,
    voxel_to_world,
    world_to_voxel,
)
from lakepipe.space import mni152_grid

RAS_1MM = np.array([[1.0, 0, 0, -20], [0, 1, 0, -30], [0, 0, 1, -10], [0, 0, 0, 1]])


def _nilearn(data, src_affine, dst_shape, dst_affine, interpolation="nearest"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = resample_img(
            nib.Nifti1Image(data, src_affine),
            target_affine=dst_affine,
            target_shape=dst_shape,
            interpolation=interpolation,
            force_resample=True,
            copy_header=True,
        )
    return np.asarray(img.dataobj)


def _rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _grids():
    """(src_affine, src_shape, dst_affine, dst_shape) pairs: flips, 1->2 mm, 2->1 mm, oblique."""
    las_1mm = RAS_1MM.copy()
    las_1mm[0] = [-1, 0, 0, 19]  # same box and voxel centres as RAS_1MM, mirrored storage
    mm2 = np.array([[-2.0, 0, 0, 30], [0, 2, 0, -36], [0, 0, 2, -14], [0, 0, 0, 1]])
    oblique = np.eye(4)
    oblique[:3, :3] = _rotation(17) @ np.diag([2.5, 2.5, 3.0])
    oblique[:3, 3] = [-13.3, -22.1, -7.6]
    return [
        (RAS_1MM, (40, 50, 30), las_1mm, (40, 50, 30)),
        (las_1mm, (40, 50, 30), RAS_1MM, (40, 50, 30)),
        (RAS_1MM, (40, 50, 30), mm2, (28, 30, 22)),  # coarser, partly outside the source box
        (mm2, (28, 30, 22), RAS_1MM, (40, 50, 30)),  # finer: half-way ties
        (RAS_1MM, (40, 50, 30), oblique, (18, 20, 12)),
    ]


def _linear_grids():
    """The nearest-neighbour pairs, plus 4 mm onto 2 mm with the same origin: destination centres
    fall exactly on the outermost source centres (inside) and one step beyond (outside)."""
    mm4 = np.array([[4.0, 0, 0, -20], [0, 4, 0, -30], [0, 0, 4, -10], [0, 0, 0, 1]])
    mm2 = np.array([[2.0, 0, 0, -20], [0, 2, 0, -30], [0, 0, 2, -10], [0, 0, 0, 1]])
    return [*_grids(), (mm4, (10, 12, 8), mm2, (21, 24, 16))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(6))
def test_resample_linear_equals_nilearn(case, dtype):
    src_affine, src_shape, dst_affine, dst_shape = _linear_grids()[case]
    rng = np.random.default_rng(case)
    data = (100 + 10 * rng.standard_normal((*src_shape, 3))).astype(dtype)  # never 0 inside
    got = resample_linear(data, src_affine, dst_shape, dst_affine)
    ref = _nilearn(data, src_affine, dst_shape, dst_affine, "linear")
    assert got.dtype == ref.dtype == dtype and got.shape == (*dst_shape, 3)
    np.testing.assert_array_equal(got == 0, ref == 0)  # the same voxels outside the source grid
    assert 0 < np.count_nonzero(got) < got.size or case in (0, 1, 3)
    # both are float64 sums of the same eight products (in another order), then cast to dtype
    bound = np.spacing(np.abs(ref)) if dtype == np.float32 else 16 * np.finfo(float).eps * np.abs(ref)
    assert np.all(np.abs(got.astype(float) - ref) <= bound)


@pytest.mark.parametrize("case", range(5))
def test_resample_nearest_equals_nilearn(case):
    src_affine, src_shape, dst_affine, dst_shape = _grids()[case]
    rng = np.random.default_rng(case)
    labels = rng.integers(1, 90, src_shape).astype(np.int16)  # 0 only where outside
    got = resample_nearest(labels, src_affine, dst_shape, dst_affine)
    ref = _nilearn(labels, src_affine, dst_shape, dst_affine)
    assert got.dtype == labels.dtype and got.shape == dst_shape
    np.testing.assert_array_equal(got, ref)
    if case in (2, 4):  # the destination box reaches outside the source box: filled with 0
        assert 0 < np.count_nonzero(got == 0) < 0.7 * got.size


def test_resample_flip_is_a_mirror_and_mni_1mm_to_2mm():
    las = RAS_1MM.copy()
    las[0] = [-1, 0, 0, 19]
    data = np.random.default_rng(9).random((40, 50, 30)).astype(np.float32)
    np.testing.assert_array_equal(resample_nearest(data, RAS_1MM, data.shape, las), data[::-1])
    g1, g2 = mni152_grid(1), mni152_grid(2)
    labels = np.random.default_rng(10).integers(0, 30, g1.shape).astype(np.uint8)
    got = resample_nearest(labels, g1.affine, g2.shape, g2.affine)
    np.testing.assert_array_equal(got, labels[::2, ::2, ::2])  # the 2 mm centres are on the 1 mm lattice
    np.testing.assert_array_equal(got, _nilearn(labels, g1.affine, g2.shape, g2.affine))


def test_world_voxel_roundtrip_and_nearest_indices():
    src_affine, src_shape, dst_affine, dst_shape = _grids()[4]
    ijk = np.random.default_rng(11).integers(0, 40, (50, 3)).astype(float)
    np.testing.assert_allclose(world_to_voxel(src_affine, voxel_to_world(src_affine, ijk)), ijk, atol=1e-9)
    np.testing.assert_allclose(
        voxel_to_world(RAS_1MM, [[0, 0, 0], [1, 2, 3]]), [[-20, -30, -10], [-19, -28, -7]]
    )
    flat = np.arange(np.prod(src_shape)).reshape(src_shape)
    dense = resample_nearest(flat, src_affine, dst_shape, dst_affine, fill=-1)
    dst_ijk = np.argwhere(np.ones(dst_shape, bool))
    np.testing.assert_array_equal(
        nearest_indices(src_affine, src_shape, dst_affine, dst_ijk), dense.reshape(-1)
    )


@pytest.mark.parametrize("case", [0, 2, 3, 4])
def test_lesion_to_grid_equals_dense_resampling(case):
    src_affine, src_shape, dst_affine, dst_shape = _grids()[case]
    rng = np.random.default_rng(20 + case)
    mask = np.zeros(src_shape, bool)
    mask[5:17, 8:30, 4:15] = rng.random((12, 22, 11)) < 0.6
    values = rng.uniform(0.1, 1.0, src_shape).astype(np.float32)
    idx = np.flatnonzero(mask)
    dst_idx, dst_vals = lesion_to_grid(
        idx, values.reshape(-1)[idx], src_shape, src_affine, dst_shape, dst_affine
    )
    ref_mask = _nilearn(mask.astype(np.uint8), src_affine, dst_shape, dst_affine)
    ref_vals = resample_nearest(values * mask, src_affine, dst_shape, dst_affine)
    assert dst_idx.size > 0
    np.testing.assert_array_equal(dst_idx, np.flatnonzero(ref_mask))
    np.testing.assert_array_equal(dst_vals, ref_vals.reshape(-1)[dst_idx])
    bin_idx, bin_vals = lesion_to_grid(idx, None, src_shape, src_affine, dst_shape, dst_affine)
    np.testing.assert_array_equal(bin_idx, dst_idx)
    assert np.all(bin_vals == 1)


def test_lesion_outside_destination_is_empty():
    idx = np.ravel_multi_index((35, 45, 25), (40, 50, 30))
    far = RAS_1MM.copy()
    far[:3, 3] += 500
    out_idx, out_vals = lesion_to_grid([idx], None, (40, 50, 30), RAS_1MM, (10, 10, 10), far)
    assert out_idx.size == 0 and out_vals.size == 0


# 2 mm LAS grid (MNI-like lattice) of a small box, for the sphere masker comparison
SPHERE_AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2, 0, -40], [0, 0, 2, -20], [0, 0, 0, 1]])
SPHERE_SHAPE = (30, 34, 26)


@pytest.mark.parametrize(
    "center,radius",
    [((10, -20, 8), 4.0), ((-3.3, 1.7, 5.1), 6.0), ((0.9, -14.2, 2.6), 10.0), ((28, -38, -18), 5.0)],
)
def test_sphere_voxels_equal_nilearn_spheres_masker(center, radius):
    rng = np.random.default_rng(12)
    frames = rng.standard_normal(SPHERE_SHAPE + (6,)).astype(np.float32)
    img = nib.Nifti1Image(frames, SPHERE_AFFINE)
    idx = sphere_voxels(center, radius, SPHERE_SHAPE, SPHERE_AFFINE)
    masker = NiftiSpheresMasker([center], radius=radius, allow_overlap=True, standardize=None)
    ref = masker.fit_transform(img)[:, 0]
    ours = frames.reshape(-1, 6)[idx].mean(axis=0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    # explicit definition: every voxel centre within the radius, nothing else
    world = voxel_to_world(SPHERE_AFFINE, np.argwhere(np.ones(SPHERE_SHAPE, bool)))
    inside = np.flatnonzero(np.linalg.norm(world - np.asarray(center), axis=1) <= radius)
    np.testing.assert_array_equal(idx, inside)


def test_sphere_known_count_boundary_and_nearest_option():
    # centred on a voxel, radius 2 voxels: lattice points with a^2 + b^2 + c^2 <= 4 -> 33
    assert sphere_voxels((10, -20, 8), 4.0, SPHERE_SHAPE, SPHERE_AFFINE).size == 33
    # small radius away from any centre: empty, unless the nearest voxel is asked (nilearn's rule)
    center = (11.1, -19.2, 8.9)
    assert sphere_voxels(center, 0.5, SPHERE_SHAPE, SPHERE_AFFINE).size == 0
    near = sphere_voxels(center, 0.5, SPHERE_SHAPE, SPHERE_AFFINE, include_nearest=True)
    img = nib.Nifti1Image(np.random.default_rng(13).standard_normal(SPHERE_SHAPE + (4,)), SPHERE_AFFINE)
    ref = NiftiSpheresMasker([center], radius=0.5, standardize=None).fit_transform(img)[:, 0]
    np.testing.assert_allclose(np.asarray(img.dataobj).reshape(-1, 4)[near].mean(0), ref)
    for bad in (0, -1.0, np.nan):
        with pytest.raises(ValueError):
            sphere_voxels(center, bad, SPHERE_SHAPE, SPHERE_AFFINE)
