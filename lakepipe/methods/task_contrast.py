"""``task contrast``: condition contrasts of task runs kept in the lake, per parcel, subject and group.

Input: a parcel-level connectome with task runs and their events (an HCP release ingested with
``lakepipe ingest connectome HCP_DIR --task MOTOR``: rows are runs, the ``runs`` and ``events`` row
tables say which task each row is and when its conditions happen; :mod:`lakepipe.io.sources.hcp`).

Two models, per run of the task and parcel:

- ``mean`` (default; the HCP seminar's block averages): the mean signal over each condition's frames,
  onsets shifted by the haemodynamic delay (``--hrf-delay`` seconds, default 5 TRs), then the contrast
  of those means (:mod:`lakepipe.compute.taskcontrast`, which states every convention);
- ``glm``: a first-level GLM with ``nilearn.glm.first_level`` (design matrix of every condition of the
  run with the ``glover`` or ``spm`` HRF, cosine drifts, AR(1) noise; the series in percent signal
  change as nilearn's ``signal_scaling=0``, or raw), the contrast's effect size.

A participant's value is the mean over its runs; over participants the group mean, the one-sample t
and its two-sided p. One Dask task per group of participants reads its runs from the store. Outputs
(one derivative store per run of the method): per participant and parcel (``subject_contrast``, and
the ``condition_mean`` of the mean model), per parcel (``contrast_mean``, ``contrast_t``,
``contrast_p``), published as the statistics ``contrast``, ``tstat``, ``pval``; ``--bids-out`` also
writes them as TSV with the network x hemisphere summary (``lakepipe plot task`` draws it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe._version import __version__
from lakepipe.catalog import OutputRecord
from lakepipe.compute.taskcontrast import (
    apply_contrast,
    condition_frames,
    condition_means,
    contrast_vector,
    group_summary,
    one_sample_t,
    parse_contrast,
)
from lakepipe.errors import InputError
from lakepipe.io import bidsout, layout
from lakepipe.io.storage import StoreRef
from lakepipe.io.stores import open_derivative, write_derivative
from lakepipe.io.stores.rows import open_rows
from lakepipe.io.stores.rowtables import read_row_table
from lakepipe.methods.base import PENDING, Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import (
    ConnectomeInfo,
    connectome_info,
    region_coords,
    region_table,
    subject_groups,
    tasks_for,
)
from lakepipe.methods.params.base import Params
from lakepipe.methods.params.task_contrast import TaskContrastParams

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext

log = logging.getLogger(__name__)

#: default haemodynamic delay, in repetition times (the HCP seminar's shift)
DEFAULT_DELAY_TRS = 5


@dataclass(frozen=True)
class RunJob:
    """One run to compute: its store row, its events, and what to compute."""

    row: int
    subject: str
    t_r: float
    events: pd.DataFrame  #: condition, onset, duration, amplitude


# ------------------------------------------------------------------------------------ worker tasks


def glm_effect(
    series: np.ndarray,
    events: pd.DataFrame,
    t_r: float,
    weights: dict[str, float],
    *,
    units: str = "psc",
    hrf_model: str = "glover",
    high_pass: float = 0.01,
    noise_model: str = "ar1",
) -> np.ndarray:
    """The contrast's effect size per parcel of one run's first-level GLM (nilearn), as
    ``FirstLevelModel(t_r, hrf_model, drift_model="cosine", high_pass, noise_model, signal_scaling=0 or
    False)`` fitted on the run with these events computes it. NaN when a weighted condition has no
    event in the run."""
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import make_first_level_design_matrix, mean_scaling, run_glm

    y = np.asarray(series, np.float64)
    if units == "psc":
        if not np.all(y.mean(axis=0) > 0):
            raise InputError("percent signal change needs series with a positive mean: use --units raw")
        y, _ = mean_scaling(y, 0)
    n = y.shape[0]
    frame_times = np.linspace(0.0, (n - 1) * t_r, n)
    ev = pd.DataFrame(
        {
            "onset": events["onset"].to_numpy(float),
            "duration": events["duration"].to_numpy(float),
            "trial_type": events["condition"].astype(str).to_numpy(),
        }
    )
    amplitude = events["amplitude"].to_numpy(float)
    if not np.all(amplitude == 1.0):  # nilearn's default modulation is 1
        ev["modulation"] = amplitude
    with contextlib.redirect_stdout(io.StringIO()):  # nilearn prints a note about the modulation column
        design = make_first_level_design_matrix(
            frame_times, ev, hrf_model=hrf_model, drift_model="cosine", high_pass=high_pass
        )
    if any(c not in design.columns for c, w in weights.items() if w != 0):
        return np.full(y.shape[1], np.nan)
    labels, results = run_glm(y, design.to_numpy(), noise_model=noise_model)
    vector = np.array([weights.get(str(c), 0.0) for c in design.columns])
    con = compute_contrast(labels, results, vector, stat_type="t")
    return np.asarray(con.effect_size(), np.float64).reshape(-1)


def _run_jobs(
    ref: StoreRef, jobs: list[RunJob], conditions: list[str], settings: dict[str, Any]
) -> list[dict[str, Any]]:
    """Condition means (mean model) or contrast effects (glm) of each run (runs on a worker)."""
    src = open_rows(ref)
    buf = np.empty(src.shape[1:], np.float32)
    out = []
    try:
        for job in jobs:
            src.read_into(job.row, buf)
            t = src.shape[1] if src.n_valid is None else int(src.n_valid[job.row])
            raw = buf[:t].astype(np.float64) * src.scale(job.row) + src.mean(job.row)
            if settings["model"] == "glm":
                effect = glm_effect(
                    raw,
                    job.events,
                    job.t_r,
                    settings["weights"],
                    units=settings["units"],
                    hrf_model=settings["hrf_model"],
                    high_pass=settings["high_pass"],
                    noise_model=settings["noise_model"],
                )
                out.append({"effect": effect})
                continue
            delay = round(settings["hrf_delay"] / job.t_r)
            frames, n_frames, dropped = [], [], []
            for c in conditions:
                ev = job.events[job.events["condition"] == c]
                f, d = condition_frames(ev["onset"].to_numpy(), ev["duration"].to_numpy(), job.t_r, delay, t)
                frames.append(f)
                n_frames.append(f.size)
                dropped.append(d)
            try:
                means = condition_means(raw, frames, settings["units"])
            except ValueError as exc:
                raise InputError(f"run {job.subject}: {exc}") from None
            out.append({"means": means, "frames": np.array(n_frames), "dropped": np.array(dropped)})
    finally:
        src.close()
    return out


def safe_contrast_name(expression: str) -> str:
    """A BIDS-safe rendering of a contrast (``lh - rh`` -> ``lhMinusrh``)."""
    text = re.sub(r"\s+", "", expression)
    for a, b in (("-", "Minus"), ("+", "Plus"), ("*", "Times"), (".", "p"), ("_", "")):
        text = text.replace(a, b)
    return re.sub(r"[^A-Za-z0-9]", "", text) or "contrast"


# ------------------------------------------------------------------------------------------ method


class TaskContrast(Method):
    name = "task-contrast"
    command = ("task", "contrast")
    params_type = TaskContrastParams
    statistics = (
        Statistic(
            "contrast",
            "group mean over participants of the contrast",
            variable="contrast_mean",
            dims="region",
        ),
        Statistic(
            "tstat", "one-sample t of the contrast over participants", variable="contrast_t", dims="region"
        ),
        Statistic("pval", "two-sided p of the one-sample t (n - 1 df)", variable="contrast_p", dims="region"),
    )
    default_statistic = "contrast"
    per_seed = False

    def inputs(self, params: Params) -> set[str]:
        assert isinstance(params, TaskContrastParams)
        return {f"connectome:{params.connectome}"}

    # ---- the task's runs, events and conditions
    def _runs(self, lake: Lake, con: ConnectomeInfo, task: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        url = layout.connectome_store(lake.url, con.name)
        runs = read_row_table(url, "runs", con.subjects)
        if runs is None or runs.empty:
            raise InputError(
                f"connectome '{con.name}' holds no task runs: ingest an HCP release with "
                "`lakepipe ingest connectome HCP_DIR --task TASK --name NAME`"
            )
        tasks = sorted(set(runs["task"]))
        mine = runs[runs["task"].str.upper() == task.upper()]
        if mine.empty:
            raise InputError(
                f"connectome '{con.name}' has no runs of task {task!r}; it has: {', '.join(tasks)}"
            )
        events = read_row_table(url, "events", list(mine["subject"]))
        if events is None or events.empty:
            raise InputError(f"the {task} runs of connectome '{con.name}' have no events")
        return mine.reset_index(drop=True), events

    def delay_s(self, p: TaskContrastParams, t_r: float) -> float:
        delay = DEFAULT_DELAY_TRS * t_r if p.hrf_delay is None else float(p.hrf_delay)
        if delay < 0:
            raise InputError(f"--hrf-delay must be >= 0 s, got {delay:g}")
        return delay

    def output_params(self, p: TaskContrastParams, weights: dict[str, float], t_r: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": p.task.upper(),
            "contrast": p.contrast,
            "weights": dict(sorted(weights.items())),
            "model": p.model,
            "units": p.units,
        }
        if p.model == "mean":
            delay = self.delay_s(p, t_r)
            out.update(
                hrf_delay_s=delay,
                delay_frames=round(delay / t_r),
                frames="floor(onset/TR)+delay+arange(ceil(duration/TR))",
            )
        else:
            out.update(
                hrf_model=p.hrf_model, drift_model="cosine", high_pass=p.high_pass, noise_model=p.noise_model
            )
        return out

    def records(
        self,
        p: TaskContrastParams,
        con: ConnectomeInfo,
        weights: dict[str, float],
        t_r: float,
        uri: str = PENDING,
        n: int | None = None,
    ) -> list[OutputRecord]:
        return [
            OutputRecord(
                kind="derivative",
                method=self.name,
                statistic=s.name,
                connectome=con.name,
                params=self.output_params(p, weights, t_r),
                inputs={"connectome": con.identity},
                store_uri=uri,
                store_index=s.name,
                shape=(n,) if n else None,
            )
            for s in self.statistics
        ]

    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        assert isinstance(params, TaskContrastParams)
        p = params
        con = connectome_info(lake, p.connectome)
        if con.kind != "region":
            raise InputError(f"connectome '{con.name}' is voxel-level: task contrasts run on parcel series")
        runs, events = self._runs(lake, con, p.task)
        conditions = sorted(set(events["condition"]))
        try:
            weights = parse_contrast(p.contrast, conditions)
        except ValueError as exc:
            raise InputError(f"--contrast: {exc}") from None
        t_rs = sorted(set(np.round(runs["t_r"].astype(float), 6)))
        if len(t_rs) != 1:
            raise InputError(f"the {p.task} runs have different repetition times {t_rs}")
        t_r = float(t_rs[0])
        self.delay_s(p, t_r)
        item = PlanItem(f"{con.name} {p.task.upper()}: {p.contrast}", self.records(p, con, weights, t_r))
        plan = Plan(
            self.name,
            p,
            [item],
            recompute=recompute,
            context={
                "connectome": con,
                "runs": runs,
                "events": events,
                "conditions": conditions,
                "weights": weights,
                "t_r": t_r,
            },
        )
        self.mark_done(lake, plan.items)
        return plan

    # ---- run
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
        assert isinstance(params, TaskContrastParams)
        p = params
        plan = plan or self.plan(lake, p, recompute=recompute)
        con: ConnectomeInfo = plan.context["connectome"]
        result = MethodResult(self.name)
        if not plan.todo:
            run.count_skipped(len(plan.items[0].records))
            result.skipped = [plan.items[0].key]
        else:
            ds = self._compute(lake, run, p, plan)
            url = layout.derivative_store(lake.url, self.name, layout.new_store_name(self.name))
            write_derivative(url, ds)
            run.publish(
                self.records(
                    p,
                    con,
                    plan.context["weights"],
                    plan.context["t_r"],
                    layout.relative(lake.url, url),
                    ds.sizes["region"],
                ),
                replace=plan.recompute,
            )
            result.store, result.computed = url, [plan.items[0].key]
            result.details = {"n_subjects": int(ds.sizes["participant"]), "n_runs": int(ds["n_runs"].sum())}
        ds = self.outputs(lake, plan)
        best = (
            ds["contrast_t"].to_series().abs().idxmax()
            if np.isfinite(ds["contrast_t"].values).any()
            else None
        )
        where = ""
        if best is not None:
            i = int(np.flatnonzero(ds["region"].values == best)[0])
            where = (
                f"; largest |t| {float(ds['contrast_t'].values[i]):+.2f} in {ds['region_name'].values[i]} "
                f"(mean {float(ds['contrast_mean'].values[i]):+.3g})"
            )
        verb = "already in the lake" if result.skipped else ("recomputed" if plan.recompute else "written")
        result.message = (
            f"task contrast {p.task.upper()} '{p.contrast}' ({p.model}) over {ds.sizes['participant']} "
            f"participants of {con.name}, {ds.sizes['region']} parcels {verb}{where}"
        )
        if bids_out:
            result.files = self.export(lake, self.covered_rows(lake, plan), bids_out)
        return result

    def _compute(self, lake: Lake, run: RunContext, p: TaskContrastParams, plan: Plan) -> xr.Dataset:
        import dask

        con: ConnectomeInfo = plan.context["connectome"]
        runs: pd.DataFrame = plan.context["runs"]
        events: pd.DataFrame = plan.context["events"]
        conditions: list[str] = plan.context["conditions"]
        weights: dict[str, float] = plan.context["weights"]
        t_r: float = plan.context["t_r"]
        row_of = {s: i for i, s in enumerate(con.store_subjects)}
        by_subject = dict(iter(events.groupby("subject")))
        participants = list(dict.fromkeys(runs["participant"]))
        jobs_of = {
            part: [
                RunJob(
                    row_of[r.subject], r.subject, float(r.t_r), by_subject[r.subject].reset_index(drop=True)
                )
                for r in runs[runs["participant"] == part].itertuples()
                if r.subject in by_subject
            ]
            for part in participants
        }
        participants = [q for q in participants if jobs_of[q]]
        settings = {
            "model": p.model,
            "units": p.units,
            "weights": weights,
            "hrf_delay": self.delay_s(p, t_r),
            "hrf_model": p.hrf_model,
            "high_pass": p.high_pass,
            "noise_model": p.noise_model,
        }
        ref = StoreRef.here(layout.connectome_store(lake.url, con.name))
        groups = subject_groups(len(participants), tasks_for(run.runtime.n_workers, len(participants)))
        parts = [
            dask.delayed(_run_jobs, pure=False)(
                ref, [j for i in g for j in jobs_of[participants[i]]], conditions, settings
            )
            for g in groups
        ]
        results = [r for part in run.runtime.compute(*parts, desc=f"task contrast {p.task}") for r in part]
        vector = contrast_vector(weights, conditions)
        n_regions = int(con.dataset.sizes["region"])
        subject = np.full((len(participants), n_regions), np.nan)
        cmeans = np.full((len(participants), len(conditions), n_regions), np.nan)
        frames = np.zeros((len(participants), len(conditions)), np.int64)
        dropped = np.zeros((len(participants), len(conditions)), np.int64)
        n_runs = np.zeros(len(participants), np.int32)
        k = 0
        for i, part in enumerate(participants):
            mine = results[k : k + len(jobs_of[part])]
            k += len(jobs_of[part])
            n_runs[i] = len(mine)
            if p.model == "glm":
                effects = np.stack([m["effect"] for m in mine])
            else:
                means = np.stack([m["means"] for m in mine])  # (runs, C, P)
                effects = apply_contrast(means, vector)
                with np.errstate(invalid="ignore"):
                    cmeans[i] = np.nanmean(means, axis=0) if np.isfinite(means).any() else np.nan
                frames[i] = np.sum([m["frames"] for m in mine], axis=0)
                dropped[i] = np.sum([m["dropped"] for m in mine], axis=0)
            with np.errstate(invalid="ignore"):
                subject[i] = np.nanmean(effects, axis=0) if np.isfinite(effects).any() else np.nan
        mean, sd, t, pval = one_sample_t(subject)
        table = region_table(con.dataset)
        data: dict[str, Any] = {
            "subject_contrast": (("participant", "region"), subject.astype(np.float32)),
            "contrast_mean": ("region", mean.astype(np.float32)),
            "contrast_sd": ("region", sd.astype(np.float32)),
            "contrast_t": ("region", t.astype(np.float32)),
            "contrast_p": ("region", pval.astype(np.float32)),
            "n_runs": ("participant", n_runs),
        }
        if p.model == "mean":
            data["condition_mean"] = (("participant", "condition", "region"), cmeans.astype(np.float32))
            data["condition_frames"] = (("participant", "condition"), frames)
            data["frames_past_end"] = (("participant", "condition"), dropped)
        return xr.Dataset(
            data,
            coords={
                "participant": ("participant", np.asarray(participants, dtype=object)),
                "condition": ("condition", np.asarray(conditions, dtype=object)),
                **region_coords(table, "region"),
            },
            attrs={
                "method": self.name,
                "connectome": con.name,
                "task": p.task.upper(),
                "contrast": p.contrast,
                "t_r": t_r,
                "n_subjects": len(participants),
                "parameters": self.output_params(p, weights, t_r),
                "inputs": {"connectome": con.identity},
                "lakepipe_version": __version__,
                "conventions": {
                    "subject_contrast": "per participant: mean over its runs of the run's contrast",
                    "contrast_mean": "mean over participants",
                    "contrast_t": "mean / (sd / sqrt(n)), sd with ddof 1",
                    "contrast_p": "two-sided p of contrast_t with n - 1 degrees of freedom",
                    "condition_mean": "mean over the condition's delayed frames (psc: % of the run mean)",
                },
            },
        )

    # ---- outputs
    def covered_rows(self, lake: Lake, plan: Plan) -> pd.DataFrame:
        return lake.published([r for item in plan.items for r in item.records])

    def outputs(self, lake: Lake, plan: Plan, statistic: str | None = None) -> xr.Dataset:  # type: ignore[override]
        """The store of the contrast the plan covers (all variables, provenance in attrs)."""
        rows = self.covered_rows(lake, plan)
        if rows.empty:
            raise InputError(
                f"the task contrast {plan.items[0].key} is not in the lake: run `lakepipe task contrast` "
                "with these options first"
            )
        return open_derivative(lake.store_url(str(rows["store_uri"].iloc[0]))).load()

    @staticmethod
    def network_table(ds: xr.Dataset) -> pd.DataFrame:
        """Network x hemisphere summary: per participant the mean over the group's parcels, then the
        mean, sd, SEM, t and p over participants."""
        nets = [str(v) or "unassigned" for v in ds["region_network"].values]
        hemis = [str(v) or "n/a" for v in ds["region_hemisphere"].values]
        keys, per_subject, counts = group_summary(
            ds["subject_contrast"].values, list(zip(nets, hemis, strict=True))
        )
        mean, sd, t, pval = one_sample_t(per_subject)
        n = np.sum(np.isfinite(per_subject), axis=0)
        return pd.DataFrame(
            {
                "network": [k[0] for k in keys],
                "hemisphere": [k[1] for k in keys],
                "n_regions": counts,
                "n_subjects": n,
                "mean": mean,
                "sd": sd,
                "sem": sd / np.sqrt(np.maximum(n, 1)),
                "t": t,
                "p": pval,
            }
        )

    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """``task-<T>_contrast-<c>_method-taskcontrast_desc-{group,subjects,networks}_parcelstats.{tsv,json}``."""
        out = Path(out_dir)
        bidsout.dataset_description(out)
        files = []
        for uri, _ in rows.groupby("store_uri", sort=False):
            ds = open_derivative(lake.store_url(str(uri))).load()
            contrast = safe_contrast_name(ds.attrs["contrast"])
            stem = f"task-{ds.attrs['task']}_contrast-{contrast}_method-taskcontrast"
            meta = {
                "Description": f"task contrast '{ds.attrs['contrast']}' of the {ds.attrs['task']} runs",
                "Method": self.name,
                "Connectome": ds.attrs["connectome"],
                "NumberOfSubjects": ds.attrs["n_subjects"],
                "Parameters": ds.attrs["parameters"],
                "Conventions": ds.attrs["conventions"],
                "LakepipeVersion": ds.attrs.get("lakepipe_version"),
            }
            group = pd.DataFrame(
                {
                    "index": ds["region"].values,
                    "name": ds["region_name"].values,
                    "network": ds["region_network"].values,
                    "hemisphere": ds["region_hemisphere"].values,
                    "mean": ds["contrast_mean"].values.astype(float),
                    "sd": ds["contrast_sd"].values.astype(float),
                    "t": ds["contrast_t"].values.astype(float),
                    "p": ds["contrast_p"].values.astype(float),
                }
            )
            files.append(bidsout.write_tsv(out / f"{stem}_desc-group_parcelstats.tsv", group, meta))
            subjects = pd.DataFrame(
                ds["subject_contrast"].values.astype(float),
                index=pd.Index([str(v) for v in ds["participant"].values], name="participant_id"),
                columns=[str(v) for v in ds["region_name"].values],
            )
            files.append(
                bidsout.write_tsv(out / f"{stem}_desc-subjects_parcelstats.tsv", subjects, meta, index=True)
            )
            files.append(
                bidsout.write_tsv(
                    out / f"{stem}_desc-networks_parcelstats.tsv",
                    self.network_table(ds),
                    {**meta, "Description": meta["Description"] + ", mean per network and hemisphere"},
                )
            )
        return files


METHOD = TaskContrast()
