"""Connectomes read in place: HDF5 batches registered in the lake without copying their series.

``connectomes/<name>.zarr`` of an in-place connectome has no ``timeseries`` array. It holds what the
analyses need besides the series: each subject's per-voxel ``mean`` and ``scale`` (the norm of the
centred series), subject ids, time point counts, the mask geometry (``ijk``, grid), and for each store
row the batch file (``batch``) and its row there (``batch_row``). A method that reads a row gets the
batch's raw series centred and scaled to unit norm on the fly by the function a copied ingest stores
them with (:func:`lakepipe.compute.correlation.center_unit`), so it sees bit for bit the series a copied
store would hold and every result is the same.

Each batch is recorded with its size, modification time (ns) and a hash of its header (dataset
shapes and types, mask indices, affine, mask shape, subject ids). Opening the connectome
(:func:`open_inplace`) checks all three for the batches its subjects come from; every row reader
checks size and time of each file it opens. A batch that changed, moved or vanished after
registration is a one-line :class:`SourceChangedError` telling the user to re-ingest.

Cost (see benchmarks/bench_inplace.py): the lake holds 2 x 4 bytes per subject and voxel instead
of 4 x time points; every pass reads the HDF5 batches and centres each subject again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lakepipe.errors import InputError
from lakepipe.io import layout
from lakepipe.io.sources.base import VoxelGeometry
from lakepipe.io.storage import (
    exists,
    get_array,
    join,
    open_group,
    read_array,
    remove,
    storage_options,
    zarr_store,
)
from lakepipe.io.stores.grids import grid_attrs, grid_from_attrs

if TYPE_CHECKING:
    import h5py
    import xarray as xr
    import zarr

#: ``storage`` attribute of an in-place connectome store (copied stores: ``centred-unit-norm``)
INPLACE_STORAGE = "in-place-hdf5"
_ROW_ARRAYS = ("scale", "mean", "subject", "n_valid", "group", "batch", "batch_row")


class SourceChangedError(InputError):
    """A batch of an in-place connectome changed (or vanished) after it was registered (exit 2)."""


# ------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class BatchRecord:
    """One HDF5 batch as registered: its file (in the connectome's root), size, time and header hash."""

    file: str
    size: int
    mtime_ns: int
    header: str
    rows: int

    def to_attrs(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "header": self.header,
            "rows": self.rows,
        }

    @classmethod
    def from_attrs(cls, a: dict[str, Any]) -> BatchRecord:
        return cls(str(a["file"]), int(a["size"]), int(a["mtime_ns"]), str(a["header"]), int(a["rows"]))


def header_hash(f: h5py.File) -> str:
    """SHA-256 of what identifies a batch besides its series: the datasets' shapes, types and
    chunking, the mask indices, affine and shape, and the subject ids."""
    h = hashlib.sha256()
    for key in sorted(f.keys()):
        node = f[key]
        shape = getattr(node, "shape", None)
        h.update(f"{key}|{shape}|{getattr(node, 'dtype', '')}|{getattr(node, 'chunks', '')}\n".encode())
    for key in ("mask_indices", "mask_affine", "subject_ids", "mask_shape"):
        if key in f:
            h.update(key.encode() + np.ascontiguousarray(np.asarray(f[key][()])).tobytes())
    for key in sorted(f.attrs.keys()):
        h.update(f"attr {key}={np.asarray(f.attrs[key]).tolist()}\n".encode())
    return h.hexdigest()


def batch_record(path: Path) -> BatchRecord:
    """The record of one batch file as it is now."""
    import h5py

    st = os.stat(path)
    try:
        with h5py.File(path, "r") as f:
            return BatchRecord(
                path.name, st.st_size, st.st_mtime_ns, header_hash(f), int(f["timeseries"].shape[0])
            )
    except (OSError, KeyError) as exc:
        raise InputError(f"not a readable HDF5 batch ({exc})", path) from None


def _changed(root: Path, rec: BatchRecord, name: str, what: str) -> SourceChangedError:
    return SourceChangedError(
        f"{what} since it was registered in place as connectome '{name}'; re-ingest it: "
        f"lakepipe ingest connectome {root} --in-place --name {name}",
        root / rec.file,
    )


def check_batch(root: Path, rec: BatchRecord, name: str, *, header: bool = False) -> None:
    """Refuse a batch whose size or modification time (and, with ``header``, header hash) differ
    from its record."""
    path = root / rec.file
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _changed(root, rec, name, "no longer exists (moved or deleted)") from None
    if st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
        raise _changed(root, rec, name, "changed (size or modification time differ)")
    if header:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                same = header_hash(f) == rec.header
        except OSError:
            same = False
        if not same:
            raise _changed(root, rec, name, "changed (its header or mask differ)")


# -------------------------------------------------------------------------------------------- writer


class InplaceWriter:
    """Writes the small store of an in-place connectome: reserve rows, fill their statistics (from any
    process: :class:`InplaceStats`), commit them (the subject count is written last, so rows of a killed
    registration stay invisible, as in :class:`~lakepipe.io.stores.connectomes.ConnectomeWriter`)."""

    def __init__(
        self,
        lake: str,
        name: str,
        *,
        root: Path,
        n_time: int,
        geometry: VoxelGeometry,
        space: str,
        batches: list[BatchRecord],
    ):
        self.url = layout.connectome_store(lake, name)
        self.name = name
        self.root = Path(root)
        if exists(join(self.url, "zarr.json")):
            self.group = open_group(self.url, mode="a")
            a: dict[str, Any] = dict(self.group.attrs)
            if a.get("storage") != INPLACE_STORAGE:
                raise InputError(
                    f"connectome '{name}' holds copied series; register the folder in place under "
                    "another --name"
                )
            if int(a.get("n_time", 0)) != n_time or int(a.get("n_features", 0)) != geometry.n_voxels:
                raise InputError(
                    f"connectome '{name}' exists with time={a.get('n_time')}, voxels={a.get('n_features')}; "
                    f"the batches have time={n_time}, voxels={geometry.n_voxels}: use another --name"
                )
            if not np.array_equal(read_array(self.group, "ijk"), geometry.ijk) or not grid_from_attrs(
                a["grid"]
            ).same_as(geometry.grid):
                raise InputError(f"connectome '{name}' exists with a different brain mask", self.root)
        else:
            self.group = self._create(n_time, geometry, space)
        attrs: dict[str, Any] = dict(self.group.attrs)
        self.n_committed = int(attrs.get("n_subjects", 0))
        self.reserved = 0
        self.set_batches(batches)

    def _create(self, n_time: int, geometry: VoxelGeometry, space: str) -> zarr.Group:
        g = open_group(self.url, mode="w")
        n_vox = geometry.n_voxels
        for var in ("scale", "mean"):
            g.create_array(
                var,
                shape=(0, n_vox),
                chunks=(1, n_vox),
                dtype="float32",
                dimension_names=["subject", "voxel"],
            )
        for var, dtype in (("subject", str), ("group", str), ("n_valid", "int32")):
            g.create_array(var, shape=(0,), chunks=(1024,), dtype=dtype, dimension_names=["subject"])
        for var in ("batch", "batch_row"):
            g.create_array(var, shape=(0,), chunks=(1024,), dtype="int32", dimension_names=["subject"])
        g.create_array("ijk", shape=geometry.ijk.shape, dtype="int32", dimension_names=["voxel", "axis"])[
            :
        ] = geometry.ijk
        g.create_array("voxel", shape=(n_vox,), dtype="int32", dimension_names=["voxel"])[:] = np.arange(
            n_vox, dtype=np.int32
        )
        g.attrs.update(
            {
                "kind": "voxel",
                "n_time": int(n_time),
                "n_features": n_vox,
                "n_subjects": 0,
                "space": space,
                "grid": grid_attrs(geometry.grid),
                "storage": INPLACE_STORAGE,
                "dtype": "float32",
                "source": str(self.root),
                "options": {},
                "inplace": {"format": "hdf5", "root": str(self.root), "batches": []},
                "lakepipe_store": "connectome",
            }
        )
        return g

    @property
    def batches(self) -> list[BatchRecord]:
        attrs: dict[str, Any] = dict(self.group.attrs)
        return [BatchRecord.from_attrs(b) for b in attrs["inplace"]["batches"]]

    def set_batches(self, batches: list[BatchRecord]) -> None:
        """Record the batches (recorded ones keep their index: rows refer to batches by index)."""
        known = self.batches
        files = [b.file for b in known]
        merged = list(known)
        for b in batches:
            if b.file in files:
                merged[files.index(b.file)] = b
            else:
                merged.append(b)
        self.group.attrs["inplace"] = {
            "format": "hdf5",
            "root": str(self.root),
            "batches": [b.to_attrs() for b in merged],
        }
        self.group.attrs["source"] = str(self.root)

    def batch_index(self, file: str) -> int:
        return [b.file for b in self.batches].index(file)

    def subject_ids(self) -> list[str]:
        return [str(s) for s in np.asarray(get_array(self.group, "subject")[: self.n_committed])]

    def reserve(self, n: int) -> range:
        total = self.n_committed + n
        for name in _ROW_ARRAYS:
            arr = get_array(self.group, name)
            if arr.shape[0] != total:
                arr.resize((total, *arr.shape[1:]))
        self.reserved = n
        return range(self.n_committed, total)

    def stats(self) -> InplaceStats:
        return InplaceStats(self.url, storage_options(self.url).get("endpoint_url"))

    def commit(
        self, subject_ids: list[str], n_valid: list[int], batch: list[int], batch_row: list[int]
    ) -> list[str]:
        if not len(subject_ids) == len(n_valid) == len(batch) == len(batch_row) == self.reserved:
            raise ValueError(f"{len(subject_ids)} subject(s) for {self.reserved} reserved row(s)")
        rows = slice(self.n_committed, self.n_committed + self.reserved)
        if self.reserved:
            get_array(self.group, "subject")[rows] = np.asarray(subject_ids, dtype=str)
            get_array(self.group, "group")[rows] = np.asarray(subject_ids, dtype=str)
            get_array(self.group, "n_valid")[rows] = np.asarray(n_valid, dtype=np.int32)
            get_array(self.group, "batch")[rows] = np.asarray(batch, dtype=np.int32)
            get_array(self.group, "batch_row")[rows] = np.asarray(batch_row, dtype=np.int32)
        n = self.n_committed + self.reserved
        self.group.attrs["n_subjects"] = n
        self.n_committed, self.reserved = n, 0
        return list(subject_ids)

    def rollback(self) -> None:
        self.reserved = 0
        self.reserve(0)


def reset_store(lake: str, name: str) -> None:
    """Remove an in-place connectome's store (only metadata: the batches are not touched)."""
    url = layout.connectome_store(lake, name)
    if exists(join(url, "zarr.json")):
        a = dict(open_group(url).attrs)
        if a.get("storage") != INPLACE_STORAGE:
            raise InputError(f"connectome '{name}' holds copied series: it is not replaced by a registration")
    remove(url)


@dataclass(frozen=True)
class InplaceStats:
    """Writes one subject's mean and scale into its row (what a registration task holds)."""

    url: str
    endpoint_url: str | None

    def write(self, row: int, scale: np.ndarray, mean: np.ndarray) -> None:
        import zarr

        group = zarr.open_group(zarr_store(self.url, endpoint_url=self.endpoint_url), mode="a", zarr_format=3)
        get_array(group, "scale")[row] = scale
        get_array(group, "mean")[row] = mean


# -------------------------------------------------------------------------------------------- reader


def is_inplace(attrs: Any) -> bool:
    return dict(attrs).get("storage") == INPLACE_STORAGE


def _name_of(url: str) -> str:
    return Path(url).name.removesuffix(".zarr")


class InplaceRows:
    """Row reader of an in-place connectome (the interface of :mod:`lakepipe.io.stores.rows`): each
    row read from its batch, centred and scaled to unit norm exactly as a copied ingest stores it.

    Files are opened on first use, each checked against its record (size, modification time)."""

    def __init__(self, group: zarr.Group, url: str):
        a: dict[str, Any] = dict(group.attrs)
        info = dict(a["inplace"])
        self.name = _name_of(url)
        self.root = Path(info["root"])
        self.records = [BatchRecord.from_attrs(b) for b in info["batches"]]
        n = int(a.get("n_subjects", 0))
        self.n_time, self.n_features = int(a["n_time"]), int(a["n_features"])
        self.shape = (n, self.n_time, self.n_features)
        self.dtype = np.dtype(np.float32)
        from lakepipe.io.stores.connectomes import voxel_block

        self.block = voxel_block(self.n_time, self.n_features)  # as a copied store would chunk it
        self.n_valid: np.ndarray | None = read_array(group, "n_valid")
        self._batch = read_array(group, "batch")
        self._batch_row = read_array(group, "batch_row")
        self._scale, self._mean = get_array(group, "scale"), get_array(group, "mean")
        self._files: dict[int, h5py.File] = {}

    def _file(self, b: int) -> h5py.File:
        f = self._files.get(b)
        if f is None:
            import h5py

            rec = self.records[b]
            check_batch(self.root, rec, self.name)
            f = self._files[b] = h5py.File(self.root / rec.file, "r")
        return f

    def read_raw(self, row: int, out: np.ndarray) -> np.ndarray:
        """The raw (time, voxel) series of store row ``row`` into ``out`` (float32)."""
        ds = self._file(int(self._batch[row]))["timeseries"]
        r = int(self._batch_row[row])
        try:
            if ds.dtype == np.float32 and out.flags.c_contiguous:
                ds.read_direct(out, np.s_[r])
            else:
                np.copyto(out, ds[r], casting="unsafe")
        except OSError as exc:
            raise InputError(
                f"cannot read subject row {r} ({exc})", self.root / self.records[int(self._batch[row])].file
            ) from exc
        return out

    def read_into(self, row: int, out: np.ndarray) -> np.ndarray:
        """The unit-norm (time, voxel) series of row ``row`` into ``out``, as ingest stores it."""
        from lakepipe.compute.correlation import center_unit

        self.read_raw(row, out)
        if not np.all(np.isfinite(out)):
            bad = int(np.count_nonzero(~np.isfinite(out)))
            rec = self.records[int(self._batch[row])]
            raise InputError(f"time series contain {bad} NaN or infinite values", self.root / rec.file)
        unit, _, _ = center_unit(out, axis=0)
        np.copyto(out, unit)
        return out

    def block_getter(self) -> None:
        """None: a row is centred as a whole from its HDF5 batch (see :mod:`lakepipe.io.stores.rows`)."""
        return None

    def scale(self, row: int) -> np.ndarray:
        return np.asarray(self._scale[row])

    def mean(self, row: int) -> np.ndarray:
        return np.asarray(self._mean[row])

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


@dataclass(frozen=True)
class _SeriesBlocks:
    """Picklable recipe of the lazy ``timeseries`` of an in-place dataset: one block per subject row."""

    url: str
    endpoint_url: str | None

    def __call__(self, block_id: tuple[int, ...] | None = None) -> np.ndarray:
        import zarr

        assert block_id is not None
        group = zarr.open_group(
            zarr_store(self.url, read_only=True, endpoint_url=self.endpoint_url), mode="r", zarr_format=3
        )
        rows = InplaceRows(group, self.url)
        try:
            out = np.empty((rows.n_time, rows.n_features), np.float32)
            return rows.read_into(int(block_id[0]), out)[None]
        finally:
            rows.close()


def check_sources(url: str, attrs: dict[str, Any], batch: np.ndarray) -> None:
    """Check every batch that committed rows come from (size, time and header hash)."""
    info = dict(attrs["inplace"])
    root, name = Path(info["root"]), _name_of(url)
    records = [BatchRecord.from_attrs(b) for b in info["batches"]]
    for b in sorted({int(x) for x in batch}):
        check_batch(root, records[b], name, header=True)


def open_inplace(ds: xr.Dataset, url: str) -> xr.Dataset:
    """The dataset of an in-place store (as :func:`xarray.open_zarr` reads it) with its lazy
    ``timeseries`` (subject, time, voxel): the same layout as a copied connectome's."""
    import dask.array as da

    n_rows = int(ds.sizes.get("subject", 0))
    n = int(ds.attrs.get("n_subjects", 0))
    check_sources(url, dict(ds.attrs), np.asarray(ds["batch"].values[:n]))
    t, v = int(ds.attrs["n_time"]), int(ds.attrs["n_features"])
    if n_rows:
        series = da.map_blocks(
            _SeriesBlocks(url, storage_options(url).get("endpoint_url")),
            chunks=((1,) * n_rows, (t,), (v,)),
            dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32),
        )
    else:
        series = da.zeros((0, t, v), np.float32, chunks=(1, t, v))
    return ds.drop_vars(["batch", "batch_row"]).assign(timeseries=(("subject", "time", "voxel"), series))
