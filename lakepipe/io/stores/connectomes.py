"""Connectome stores (``connectomes/<name>.zarr``): series streamed in one subject at a time, read
lazily as xarray.

Series are stored centred and scaled to unit norm per voxel (correlation becomes a dot product),
with the per-voxel ``scale`` (norm) and ``mean`` so the raw series stay exactly recoverable:
``raw = timeseries * scale + mean``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import layout
from lakepipe.io.sources.base import VoxelGeometry
from lakepipe.io.storage import exists, get_array, join, open_group, read_array, storage_options, zarr_store
from lakepipe.io.stores.derivatives import strings_as_objects
from lakepipe.io.stores.grids import grid_attrs

STORAGE_CONVENTION = "centred-unit-norm"
CHUNK_BYTES = 8 * 2**20
#: per-row array of float16 stores: the largest |stored - float32| of the row's unit series
ROUNDING = "rounding_error"


def float16_accuracy(max_abs_error: float, n_time: int) -> dict[str, Any]:
    """What float16 storage costs against float32 (recorded in the store's attributes at ingest).

    Each stored value of the unit-norm series moves by at most ``u16 |x| + 2^-25`` (``u16 = 2^-11``,
    the second term for subnormals), so a voxel series by at most ``e = 2^-11 + 2^-25 sqrt(T)`` in
    norm. r of a seed with a voxel moves by at most ``e`` through the voxel's series and
    ``2 e rho`` through the seed's (a relative perturbation d of a vector moves its direction by
    <= 2 d), where ``rho = sum_k w_k ||x_k|| / ||sum_k w_k x_k||`` over the seed's voxels (1 when they
    all agree); ``|dz| <= |dr| / (1 - (|r| + |dr|)^2)`` and the zmap (mean over subjects) moves by
    at most the largest. ``max_abs_rounding_error`` is measured over every value stored.
    """
    e = 2.0**-11 + 2.0**-25 * float(np.sqrt(n_time))
    dr = 3 * e  # rho = 1
    return {
        "unit_roundoff": 2.0**-11,
        "max_abs_rounding_error": max_abs_error,
        "series_norm_error_bound": e,
        "r_error_bound_coherent_seed": dr,
        "z_error_bound_coherent_seed_r_le_0.9": dr / (1 - (0.9 + dr) ** 2),
        "bound": "|dr| <= e (1 + 2 rho), e = 2^-11 + 2^-25 sqrt(T), rho = sum_k w_k ||x_k|| / "
        "||sum_k w_k x_k|| over the seed's voxels; |dz| <= |dr| / (1 - (|r| + |dr|)^2); "
        "measured FNM differences: benchmarks/bench_fnm.py",
    }


def voxel_block(n_time: int, n_features: int, chunk_bytes: int = CHUNK_BYTES, itemsize: int = 4) -> int:
    """Feature-axis chunk length so that one (time x block) chunk is about ``chunk_bytes``."""
    return int(max(1, min(n_features, chunk_bytes // (itemsize * max(n_time, 1)))))


class ConnectomeWriter:
    """Writes subjects into ``connectomes/<name>.zarr``: reserve rows, fill them (from any process:
    :class:`ConnectomeRows`), commit them.

    Rows written but not yet committed are invisible to readers: :meth:`commit` records the new
    subject count last, so a killed ingest leaves the store as it was, and a re-run overwrites the
    leftovers. Each row is written by one task (its own chunks), so Dask workers fill rows in
    parallel; subject ids and time point counts (chunks shared by many rows) are written here.

    A subject may have fewer time points than the store (``n_time``): its series is zero past its
    ``n_valid`` points, which leaves every correlation of the centred unit-norm series unchanged.
    """

    def __init__(
        self,
        lake: str,
        name: str,
        *,
        kind: str,
        n_time: int,
        geometry: VoxelGeometry | None = None,
        regions: pd.DataFrame | None = None,
        space: str = "MNI152NLin6Asym",
        source: str = "",
        dtype: str = "float32",
        options: dict[str, Any] | None = None,
    ):
        self.url = layout.connectome_store(lake, name)
        self.name = name
        feature = "voxel" if kind == "voxel" else "region"
        if kind == "voxel":
            assert geometry is not None
            n_feat = geometry.n_voxels
        else:
            assert regions is not None
            n_feat = len(regions)
        options = dict(options or {})
        if exists(join(self.url, "zarr.json")):
            self.group = open_group(self.url, mode="a")
            a: dict[str, Any] = dict(self.group.attrs)
            if a.get("storage") == "in-place-hdf5":  # lakepipe.io.stores.inplace: no series to add to
                raise InputError(f"connectome '{name}' is registered in place: ingest under another --name")
            if a.get("kind") != kind or int(a.get("n_time", 0)) < n_time or a.get("n_features") != n_feat:
                raise InputError(
                    f"connectome '{name}' exists with kind={a.get('kind')}, time={a.get('n_time')}, "
                    f"features={a.get('n_features')}; the source has kind={kind}, time={n_time}, "
                    f"features={n_feat}: ingest it under another --name"
                )
            if (
                kind == "voxel"
                and geometry is not None
                and not np.array_equal(read_array(self.group, "ijk"), geometry.ijk)
            ):
                raise InputError(f"connectome '{name}' exists with a different brain mask")
            stored = dict(a.get("options") or {})
            if stored != options:
                changed = sorted(k for k in set(stored) | set(options) if stored.get(k) != options.get(k))
                raise InputError(
                    f"connectome '{name}' was ingested with other options ({', '.join(changed)} differ): its "
                    "subjects would not be comparable; ingest under another --name"
                )
            stored_dtype = get_array(self.group, "timeseries").dtype
            if str(stored_dtype) != dtype:
                raise InputError(f"connectome '{name}' is stored as {stored_dtype}, not {dtype}")
        else:
            self.group = self._create(
                kind, feature, n_time, n_feat, geometry, regions, space, source, dtype, options
            )
        attrs: dict[str, Any] = dict(self.group.attrs)
        self.n_time = int(attrs["n_time"])
        self.n_committed = int(attrs.get("n_subjects", 0))
        self.reserved = 0

    def _create(
        self,
        kind: str,
        feature: str,
        n_time: int,
        n_feat: int,
        geometry: VoxelGeometry | None,
        regions: pd.DataFrame | None,
        space: str,
        source: str,
        dtype: str,
        options: dict[str, Any],
    ) -> zarr.Group:
        g = open_group(self.url, mode="w")
        block = voxel_block(n_time, n_feat, itemsize=np.dtype(dtype).itemsize)
        g.create_array(
            "timeseries",
            shape=(0, n_time, n_feat),
            chunks=(1, n_time, block),
            dtype=dtype,
            compressors=None,
            dimension_names=["subject", "time", feature],
        )
        for var in ("scale", "mean"):
            g.create_array(
                var,
                shape=(0, n_feat),
                chunks=(1, n_feat),
                dtype="float32",
                dimension_names=["subject", feature],
            )
        g.create_array("subject", shape=(0,), chunks=(1024,), dtype=str, dimension_names=["subject"])
        g.create_array("n_valid", shape=(0,), chunks=(1024,), dtype="int32", dimension_names=["subject"])
        g.create_array("group", shape=(0,), chunks=(1024,), dtype=str, dimension_names=["subject"])
        if np.dtype(dtype) != np.float32:  # each row's measured rounding, in a chunk of its own (writers)
            g.create_array(ROUNDING, shape=(0,), chunks=(1,), dtype="float32", dimension_names=["subject"])
        if kind == "voxel":
            assert geometry is not None
            g.create_array("ijk", shape=geometry.ijk.shape, dtype="int32", dimension_names=[feature, "axis"])[
                :
            ] = geometry.ijk
            g.create_array("voxel", shape=(n_feat,), dtype="int32", dimension_names=[feature])[:] = np.arange(
                n_feat, dtype=np.int32
            )
            grid_meta = grid_attrs(geometry.grid)
        else:
            assert regions is not None
            g.create_array("region", shape=(n_feat,), dtype="int32", dimension_names=[feature])[:] = regions[
                "index"
            ].to_numpy(np.int32)
            for col in ("name", "network", "hemisphere"):
                vals = regions[col].fillna("").astype(str).to_numpy()
                g.create_array(f"region_{col}", shape=(n_feat,), dtype=str, dimension_names=[feature])[:] = (
                    vals
                )
            grid_meta = None
        g.attrs.update(
            {
                "kind": kind,
                "n_time": n_time,
                "n_features": n_feat,
                "n_subjects": 0,
                "space": space,
                "grid": grid_meta,
                "storage": STORAGE_CONVENTION,
                "dtype": dtype,
                "source": source,
                "options": options,
                "lakepipe_store": "connectome",
            }
        )
        return g

    def subject_ids(self) -> list[str]:
        """Committed subject ids."""
        return [str(s) for s in np.asarray(get_array(self.group, "subject")[: self.n_committed])]

    def reserve(self, n: int) -> range:
        """Make room for ``n`` rows after the committed ones (leftovers of a killed run are dropped)."""
        total = self.n_committed + n
        extra = (ROUNDING,) if ROUNDING in self.group else ()
        for name in ("timeseries", "scale", "mean", "subject", "n_valid", "group", *extra):
            arr = get_array(self.group, name)
            if arr.shape[0] != total:
                arr.resize((total, *arr.shape[1:]))
        self.reserved = n
        return range(self.n_committed, total)

    def rows(self) -> ConnectomeRows:
        """A picklable writer of this store's rows, for tasks on other processes."""
        return ConnectomeRows(self.url, storage_options(self.url).get("endpoint_url"), self.n_time)

    def commit(
        self, subject_ids: list[str], n_valid: list[int], groups: list[str] | None = None
    ) -> list[str]:
        """Make the reserved rows visible with their subject ids, time point counts and participant
        (``groups``: when rows are runs, the subject each belongs to; default: the row's own id)."""
        if len(subject_ids) != self.reserved or len(n_valid) != self.reserved:
            raise ValueError(f"{len(subject_ids)} subject(s) for {self.reserved} reserved row(s)")
        rows = slice(self.n_committed, self.n_committed + self.reserved)
        if self.reserved:
            get_array(self.group, "subject")[rows] = np.asarray(subject_ids, dtype=str)
            get_array(self.group, "n_valid")[rows] = np.asarray(n_valid, dtype=np.int32)
            get_array(self.group, "group")[rows] = np.asarray(groups or subject_ids, dtype=str)
        n = self.n_committed + self.reserved
        if ROUNDING in self.group and n:
            self.group.attrs["float16"] = float16_accuracy(
                float(np.max(read_array(self.group, ROUNDING)[:n])), self.n_time
            )
        self.group.attrs["n_subjects"] = n
        self.n_committed, self.reserved = n, 0
        return list(subject_ids)

    def rollback(self) -> None:
        """Drop the reserved rows (nothing committed changes)."""
        self.reserved = 0
        self.reserve(0)


