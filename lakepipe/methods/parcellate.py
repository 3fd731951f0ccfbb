"""``parcellate``: group functional connectivity between atlas regions (DESIGN section 3).

One Dask task per group of connectome subjects reads its subjects from the store, forms parcel
mean series, correlates, Fisher-transforms and returns the float64 sum of z; the sums are added
and finalised into ``fcgroupz`` (mean z, diagonal 0) and ``fcgroupr`` (tanh, diagonal 1).
Memory per task: one subject's series plus an N x N matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe._version import __version__
from lakepipe.catalog import OutputRecord
from lakepipe.compute.correlation import R_CLIP
from lakepipe.compute.groupfc import ParcelAverager, finalize_group_fc, subject_fc_z
from lakepipe.errors import InputError
from lakepipe.io import bidsout, layout
from lakepipe.io.storage import StoreRef, get_array
from lakepipe.io.stores import Atlas, open_derivative, write_derivative
from lakepipe.io.stores.rows import BlockGetter, RowReader, open_rows
from lakepipe.methods.base import PENDING, Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import (
    ConnectomeInfo,
    connectome_info,
    region_coords,
    region_table,
    require_same_space,
    subject_groups,
    tasks_for,
    voxel_parcels,
)
from lakepipe.methods.params.base import Params
from lakepipe.methods.params.parcellate import ParcellateParams

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ worker tasks


def _n_valid(g: Any, n_time: int) -> np.ndarray | None:
    """Each row's number of time points (rows past them are zero), None for stores without it."""
    return np.asarray(g["n_valid"][:]) if "n_valid" in g else None


#: one subject's inputs to the parcel sums: its blocks by voxel range, its per-voxel scale and mean
SubjectBlocks = tuple[Callable[[int, int], np.ndarray], np.ndarray, np.ndarray]


