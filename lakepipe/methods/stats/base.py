"""What the group tests share: their input parameters, the resolution of cases and controls into
maps, the result store (one per test run: maps over voxels or regions, per-map values, scalars),
its catalog records and their BIDS export.

A test is one output set per parameter set and exact input list (the maps' catalog ids), so a
re-run with the same maps is skipped, and a cohort that gained maps gives a new result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe._version import __version__
from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.compute.stats import StatsInputError
from lakepipe.errors import InputError
from lakepipe.io import bidsout, layout
from lakepipe.io.nifti import write_nifti
from lakepipe.io.storage import StoreRef
from lakepipe.io.stores import open_derivative, voxel_volume, write_derivative
from lakepipe.methods.base import PENDING, Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import region_coords, region_table
from lakepipe.methods.params.base import Params
from lakepipe.methods.params.stats import LESION_VOLUME, PermutationParams, StatsParams
from lakepipe.methods.stats.groups import GroupQuery, MapSet, select_maps, summary
from lakepipe.methods.stats.tasks import MapSource

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext

log = logging.getLogger(__name__)


def covariate_matrix(maps: MapSet, names: Sequence[str]) -> tuple[np.ndarray | None, list[str]]:
    """Covariates for the design: numeric columns as they are, text columns as indicators of all
    levels but the first (sorted); ``None`` when there are none."""
    if not names:
        return None, []
    cols, labels = [], []
    for name in names:
        if name not in maps.table.columns:
            known = [c for c in maps.table.columns if c not in ("cohort", "participant", "session", "label")]
            raise InputError(f"no covariate column {name!r}; known: {', '.join(known)}")
        raw = maps.table[name]
        num = pd.to_numeric(raw, errors="coerce")
        text = raw.notna() & num.isna()
        if not text.any():
            cols.append(num.to_numpy(np.float64))
            labels.append(name)
            continue
        levels = sorted(set(raw.dropna().astype(str)))
        for level in levels[1:]:
            col = (raw.astype(str) == level).astype(np.float64).to_numpy()
            col[raw.isna().to_numpy()] = np.nan
            cols.append(col)
            labels.append(f"{name}={level}")
    return np.column_stack(cols), labels


class StatsMethod(Method):
    """A group test over catalogued lesion maps (subclasses: the kernels and their outputs)."""

    per_seed = False
    #: statistics over features (voxel or region); the rest are per map (``map``) or scalars
    feature_statistics: tuple[str, ...] = ()
    #: whether the test needs controls
    needs_controls = False

    # ---- statistics
    def statistic_dims(self, statistic: str, atlas: str | None = None) -> str:
        if statistic in self.feature_statistics:
            return "region" if atlas else "voxel"
        return self.statistic(statistic).dims

    def output_statistics(self, p: StatsParams) -> tuple[str, ...]:
        """The statistics a run with these parameters publishes."""
        return tuple(s.name for s in self.statistics)

    def inputs(self, params: Params) -> set[str]:
        assert isinstance(params, StatsParams)
        out = {params.maps}
        for q in (params.cases, params.controls):
            if q:
                for c in GroupQuery.parse(q, "cases").catalog.get("cohort", ()):
                    out.add(f"cohort:{c}")
        return out

    # ---- inputs
    def resolve(self, lake: Lake, p: StatsParams, volumes: bool = False) -> MapSet:
        """The maps of the test (cases first), checked."""
        cases = GroupQuery.parse(p.cases, "cases")
        controls = GroupQuery.parse(p.controls, "controls") if p.controls else None
        if self.needs_controls and controls is None:
            raise InputError(f"{self.name} compares cases with controls: give --controls QUERY")
        return select_maps(
            lake,
            source=p.maps,
            statistic=p.statistic,
            atlas=p.atlas,
            connectome=p.connectome,
            cases=cases,
            controls=controls,
            volumes=volumes,
        )

    def needs_volumes(self, p: StatsParams) -> bool:
        return LESION_VOLUME in (getattr(p, "covariates", None) or ())

    def check(self, maps: MapSet, p: StatsParams) -> None:
        """Refuse inputs the test cannot use (at plan time, before anything runs)."""

    def clinical(self, maps: MapSet, p: StatsParams) -> list[str]:
        """participants.tsv columns the result depends on (their values enter the input hash)."""
        return list(getattr(p, "covariates", None) or ())

    # ---- records
    def records(self, p: StatsParams, maps: MapSet, uri: str = PENDING) -> list[OutputRecord]:
        cases = maps.table[maps.is_case]
        cohort = str(cases["cohort"].iloc[0]) if cases["cohort"].nunique() == 1 else None
        label = (
            str(cases["label"].iloc[0]) if cases["label"].nunique() == 1 and cases["label"].iloc[0] else None
        )
        columns = [c for c in self.clinical(maps, p) if c in maps.table.columns]
        inputs = {
            "maps": maps.identity,
            "clinical": content_hash(maps.table[columns].astype(str).to_numpy().tolist()) if columns else "",
        }
        params = {**p.to_dict(), "statistic": maps.statistic}
        return [
            OutputRecord(
                kind="derivative",
                method=self.name,
                statistic=stat,
                cohort=cohort,
                label=label,
                atlas=maps.atlas,
                connectome=maps.connectome,
                params=params,
                inputs=inputs,
                store_uri=uri,
                store_index=stat,
            )
            for stat in self.output_statistics(p)
        ]

    # ---- plan / run
    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        assert isinstance(params, StatsParams)
        maps = self.resolve(lake, params, volumes=self.needs_volumes(params))
        self.check(maps, params)
        n_cases = int(maps.is_case.sum())
        key = f"{n_cases} case(s)" + (f" vs {maps.n - n_cases} control(s)" if maps.n > n_cases else "")
        plan = Plan(self.name, params, [PlanItem(key, self.records(params, maps))], recompute=recompute)
        plan.context["maps"] = maps
        plan.notes.append(f"{maps.source} {maps.statistic} maps on connectome {maps.connectome}")
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
        assert isinstance(params, StatsParams)
        run.runtime.preload([type(self).__module__])  # local workers' process imports it while we plan
        plan = plan or self.plan(lake, params, recompute=recompute)
        maps: MapSet = plan.context["maps"]
        result = MethodResult(self.name)
        item = plan.items[0]
        if not plan.todo:
            run.count_skipped(len(item.records))
            result.skipped = [item.key]
        else:
            try:
                ds = self.compute(lake, run, params, maps)
            except StatsInputError as exc:
                raise self.input_error(exc, maps) from None
            ds = self.finish_dataset(ds, params, maps)
            url = layout.derivative_store(lake.url, self.name, layout.new_store_name(self.name))
            write_derivative(url, ds)
            run.publish(self.records(params, maps, layout.relative(lake.url, url)), replace=plan.recompute)
            result.store, result.computed = url, [item.key]
        result.message = self.message(lake, plan, result)
        if bids_out:
            result.files = self.export(lake, lake.published(item.records), bids_out)
        log.info(result.summary())
        return result

    def message(self, lake: Lake, plan: Plan, result: MethodResult) -> str:
        verb = "already in the lake" if result.skipped else ("recomputed" if plan.recompute else "computed")
        return f"{self.name}: {plan.items[0].key} {verb}"

    def input_error(self, exc: StatsInputError, maps: MapSet) -> InputError:
        """A kernel's refusal as one line naming the participants (or covariates) concerned."""
        text = str(exc)
        if exc.indices:
            rows = [i for i in exc.indices if 0 <= i < maps.n]
            if rows:
                text += f" ({', '.join(maps.labels(rows[:10]))}{' ...' if len(rows) > 10 else ''})"
        return InputError(text)

    def outputs(self, lake: Lake, plan: Plan, statistic: str | None = None) -> xr.Dataset:  # type: ignore[override]
        """The result of the plan as one Dataset (every statistic, the maps' coordinates, provenance)."""
        rows = lake.published(plan.items[0].records)
        if rows.empty:
            raise InputError(
                f"the {self.name} result of {plan.items[0].key} with these options is not in the lake "
                f"(`lakepipe stats {self.name}` with the same options computes it)"
            )
        return open_derivative(lake.store_url(str(rows["store_uri"].iloc[0]))).load()

    @staticmethod
    def result_store(lake: Lake, plan: Plan) -> str | None:
        rows = lake.published(plan.items[0].records)
        return None if rows.empty else lake.store_url(str(rows["store_uri"].iloc[0]))

    def compute(self, lake: Lake, run: RunContext, p: StatsParams, maps: MapSet) -> xr.Dataset:
        """The result's variables (over ``voxel``/``region``, ``map``, scalars); coordinates are added."""
        raise NotImplementedError

    # ---- the result store
    def source(self, lake: Lake, maps: MapSet) -> MapSource:
        """Where each map's values are read from (by the workers)."""
        from lakepipe.registry import get_method

        method = get_method(maps.source)
        variable = method.variable(maps.statistic, maps.atlas)
        parts = []
        for uri, grp in maps.rows.groupby("store_uri", sort=False):
            ref = StoreRef.here(lake.store_url(str(uri)))
            parts.append(
                (
                    ref,
                    variable,
                    tuple(int(i) for i in grp["store_index"]),
                    tuple(int(i) for i in grp.index),
                )
            )
        first = open_derivative(parts[0][0].url)
        return MapSource(tuple(parts), maps.n, int(first.sizes["region" if maps.atlas else "voxel"]))

    def feature_coords(self, lake: Lake, maps: MapSet) -> tuple[dict[str, Any], dict[str, Any]]:
        """Coordinates and attrs of the feature axis (voxel: ijk + grid; region: the region table),
        checked to be the same in every input store."""
        ref: xr.Dataset | None = None
        for uri in dict.fromkeys(maps.rows["store_uri"]):
            ds = open_derivative(lake.store_url(str(uri)))
            if ref is None:
                ref = ds
                continue
            name = "region" if maps.atlas else "ijk"
            if not np.array_equal(ds[name].values, ref[name].values):
                raise InputError(f"the maps disagree on their {name} axis (store {uri} differs)")
        assert ref is not None
        if maps.atlas:
            return region_coords(region_table(ref), "region"), {"space": ref.attrs.get("space")}
        return (
            {"ijk": (("voxel", "axis"), ref["ijk"].values.astype(np.int16))},
            {"grid": ref.attrs["grid"], "space": ref.attrs.get("space")},
        )

    def finish_dataset(self, ds: xr.Dataset, p: StatsParams, maps: MapSet) -> xr.Dataset:
        t = maps.table
        ds = ds.assign_coords(
            map=("map", np.arange(maps.n)),
            participant=("map", t["participant"].astype(str).to_numpy(object)),
            cohort=("map", t["cohort"].astype(str).to_numpy(object)),
            session=("map", t["session"].astype(str).to_numpy(object)),
            label=("map", t["label"].astype(str).to_numpy(object)),
            group=("map", np.where(maps.is_case, "case", "control").astype(object)),
            output_id=("map", maps.rows["id"].to_numpy(np.int64)),
        )
        ds.attrs.update(
            {
                "method": self.name,
                "parameters": p.to_dict(),
                "inputs": summary(maps),
                "lakepipe_version": __version__,
            }
        )
        return ds

    # ---- export
    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """Group files: voxel statistics as NIfTI, region statistics as TSV (with the region table),
        per-map values as one TSV, each with a JSON sidecar (parameters, inputs, conventions)."""
        out = Path(out_dir)
        bidsout.dataset_description(out)
        rows = rows[rows["statistic"].isin(statistics)] if statistics else rows
        files: list[Path] = []
        for uri, grp in rows.groupby("store_uri", sort=False):
            ds = open_derivative(lake.store_url(str(uri)))
            space = ds.attrs.get("space")
            inputs = ds.attrs.get("inputs", {})
            cases = ds["cohort"].values[ds["group"].values == "case"]
            base = {
                "space": space,
                "method": self.name,
                "cohort": str(cases[0]) if len(set(cases)) == 1 else None,
                "atlas": inputs.get("atlas"),
            }
            meta = {
                "Method": self.name,
                "Parameters": ds.attrs.get("parameters"),
                "Inputs": inputs,
                "Conventions": ds.attrs.get("conventions"),
                "Space": space,
                "LakepipeVersion": ds.attrs.get("lakepipe_version"),
            }
            per_map = [s for s in grp["statistic"] if "map" in ds[s].dims]
            for stat in grp["statistic"]:
                var = ds[stat]
                desc = stat.replace("_", "")
                info = {**meta, "Statistic": stat, "Description": self.statistic(stat).description}
                if "voxel" in var.dims:
                    path = bidsout.derivative_path(out, {**base, "desc": desc}, "statmap", ".nii.gz")
                    write_nifti(voxel_volume(ds, stat), np.asarray(ds.attrs["grid"]["affine"]), path, space)
                    files += [path, bidsout.write_sidecar(bidsout.sidecar_path(path), info)]
                elif "region" in var.dims:
                    table = region_table(ds).assign(**{stat: var.values})
                    path = bidsout.derivative_path(out, {**base, "desc": desc}, "parcelstats", ".tsv")
                    files.append(bidsout.write_tsv(path, table, info))
                elif var.ndim == 0:
                    continue  # scalars go into the sidecars
            if per_map:
                table = pd.DataFrame(
                    {
                        "participant_id": [f"sub-{p}" for p in ds["participant"].values],
                        "cohort": ds["cohort"].values,
                        "session": ds["session"].values,
                        "label": ds["label"].values,
                        "group": ds["group"].values,
                        **{s: ds[s].values for s in per_map},
                    }
                )
                scalars = {str(s): float(ds[s].values) for s in ds.data_vars if ds[s].ndim == 0}
                path = bidsout.derivative_path(out, {**base, "desc": "permap"}, "stats", ".tsv")
                files.append(bidsout.write_tsv(path, table, {**meta, **scalars}))
        return files


#: the statistics of threshold-free cluster enhancement, published only with --tfce
TFCE_STATISTICS = ("tfce", "p_fwe_tfce")


class PermutationMethod(StatsMethod):
    """A test whose features carry its statistic, the permutation FWE p, the parametric p, the FDR q
    and, with ``--tfce`` (voxel maps only), TFCE and its FWE p (specificity, symptom maps). Every
    statistic it declares is over features."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.feature_statistics = tuple(s.name for s in cls.statistics)

    def output_statistics(self, p: StatsParams) -> tuple[str, ...]:
        assert isinstance(p, PermutationParams)
        return tuple(n for n in self.feature_statistics if p.tfce or n not in TFCE_STATISTICS)

    def check_tfce(self, maps: MapSet, p: PermutationParams) -> None:
        if p.tfce and maps.atlas:
            raise InputError(
                "--tfce enhances clusters of voxels: not for parcel scores (drop --tfce or --atlas)"
            )


def stat(name: str, description: str, dims: str = "voxel") -> Statistic:
    return Statistic(name, description, dims=dims)
