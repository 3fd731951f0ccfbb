"""``stats sensitivity``: how many case maps exceed +T (and fall below -T) at each voxel or region
(DESIGN 3b), optionally against volume-matched random control lesion sets (``--null random-lesions``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from lakepipe.compute import stats
from lakepipe.errors import InputError
from lakepipe.methods.base import Plan, Statistic
from lakepipe.methods.params.stats import LESION_VOLUME, SensitivityParams, StatsParams
from lakepipe.methods.stats.base import StatsMethod
from lakepipe.methods.stats.groups import MapSet
from lakepipe.methods.stats.tasks import feature_blocks, sensitivity_task

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.methods.base import MethodResult
    from lakepipe.runtime import RunContext


class Sensitivity(StatsMethod):
    name = "sensitivity"
    command = ("stats", "sensitivity")
    params_type = SensitivityParams
    statistics = (
        Statistic("pos", stats.SENSITIVITY_CONVENTIONS["pos"]),
        Statistic("neg", stats.SENSITIVITY_CONVENTIONS["neg"]),
        Statistic("combined", stats.SENSITIVITY_CONVENTIONS["combined"]),
        Statistic("dominant", stats.SENSITIVITY_CONVENTIONS["dominant"]),
        Statistic("null_percentile", "percentile of |dominant| among the random lesion sets' |dominant|"),
        Statistic("null_p", "(1 + #{null |dominant| >= observed}) / (1 + n_null)"),
    )
    feature_statistics = ("pos", "neg", "combined", "dominant", "null_percentile", "null_p")
    default_statistic = "dominant"

    def output_statistics(self, p: StatsParams) -> tuple[str, ...]:
        assert isinstance(p, SensitivityParams)
        base = ("pos", "neg", "combined", "dominant")
        return base + (("null_percentile", "null_p") if p.null == "random-lesions" else ())

    def needs_volumes(self, p: StatsParams) -> bool:
        assert isinstance(p, SensitivityParams)
        return p.null == "random-lesions"

    def check(self, maps: MapSet, p: StatsParams) -> None:
        assert isinstance(p, SensitivityParams)
        if not 0 <= p.criterion <= 1:
            raise InputError(f"--criterion is a fraction in [0, 1], got {p.criterion}")
        n_cases = int(maps.is_case.sum())
        if p.null == "random-lesions":
            n_controls = maps.n - n_cases
            if n_controls < n_cases:
                raise InputError(
                    f"--null random-lesions draws {n_cases} control lesions per set but the controls have "
                    f"{n_controls}: give a larger control cohort"
                )
            missing = np.flatnonzero(~np.isfinite(maps.table[LESION_VOLUME].to_numpy(np.float64)))
            if missing.size:
                raise InputError(f"no lesion volume for {', '.join(maps.labels(missing[:5]))}")

    def compute(self, lake: Lake, run: RunContext, p: StatsParams, maps: MapSet) -> xr.Dataset:
        import dask

        assert isinstance(p, SensitivityParams)
        src = self.source(lake, maps)
        coords, attrs = self.feature_coords(lake, maps)
        cases = np.flatnonzero(maps.is_case).tolist()
        null_rows, draws = None, None
        if p.null == "random-lesions":
            null_rows = np.flatnonzero(~maps.is_case).tolist()
            vol = maps.table[LESION_VOLUME].to_numpy(np.float64)
            draws = stats.random_lesion_sets(vol[cases], vol[null_rows], p.n_null, p.seed)
        per_worker = 16 if draws is not None else 2  # null blocks hold n_null x block values
        blocks = feature_blocks(src.n_features, run.runtime.n_workers, per_worker)
        tasks = [
            dask.delayed(sensitivity_task, pure=False)(
                src, lo, hi, cases, p.threshold, p.criterion, null_rows, draws
            )
            for lo, hi in blocks
        ]
        parts = run.runtime.compute(*tasks, desc=f"sensitivity of {len(cases)} maps")
        dim = "region" if maps.atlas else "voxel"
        names = self.output_statistics(p)
        data = {n: ((dim,), np.concatenate([part[n] for part in parts]).astype(np.float32)) for n in names}
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        extent = sum(part["extent"] for part in parts)
        ds.attrs["conventions"] = {**stats.SENSITIVITY_CONVENTIONS, "threshold": p.threshold, "strict": True}
        ds.attrs["sensitive_extent"] = int(extent)
        if draws is not None:
            null_extent = np.sum([part["null_extent"] for part in parts], axis=0)
            cmp = stats.null_percentile(float(extent), null_extent.astype(np.float64))
            ds["null_extent"] = (("draw",), null_extent.astype(np.int64))
            ds.attrs["null"] = {
                "kind": "random-lesions",
                "n_sets": int(p.n_null),
                "seed": int(p.seed),
                "matching": "nearest lesion volume, jittered (compute.stats.random_lesion_sets)",
                "extent_percentile": float(cmp.percentile),
                "extent_p": float(cmp.p_greater),
            }
        return ds

    def message(self, lake: Lake, plan: Plan, result: MethodResult) -> str:
        text = super().message(lake, plan, result)
        url = self.result_store(lake, plan)
        if url is None:
            return text
        from lakepipe.io.stores import open_derivative

        ds = open_derivative(url)
        p = plan.params
        assert isinstance(p, SensitivityParams)
        extra = f"; {ds.attrs['sensitive_extent']} feature(s) with |dominant| >= {p.criterion:g}"
        if "null" in ds.attrs:
            extra += f" (random-lesion p = {ds.attrs['null']['extent_p']:.3g})"
        return text + extra


METHOD = Sensitivity()
