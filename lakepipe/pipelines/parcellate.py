"""``parcellate``: group functional connectivity between atlas regions (DESIGN section 3).

One Dask task per group of connectome subjects reads its subjects from the store, forms parcel
mean series, correlates, Fisher-transforms and returns the float64 sum of z; the sums are added
and finalised into ``fcgroupz`` (mean z, diagonal 0) and ``fcgroupr`` (tanh, diagonal 1).
Memory per task: one subject's series plus an N x N matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

import lakepipe
from lakepipe.bids import bids_name
from lakepipe.catalog import OutputRecord
from lakepipe.cluster import compute, dask_client
from lakepipe.compute.correlation import R_CLIP
from lakepipe.compute.groupfc import ParcelAverager, finalize_group_fc, subject_fc_z
from lakepipe.errors import InputError
from lakepipe.io import derivatives, stores
from lakepipe.io.storage import StoreRef
from lakepipe.lake import Lake
from lakepipe.pipelines.common import (
    ConnectomeInfo,
    connectome_info,
    region_coords,
    region_table,
    require_same_space,
    subject_groups,
    tasks_for,
    voxel_parcels,
)

log = logging.getLogger(__name__)
METHOD = "parcellate"
STATISTICS = ("fcgroupz", "fcgroupr")


@dataclass
class ParcellateResult:
    dataset: xr.Dataset
    store: str
    skipped: bool
    files: list[Path]

    def summary(self) -> str:
        n = self.dataset.sizes["region"]
        verb = "already in the lake" if self.skipped else "written"
        return f"group FC {n} x {n} over {self.dataset.attrs['n_subjects']} subjects {verb}: {self.store}"


# ------------------------------------------------------------------------------------ worker tasks


def _voxel_group_sum(ref: StoreRef, positions: list[int], labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Sum over ``positions`` of per-subject Fisher-z FC between parcels (runs on a worker)."""
    g = ref.group()
    ts, scale, mean = g["timeseries"], g["scale"], g["mean"]
    from zarr.core.buffer import default_buffer_prototype

    total = np.zeros((n_regions, n_regions))
    # built once for the task's subjects; parcel sums a store chunk (voxel block) at a time
    averager = ParcelAverager(labels, n_regions, block=ts.chunks[2])
    # each subject is read (its chunks fetched concurrently) into one buffer reused by the task: in a
    # worker (glibc trim setting) every fresh array is a new mmap, page faults and all
    buf = np.empty(ts.shape[1:], np.float32)
    out = default_buffer_prototype().nd_buffer.from_numpy_array(buf)
    for s in positions:
        ts.get_basic_selection(s, out=out)
        series = averager.series(lambda a, b: buf[:, a:b], scale[s], mean[s], ts.shape[1])
        total += subject_fc_z(series)
    return total


def _region_group_sum(ref: StoreRef, positions: list[int], columns: np.ndarray) -> np.ndarray:
    """Same for a parcel-level connectome: FC directly on the stored parcel series."""
    g = ref.group()
    ts, scale, mean = g["timeseries"], g["scale"], g["mean"]
    total = np.zeros((columns.size, columns.size))
    for s in positions:
        raw = ts[s][:, columns] * scale[s][columns] + mean[s][columns]
        total += subject_fc_z(raw)
    return total


# ------------------------------------------------------------------------------------------ pipeline


def _region_columns(
    con: ConnectomeInfo, atlas: stores.Atlas | None
) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    table = region_table(con.dataset)
    if atlas is None:
        return np.arange(len(table)), table, []
    pos_by_name = {n: i for i, n in enumerate(table["name"])}
    pos_by_index = {int(i): k for k, i in enumerate(table["index"])}
    cols, keep, dropped = [], [], []
    for k, row in enumerate(atlas.table.itertuples()):
        i = pos_by_name.get(row.name, pos_by_index.get(int(row.index)))
        if i is None:
            dropped.append(row.name)
        else:
            cols.append(i)
            keep.append(k)
    if not cols:
        raise InputError(f"no region of connectome '{con.name}' matches atlas '{atlas.name}'")
    return np.asarray(cols), atlas.table.iloc[keep].reset_index(drop=True), dropped


def parcellate_params(con: ConnectomeInfo, atlas_name: str) -> dict:
    return {
        "connectome": con.name,
        "atlas": atlas_name,
        "clip": R_CLIP,
        "aggregate": "mean-fisher-z",
        "resampling": "nearest",
        "parcel_series": "mean of raw voxel series",
    }


