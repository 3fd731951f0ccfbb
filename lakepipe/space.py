"""Standard template grids and the checks that a grid matches its stated space.

Affines are the truth: two arrays with the same shape but mirrored affines are different images,
so every comparison here goes through the affine, never the shape alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Spaces whose voxel grids lakepipe knows. Any other space name is accepted as-is (no grid check).
MNI_SPACES = ("MNI152NLin6Asym", "MNI152NLin2009cAsym")


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape plus 4x4 voxel-to-mm affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def same_as(self, other: Grid, atol: float = 1e-3) -> bool:
        return tuple(self.shape) == tuple(other.shape) and np.allclose(self.affine, other.affine, atol=atol)

    @property
    def voxel_size(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def key(self) -> str:
        """A short hashable description used to group masks sharing one grid."""
        return f"{self.shape}|{np.round(self.affine, 4).tolist()}"


def mni152_grid(res_mm: int = 2) -> Grid:
    """The MNI152NLin6Asym grid used by FSL and GSP1000 (91x109x91 at 2 mm, 182x218x182 at 1 mm)."""
    if res_mm == 2:
        return Grid(
            (91, 109, 91), np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
        )
    if res_mm == 1:
        return Grid(
            (182, 218, 182), np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
        )
    raise ValueError(f"no standard MNI152 grid at {res_mm} mm")


def grid_matches_space(grid: Grid, space: str | None) -> bool:
    """Whether ``grid`` is a plausible grid of ``space``.

    For MNI spaces: near-isotropic voxels of 0.5 to 4 mm, and a field of view that covers the
    template's brain box (within 10 mm) without being absurdly larger. Atlases legitimately use
    other lattices than the FSL grid (Tian's subcortex atlas sits on a half-mm-shifted 2 mm grid),
    so the lattice itself is not checked; a cropped, native-space or mis-scaled image is refused.
    Unknown spaces are not checked.
    """
    if not space or space not in MNI_SPACES:
        return True
    sizes = grid.voxel_size
    if not (np.all(sizes >= 0.5) and np.all(sizes <= 4.0) and sizes.max() / sizes.min() < 1.5):
        return False
    lo, hi = _box_mm(grid)
    rlo, rhi = _box_mm(mni152_grid(1))
    covers = np.all(lo <= rlo + 10.0) and np.all(hi >= rhi - 10.0)
    not_huge = np.all((hi - lo) <= 2.0 * (rhi - rlo))
    return bool(covers and not_huge)


def _box_mm(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest voxel-centre coordinates (mm) of a grid on each world axis."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in grid.shape], indexing="ij")).reshape(3, -1)
    mm = grid.affine[:3, :3] @ corners + grid.affine[:3, 3:4]
    return mm.min(axis=1), mm.max(axis=1)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lakepipe"


@lru_cache(maxsize=1)
def mni152_brain_mask_2mm() -> np.ndarray:
    """nilearn's MNI152 2 mm brain mask on :func:`mni152_grid` (bool; 235,375 voxels).

    nilearn builds it by resampling its 1 mm template (several seconds), so the result is cached
    on disk per nilearn version (``$XDG_CACHE_HOME/lakepipe``).
    """
    import nilearn

    cache = _cache_dir() / f"mni152_brain_mask_2mm_nilearn-{nilearn.__version__}.npy"
    try:
        bits = np.load(cache)
        return np.unpackbits(bits)[: 91 * 109 * 91].astype(bool).reshape(91, 109, 91)
    except (OSError, ValueError):
        pass
    mask = _mni152_brain_mask_2mm_from_nilearn()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, np.packbits(mask.reshape(-1)))
        os.replace(tmp, cache)
    except OSError:  # read-only home: just recompute next time
        pass
    return mask


def _mni152_brain_mask_2mm_from_nilearn() -> np.ndarray:
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    src = np.asarray(img.dataobj) > 0
    dst = mni152_grid(2)
    # voxel centres coincide: map each destination voxel to its source index through the affines
    ijk = np.indices(dst.shape).reshape(3, -1)
    xyz = dst.affine[:3, :3] @ ijk + dst.affine[:3, 3:4]
    src_ijk = np.rint(np.linalg.inv(img.affine)[:3, :3] @ xyz + np.linalg.inv(img.affine)[:3, 3:4])
    src_ijk = src_ijk.astype(int)
    inside = np.all((src_ijk >= 0) & (src_ijk < np.array(src.shape)[:, None]), axis=0)
    out = np.zeros(dst.shape, bool).reshape(-1)
    out[inside] = src[tuple(src_ijk[:, inside])]
    return out.reshape(dst.shape)
