"""What every part of the tutorial shares: the space, random streams, NIfTI and JSON writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lakepipe.space import Grid

#: Template space of every file the tutorial writes.
SPACE = "MNI152NLin6Asym"
#: Repetition time (s) recorded in the NIfTI headers and the manifest (GSP1000 used 3 s).
REPETITION_TIME = 3.0
#: Label of the main lesion masks and of the second label some participants have.
MAIN_LABEL = "acuteinfarct"
SECOND_LABEL = "chronic"

# names of the random streams: (seed, stream, index...) keys independent generators. Never renumber
# one: the files of every component follow from its stream. numpy's SeedSequence pads short keys with
# zeros, so (seed, s) and (seed, s, 0) are the same stream: sub-streams of one component differ in
# their first index after the stream number, not only in a trailing 0.
STREAM_MODEL, STREAM_SUBJECT, STREAM_LESION, STREAM_COHORT = 1, 2, 3, 4
STREAM_LNM, STREAM_LNM_LESION = 5, 6
STREAM_FMRIPREP = 7
STREAM_HCP = 8


def generator(seed: int, stream: int, *index: int) -> np.random.Generator:
    """An independent generator for one component (and item) of the tutorial."""
    return np.random.default_rng([int(seed), stream, *map(int, index)])


def voxel_mm(grid: Grid, ijk: np.ndarray) -> np.ndarray:
    """MNI coordinates (mm) of voxel indices ``ijk`` (n, 3)."""
    return ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation (float32)."""
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="nearest")
    out /= max(float(out.std()), 1e-12)
    return out


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: Path,
    *,
    intent: str | None = None,
    tr: float | None = None,
    dtype: type | None = None,
) -> Path:
    """Save ``data`` with ``affine`` as MNI-coded NIfTI-1 (sform and qform), units mm (and s).

    ``dtype`` sets the on-disk type (for example ``np.int16``: nibabel then picks ``scl_slope`` and
    ``scl_inter`` from the data range); by default the array's own type.
    """
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=4)  # 4 = MNI_152
    img.header.set_qform(affine, code=4)
    img.header.set_xyzt_units("mm", "sec")
    if dtype is not None:
        img.set_data_dtype(dtype)
    if intent:
        img.header.set_intent(intent)
    if tr is not None and data.ndim == 4:
        img.header.set_zooms((*img.header.get_zooms()[:3], tr))
    img.to_filename(path)
    return path


def write_json(path: Path, obj: object) -> None:
    """``obj`` as indented JSON with a final newline."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_tsv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """A tab-separated table with ``\\n`` line ends."""
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
