"""GSP1000-style HDF5 connectome batches.

Each ``*.h5`` file holds ``timeseries`` (subjects, time, voxels) float32, ``mask_indices`` with the
ijk of each voxel as (V, 3) or (3, V), ``mask_affine`` (4x4), the ``mask_shape`` attribute, and
optionally ``subject_ids``. All batches of a connectome must share the mask and the time axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lakepipe.errors import InputError
from lakepipe.io.sources.base import (
    ConnectomeSource,
    SubjectRef,
    VoxelGeometry,
    file_fingerprint,
    register_source,
    safe_subject_id,
)
from lakepipe.space import Grid


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path) from exc


def read_geometry(f: h5py.File, path: Path) -> VoxelGeometry:
    """Mask geometry of one batch; accepts ``mask_indices`` as (V, 3) or (3, V)."""
    for key in ("timeseries", "mask_indices", "mask_affine"):
        if key not in f:
            raise InputError(f"HDF5 batch has no '{key}' dataset", path)
    shape = f.attrs.get("mask_shape", f["mask_shape"][()] if "mask_shape" in f else None)
    if shape is None:
        raise InputError("HDF5 batch has no 'mask_shape' attribute", path)
    shape = tuple(int(s) for s in np.asarray(shape).ravel())
    idx = np.asarray(f["mask_indices"][()])
    n_vox = f["timeseries"].shape[-1]
    if idx.ndim != 2 or 3 not in idx.shape:
        raise InputError(f"mask_indices must be (V, 3) or (3, V), got {idx.shape}", path)
    if idx.shape[1] != 3 or (idx.shape[0] == 3 and idx.shape[1] == n_vox):
        idx = idx.T
    if idx.shape[0] != n_vox:
        raise InputError(
            f"mask size does not match: mask_indices lists {idx.shape[0]} voxels, timeseries has {n_vox}",
            path,
        )
    if np.any(idx < 0) or np.any(idx >= np.array(shape)):
        raise InputError(f"mask_indices fall outside mask_shape {shape}", path)
    affine = np.asarray(f["mask_affine"][()], float)
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InputError("mask_affine is not an invertible 4x4 matrix", path)
    return VoxelGeometry(Grid(shape, affine), idx.astype(np.int32))


@register_source("hdf5")
@dataclass
class HDF5BatchSource(ConnectomeSource):
    """GSP1000-style HDF5 batches: ``*.h5``/``*.hdf5`` files of several subjects each."""

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(p.name.endswith((".h5", ".hdf5")) for p in root.iterdir())

    @classmethod
    def open(cls, root: Path, **options: object) -> HDF5BatchSource:
        if options:
            raise InputError(f"HDF5 batches take no {'/'.join(options)} option", root)
        files = sorted([*root.glob("*.h5"), *root.glob("*.hdf5")])
        src = cls(root=root, kind="voxel")
        for path in files:
            with _open(path) as f:
                geom = read_geometry(f, path)
                ts = f["timeseries"]
                if ts.ndim != 3:
                    raise InputError(f"timeseries must be (subjects, time, voxels), got {ts.shape}", path)
                if src.geometry is None:
                    src.geometry, src.n_time = geom, int(ts.shape[1])
                elif not geom.same_as(src.geometry):
                    raise InputError("mask differs from the first batch's mask", path)
                elif ts.shape[1] != src.n_time:
                    raise InputError(f"{ts.shape[1]} timepoints, other batches have {src.n_time}", path)
                ids = (
                    [s.decode() if isinstance(s, bytes) else str(s) for s in f["subject_ids"][()]]
                    if "subject_ids" in f
                    else [f"{path.stem}r{i}" for i in range(ts.shape[0])]
                )
                if len(ids) != ts.shape[0]:
                    raise InputError("subject_ids and timeseries disagree on the number of subjects", path)
                fp = file_fingerprint(path)
                for row, sid in enumerate(ids):
                    src.subjects.append(SubjectRef(safe_subject_id(sid), path, row, f"{fp}:{row}"))
        seen: set[str] = set()
        for ref in src.subjects:
            if ref.subject_id in seen:
                raise InputError(f"subject id {ref.subject_id!r} occurs twice", ref.path)
            seen.add(ref.subject_id)
        return src

    def read(self, ref: SubjectRef) -> np.ndarray:
        with _open(ref.path) as f:
            try:
                return f["timeseries"][ref.row]
            except OSError as exc:
                raise InputError(f"cannot read subject row {ref.row} ({exc})", ref.path) from exc
