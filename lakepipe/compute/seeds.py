"""Seed geometry on a connectome grid: which in-mask voxels a seed covers, with which weights.

A seed is a (weighted) lesion mask on its own grid, resampled to the connectome grid with nearest
neighbour, or a sphere (MNI centre + radius in mm: the grid voxels whose centres lie within the
radius). Voxels outside the connectome's brain mask are dropped and counted. The seeds of a batch
become one sparse (voxel x seed) weight matrix (:func:`seed_weight_matrix`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lakepipe.compute.resample import lesion_to_grid, sphere_voxels


def voxel_lookup(ijk: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Grid-sized flat int32 array: the position of each in-mask voxel (row of ``ijk``), -1 elsewhere."""
    lut = np.full(int(np.prod(shape)), -1, np.int32)
    lut[np.ravel_multi_index(tuple(np.asarray(ijk).T), shape)] = np.arange(len(ijk), dtype=np.int32)
    return lut


@dataclass(frozen=True)
class SeedVoxels:
    """A seed's voxels on a connectome.

    Attributes
    ----------
    positions
        (K,) in-mask voxel positions (columns of the connectome) covered by the seed.
    weights
        (K,) float32 weights (1 for binary masks and spheres).
    on_grid
        Voxels of the seed on the connectome grid, inside the brain mask or not.
    """

    positions: np.ndarray
    weights: np.ndarray
    on_grid: int

    @property
    def dropped(self) -> int:
        """Seed voxels on the grid but outside the brain mask."""
        return self.on_grid - int(self.positions.size)


def _in_mask(flat: np.ndarray, values: np.ndarray, lut: np.ndarray) -> SeedVoxels:
    pos = lut[flat] if flat.size else np.array([], np.int32)
    inside = pos >= 0
    return SeedVoxels(pos[inside], values[inside], int(flat.size))


def sphere_seed_voxels(
    centre_mm: Sequence[float],
    radius_mm: float,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    lut: np.ndarray,
) -> SeedVoxels:
    """The in-mask voxels of a sphere (grid voxels whose centres lie within ``radius_mm``)."""
    flat = sphere_voxels(np.asarray(centre_mm, dtype=np.float64), radius_mm, shape, affine)
    return _in_mask(flat, np.ones(flat.size, np.float32), lut)


def mask_seed_voxels(
    indices: np.ndarray,
    values: np.ndarray | None,
    src_shape: tuple[int, int, int],
    src_affine: np.ndarray,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    lut: np.ndarray,
) -> SeedVoxels:
    """The in-mask voxels of a (weighted) mask on its own grid, resampled (nearest) to the connectome grid."""
    flat, w = lesion_to_grid(indices, values, src_shape, src_affine, shape, affine)
    weights = np.ones(flat.size, np.float32) if w is None else np.asarray(w, np.float32)
    return _in_mask(flat, weights, lut)


def seed_weight_matrix(seeds: Sequence[SeedVoxels], n_voxels: int) -> sp.csc_matrix:
    """Sparse (V, L) float64 weights of L seeds (rows = connectome voxels)."""
    rows = np.concatenate([s.positions for s in seeds]) if seeds else np.empty(0, np.int64)
    vals = np.concatenate([s.weights for s in seeds]) if seeds else np.empty(0)
    cols = np.concatenate([np.full(s.positions.size, j) for j, s in enumerate(seeds)]) if seeds else rows
    return sp.csc_matrix((vals, (rows, cols)), shape=(n_voxels, len(seeds)), dtype=np.float64)
