"""Per-subject 4D NIfTI connectomes: one ``*.nii[.gz]`` per subject plus a brain mask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakepipe.bids import parse_entities
from lakepipe.errors import InputError
from lakepipe.io.nifti import check_affine, load_image, read_data
from lakepipe.io.sources import ConnectomeSource, SubjectRef, VoxelGeometry, file_fingerprint, safe_subject_id
from lakepipe.space import Grid


@dataclass
class NiftiFolderSource(ConnectomeSource):
    @classmethod
    def open(cls, root: Path, mask: str | Path | None = None) -> "NiftiFolderSource":
        files = sorted(p for p in root.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        masks = [p for p in files if "mask" in p.name]
        if mask is None:
            if len(masks) != 1:
                raise InputError("a 4D NIfTI connectome needs one brain mask (*mask*.nii.gz or --mask)", root)
            mask = masks[0]
        mask = Path(mask)
        img = load_image(mask)
        check_affine(img.affine, mask)
        data = read_data(img, mask)
        if data.ndim != 3:
            raise InputError(f"brain mask must be 3D, got {data.shape}", mask)
        grid = Grid(tuple(int(s) for s in data.shape), np.asarray(img.affine, float))
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
            if not Grid(tuple(head.shape[:3]), np.asarray(head.affine, float)).same_as(grid):
                raise InputError("grid differs from the brain mask's grid", path)
            if src.n_time == 0:
                src.n_time = int(head.shape[3])
            elif head.shape[3] != src.n_time:
                raise InputError(f"{head.shape[3]} timepoints, other subjects have {src.n_time}", path)
            sub = parse_entities(path.name).get("sub") or path.name.split(".")[0]
            src.subjects.append(SubjectRef(safe_subject_id(sub), path, None, file_fingerprint(path)))
        if not src.subjects:
            raise InputError("no 4D subject files next to the mask", root)
        return src

    def read(self, ref: SubjectRef) -> np.ndarray:
        data = read_data(load_image(ref.path), ref.path, np.float32)
        return data[tuple(self.geometry.ijk.T)].T  # (time, voxel)
