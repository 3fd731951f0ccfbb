"""``stats conjunction``: voxels (regions) both sensitive and specific with the same sign, and the
agreement map (DESIGN 3b). The sensitivity and specificity results it needs are taken from the lake
when they are there with the same inputs and parameters, and computed (and published) otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from lakepipe.compute import stats
from lakepipe.errors import InputError
from lakepipe.methods.base import Method, Plan, Statistic
from lakepipe.methods.params.stats import ConjunctionParams, StatsParams
from lakepipe.methods.stats.base import StatsMethod
from lakepipe.methods.stats.groups import MapSet

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.methods.base import MethodResult, Params
    from lakepipe.runtime import RunContext


class Conjunction(StatsMethod):
    name = "conjunction"
    command = ("stats", "conjunction")
    params_type = ConjunctionParams
    statistics = (
        Statistic("conjunction", "sign of dominant where sensitive and specific with that sign, else 0"),
        Statistic("agreement", stats.CONJUNCTION_CONVENTIONS["agreement"]),
    )
    feature_statistics = ("conjunction", "agreement")
    default_statistic = "conjunction"
    needs_controls = True

    def check(self, maps: MapSet, p: StatsParams) -> None:
        assert isinstance(p, ConjunctionParams)
        if not 0 < p.alpha < 1:
            raise InputError(f"--alpha must be in (0, 1), got {p.alpha}")
        if not 0 <= p.criterion <= 1:
            raise InputError(f"--criterion is a fraction in [0, 1], got {p.criterion}")

    def parts(self, p: ConjunctionParams) -> list[tuple[Method, Params]]:
        """The sensitivity (cases only) and specificity (cases vs controls) runs it combines."""
        from lakepipe.registry import get_method

        common = {"cases": p.cases, "maps": p.maps, "statistic": p.statistic, "atlas": p.atlas}
        common["connectome"] = p.connectome
        sens = get_method("sensitivity")
        spec = get_method("specificity")
        return [
            (sens, sens.params(common, threshold=p.threshold, criterion=p.criterion)),
            (
                spec,
                spec.params(
                    common,
                    controls=p.controls,
                    covariates=p.covariates,
                    n_permutations=p.n_permutations,
                    seed=p.seed,
                    tail=p.tail,
                ),
            ),
        ]

    def compute(self, lake: Lake, run: RunContext, p: StatsParams, maps: MapSet) -> xr.Dataset:
        assert isinstance(p, ConjunctionParams)
        results = []
        for method, params in self.parts(p):
            plan = method.plan(lake, params)
            if plan.todo:
                method.run(lake, run, params, plan=plan)
            results.append(method.outputs(lake, plan))
        sens, spec = results
        conj = stats.conjunction(
            sens["dominant"].values, spec["t"].values, spec["p_fwe"].values, p.criterion, p.alpha
        )
        coords, attrs = self.feature_coords(lake, maps)
        dim = "region" if maps.atlas else "voxel"
        sign = np.where(conj.mask, np.sign(sens["dominant"].values), 0.0)
        ds = xr.Dataset(
            {
                "conjunction": ((dim,), sign.astype(np.float32)),
                "agreement": ((dim,), conj.agreement.astype(np.float32)),
            },
            coords=coords,
            attrs=attrs,
        )
        ds.attrs["conventions"] = {
            **stats.CONJUNCTION_CONVENTIONS,
            "criterion": p.criterion,
            "alpha": p.alpha,
            "threshold": p.threshold,
        }
        ds.attrs["from"] = {
            "sensitivity": sens.attrs.get("inputs"),
            "specificity_permutations": spec.attrs.get("permutations"),
        }
        return ds

    def message(self, lake: Lake, plan: Plan, result: MethodResult) -> str:
        text = super().message(lake, plan, result)
        url = self.result_store(lake, plan)
        if url is None:
            return text
        from lakepipe.io.stores import open_derivative

        c = open_derivative(url)["conjunction"].values
        return (
            text + f"; {int((c > 0).sum())} positive and {int((c < 0).sum())} negative conjunction feature(s)"
        )


METHOD = Conjunction()