def _voxel_group_sum(ref: StoreRef, units: list[list[int]], labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Sum over the subjects ``units`` (store rows; several rows: one participant's runs, averaged) of
    per-subject Fisher-z FC between parcels (runs on a worker). Reads run a step ahead in a thread
    (:func:`_streamed_blocks` where the chunks are local files, else :func:`_whole_rows`)."""
    src = open_rows(ref)  # a copied store's rows, or HDF5 batches read in place: one interface
    total = np.zeros((n_regions, n_regions))
    # built once for the task's subjects; parcel sums a store chunk (voxel block) at a time
    averager = ParcelAverager(labels, n_regions, block=src.block)
    n_time = src.shape[1]
    rows = [s for unit in units for s in unit]
    get_block = src.block_getter()
    with ThreadPoolExecutor(1, thread_name_prefix="parcellate-read") as pool:
        subjects = (
            _whole_rows(src, rows, pool)
            if get_block is None
            else _streamed_blocks(src, get_block, averager.spans, rows, pool)
        )
        for unit in units:
            z = np.zeros((n_regions, n_regions))
            for s in unit:
                blocks, scale, mean = next(subjects)
                series = averager.series(blocks, scale, mean, n_time)
                t = n_time if src.n_valid is None else int(src.n_valid[s])
                z += subject_fc_z(series[:t])
            total += z / len(unit)
    return total


def _whole_rows(src: RowReader, rows: list[int], pool: ThreadPoolExecutor) -> Iterator[SubjectBlocks]:
    """Each row read whole (its chunks fetched concurrently) into one of two buffers reused by the
    task (in a worker, glibc's trim setting makes every fresh array a new mmap, page faults and all),
    the next one in ``pool`` while this one is averaged: a read waits on Zarr's event loop and the
    files far longer than it keeps a core busy, so reading hides behind the parcel sums."""
    bufs = [np.empty(src.shape[1:], np.float32) for _ in range(min(2, len(rows)))]

    def read(i: int) -> SubjectBlocks:
        buf = src.read_into(rows[i], bufs[i % 2])  # float16 storage is converted into float32
        return (lambda a, b: buf[:, a:b]), src.scale(rows[i]), src.mean(rows[i])

    ahead = pool.submit(read, 0) if rows else None
    for i in range(len(rows)):
        assert ahead is not None
        subject = ahead.result()
        if i + 1 < len(rows):  # into the other buffer (its row is done) while this one is averaged
            ahead = pool.submit(read, i + 1)
        yield subject


def _streamed_blocks(
    src: RowReader,
    get_block: BlockGetter,
    spans: list[tuple[int, int]],
    rows: list[int],
    pool: ThreadPoolExecutor,
) -> Iterator[SubjectBlocks]:
    """Where the chunks are local files: every row's blocks (``spans``, those with a labelled voxel;
    no other is read) one at a time, the next (of this row or the next) read in ``pool`` while this
    one is summed, so each block is summed while it is still in cache: one pass over memory instead
    of two."""
    jobs = [(s, start) for s in rows for start, _ in spans]
    bufs = [np.empty((src.shape[1], src.block), np.float32) for _ in range(min(2, len(jobs)))]
    pending = [pool.submit(get_block, *jobs[0], bufs[0])] if jobs else []
    k = 0

    def next_block(start: int, stop: int) -> np.ndarray:
        nonlocal k
        block = pending.pop().result()
        assert jobs[k][1] == start and block.shape[1] == stop - start
        k += 1
        if k < len(jobs):  # into the other buffer (its block is summed) while this one is
            pending.append(pool.submit(get_block, *jobs[k], bufs[k % 2]))
        return block

    for s in rows:
        yield next_block, src.scale(s), src.mean(s)


def _region_group_sum(ref: StoreRef, units: list[list[int]], columns: np.ndarray) -> np.ndarray:
    """Same for a parcel-level connectome: FC directly on the stored parcel series."""
    g = ref.group()
    ts, scale, mean = get_array(g, "timeseries"), get_array(g, "scale"), get_array(g, "mean")
    n_valid = _n_valid(g, ts.shape[1])
    total = np.zeros((columns.size, columns.size))
    for unit in units:
        z = np.zeros((columns.size, columns.size))
        for s in unit:
            t = ts.shape[1] if n_valid is None else int(n_valid[s])
            raw = (
                np.asarray(ts[s], np.float32)[:t, columns] * np.asarray(scale[s])[columns]
                + np.asarray(mean[s])[columns]
            )
            z += subject_fc_z(raw)
        total += z / len(unit)
    return total


def _region_columns(con: ConnectomeInfo, atlas: Atlas | None) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
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


# ------------------------------------------------------------------------------------------ method


class Parcellate(Method):
    name = "parcellate"
    command = ("parcellate",)
    params_type = ParcellateParams
    statistics = (
        Statistic("fcgroupz", "mean Fisher z over subjects, diagonal 0", dims="region_pair"),
        Statistic("fcgroupr", "tanh(mean z), diagonal 1", dims="region_pair"),
    )
    default_statistic = "fcgroupz"
    per_seed = False

    def output_params(self, con: ConnectomeInfo, atlas_name: str) -> dict[str, Any]:
        return {
            "connectome": con.name,
            "atlas": atlas_name,
            "clip": R_CLIP,
            "aggregate": "mean-fisher-z",
            "resampling": "nearest",
            "parcel_series": "mean of raw voxel series",
        }

    def records(
        self,
        con: ConnectomeInfo,
        atlas: Atlas | None,
        atlas_name: str,
        uri: str = PENDING,
        n: int | None = None,
    ) -> list[OutputRecord]:
        """The two outputs (fcgroupz, fcgroupr) of ``con`` under ``atlas``."""
        inputs = {"connectome": con.identity, "atlas": atlas.sha256 if atlas else con.identity}
        return [
            OutputRecord(
                kind="derivative",
                method=self.name,
                statistic=s.name,
                atlas=atlas_name,
                connectome=con.name,
                params=self.output_params(con, atlas_name),
                inputs=inputs,
                store_uri=uri,
                store_index=s.name,
                shape=(n, n) if n else None,
            )
            for s in self.statistics
        ]

    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        assert isinstance(params, ParcellateParams)
        con = connectome_info(lake, params.connectome)
        atlas = lake.read_atlas(params.atlas) if params.atlas else None
        if atlas is None and con.kind == "voxel":
            raise InputError("a voxel connectome needs --atlas to define the parcels")
        if atlas is not None:
            require_same_space(con.space, atlas.space, f"connectome '{con.name}'", f"atlas '{atlas.name}'")
        atlas_name = params.atlas or params.connectome
        item = PlanItem(f"{con.name} x {atlas_name}", self.records(con, atlas, atlas_name))
        plan = Plan(
            self.name,
            params,
            [item],
            recompute=recompute,
            context={"connectome": con, "atlas": atlas, "atlas_name": atlas_name},
        )
        self.mark_done(lake, plan.items)
        return plan

    def run(
        self,
        lake: Lake,
        run: RunContext,
        params: Params,
        *,
        plan: Plan | None = None,
        recompute: bool = False,
        bids_out: str | Path | None = None,
    ) -> MethodResult:
        run.runtime.preload([__name__])  # local workers' process imports this module while we plan
        plan = plan or self.plan(lake, params, recompute=recompute)
        con: ConnectomeInfo = plan.context["connectome"]
        atlas: Atlas | None = plan.context["atlas"]
        atlas_name: str = plan.context["atlas_name"]
        result = MethodResult(self.name)
        if not plan.todo:
            run.count_skipped(len(plan.items[0].records))
            result.skipped = [plan.items[0].key]
            log.info("parcellate: %s x %s already computed, skipping", con.name, atlas_name)
        else:
            ds = self._compute(lake, run, con, atlas, atlas_name)
            url = layout.derivative_store(
                lake.url,
                self.name,
                f"connectome-{con.name}_atlas-{atlas_name}_"
                + layout.new_store_name(self.name).split("-", 1)[1],
            )
            write_derivative(url, ds)
            run.publish(
                self.records(con, atlas, atlas_name, layout.relative(lake.url, url), ds.sizes["region"]),
                replace=plan.recompute,
            )
            result.store, result.computed = url, [plan.items[0].key]
        rows = self.covered_rows(lake, plan)
        n = int(rows["shape"].iloc[0][0]) if len(rows) and rows["shape"].iloc[0] else 0
        verb = "already in the lake" if result.skipped else ("recomputed" if plan.recompute else "written")
        result.message = f"group FC {n} x {n} of {con.name} x {atlas_name} over {con.n_units} subjects {verb}"
        if bids_out:
            result.files = self.export(lake, rows, bids_out)
        return result

    def outputs(self, lake: Lake, plan: Plan, statistic: str | None = None) -> xr.Dataset:  # type: ignore[override]
        """The matrices the plan covers as one Dataset (``fcgroupz``, ``fcgroupr``, provenance in attrs)."""
        rows = self.covered_rows(lake, plan)
        if rows.empty:
            raise InputError(f"the group FC of {plan.items[0].key} is not in the lake")
        return open_derivative(lake.store_url(str(rows["store_uri"].iloc[0]))).load()

    def covered_rows(self, lake: Lake, plan: Plan) -> pd.DataFrame:
        """Catalog rows of the outputs the plan covers (as published now)."""
        from lakepipe.collect import rows_for_records

        return rows_for_records(lake, [r for item in plan.items for r in item.records])

    def _compute(
        self, lake: Lake, run: RunContext, con: ConnectomeInfo, atlas: Atlas | None, atlas_name: str
    ) -> xr.Dataset:
        import dask

        n = con.n_units
        if n < 1:
            raise InputError(f"connectome '{con.name}' has no subjects")
        units = con.units
        ref = StoreRef.here(layout.connectome_store(lake.url, con.name))
        groups = subject_groups(n, tasks_for(run.runtime.n_workers, n))
        if con.kind == "voxel":
            assert atlas is not None
            labels, table, dropped = voxel_parcels(con, atlas)
            parts = [
                dask.delayed(_voxel_group_sum, pure=False)(ref, [units[i] for i in g], labels, len(table))
                for g in groups
            ]
        else:
            columns, table, dropped = _region_columns(con, atlas)
            parts = [
                dask.delayed(_region_group_sum, pure=False)(ref, [units[i] for i in g], columns)
                for g in groups
            ]
        (sum_z,) = run.runtime.compute(dask.delayed(sum)(parts), desc=f"parcellate {con.name} x {atlas_name}")
        if dropped:
            log.warning(
                "parcellate: %d region(s) have no voxel in the connectome mask and are dropped: %s",
                len(dropped),
                dropped[:10],
            )
        fcz, fcr = finalize_group_fc(sum_z, n)
        inputs = {"connectome": con.identity, "atlas": atlas.sha256 if atlas else con.identity}
        coords = {**region_coords(table, "region"), **region_coords(table, "source_region")}
        dims = ("source_region", "region")
        return xr.Dataset(
            {"fcgroupz": (dims, fcz.astype(np.float32)), "fcgroupr": (dims, fcr.astype(np.float32))},
            coords=coords,
            attrs={
                "method": self.name,
                "n_subjects": n,
                "dropped_regions": list(dropped),
                "parameters": self.output_params(con, atlas_name),
                "inputs": inputs,
                "space": con.space,
                "lakepipe_version": __version__,
                "conventions": {
                    "fcgroupz": "mean Fisher z over subjects, diagonal 0",
                    "fcgroupr": "tanh(mean z), diagonal 1",
                    "clip": R_CLIP,
                },
            },
        )

    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """``[space-<s>_]method-parcellate_atlas-<a>_desc-fcgroup{z,r}_connmatrix.{tsv,json}``."""
        out = Path(out_dir)
        bidsout.dataset_description(out)
        rows = rows[rows["statistic"].isin(statistics)] if statistics else rows
        names: dict[Path, str] = {}
        files = []
        for uri, group in rows.groupby("store_uri", sort=False):
            ds = open_derivative(lake.store_url(str(uri))).load()
            atlas = ds.attrs["parameters"]["atlas"]
            for stat in group["statistic"]:
                path = bidsout.derivative_path(
                    out,
                    {"space": ds.attrs.get("space"), "method": self.name, "atlas": atlas, "desc": stat},
                    "connmatrix",
                    ".tsv",
                )
                connectome = ds.attrs["parameters"]["connectome"]
                if names.setdefault(path, connectome) != connectome:
                    raise InputError(
                        f"group FC of atlas {atlas} from connectomes {names[path]} and {connectome} "
                        "would share one file name: export one connectome at a time (--connectome)"
                    )
                meta = {
                    "Description": ds.attrs["conventions"][stat],
                    "Method": self.name,
                    "Atlas": atlas,
                    "Connectome": connectome,
                    "Space": ds.attrs.get("space"),
                    "NumberOfSubjects": ds.attrs["n_subjects"],
                    "DroppedRegions": ds.attrs["dropped_regions"],
                    "RegionLabels": ds["region_name"].values.astype(str).tolist(),
                    "Networks": ds["region_network"].values.astype(str).tolist(),
                    "Sources": ds.attrs["inputs"],
                    "Parameters": ds.attrs["parameters"],
                    "LakepipeVersion": ds.attrs.get("lakepipe_version"),
                }
                names_ = ds["region_name"].values.astype(str)
                table = pd.DataFrame(ds[stat].values, index=pd.Index(names_, name="region"), columns=names_)
                files.append(bidsout.write_tsv(path, table, meta, index=True))
        return files


METHOD = Parcellate()
