"""Normative connectome writers: GSP1000-style HDF5 batches, parcel series and 4D NIfTI.

Subjects are generated and written one at a time (:func:`write_connectome`), each fed to the HDF5
batch writer and to optional per-subject sinks, so memory stays bounded by a few copies of one
subject's (time x voxel) array whatever the connectome size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lakepipe.errors import InputError
from lakepipe.tutorial.common import REPETITION_TIME, SPACE, save_nifti
from lakepipe.tutorial.model import LatentModel, subject_timeseries

if TYPE_CHECKING:
    from lakepipe.tutorial.writer import TutorialPaths

logger = logging.getLogger(__name__)

#: How many subjects (the first ones) are also written as 4D NIfTI.
N_NIFTI_SUBJECTS = 3


def _as_indices_v3(mask_indices: np.ndarray) -> np.ndarray:
    """``mask_indices`` as (V, 3); a (3, V) array with V != 3 is transposed."""
    idx = np.asarray(mask_indices)
    if idx.ndim != 2 or 3 not in idx.shape:
        raise InputError(f"mask_indices must be (V, 3) or (3, V), got {idx.shape}")
    return idx.T if idx.shape[1] != 3 else idx


def _iter_subjects(timeseries: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Subjects of a (S, T, V) array or of an iterable of (T, V) arrays."""
    if isinstance(timeseries, np.ndarray):
        if timeseries.ndim != 3:
            raise InputError(f"timeseries must be (subjects, time, voxels), got {timeseries.shape}")
        yield from timeseries
    else:
        yield from timeseries