def parcellate(
    lake: Lake,
    connectome: str,
    atlas: str | None,
    *,
    out_dir: str | Path | None = None,
    scheduler: str | None = None,
    client=None,
) -> ParcellateResult:
    """Compute (or find already computed) the group FC matrices of ``connectome`` under ``atlas``."""
    con = connectome_info(lake, connectome)
    atl = lake.read_atlas(atlas) if atlas else None
    if atl is None and con.kind == "voxel":
        raise InputError("a voxel connectome needs --atlas to define the parcels")
    atlas_name = atlas or connectome
    if atl is not None:
        require_same_space(con.space, atl.space, f"connectome '{connectome}'", f"atlas '{atlas}'")
    params = parcellate_params(con, atlas_name)
    inputs = {"connectome": con.identity, "atlas": atl.sha256 if atl else con.identity}
    proto = OutputRecord(
        kind="derivative",
        method=METHOD,
        statistic="fcgroupz",
        store_uri="x",
        atlas=atlas_name,
        connectome=connectome,
        params=params,
        inputs=inputs,
    )
    name = f"connectome-{connectome}_atlas-{atlas_name}_{proto.params_hash[:8]}{proto.inputs_hash[:8]}"
    url = derivatives.derivative_url(lake.url, METHOD, name)
    existing = lake.catalog.existing_keys(
        METHOD, [(s, proto.inputs_hash, proto.params_hash) for s in STATISTICS]
    )
    if len(existing) == len(STATISTICS):
        ds = derivatives.open_derivative(url).load()
        log.info("parcellate: %s x %s already computed, skipping", connectome, atlas_name)
        files = write_bids(ds, out_dir) if out_dir else []
        return ParcellateResult(ds, url, True, files)

    n = len(con.subjects)
    if n < 1:
        raise InputError(f"connectome '{connectome}' has no subjects")
    positions = con.positions
    ref = StoreRef.here(stores.connectome_url(lake.url, connectome))
    with dask_client(scheduler, lake_url=lake.url, client=client) as cl:
        groups = subject_groups(n, tasks_for(cl, n))
        if con.kind == "voxel":
            labels, table, dropped = voxel_parcels(con, atl)
            parts = [
                dask.delayed(_voxel_group_sum, pure=False)(ref, [positions[i] for i in g], labels, len(table))
                for g in groups
            ]
        else:
            columns, table, dropped = _region_columns(con, atl)
            parts = [
                dask.delayed(_region_group_sum, pure=False)(ref, [positions[i] for i in g], columns)
                for g in groups
            ]
        total = dask.delayed(sum)(parts)
        (sum_z,) = compute(total, client=cl, desc=f"parcellate {connectome} x {atlas_name}")
    if dropped:
        log.warning(
            "parcellate: %d region(s) have no voxel in the connectome mask and are dropped: %s",
            len(dropped),
            dropped[:10],
        )
    fcz, fcr = finalize_group_fc(sum_z, n)
    ds = _dataset(fcz, fcr, table, n, dropped, params, inputs)
    derivatives.write_derivative(lake.url, METHOD, name, ds)
    uri = stores.relative(lake.url, url)
    lake.publish(
        [
            OutputRecord(
                kind="derivative",
                method=METHOD,
                statistic=stat,
                atlas=atlas_name,
                connectome=connectome,
                params=params,
                inputs=inputs,
                store_uri=uri,
                store_index=stat,
                shape=(len(table), len(table)),
            )
            for stat in STATISTICS
        ]
    )
    files = write_bids(ds, out_dir) if out_dir else []
    return ParcellateResult(ds, url, False, files)


def _dataset(fcz, fcr, table, n, dropped, params, inputs) -> xr.Dataset:
    coords = {**region_coords(table, "region"), **region_coords(table, "source_region")}
    dims = ("source_region", "region")
    return xr.Dataset(
        {"fcgroupz": (dims, fcz.astype(np.float32)), "fcgroupr": (dims, fcr.astype(np.float32))},
        coords=coords,
        attrs={
            "method": METHOD,
            "n_subjects": n,
            "dropped_regions": list(dropped),
            "parameters": params,
            "inputs": inputs,
            "lakepipe_version": lakepipe.__version__,
            "conventions": {
                "fcgroupz": "mean Fisher z over subjects, diagonal 0",
                "fcgroupr": "tanh(mean z), diagonal 1",
                "clip": R_CLIP,
            },
        },
    )


def matrix_table(ds: xr.Dataset, stat: str) -> pd.DataFrame:
    names = ds["region_name"].values.astype(str)
    return pd.DataFrame(ds[stat].values, index=pd.Index(names, name="region"), columns=names)


def write_bids(ds: xr.Dataset, out_dir: str | Path) -> list[Path]:
    """``method-parcellate_atlas-<atlas>_desc-fcgroup{z,r}_connmatrix.{tsv,json}`` in ``out_dir``."""
    out = Path(out_dir)
    derivatives.dataset_description(out)
    atlas = ds.attrs["parameters"]["atlas"]
    files = []
    for stat in STATISTICS:
        path = out / bids_name({"method": METHOD, "atlas": atlas, "desc": stat}, "connmatrix", ".tsv")
        meta = {
            "Description": ds.attrs["conventions"][stat],
            "Method": METHOD,
            "Atlas": atlas,
            "Connectome": ds.attrs["parameters"]["connectome"],
            "NumberOfSubjects": ds.attrs["n_subjects"],
            "DroppedRegions": ds.attrs["dropped_regions"],
            "RegionLabels": ds["region_name"].values.astype(str).tolist(),
            "Networks": ds["region_network"].values.astype(str).tolist(),
            "Sources": ds.attrs["inputs"],
            "Parameters": ds.attrs["parameters"],
            "LakepipeVersion": ds.attrs.get("lakepipe_version"),
        }
        files.append(derivatives.write_tsv(path, matrix_table(ds, stat), meta, index=True))
    return files
