"""Per-subject 4D NIfTI connectomes: one ``*.nii[.gz]`` per subject plus a brain mask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakepipe.errors import InputError
from lakepipe.io.nifti import load_image, load_volume, read_data
from lakepipe.io.sources.base import ConnectomeSource, SubjectRef, VoxelGeometry, register_source
from lakepipe.space import Grid


@register_source("nifti")
@dataclass
class NiftiFolderSource(ConnectomeSource):
    """One 4D NIfTI per subject plus a brain mask (``*mask*`` or ``mask=``)."""

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(p.name.endswith((".nii", ".nii.gz")) for p in root.iterdir())

    @classmethod
    def open(cls, root: Path, mask: str | Path | None = None, **options: object) -> NiftiFolderSource:
        if options:
            raise InputError(f"a 4D NIfTI folder takes no {'/'.join(options)} option", root)
        files = sorted(p for p in root.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        masks = [p for p in files if "mask" in p.name]
        if mask is None:
            if len(masks) != 1:
                raise InputError("a 4D NIfTI connectome needs one brain mask (*mask*.nii.gz or --mask)", root)
            mask = masks[0]
        mask = Path(mask)
        data, grid = load_volume(mask, "a brain mask")
        ijk = np.argwhere(data > 0).astype(np.int32)  # C order
        if ijk.size == 0:
            raise InputError("brain mask is empty", mask)
        src = cls(root=root, kind="voxel", geometry=VoxelGeometry(grid, ijk))
        for path in files:
            if path.resolve() == mask.resolve() or path in masks:
                continue
            head = load_image(path)
            if len(head.shape) != 4:
                raise InputError(f"expected a 4D time series, got shape {head.shape}", path)
            shape3 = (int(head.shape[0]), int(head.shape[1]), int(head.shape[2]))
            if not Grid(shape3, np.asarray(head.affine, float)).same_as(grid):
                raise InputError("grid differs from the brain mask's grid", path)
            src.add_subject_file(path, int(head.shape[3]))
        if not src.subjects:
            raise InputError("no 4D subject files next to the mask", root)
        return src

    def read(self, ref: SubjectRef) -> np.ndarray:
        assert self.geometry is not None
        data = read_data(load_image(ref.path), ref.path, np.float32)
        return data[tuple(self.geometry.ijk.T)].T  # (time, voxel)
