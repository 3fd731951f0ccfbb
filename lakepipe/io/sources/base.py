"""Connectome sources: the interface every source format implements, and the registry of formats.

A source lists its subjects and reads one subject's ``(time, feature)`` float32 array at a time,
so ingestion streams with memory bounded by one subject, whatever the connectome size. Each
format is one module of this package defining a :class:`ConnectomeSource` subclass registered
with :func:`register_source`; this base module imports none of them.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from lakepipe.errors import InputError
from lakepipe.space import Grid

S = TypeVar("S", bound="ConnectomeSource")


@dataclass(frozen=True)
class VoxelGeometry:
    """In-mask voxels of a voxel connectome: the grid and each voxel's ijk (C order of the mask)."""

    grid: Grid
    ijk: np.ndarray  #: (V, 3) int

    @property
    def n_voxels(self) -> int:
        return int(self.ijk.shape[0])

    def same_as(self, other: VoxelGeometry) -> bool:
        return self.grid.same_as(other.grid) and np.array_equal(self.ijk, other.ijk)


@dataclass
class SubjectRef:
    """Where one subject's series lives in the source, with a cheap fingerprint of it."""

    subject_id: str
    path: Path
    row: int | None = None
    fingerprint: str = ""
    group: str | None = None  #: the participant a row belongs to when rows are runs (else the subject)


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
        if self.kind == "voxel":
            assert self.geometry is not None
            return self.geometry.n_voxels
        assert self.regions is not None
        return len(self.regions)

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

    #: the name this format is registered under (set by :func:`register_source`)
    format_name: ClassVar[str] = ""

    @classmethod
    def detect(cls, root: Path) -> bool:  # pragma: no cover - abstract
        """Whether ``root`` looks like a folder of this format."""
        raise NotImplementedError

    @classmethod
    def open(cls, root: Path, **options: Any) -> ConnectomeSource:  # pragma: no cover - abstract
        """Scan ``root`` (headers only) and return the source."""
        raise NotImplementedError

    def read(self, ref: SubjectRef) -> np.ndarray:  # pragma: no cover - abstract
        """One subject's (time, feature) series."""
        raise NotImplementedError

    #: whether subjects may have fewer time points than ``n_time`` (e.g. after scrubbing)
    variable_time: ClassVar[bool] = False
    #: whether :meth:`open` takes the connectome's ``space`` (formats that select files by space)
    takes_space: ClassVar[bool] = False

    def recorded_options(self) -> dict[str, Any]:
        """The options that shape the stored series (cleaning, resampling): recorded in the store's
        metadata and each subject's catalog record, so a change is another connectome."""
        return {}

    def read_checked(self, ref: SubjectRef) -> np.ndarray:
        """One subject's ``(time, feature)`` float32 series, validated for shape and finiteness."""
        data = np.asarray(self.read(ref), dtype=np.float32)
        where = f"{ref.path}" + (f" (subject row {ref.row})" if ref.row is not None else "")
        n_time_ok = 1 < data.shape[0] <= self.n_time if self.variable_time else data.shape[0] == self.n_time
        if data.ndim != 2 or not n_time_ok or data.shape[1] != self.n_features:
            raise InputError(
                f"time series of shape {data.shape}, expected (time={self.n_time}, "
                f"{self.kind}s={self.n_features})",
                where,
            )
        if not np.all(np.isfinite(data)):
            bad = int(np.count_nonzero(~np.isfinite(data)))
            raise InputError(f"time series contain {bad} NaN or infinite values", where)
        return data


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


#: registered source formats, in the order :func:`open_source` tries them
SOURCE_FORMATS: dict[str, type[ConnectomeSource]] = {}


def register_source(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator registering a source format under ``name`` (``--from NAME``)."""

    def deco(cls: type[S]) -> type[S]:
        cls.format_name = name
        SOURCE_FORMATS[name] = cls
        return cls

    return deco


def open_source(
    path: str | Path, *, source_format: str | None = None, space: str | None = None, **options: Any
) -> ConnectomeSource:
    """Open a connectome source folder with the format ``source_format``, or the first registered
    format whose :meth:`ConnectomeSource.detect` recognises the folder.

    ``options`` go to the format's ``open`` (for example ``mask=`` for a NIfTI folder, ``regions=``
    for parcel series); options a format does not take are refused. ``space`` (the connectome's
    template space) goes to formats that select their files by space
    (:attr:`ConnectomeSource.takes_space`). Workers read the subject files by their absolute paths:
    with a remote cluster the folder must be on a filesystem the workers share.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError("connectome source must be a folder", root)
    # absolute: subjects are read by workers, whose working folder may be another (a remote cluster)
    root = root.resolve()
    options = {k: v for k, v in options.items() if v is not None}
    if source_format is not None:
        if source_format not in SOURCE_FORMATS:
            raise InputError(f"unknown source format {source_format!r}; known: {', '.join(SOURCE_FORMATS)}")
        cls = SOURCE_FORMATS[source_format]
        return cls.open(root, **({"space": space} if cls.takes_space and space else {}), **options)
    for cls in SOURCE_FORMATS.values():
        if cls.detect(root):
            return cls.open(root, **({"space": space} if cls.takes_space and space else {}), **options)
    raise InputError("no connectome files found (expected *.h5, 4D *.nii.gz, or parcel *.npy/*.tsv)", root)
