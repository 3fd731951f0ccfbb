"""Connectome sources: one interface over HDF5 batches, 4D NIfTI folders and parcel time series.

A source lists its subjects and yields one subject's ``(time, feature)`` float32 array at a time,
so ingestion streams with memory bounded by one subject, whatever the connectome size.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lakepipe.errors import InputError
from lakepipe.space import Grid


@dataclass(frozen=True)
class VoxelGeometry:
    """In-mask voxels of a voxel connectome: the grid and each voxel's ijk (C order of the mask)."""

    grid: Grid
    ijk: np.ndarray  #: (V, 3) int

    @property
    def n_voxels(self) -> int:
        return int(self.ijk.shape[0])

    def flat_indices(self) -> np.ndarray:
        return np.ravel_multi_index(tuple(self.ijk.T), self.grid.shape)

    def same_as(self, other: VoxelGeometry) -> bool:
        return self.grid.same_as(other.grid) and np.array_equal(self.ijk, other.ijk)


@dataclass
class SubjectRef:
    """Where one subject's series lives in the source, with a cheap fingerprint of it."""

    subject_id: str
    path: Path
    row: int | None = None
    fingerprint: str = ""


@dataclass
class ConnectomeSource:
    """Base of the source readers; subclasses fill ``subjects`` and implement :meth:`read`."""

    root: Path
    kind: str = "voxel"  #: "voxel" or "parcel"
    subjects: list[SubjectRef] = field(default_factory=list)
    n_time: int = 0
    geometry: VoxelGeometry | None = None
    regions: pd.DataFrame | None = None  #: index, name, network (parcel sources)
    space: str = "MNI152NLin6Asym"

    @property
    def n_features(self) -> int:
        return self.geometry.n_voxels if self.kind == "voxel" else len(self.regions)

    def add_subject_file(self, path: Path, n_time: int) -> None:
        """Register a one-subject file (id from its ``sub-`` entity or name), checking the time axis."""
        if self.n_time == 0:
            self.n_time = int(n_time)
        elif n_time != self.n_time:
            raise InputError(f"{n_time} timepoints, other subjects have {self.n_time}", path)
        from lakepipe.bids import parse_entities

        sub = safe_subject_id(parse_entities(path.name).get("sub") or path.name.split(".")[0])
        if any(r.subject_id == sub for r in self.subjects):
            raise InputError(f"subject id {sub!r} occurs twice", path)
        self.subjects.append(SubjectRef(sub, path, None, file_fingerprint(path)))

    def read(self, ref: SubjectRef) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def iter_subjects(self, refs: list[SubjectRef] | None = None) -> Iterator[tuple[SubjectRef, np.ndarray]]:
        """Yield ``(ref, array (time, feature) float32)`` validated for shape and finiteness."""
        for ref in refs if refs is not None else self.subjects:
            data = np.asarray(self.read(ref), dtype=np.float32)
            where = f"{ref.path}" + (f" (subject row {ref.row})" if ref.row is not None else "")
            if data.shape != (self.n_time, self.n_features):
                raise InputError(
                    f"time series of shape {data.shape}, expected (time={self.n_time}, "
                    f"{self.kind}s={self.n_features})",
                    where,
                )
            if not np.all(np.isfinite(data)):
                bad = int(np.count_nonzero(~np.isfinite(data)))
                raise InputError(f"time series contain {bad} NaN or infinite values", where)
            yield ref, data


def file_fingerprint(path: Path, extra: str = "") -> str:
    """Cheap identity of a source file: name, size and modification time (plus ``extra``)."""
    st = os.stat(path)
    raw = f"{path.name}|{st.st_size}|{int(st.st_mtime_ns)}|{extra}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


_SAFE_ID = re.compile(r"[^A-Za-z0-9]")


def safe_subject_id(raw: str) -> str:
    """A connectome subject id reduced to letters and digits (``sub-`` prefix dropped)."""
    raw = raw[4:] if raw.startswith("sub-") else raw
    out = _SAFE_ID.sub("", raw)
    if not out:
        raise InputError(f"cannot make a subject id from {raw!r}")
    return out


def open_source(
    path: str | Path, *, mask: str | Path | None = None, regions: str | Path | None = None
) -> ConnectomeSource:
    """Detect the source format of a folder and open it.

    ``*.h5``/``*.hdf5`` files: GSP1000-style HDF5 batches. ``*.nii``/``*.nii.gz`` 4D files plus a brain
    mask (``mask`` or a file named ``*mask*``): per-subject NIfTI. ``*.npy``/``*.tsv`` arrays plus a
    region table (``regions`` or ``regions.tsv``): parcel-level time series.
    """
    from lakepipe.io.bold import NiftiFolderSource
    from lakepipe.io.hdf5 import HDF5BatchSource
    from lakepipe.io.parcels import ParcelSource

    root = Path(path)
    if not root.is_dir():
        raise InputError("connectome source must be a folder", root)
    names = [p.name for p in root.iterdir()]
    if any(n.endswith((".h5", ".hdf5")) for n in names):
        return HDF5BatchSource.open(root)
    if any(n.endswith((".nii", ".nii.gz")) for n in names):
        return NiftiFolderSource.open(root, mask=mask)
    if any(n.endswith((".npy", ".tsv")) for n in names):
        return ParcelSource.open(root, regions=regions)
    raise InputError("no connectome files found (expected *.h5, 4D *.nii.gz, or parcel *.npy/*.tsv)", root)
