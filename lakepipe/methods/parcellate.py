"""``parcellate``: group functional connectivity between atlas regions (DESIGN section 3).

One Dask task per group of connectome subjects reads its subjects from the store, forms parcel
mean series, correlates, Fisher-transforms and returns the float64 sum of z; the sums are added
and finalised into ``fcgroupz`` (mean z, diagonal 0) and ``fcgroupr`` (tanh, diagonal 1).
Memory per task: one subject's series plus an N x N matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lakepipe.catalog import OutputRecord
from lakepipe.compute.correlation import R_CLIP
from lakepipe.errors import InputError
from lakepipe.io import layout
from lakepipe.methods.base import PENDING, Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import (
    AtlasId,
    ConnectomeId,
    ConnectomeInfo,
    atlas_identity,
    connectome_identity,
    connectome_info,
    region_table,
    require_same_space,
    subject_groups,
    tasks_for,
)
from lakepipe.methods.params.base import Params
from lakepipe.methods.params.parcellate import ParcellateParams

if TYPE_CHECKING:  # the stores (Zarr, xarray) are imported where a computation opens them
    import xarray as xr

    from lakepipe.io.stores import Atlas
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext

log = logging.getLogger(__name__)


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

    def output_params(self, con: ConnectomeId | ConnectomeInfo, atlas_name: str) -> dict[str, Any]:
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
        con: ConnectomeId | ConnectomeInfo,
        atlas: Atlas | AtlasId | None,
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
        plan = self._keys(lake, params, recompute)
        if plan.todo:
            plan.context.update(self._inputs(lake, plan))
        return plan

    def _keys(self, lake: Lake, params: Params, recompute: bool) -> Plan:
        """The plan from the catalog alone: the skip keys need no store opened."""
        assert isinstance(params, ParcellateParams)
        con = connectome_identity(lake, params.connectome)
        atlas = atlas_identity(lake, params.atlas) if params.atlas else None
        atlas_name = params.atlas or params.connectome
        item = PlanItem(f"{con.name} x {atlas_name}", self.records(con, atlas, atlas_name))
        plan = Plan(self.name, params, [item], recompute=recompute, context={"atlas_name": atlas_name})
        self.mark_done(lake, plan.items)
        return plan

    def _inputs(self, lake: Lake, plan: Plan) -> dict[str, Any]:
        """The connectome and atlas a computation reads, opened and checked (a group FC in the lake
        was made from inputs that passed these checks)."""
        assert isinstance(plan.params, ParcellateParams)
        con = connectome_info(lake, plan.params.connectome)
        atlas = lake.read_atlas(plan.params.atlas) if plan.params.atlas else None
        if atlas is None and con.kind == "voxel":
            raise InputError("a voxel connectome needs --atlas to define the parcels")
        if atlas is not None:
            require_same_space(con.space, atlas.space, f"connectome '{con.name}'", f"atlas '{atlas.name}'")
        return {"connectome": con, "atlas": atlas}

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
        plan = plan or self._keys(lake, params, recompute)
        atlas_name: str = plan.context["atlas_name"]
        assert isinstance(plan.params, ParcellateParams)
        con_name = plan.params.connectome
        result = MethodResult(self.name)
        if not plan.todo:
            run.count_skipped(len(plan.items[0].records))
            result.skipped = [plan.items[0].key]
            log.info("parcellate: %s x %s already computed, skipping", con_name, atlas_name)
        else:
            from lakepipe.io.stores import write_derivative

            # the local workers' process imports the tasks while the inputs are opened
            run.runtime.preload(["lakepipe.methods.parcellate_tasks"])
            if "connectome" not in plan.context:
                plan.context.update(self._inputs(lake, plan))
            con: ConnectomeInfo = plan.context["connectome"]
            atlas: Atlas | None = plan.context["atlas"]
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
        subjects = self._n_subjects(lake, rows)
        result.message = f"group FC {n} x {n} of {con_name} x {atlas_name} over {subjects} subjects {verb}"
        if bids_out:
            result.files = self.export(lake, rows, bids_out)
        return result

    @staticmethod
    def _n_subjects(lake: Lake, rows: pd.DataFrame) -> int:
        """The subjects a group FC in the lake averages (from its store's attributes alone)."""
        from lakepipe.io.storage import group_attrs

        if rows.empty:
            return 0
        return int(group_attrs(lake.store_url(str(rows["store_uri"].iloc[0]))).get("n_subjects", 0))

    def outputs(self, lake: Lake, plan: Plan, statistic: str | None = None) -> xr.Dataset:  # type: ignore[override]
        """The matrices the plan covers as one Dataset (``fcgroupz``, ``fcgroupr``, provenance in attrs)."""
        from lakepipe.io.stores import open_derivative

        rows = self.covered_rows(lake, plan)
        if rows.empty:
            raise InputError(f"the group FC of {plan.items[0].key} is not in the lake")
        return open_derivative(lake.store_url(str(rows["store_uri"].iloc[0]))).load()

    def covered_rows(self, lake: Lake, plan: Plan) -> pd.DataFrame:
        """Catalog rows of the outputs the plan covers (as published now)."""
        return lake.published([r for item in plan.items for r in item.records])

    def _compute(
        self, lake: Lake, run: RunContext, con: ConnectomeInfo, atlas: Atlas | None, atlas_name: str
    ) -> xr.Dataset:
        import dask
        import xarray as xr

        from lakepipe._version import __version__
        from lakepipe.compute.groupfc import finalize_group_fc
        from lakepipe.io.storage import StoreRef
        from lakepipe.methods.common import region_coords, voxel_parcels
        from lakepipe.methods.parcellate_tasks import region_group_sum, voxel_group_sum

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
                dask.delayed(voxel_group_sum, pure=False)(ref, [units[i] for i in g], labels, len(table))
                for g in groups
            ]
        else:
            columns, table, dropped = _region_columns(con, atlas)
            parts = [
                dask.delayed(region_group_sum, pure=False)(ref, [units[i] for i in g], columns)
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
        from lakepipe.io import bidsout
        from lakepipe.io.stores import open_derivative

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
