"""The Seitzman et al. (2018) 300-ROI atlas as spheres on the 2 mm MNI grid."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lakepipe.space import Grid
from lakepipe.tutorial.common import SPACE, save_nifti, voxel_mm
from lakepipe.tutorial.model import LatentModel

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Name of the atlas in file names (``atlas-<name>``).
ATLAS_NAME = "Seitzman2018"
#: Radius (mm) of the spheres drawn around the Seitzman coordinates.
ATLAS_RADIUS_MM = 5.0
#: File name stem of the atlas image and its label table.
ATLAS_STEM = f"tpl-{SPACE}_res-02_atlas-{ATLAS_NAME}_dseg"


def _hemisphere(x_mm: float) -> str:
    """``L``/``R``/``M`` from an MNI x coordinate (|x| < 2 mm is midline)."""
    return "M" if abs(x_mm) < 2.0 else ("L" if x_mm < 0 else "R")


def seitzman_table():
    """The Seitzman 2018 ROIs in their published order, one row per label 1..300.

    Returns
    -------
    pandas.DataFrame
        Columns ``index``, ``name`` (``Seitzman_<network>_<n>``, n counting within the network),
        ``network``, ``hemisphere``, ``region``, ``x``, ``y``, ``z``, ``radius_mm`` (published radius).
    """
    import pandas as pd
    from nilearn.datasets import fetch_coords_seitzman_2018

    d = fetch_coords_seitzman_2018(ordered_regions=False)
    rois = d.rois.reset_index(drop=True)
    table = pd.DataFrame(
        {
            "index": np.arange(1, len(rois) + 1),
            "network": [str(n) for n in d.networks],
            "region": [str(r) for r in d.regions],
            "x": rois["x"].to_numpy(float),
            "y": rois["y"].to_numpy(float),
            "z": rois["z"].to_numpy(float),
            "radius_mm": np.asarray(d.radius, float),
        }
    )
    counter = table.groupby("network").cumcount() + 1
    table.insert(1, "name", [f"Seitzman_{net}_{c}" for net, c in zip(table["network"], counter, strict=True)])
    table.insert(3, "hemisphere", [_hemisphere(x) for x in table["x"]])
    return table


def sphere_labels(
    centres_mm: np.ndarray, radius_mm: float, grid: Grid, mask: np.ndarray | None = None
) -> np.ndarray:
    """Label volume of spheres (label k+1 for centre k); overlaps go to the nearest centre.

    Parameters
    ----------
    centres_mm
        Sphere centres in mm, shape (n, 3).
    radius_mm
        Radius: voxels whose centres lie within it belong to the sphere.
    grid
        Output grid.
    mask
        Optional boolean volume on ``grid``; voxels outside are 0.

    Returns
    -------
    numpy.ndarray
        int16 volume of ``grid.shape``.
    """
    labels = np.zeros(grid.shape, np.int16)
    best = np.full(grid.shape, np.inf)
    inv = np.linalg.inv(grid.affine)
    reach = int(np.ceil(radius_mm / grid.voxel_size.min())) + 1
    shape = np.array(grid.shape)
    for k, c in enumerate(np.asarray(centres_mm, float)):
        centre = np.rint(inv[:3, :3] @ c + inv[:3, 3]).astype(int)
        lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, shape)
        if np.any(lo >= hi):
            continue
        box = np.indices(hi - lo).reshape(3, -1).T + lo
        d = np.sqrt(((voxel_mm(grid, box) - c) ** 2).sum(axis=1))
        sel = d <= radius_mm + 1e-6
        box, d = box[sel], d[sel]
        ii = tuple(box.T)
        closer = d < best[ii]
        labels[tuple(box[closer].T)] = k + 1
        best[tuple(box[closer].T)] = d[closer]
    if mask is not None:
        labels[~mask] = 0
    return labels


def write_atlas(atlas_dir: Path, model: LatentModel) -> tuple[Path, Path, np.ndarray, pd.DataFrame]:
    """Write the Seitzman sphere atlas; return paths, the label volume and the table."""
    atlas_dir.mkdir(parents=True)
    table = seitzman_table()
    vol = sphere_labels(table[["x", "y", "z"]].to_numpy(), ATLAS_RADIUS_MM, model.grid, model.mask)
    counts = np.bincount(vol.ravel(), minlength=len(table) + 1)[1:]
    table["n_voxels"] = counts
    empty = table.loc[counts == 0, "index"].tolist()
    logger.info(
        "atlas %s: %d spheres of %g mm on the 2 mm grid, %d labelled voxels",
        ATLAS_NAME,
        len(table),
        ATLAS_RADIUS_MM,
        int(counts.sum()),
    )
    if empty:
        logger.info(
            "atlas %s: %d of %d ROIs have no voxel inside the brain mask (kept in the table): %s",
            ATLAS_NAME,
            len(empty),
            len(table),
            empty,
        )
    nii = atlas_dir / f"{ATLAS_STEM}.nii.gz"
    save_nifti(vol, model.grid.affine, nii, intent="label")
    tsv = atlas_dir / f"{ATLAS_STEM}.tsv"
    table[["index", "name", "network", "hemisphere", "region", "x", "y", "z", "n_voxels"]].to_csv(
        tsv, sep="\t", index=False, lineterminator="\n"
    )
    return nii, tsv, vol, table
