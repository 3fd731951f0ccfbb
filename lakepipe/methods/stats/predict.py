"""``stats predict``: cross-validated prediction of a clinical score from the maps (DESIGN 3b): per
fold the symptom map of the training patients is the model, each held-out patient's prediction is
its map's spatial correlation with it, and the result is the correlation of the predictions with
the observed scores, with a permutation p from repeating the whole cross-validation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from lakepipe.compute import stats
from lakepipe.errors import InputError
from lakepipe.methods.base import Plan, Statistic
from lakepipe.methods.params.stats import PredictParams, StatsParams
from lakepipe.methods.stats.base import StatsMethod
from lakepipe.methods.stats.groups import MapSet
from lakepipe.methods.stats.symptom import patient_scores
from lakepipe.methods.stats.tasks import MapSource, feature_blocks

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.methods.base import MethodResult
    from lakepipe.runtime import RunContext


def _model_and_grams(
    src: MapSource, lo: int, hi: int, folds: list[np.ndarray], scores: np.ndarray, method: str
) -> dict[str, Any]:
    """Fold sums of one block and the block of the all-patient model map (the symptom r map)."""
    block = src.read(lo, hi)
    design = stats.symptom_design(scores, method=method)
    model = stats.symptom_prepare(design, block, method, np.float64).u
    return {"lo": lo, "grams": stats.fold_grams(block, folds, method), "model": model}


def _null_block(
    grams: stats.FoldGrams, scores: np.ndarray, plan: stats.PermutationPlan, a: int, b: int
) -> np.ndarray:
    return stats.permuted_statistic(grams, scores, plan.block(a, b))


class Predict(StatsMethod):
    name = "predict"
    command = ("stats", "predict")
    params_type = PredictParams
    statistics = (
        Statistic(
            "prediction", "held-out prediction of each patient (spatial r with the fold's model)", dims="map"
        ),
        Statistic("r", "correlation of the held-out predictions with the observed scores", dims="scalar"),
        Statistic("p", "permutation p of r (one-sided)", dims="scalar"),
        Statistic("model", "symptom map of all patients (the model every fold approximates)"),
    )
    feature_statistics = ("model",)
    default_statistic = "prediction"

    def clinical(self, maps: MapSet, p: StatsParams) -> list[str]:
        assert isinstance(p, PredictParams)
        return [p.score or ""]

    def check(self, maps: MapSet, p: StatsParams) -> None:
        assert isinstance(p, PredictParams)
        if p.controls:
            raise InputError(f"{self.name} predicts the patients' scores from their maps: give --cases only")
        scores = patient_scores(maps, p.score, self.name)
        try:
            stats.check_scores(scores, p.score or "score")
            self.folds(maps, p)
        except stats.StatsInputError as exc:
            raise self.input_error(exc, maps) from None

    def folds(self, maps: MapSet, p: PredictParams) -> list[np.ndarray]:
        if p.cv == "cohort":
            cohorts = maps.table["cohort"].astype(str).to_numpy()
            if len(set(cohorts)) < 2:
                raise InputError("--cv cohort leaves one cohort out: the cases must span several cohorts")
            return stats.cv_folds(maps.n, "group", groups=cohorts)
        return stats.cv_folds(maps.n, p.cv, p.folds, p.seed)

    def compute(self, lake: Lake, run: RunContext, p: StatsParams, maps: MapSet) -> xr.Dataset:
        import dask

        assert isinstance(p, PredictParams)
        scores = patient_scores(maps, p.score, self.name)
        folds = self.folds(maps, p)
        src = self.source(lake, maps)
        coords, attrs = self.feature_coords(lake, maps)
        blocks = feature_blocks(src.n_features, run.runtime.n_workers, per_worker=2)
        tasks = [
            dask.delayed(_model_and_grams, pure=False)(src, lo, hi, folds, scores, p.correlation)
            for lo, hi in blocks
        ]
        parts = run.runtime.compute(*tasks, desc="prediction: fold sums")
        grams = parts[0]["grams"]
        for part in parts[1:]:
            grams = grams + part["grams"]
        model = np.concatenate([part["model"] for part in parts])
        pred = stats.cv_predictions(grams, scores)[0]
        r = float(stats.cv_statistic(pred, scores)[0])
        plan = stats.permutation_plan(maps.n, p.n_permutations, p.seed)
        n_tasks = max(1, 2 * run.runtime.n_workers)
        size = max(1, -(-plan.n_perm // n_tasks))
        grams_d = dask.delayed(grams)  # one copy of the fold sums in the graph, shared by the tasks
        null_tasks = [
            dask.delayed(_null_block, pure=False)(grams_d, scores, plan, a, b) for a, b in plan.blocks(size)
        ]
        null = np.concatenate(list(run.runtime.compute(*null_tasks, desc="prediction: permutations")))
        pval = (1.0 + np.count_nonzero(null >= r - stats.TIE_TOL)) / (1.0 + plan.n_perm)
        dim = "region" if maps.atlas else "voxel"
        ds = xr.Dataset(
            {
                "prediction": (("map",), pred),
                "score": (("map",), scores),
                "fold": (("map",), _fold_of(folds, maps.n)),
                "r": ((), r),
                "p": ((), float(pval)),
                "model": ((dim,), model.astype(np.float32)),
                "null_r": (("permutation",), null),
            },
            coords=coords,
            attrs=attrs,
        )
        ds.attrs["conventions"] = {
            **stats.PREDICT_CONVENTIONS,
            "scheme": p.cv,
            "method": p.correlation,
            "k": p.folds if p.cv == "kfold" else None,
        }
        ds.attrs["permutations"] = plan.describe()
        return ds

    def message(self, lake: Lake, plan: Plan, result: MethodResult) -> str:
        text = super().message(lake, plan, result)
        url = self.result_store(lake, plan)
        if url is None:
            return text
        from lakepipe.io.stores import open_derivative

        ds = open_derivative(url)
        return text + f"; r = {float(ds['r'].values):.3f}, permutation p = {float(ds['p'].values):.3g}"


def _fold_of(folds: list[np.ndarray], n: int) -> np.ndarray:
    out = np.full(n, -1, np.int32)
    for k, f in enumerate(folds):
        out[np.asarray(f, dtype=np.intp)] = k
    return out


METHOD = Predict()
