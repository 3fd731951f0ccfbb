"""Lesion shapes: smooth, lobulated blobs inside the brain mask and one hemisphere.

A lesion is planned first (:class:`LesionPlan`: where, how large, on which grid, which random stream)
and drawn by :func:`draw_lesion`: the highest voxels of a negative anisotropic distance plus smoothed
noise, so thresholding gives an irregular blob rather than a sphere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakepipe.bids import bids_name, check_entity
from lakepipe.space import mni152_grid
from lakepipe.tutorial.common import SPACE, STREAM_LESION, generator, smooth_field


@dataclass(frozen=True)
class LesionPlan:
    """What one lesion of the cohort will be (before it is drawn)."""

    participant: str
    session: str
    label: str
    res: int
    site: str
    centre_mm: tuple[float, float, float]
    volume_mm3: float
    key: int  # random stream index of the lesion shape
    grow: float = 1.0  # > 1: a follow-up (grown, shifted) version of the lesion with the same key
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def upsampled_brain_mask_1mm(mask2: np.ndarray) -> np.ndarray:
    """Conservative 1 mm brain mask: a 1 mm voxel is in if every nearest 2 mm voxel is in, eroded once.

    On the standard grids 1 mm index ``i`` sits at 2 mm index ``i / 2`` on every axis, halfway between
    two 2 mm voxels for odd ``i``; requiring both keeps a lesion inside the 2 mm mask whatever
    rounding a nearest-neighbour resampler uses.
    """
    from scipy.ndimage import binary_erosion

    padded = np.pad(mask2, ((0, 1), (0, 1), (0, 1)))
    shape1 = mni152_grid(1).shape
    lo = [np.arange(n) // 2 for n in shape1]
    hi = [(np.arange(n) + 1) // 2 for n in shape1]
    out = np.ones(shape1, bool)
    for a in (lo[0], hi[0]):
        for b in (lo[1], hi[1]):
            for c in (lo[2], hi[2]):
                out &= padded[np.ix_(a, b, c)]
    return binary_erosion(out)


#: Largest follow-up growth factor; lesion boxes are sized for it so a follow-up reuses the same field.
MAX_GROWTH = 1.5


def blob_score(
    rng: np.random.Generator, centre_vox: np.ndarray, n_voxels: float, shape: tuple[int, int, int]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Smooth irregular score around ``centre_vox`` in a box: higher = more likely lesioned.

    The score is a negative anisotropic squared distance (axes 0.75-1.35 of the equivalent radius)
    plus smoothed noise whose correlation length scales with the lesion, so thresholding it gives a
    lobulated blob rather than a sphere.
    """
    radius = (3 * n_voxels / (4 * np.pi)) ** (1 / 3)
    axes = rng.uniform(0.75, 1.35, 3)
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    half = int(np.ceil(1.8 * radius * axes.max())) + 4
    lo = np.maximum(np.rint(centre_vox).astype(int) - half, 0)
    hi = np.minimum(np.rint(centre_vox).astype(int) + half + 1, np.array(shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axis = [(np.arange(a, b) - c).astype(np.float32) for a, b, c in zip(lo, hi, centre_vox, strict=True)]
    open_axes = np.ix_(*axis)
    d2 = np.zeros(tuple(hi - lo), np.float32)
    for j in range(3):  # squared length of the rotated, axis-scaled offset, built by broadcasting
        u = sum(np.float32(rotation[i, j] / (radius * axes[j])) * open_axes[i] for i in range(3))
        d2 += u * u
    coarse = smooth_field(rng, tuple(hi - lo), max(1.0, 0.35 * radius))
    fine = smooth_field(rng, tuple(hi - lo), max(0.7, 0.1 * radius))  # lobulated borders
    return box, -d2 + np.float32(rng.uniform(0.6, 1.0)) * coarse + np.float32(0.25) * fine


def select_blob(score: np.ndarray, allowed: np.ndarray, n_voxels: int) -> np.ndarray:
    """The ``n_voxels`` highest-score allowed voxels: their largest connected component, holes filled."""
    from scipy.ndimage import binary_fill_holes, label

    score = np.where(allowed, score, -np.inf)
    n = int(min(max(n_voxels, 1), int(allowed.sum())))
    if n == 0:
        return np.zeros(score.shape, bool)
    thr = np.partition(score.ravel(), score.size - n)[score.size - n]
    sel = (score >= thr) & allowed
    comp, ncomp = label(sel)
    if ncomp > 1:
        sizes = np.bincount(comp.ravel())[1:]
        sel = comp == (1 + int(np.argmax(sizes)))
    return binary_fill_holes(sel) & allowed


def draw_lesion(
    plan: LesionPlan, seed: int, brain: dict[int, np.ndarray], stream: int = STREAM_LESION
) -> np.ndarray:
    """Binary lesion volume for one plan, on the grid of ``plan.res``, inside the brain and one hemisphere.

    The shape comes from the random stream ``(seed, stream, plan.key)``.
    """
    from scipy.ndimage import shift as nd_shift

    grid = mni152_grid(plan.res)
    inv = np.linalg.inv(grid.affine)
    voxel_volume = float(np.prod(grid.voxel_size))
    n_target = plan.volume_mm3 / voxel_volume
    centre = inv[:3, :3] @ np.asarray(plan.centre_mm, float) + inv[:3, 3]
    rng = generator(seed, stream, plan.key)
    box, score = blob_score(rng, centre, n_target * MAX_GROWTH, grid.shape)  # same box: follow-ups
    open_axes = np.ix_(*[np.arange(s.start, s.stop) for s in box])
    xs = sum(grid.affine[0, i] * open_axes[i] for i in range(3)) + grid.affine[0, 3]
    hemi = (np.sign(xs) == np.sign(plan.centre_mm[0])) & (np.abs(xs) >= 2)
    allowed = brain[plan.res][box] & hemi
    lesion = select_blob(score, allowed, int(round(n_target)))
    if plan.grow != 1.0 or any(plan.shift_mm):  # follow-up: the first lesion plus its grown, shifted self
        shift_vox = inv[:3, :3] @ np.asarray(plan.shift_mm, float)
        moved = nd_shift(score, shift_vox, order=1, mode="nearest")
        lesion |= select_blob(moved, allowed, int(round(n_target * plan.grow)))
    out = np.zeros(grid.shape, np.uint8)
    out[box] = lesion
    return out


def jitter_site(
    rng: np.random.Generator, site_mm: tuple[float, float, float], left: bool, sd_mm: float = 3.0
) -> tuple[float, float, float]:
    """A site mirrored to the chosen hemisphere and jittered by a few mm."""
    x, y, z = np.asarray(site_mm, float) + rng.normal(0, sd_mm, 3)
    x = abs(x) if x != 0 else 10.0
    return (float(round(-x if left else x, 1)), float(round(y, 1)), float(round(z, 1)))


def lesion_path(bids_dir: Path, plan: LesionPlan) -> Path:
    """``sub-X/ses-Y/anat/sub-X_ses-Y_space-S[_res-2]_label-L_mask.nii.gz`` (1 mm files carry no res)."""
    sub, ses = check_entity(plan.participant, "sub"), check_entity(plan.session, "ses")
    name = bids_name(
        {
            "sub": sub,
            "ses": ses,
            "space": SPACE,
            "res": "2" if plan.res == 2 else None,
            "label": check_entity(plan.label, "label"),
        },
        "mask",
        ".nii.gz",
    )
    return bids_dir / f"sub-{sub}" / f"ses-{ses}" / "anat" / name
