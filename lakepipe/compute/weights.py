"""Lesion weight vectors for atlas-based FNM (AFNM): ``score = m @ C`` (DESIGN section 3).

Counts are per atlas label with label 0 = background; weight vectors drop the background, so
entry p of ``m`` is atlas label p + 1.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Lesion weighting methods; ``fractional`` is the default.
WEIGHTINGS = ("fractional", "binary", "voxel_count", "coverage")


def _check_atlas(atlas_flat: np.ndarray, n_regions: int) -> np.ndarray:
    atlas_flat = np.asarray(atlas_flat).ravel()
    if atlas_flat.dtype.kind not in "iu":
        raise ValueError(f"atlas labels must be integers, got dtype {atlas_flat.dtype}")
    if atlas_flat.size and (atlas_flat.min() < 0 or atlas_flat.max() > n_regions):
        raise ValueError(
            f"atlas labels must lie in 0..{n_regions}, got {atlas_flat.min()}..{atlas_flat.max()}"
        )
    return atlas_flat


def parcel_counts(
    atlas_flat: np.ndarray,
    lesion_flat_idx: np.ndarray,
    n_regions: int,
    lesion_values: np.ndarray | None = None,
) -> np.ndarray:
    """Lesion voxels per atlas label.

    Parameters
    ----------
    atlas_flat
        Atlas label volume on the lesion's grid, flattened (C order); 0 = background.
    lesion_flat_idx
        Flat (C order) indices of the lesion voxels.
    n_regions
        Highest atlas label.
    lesion_values
        Weights of a weighted mask (one per index); binary mask if None.

    Returns
    -------
    numpy.ndarray
        (n_regions + 1,) float64: voxel count (or summed weight) per label, index 0 = background.
    """
    atlas_flat = np.asarray(atlas_flat).ravel()
    if atlas_flat.dtype.kind not in "iu":
        raise ValueError(f"atlas labels must be integers, got dtype {atlas_flat.dtype}")
    idx = np.asarray(lesion_flat_idx, dtype=np.int64).ravel()
    weights = None if lesion_values is None else np.asarray(lesion_values, np.float64).ravel()
    if weights is not None and weights.shape != idx.shape:
        raise ValueError("lesion_values must have one value per lesion index")
    # only the labels under the lesion are range-checked (the whole 1 mm atlas is 7.2 M voxels,
    # and this runs once per lesion); :func:`parcel_sizes` checks the whole volume once per grid
    looked_up = _check_atlas(atlas_flat[idx], n_regions)
    return np.bincount(looked_up, weights=weights, minlength=n_regions + 1).astype(np.float64)


def parcel_sizes(atlas_flat: np.ndarray, n_regions: int) -> np.ndarray:
    """Voxels per atlas label: (n_regions + 1,) int64, index 0 = background."""
    return np.bincount(_check_atlas(atlas_flat, n_regions), minlength=n_regions + 1)


def weight_matrix(
    counts_matrix: np.ndarray,
    sizes: np.ndarray,
    n_lesion_voxels_vector: np.ndarray,
    method: str = "fractional",
    coverage_small: int = 1000,
    coverage_fraction: float = 0.5,
) -> np.ndarray:
    """Weight vectors of many lesions at once.

    Parameters
    ----------
    counts_matrix
        (L, n_regions + 1) :func:`parcel_counts` of L lesions (column 0 = background).
    sizes
        (n_regions + 1,) :func:`parcel_sizes`.
    n_lesion_voxels_vector
        (L,) voxels of each lesion (all of them, inside the atlas or not); used by ``coverage``.
    method
        One of :data:`WEIGHTINGS`:

        - ``fractional``: 1 / n_touched for each parcel with a lesion voxel, else 0;
        - ``binary``: 1 for each touched parcel;
        - ``voxel_count``: lesion voxels in the parcel / voxels of the parcel;
        - ``coverage``: parcels touched (lesions of at most ``coverage_small`` voxels) or more than
          ``coverage_fraction`` covered (larger lesions), row-normalised to sum 1.
    coverage_small, coverage_fraction
        Parameters of ``coverage``.

    Returns
    -------
    numpy.ndarray
        (L, n_regions) float64; a lesion that touches (or, for ``coverage``, selects) no parcel has
        a row of zeros: the caller warns or fails.
    """
    if method not in WEIGHTINGS:
        raise ValueError(f"unknown lesion weighting {method!r}; choose one of {', '.join(WEIGHTINGS)}")
    counts = np.atleast_2d(np.asarray(counts_matrix, dtype=np.float64))[:, 1:]
    sizes = np.asarray(sizes, dtype=np.float64).ravel()[1:]
    if counts.shape[1] != sizes.size:
        raise ValueError("counts_matrix and sizes disagree on the number of regions")
    touched = counts > 0
    if method == "binary":
        return touched.astype(np.float64)
    if method == "voxel_count":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sizes > 0, counts / np.where(sizes > 0, sizes, 1.0), 0.0)
    if method == "coverage":
        n_vox = np.asarray(n_lesion_voxels_vector, dtype=np.float64).reshape(-1, 1)
        if n_vox.shape[0] != counts.shape[0]:
            raise ValueError("n_lesion_voxels_vector must have one entry per lesion")
        with np.errstate(invalid="ignore", divide="ignore"):
            covered = (sizes > 0) & (counts > coverage_fraction * sizes)
        touched = np.where(n_vox <= coverage_small, touched, covered)
    n_sel: npt.NDArray[np.intp] = touched.sum(axis=1, keepdims=True)
    return touched / np.maximum(n_sel, 1)