def _subject_chunks(t: int, v: int, chunk_mb: float) -> tuple[int, int, int]:
    """Chunk shape inside one subject: the full time axis and as many voxels as fit ``chunk_mb``."""
    vb = int(chunk_mb * 2**20 // (4 * max(t, 1)))
    return 1, max(t, 1), max(1, min(v, vb))


def write_hdf5_batch(
    path: str | PathLike,
    timeseries: np.ndarray | Iterable[np.ndarray],
    mask_indices: np.ndarray,
    mask_affine: np.ndarray,
    mask_shape: Sequence[int],
    subject_ids: Sequence[str] | None = None,
    indices_orientation: str = "V3",
    *,
    compression: str | None = None,
    chunk_mb: float = 64.0,
    space: str | None = SPACE,
    validate: bool = True,
) -> Path:
    """Write one connectome batch in the GSP1000 HDF5 layout, streaming subject by subject.

    Layout: dataset ``timeseries`` (subjects, time, voxels) float32, chunked within a subject (full
    time axis, up to ``chunk_mb`` MiB of voxels); dataset ``mask_indices`` (integer ijk of the in-mask
    voxels, column ``v`` of ``timeseries`` is voxel ``mask_indices[v]``); dataset ``mask_affine``
    (4 x 4); attribute ``mask_shape`` (3 ints) on the file root; optional dataset ``subject_ids``
    (byte strings) and root attribute ``space``. The file is written under a temporary name and
    renamed when complete.

    Parameters
    ----------
    path
        Output ``.h5`` file.
    timeseries
        A (S, T, V) array or an iterable of (T, V) arrays (one per subject; consumed lazily, so a
        generator keeps only one subject in memory).
    mask_indices
        In-mask voxel indices, (V, 3) (a (3, V) array is accepted too).
    mask_affine
        Voxel-to-mm affine of the mask grid, 4 x 4.
    mask_shape
        Shape of the mask grid (3 ints).
    subject_ids
        One identifier per subject, or ``None`` to write no ``subject_ids`` dataset.
    indices_orientation
        ``"V3"`` writes ``mask_indices`` as (V, 3), ``"3V"`` as (3, V) (both occur in the wild).
    compression
        h5py compression filter for ``timeseries`` (e.g. ``"gzip"``); ``None`` (default) is fastest.
    chunk_mb
        Largest chunk size in MiB.
    space
        Template space recorded as the root attribute ``space``; ``None`` writes none.
    validate
        Check shapes (voxel count against ``mask_indices``, same T for all subjects, one id per
        subject). ``False`` writes whatever is given, to build deliberately broken files for tests.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import h5py

    path = Path(path)
    if indices_orientation not in ("V3", "3V"):
        raise InputError(f"indices_orientation must be 'V3' or '3V', got {indices_orientation!r}")
    idx = _as_indices_v3(mask_indices) if validate else np.asarray(mask_indices)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["mask_shape"] = np.asarray(mask_shape, dtype=np.int64)
            if space:
                f.attrs["space"] = space
            f.create_dataset(
                "mask_indices", data=(idx.T if indices_orientation == "3V" else idx).astype(np.int32)
            )
            f.create_dataset("mask_affine", data=np.asarray(mask_affine, dtype=np.float64))
            dset = None
            for x in _iter_subjects(timeseries):
                x = np.asarray(x, dtype=np.float32)
                if dset is None:
                    if validate and (x.ndim != 2 or x.shape[1] != idx.shape[0]):
                        raise InputError(
                            f"subject series {x.shape} do not match {idx.shape[0]} mask voxels", path
                        )
                    dset = f.create_dataset(
                        "timeseries",
                        shape=(0, *x.shape),
                        maxshape=(None, *x.shape),
                        dtype=np.float32,
                        chunks=_subject_chunks(x.shape[0], x.shape[1], chunk_mb),
                        compression=compression,
                    )
                elif validate and x.shape != dset.shape[1:]:
                    raise InputError(f"subject {n} has shape {x.shape}, expected {dset.shape[1:]}", path)
                dset.resize(n + 1, axis=0)
                dset[n] = x
                n += 1
            if dset is None:
                raise InputError("no subjects to write", path)
            if subject_ids is not None:
                ids = [str(s) for s in subject_ids]
                if validate and len(ids) != n:
                    raise InputError(f"{len(ids)} subject ids for {n} subjects", path)
                f.create_dataset("subject_ids", data=np.array([s.encode() for s in ids]))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("wrote %s (%d subjects)", path, n)
    return path


class _ParcelMeans:
    """Parcel means (parcels x time) of voxel series under a label vector, for non-empty parcels."""

    def __init__(self, voxel_labels: np.ndarray):
        order = np.argsort(voxel_labels, kind="stable")
        keep = voxel_labels[order] > 0
        self.columns = order[keep]
        labs = voxel_labels[self.columns]
        self.labels, self.starts, self.counts = np.unique(labs, return_index=True, return_counts=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        sums = np.add.reduceat(x[:, self.columns].astype(np.float64), self.starts, axis=1)
        return (sums / self.counts).T.astype(np.float32)


def subject_ids(subjects: int) -> list[str]:
    """``GSP0001``-style identifiers (at least 4 digits)."""
    width = max(4, len(str(subjects)))
    return [f"GSP{i + 1:0{width}d}" for i in range(subjects)]


def _parcel_sink(out_dir: Path, ids: list[str], means: _ParcelMeans) -> Callable[[int, np.ndarray], None]:
    """Write each subject's parcel series as ``sub-<id>_timeseries.npy`` (the last one as ``.tsv``)."""

    def sink(s: int, x: np.ndarray) -> None:
        ts = means(x)
        if s == len(ids) - 1 and len(ids) > 1:  # one TSV (no header, parcels x time) for that reader
            np.savetxt(out_dir / f"sub-{ids[s]}_timeseries.tsv", ts, delimiter="\t", fmt="%.9g")
        else:
            np.save(out_dir / f"sub-{ids[s]}_timeseries.npy", ts)

    return sink


def _nifti_sink(
    out_dir: Path, ids: list[str], model: LatentModel, n_subjects: int
) -> Callable[[int, np.ndarray], None]:
    """Write the first ``n_subjects`` subjects as 4D NIfTI (zeros outside the brain mask)."""
    flat = np.ravel_multi_index(tuple(model.ijk.T), model.grid.shape, order="F")

    def sink(s: int, x: np.ndarray) -> None:
        if s >= n_subjects:
            return
        vol = np.zeros((*model.grid.shape, x.shape[0]), np.float32, order="F")  # NIfTI's on-disk order
        columns = vol.reshape(-1, x.shape[0], order="F")  # a view: one contiguous column per volume
        for t in range(x.shape[0]):
            columns[flat, t] = x[t]
        save_nifti(vol, model.grid.affine, out_dir / f"sub-{ids[s]}_bold.nii.gz", tr=REPETITION_TIME)

    return sink


def write_connectome(
    conn_dir: Path,
    model: LatentModel,
    seed: int,
    subjects: int,
    timepoints: int,
    batch_size: int,
    sinks: Sequence[Callable[[int, np.ndarray], None]],
) -> list[dict]:
    """Generate subjects one at a time into HDF5 batches, feeding each to ``sinks`` too."""
    conn_dir.mkdir(parents=True)
    ids = subject_ids(subjects)
    batches = []
    for b, start in enumerate(range(0, subjects, batch_size)):
        members = range(start, min(start + batch_size, subjects))

        def stream(members: range = members) -> Iterator[np.ndarray]:
            for s in members:
                x = subject_timeseries(model, seed, s, timepoints)
                for sink in sinks:
                    sink(s, x)
                yield x

        path = conn_dir / f"batch-{b + 1:03d}.h5"
        write_hdf5_batch(
            path,
            stream(),
            model.ijk,
            model.grid.affine,
            model.grid.shape,
            subject_ids=[ids[s] for s in members],
        )
        batches.append({"file": path.name, "subject_ids": [ids[s] for s in members]})
        logger.info(
            "connectome: wrote %s (%d subjects x %d timepoints x %d voxels)",
            path.name,
            len(members),
            timepoints,
            model.n_voxels,
        )
    return batches


def optional_sinks(
    paths: TutorialPaths, model: LatentModel, subjects: int, atlas_vol: np.ndarray, table
) -> list[Callable[[int, np.ndarray], None]]:
    """Per-subject writers for the parcel series and the 4D NIfTI, as asked."""
    ids = subject_ids(subjects)
    sinks = []
    if paths.parcel_timeseries is not None:
        paths.parcel_timeseries.mkdir(parents=True)
        means = _ParcelMeans(atlas_vol[model.mask].astype(np.int64))
        regions = table.set_index("index").loc[means.labels, ["name", "network"]].reset_index()
        regions.to_csv(paths.parcel_timeseries / "regions.tsv", sep="\t", index=False, lineterminator="\n")
        sinks.append(_parcel_sink(paths.parcel_timeseries, ids, means))
    if paths.nifti_connectome is not None:
        paths.nifti_connectome.mkdir(parents=True)
        save_nifti(
            model.mask.astype(np.uint8), model.grid.affine, paths.nifti_connectome / "brain_mask.nii.gz"
        )
        sinks.append(_nifti_sink(paths.nifti_connectome, ids, model, N_NIFTI_SUBJECTS))
    return sinks
