"""Connectome stores (``connectomes/<name>.zarr``): series streamed in one subject at a time, read
lazily as xarray.

Series are stored centred and scaled to unit norm per voxel (correlation becomes a dot product),
with the per-voxel ``scale`` (norm) and ``mean`` so the raw series stay exactly recoverable:
``raw = timeseries * scale + mean``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import layout
from lakepipe.io.sources.base import VoxelGeometry
from lakepipe.io.storage import exists, join, open_group, zarr_store
from lakepipe.io.stores.derivatives import strings_as_objects
from lakepipe.io.stores.grids import grid_attrs

STORAGE_CONVENTION = "centred-unit-norm"
CHUNK_BYTES = 8 * 2**20


def voxel_block(n_time: int, n_features: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Feature-axis chunk length so that one (time x block) float32 chunk is about ``chunk_bytes``."""
    return int(max(1, min(n_features, chunk_bytes // (4 * max(n_time, 1)))))


class ConnectomeWriter:
    """Streams subjects into ``connectomes/<name>.zarr``, one subject at a time.

    Subjects written but not yet committed are invisible to readers: :meth:`commit` records the
    new subject count last, so a killed ingest leaves the store as it was, and a re-run overwrites
    the leftovers.
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
    ):
        self.url = layout.connectome_store(lake, name)
        feature = "voxel" if kind == "voxel" else "region"
        n_feat = geometry.n_voxels if kind == "voxel" else len(regions)
        if exists(join(self.url, "zarr.json")):
            self.group = open_group(self.url, mode="a")
            a = self.group.attrs
            if a.get("kind") != kind or a.get("n_time") != n_time or a.get("n_features") != n_feat:
                raise InputError(
                    f"connectome '{name}' exists with kind={a.get('kind')}, time={a.get('n_time')}, "
                    f"features={a.get('n_features')}; the source has kind={kind}, time={n_time}, "
                    f"features={n_feat}: ingest it under another --name"
                )
            if kind == "voxel" and not np.array_equal(self.group["ijk"][:], geometry.ijk):
                raise InputError(f"connectome '{name}' exists with a different brain mask")
        else:
            self.group = self._create(kind, feature, n_time, n_feat, geometry, regions, space, source)
        self.n_committed = int(self.group.attrs.get("n_subjects", 0))
        self.pending: list[str] = []

    def _create(self, kind, feature, n_time, n_feat, geometry, regions, space, source) -> zarr.Group:
        g = open_group(self.url, mode="w")
        block = voxel_block(n_time, n_feat)
        g.create_array(
            "timeseries",
            shape=(0, n_time, n_feat),
            chunks=(1, n_time, block),
            dtype="float32",
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
        if kind == "voxel":
            g.create_array("ijk", shape=geometry.ijk.shape, dtype="int32", dimension_names=[feature, "axis"])[
                :
            ] = geometry.ijk
            g.create_array("voxel", shape=(n_feat,), dtype="int32", dimension_names=[feature])[:] = np.arange(
                n_feat, dtype=np.int32
            )
            grid_meta = grid_attrs(geometry.grid)
        else:
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
                "source": source,
                "lakepipe_store": "connectome",
            }
        )
        return g

    def subject_ids(self) -> list[str]:
        """Committed subject ids."""
        return [str(s) for s in self.group["subject"][: self.n_committed]]

    def write(self, subject_id: str, unit: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> None:
        """Write one subject's (time, feature) unit-norm series after the committed ones."""
        i = self.n_committed + len(self.pending)
        for name in ("timeseries", "scale", "mean", "subject"):
            arr = self.group[name]
            if arr.shape[0] < i + 1:
                arr.resize((i + 1, *arr.shape[1:]))
        self.group["timeseries"][i] = unit
        self.group["scale"][i] = scale
        self.group["mean"][i] = mean
        self.group["subject"][i] = subject_id
        self.pending.append(subject_id)

    def commit(self) -> list[str]:
        """Make the pending subjects visible; returns their ids."""
        n = self.n_committed + len(self.pending)
        for name in ("timeseries", "scale", "mean", "subject"):  # drop any leftovers past n
            arr = self.group[name]
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
        self.group.attrs["n_subjects"] = n
        done, self.pending, self.n_committed = self.pending, [], n
        return done


def open_connectome(lake: str, name: str, chunks: dict | str | None = "auto") -> xr.Dataset:
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
    n = int(ds.attrs.get("n_subjects", 0))
    return strings_as_objects(ds.isel(subject=slice(0, n)))
