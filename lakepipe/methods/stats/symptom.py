"""``stats symptom``: per voxel or region, the correlation over patients of the map value with a
clinical score (Pearson or Spearman; partial with covariates), FWE by score permutation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from lakepipe.compute import stats
from lakepipe.errors import InputError
from lakepipe.methods.base import Plan, Statistic
from lakepipe.methods.params.stats import StatsParams, SymptomParams
from lakepipe.methods.stats.base import PermutationMethod, covariate_matrix
from lakepipe.methods.stats.groups import MapSet
from lakepipe.methods.stats.permutation import permutation_test
from lakepipe.methods.stats.specificity import permutation_variables, tfce_grid

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.methods.base import MethodResult
    from lakepipe.runtime import RunContext


def patient_scores(maps: MapSet, column: str | None, method: str) -> np.ndarray:
    """The score of every map's participant; missing or non-numeric ones are refused by name."""
    if not column:
        raise InputError(f"{method} needs --score COLUMN (a participants.tsv column)")
    values, _ = maps.values([column], "score")
    bad = np.flatnonzero(~np.isfinite(values[:, 0]))
    if bad.size:
        raise InputError(
            f"score {column!r} is missing or not a number for {bad.size} participant(s): "
            + ", ".join(maps.labels(bad[:10]))
        )
    return values[:, 0]


class Symptom(PermutationMethod):
    name = "symptom"
    command = ("stats", "symptom")
    params_type = SymptomParams
    statistics = (
        Statistic("r", "correlation of the map value with the score over patients"),
        Statistic("p_fwe", "family-wise corrected p (max |r| over score permutations)"),
        Statistic("p", "uncorrected parametric p"),
        Statistic("q_fdr", "Benjamini-Hochberg q of p"),
        Statistic("tfce", "threshold-free cluster enhancement of the t of r"),
        Statistic("p_fwe_tfce", "family-wise corrected p of TFCE"),
    )
    default_statistic = "r"

    def clinical(self, maps: MapSet, p: StatsParams) -> list[str]:
        assert isinstance(p, SymptomParams)
        return [p.score or ""] + list(p.covariates or ())

    def check(self, maps: MapSet, p: StatsParams) -> None:
        assert isinstance(p, SymptomParams)
        if p.controls:
            raise InputError(
                f"{self.name} correlates the patients' maps with their scores: give --cases only"
            )
        self.check_tfce(maps, p)
        if maps.n < stats.MIN_GROUP_SIZE:
            raise InputError(f"{self.name} needs at least {stats.MIN_GROUP_SIZE} patients, got {maps.n}")
        scores = patient_scores(maps, p.score, self.name)
        try:
            stats.check_scores(scores, p.score or "score")
        except stats.StatsInputError as exc:
            raise self.input_error(exc, maps) from None

    def compute(self, lake: Lake, run: RunContext, p: StatsParams, maps: MapSet) -> xr.Dataset:
        assert isinstance(p, SymptomParams)
        scores = patient_scores(maps, p.score, self.name)
        cov, names = covariate_matrix(maps, p.covariates or ())
        design = stats.symptom_design(scores, cov, names or None, p.correlation)
        plan = stats.permutation_plan(design.n, p.n_permutations, p.seed)
        src = self.source(lake, maps)
        coords, attrs = self.feature_coords(lake, maps)
        out = permutation_test(
            run,
            src,
            design,
            plan,
            p.tail,
            spearman=p.correlation == "spearman",
            tfce_grid=tfce_grid(coords, attrs) if p.tfce else None,
            desc=f"symptom map: {plan.n_perm} permutations",
        )
        dim = "region" if maps.atlas else "voxel"
        data = permutation_variables(out, design, p.tail, out.u, "r", dim)
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        ds["score"] = (("map",), scores)
        ds.attrs["conventions"] = {
            **stats.SYMPTOM_CONVENTIONS,
            "method": p.correlation,
            "tail": p.tail,
            "dtype": out.dtype,
            "tie_tol": out.tie_tol,
        }
        ds.attrs["permutations"] = plan.describe()
        ds.attrs["df"] = int(design.df)
        ds.attrs["covariates"] = list(design.covariate_names)
        return ds

    def message(self, lake: Lake, plan: Plan, result: MethodResult) -> str:
        text = super().message(lake, plan, result)
        url = self.result_store(lake, plan)
        if url is None:
            return text
        from lakepipe.io.stores import open_derivative

        ds = open_derivative(url)
        r = ds["r"].values
        return text + (
            f"; max |r| {float(np.nanmax(np.abs(r))):.3f}, {int((ds['p_fwe'].values < 0.05).sum())} "
            "feature(s) with FWE p < 0.05"
        )


METHOD = Symptom()