@dataclass(frozen=True)
class ConnectomeRows:
    """Writes one subject's row of a connectome store (what an ingest task on a worker holds)."""

    url: str
    endpoint_url: str | None
    n_time: int

    def write(self, row: int, unit: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> int:
        """Store a (time, feature) unit-norm series (zero-padded to the store's time axis), its scale
        and mean in row ``row``; returns the subject's number of time points."""
        group = zarr.open_group(zarr_store(self.url, endpoint_url=self.endpoint_url), mode="a", zarr_format=3)
        n_valid = int(unit.shape[0])
        if n_valid > self.n_time:
            raise ValueError(f"{n_valid} time points, the store holds at most {self.n_time}")
        ts = get_array(group, "timeseries")
        if n_valid < self.n_time:
            padded = np.zeros((self.n_time, unit.shape[1]), ts.dtype)
            padded[:n_valid] = unit
            unit = padded
        stored = unit.astype(ts.dtype, copy=False)
        ts[row] = stored
        if ROUNDING in group:  # float16: the largest change of a value against its float32, measured
            err = 0.0
            for a in range(0, unit.shape[1], 16384):
                d = stored[:, a : a + 16384].astype(np.float32) - unit[:, a : a + 16384].astype(np.float32)
                err = max(err, float(np.max(np.abs(d), initial=0.0)))
            get_array(group, ROUNDING)[row] = err
        get_array(group, "scale")[row] = scale
        get_array(group, "mean")[row] = mean
        return n_valid


def open_connectome(
    lake: str, name: str, chunks: dict[str, Any] | Literal["auto"] | None = "auto"
) -> xr.Dataset:
    """The connectome as a lazy :class:`xarray.Dataset` (committed subjects only)."""
    url = layout.connectome_store(lake, name)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(f"no connectome named '{name}' in the lake (see `lakepipe catalog ls`)")
    ds = xr.open_zarr(
        zarr_store(url, read_only=True),
        consolidated=False,
        zarr_format=3,
        chunks={} if chunks == "auto" else chunks,
    )
    if ds.attrs.get("storage") == "in-place-hdf5":  # HDF5 batches read where they are: see inplace.py
        from lakepipe.io.stores.inplace import open_inplace

        ds = open_inplace(ds, url)
    n = int(ds.attrs.get("n_subjects", 0))
    return strings_as_objects(ds.isel(subject=slice(0, n)))
