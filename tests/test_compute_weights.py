"""AFNM lesion weights: the DESIGN known answers and the batched form."""

import numpy as np
import pytest

from lakepipe.compute.weights import (
    WEIGHTINGS,
    parcel_counts,
    parcel_sizes,
    weight_matrix,
)

# 8 voxels: background, parcel 1 (voxels 1-3), parcel 2 (voxels 4-6), background
ATLAS = np.array([0, 1, 1, 1, 2, 2, 2, 0])


def lesion_weight_vector(counts, sizes, n_voxels, method, **kw):
    """One lesion's weights through the batched form the AFNM method runs."""
    return weight_matrix(np.asarray(counts)[None, :], sizes, np.array([n_voxels]), method, **kw)[0]


def _m(lesion_idx, method, **kw):
    counts = parcel_counts(ATLAS, lesion_idx, 2)
    return lesion_weight_vector(counts, parcel_sizes(ATLAS, 2), len(lesion_idx), method, **kw)


def test_design_known_answers():
    m = _m([0, 2, 5], "fractional")
    np.testing.assert_array_equal(m @ np.array([[1, 0.5], [0.5, 1]]), [0.75, 0.75])
    m = _m([1, 7], "binary")
    np.testing.assert_array_equal(m @ np.array([[0.9, 0.3], [0.3, 0.8]]), [0.9, 0.3])
    m = _m([1, 3], "voxel_count")
    np.testing.assert_array_equal(m @ np.eye(2), [2 / 3, 0])


def test_counts_and_sizes():
    np.testing.assert_array_equal(parcel_sizes(ATLAS, 3), [2, 3, 3, 0])
    np.testing.assert_array_equal(parcel_counts(ATLAS, [0, 1, 2, 4], 2), [1, 2, 1])
    np.testing.assert_allclose(
        parcel_counts(ATLAS, [1, 2, 4], 2, lesion_values=[0.5, 0.25, 2.0]), [0, 0.75, 2.0]
    )
    with pytest.raises(ValueError):
        parcel_sizes(ATLAS, 1)  # label 2 above n_regions
    with pytest.raises(ValueError):
        parcel_sizes(ATLAS.astype(float), 2)


def test_coverage_small_and_large_lesions():
    # parcel 1: 1500 voxels, parcel 2: 1500, parcel 3: 1000; 500 background voxels
    atlas = np.repeat([1, 2, 3, 0], [1500, 1500, 1000, 500])
    sizes = parcel_sizes(atlas, 3)
    # small lesion (exactly 1000 voxels): every touched parcel counts, row-normalised
    small = np.r_[np.arange(0, 10), np.arange(1500, 1510), np.arange(4000, 4500), np.arange(3000, 3480)]
    assert small.size == 1000
    m = lesion_weight_vector(parcel_counts(atlas, small, 3), sizes, small.size, "coverage")
    np.testing.assert_allclose(m, [1 / 3, 1 / 3, 1 / 3])
    # large lesion: parcels more than 50 % covered only (exactly 50 % is not more)
    large = np.r_[np.arange(0, 800), np.arange(1500, 1750), np.arange(3000, 3500), np.arange(4000, 4001)]
    m = lesion_weight_vector(parcel_counts(atlas, large, 3), sizes, large.size, "coverage")
    np.testing.assert_array_equal(m, [1.0, 0.0, 0.0])
    large2 = np.r_[np.arange(0, 800), np.arange(1500, 2300), np.arange(3000, 3501)]
    m = lesion_weight_vector(parcel_counts(atlas, large2, 3), sizes, large2.size, "coverage")
    np.testing.assert_allclose(m, [1 / 3, 1 / 3, 1 / 3])
    # the thresholds are parameters
    m = lesion_weight_vector(
        parcel_counts(atlas, large, 3), sizes, large.size, "coverage", coverage_small=2000
    )
    np.testing.assert_allclose(m, [1 / 3, 1 / 3, 1 / 3])


def test_untouched_lesion_gives_zeros_and_unknown_method_fails():
    for method in WEIGHTINGS:
        np.testing.assert_array_equal(_m([0, 7], method), [0.0, 0.0])
    with pytest.raises(ValueError, match="unknown lesion weighting"):
        _m([1], "fractionnal")


@pytest.mark.parametrize("method", WEIGHTINGS)
def test_weight_matrix_equals_per_lesion_loop(method):
    rng = np.random.default_rng(6)
    n_regions = 12
    atlas = rng.integers(0, n_regions + 1, 5000)
    sizes = parcel_sizes(atlas, n_regions)
    lesions = [rng.choice(5000, n, replace=False) for n in (0, 1, 40, 900, 1000, 1001, 3000, 4500)]
    counts = np.array([parcel_counts(atlas, idx, n_regions) for idx in lesions])
    n_vox = np.array([idx.size for idx in lesions])
    batched = weight_matrix(counts, sizes, n_vox, method)
    assert batched.shape == (len(lesions), n_regions)
    for row, c, n in zip(batched, counts, n_vox, strict=True):
        # straightforward per-lesion definition
        touched = c[1:] > 0
        if method == "fractional":
            ref = touched / max(touched.sum(), 1)
        elif method == "binary":
            ref = touched.astype(float)
        elif method == "voxel_count":
            ref = np.array([c[p] / sizes[p] if sizes[p] else 0.0 for p in range(1, n_regions + 1)])
        else:
            sel = (
                touched
                if n <= 1000
                else np.array([sizes[p] > 0 and c[p] / sizes[p] > 0.5 for p in range(1, n_regions + 1)])
            )
            ref = sel / max(sel.sum(), 1)
        np.testing.assert_allclose(row, ref, atol=1e-15)
        np.testing.assert_array_equal(row, lesion_weight_vector(c, sizes, n, method))
    if method in ("fractional", "coverage"):
        totals = batched.sum(axis=1)
        np.testing.assert_allclose(totals[totals > 0], 1.0)
        assert (totals > 0).sum() >= 6  # non-trivial: most lesions select parcels
