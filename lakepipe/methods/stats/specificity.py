"""``stats specificity``: cases against controls per voxel or region (GLM with optional covariates),
max-statistic FWE by Freedman-Lane permutations on the cluster, Benjamini-Hochberg FDR, optional TFCE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from lakepipe.compute import stats
from lakepipe.methods.base import Plan, Statistic
from lakepipe.methods.params.stats import PermutationParams, SpecificityParams, StatsParams
from lakepipe.methods.stats.base import PermutationMethod, covariate_matrix
from lakepipe.methods.stats.groups import MapSet
from lakepipe.methods.stats.permutation import PermutationOutcome, permutation_test

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.methods.base import MethodResult
    from lakepipe.runtime import RunContext


def tfce_grid(ds_coords: dict[str, Any], attrs: dict[str, Any]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(ijk, grid shape) of a voxel result, for TFCE."""
    ijk = np.asarray(ds_coords["ijk"][1], dtype=np.intp)
    shape = tuple(int(s) for s in attrs["grid"]["shape"])
    return ijk, (shape[0], shape[1], shape[2])


def permutation_variables(
    out: PermutationOutcome, design: stats.LinearDesign, tail: str, statistic: np.ndarray, name: str, dim: str
) -> dict[str, Any]:
    """The result variables of a permutation test: the statistic, FWE p, parametric p, FDR q, the
    null maxima, and the TFCE map with its FWE p when computed."""
    p = stats.parametric_p(stats.t_from_u(out.u, design.df), design.df, tail)
    data: dict[str, Any] = {
        name: ((dim,), statistic.astype(np.float32)),
        "p_fwe": ((dim,), out.p_fwe.astype(np.float32)),
        "p": ((dim,), p.astype(np.float32)),
        "q_fdr": ((dim,), stats.fdr_q(p).astype(np.float32)),
        "null_max_u": (("permutation",), out.null_u),
    }
    if out.tfce is not None and out.p_fwe_tfce is not None and out.null_tfce is not None:
        data["tfce"] = ((dim,), out.tfce.astype(np.float32))
        data["p_fwe_tfce"] = ((dim,), out.p_fwe_tfce.astype(np.float32))
        data["null_max_tfce"] = (("permutation",), out.null_tfce)
    return data


class Specificity(PermutationMethod):
    name = "specificity"
    command = ("stats", "specificity")
    params_type = SpecificityParams
    statistics = (
        Statistic("t", "t of case vs control (positive: cases above controls)"),
        Statistic("p_fwe", "family-wise corrected p (max statistic over permutations)"),
        Statistic("p", "uncorrected parametric p (Student t)"),
        Statistic("q_fdr", "Benjamini-Hochberg q of p over the voxels (regions)"),
        Statistic("tfce", "threshold-free cluster enhancement of t"),
        Statistic("p_fwe_tfce", "family-wise corrected p of TFCE"),
    )
    default_statistic = "t"
    needs_controls = True

    def check(self, maps: MapSet, p: StatsParams) -> None:
        assert isinstance(p, PermutationParams)
        self.check_tfce(maps, p)
        try:
            stats.check_groups(maps.is_case)
        except stats.StatsInputError as exc:
            raise self.input_error(exc, maps) from None

    def design(self, maps: MapSet, p: PermutationParams) -> stats.LinearDesign:
        cov, names = covariate_matrix(maps, p.covariates or ())
        try:
            return stats.linear_design(
                maps.is_case.astype(np.float64), cov, names or None, tested_name="case/control group"
            )
        except stats.StatsInputError as exc:
            raise self.input_error(exc, maps) from None

    def compute(self, lake: Lake, run: RunContext, p: StatsParams, maps: MapSet) -> xr.Dataset:
        assert isinstance(p, SpecificityParams)
        design = self.design(maps, p)
        plan = stats.permutation_plan(
            design.n, p.n_permutations, p.seed, cases=maps.is_case, covariates=design.n_covariates > 0
        )
        src = self.source(lake, maps)
        coords, attrs = self.feature_coords(lake, maps)
        out = permutation_test(
            run,
            src,
            design,
            plan,
            p.tail,
            tfce_grid=tfce_grid(coords, attrs) if p.tfce else None,
            desc=f"specificity: {plan.n_perm} permutations",
        )
        dim = "region" if maps.atlas else "voxel"
        t = stats.t_from_u(out.u, design.df)
        data = permutation_variables(out, design, p.tail, t, "t", dim)
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        ds.attrs["conventions"] = {
            **stats.GLM_CONVENTIONS,
            "tail": p.tail,
            "dtype": out.dtype,
            "tie_tol": out.tie_tol,
        }
        ds.attrs["permutations"] = plan.describe()
        ds.attrs["df"] = int(design.df)
        ds.attrs["covariates"] = list(design.covariate_names)
        if plan.exact:
            ds.attrs["note"] = (
                f"{p.n_permutations} permutations asked for, {plan.n_distinct} distinct relabellings "
                "exist: all were enumerated (exact test)"
            )
        return ds

    def message(self, lake: Lake, plan: Plan, result: MethodResult) -> str:
        text = super().message(lake, plan, result)
        url = self.result_store(lake, plan)
        if url is None:
            return text
        from lakepipe.io.stores import open_derivative

        ds = open_derivative(url)
        n_sig = int((ds["p_fwe"].values < 0.05).sum())
        text += f"; {n_sig} feature(s) with FWE p < 0.05 ({ds.attrs['permutations']['n_permutations']} perm.)"
        return text + (f"; {ds.attrs['note']}" if "note" in ds.attrs else "")


METHOD = Specificity()
