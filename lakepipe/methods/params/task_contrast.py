"""Parameters of ``task contrast`` (:mod:`lakepipe.methods.task_contrast`)."""

from __future__ import annotations

from dataclasses import dataclass

from lakepipe.compute.taskcontrast import UNITS
from lakepipe.methods.params.base import Params, option

MODELS = ("mean", "glm")
HRF_MODELS = ("glover", "spm")
NOISE_MODELS = ("ar1", "ols")


@dataclass(frozen=True)
class TaskContrastParams(Params):
    title = "a contrast of task conditions per parcel: subjects, group mean and one-sample t"
    description = (
        "For every run of a task kept in the lake (an HCP release ingested with --task), the mean signal "
        "of each condition's frames (onsets shifted by --hrf-delay) or a nilearn first-level GLM "
        "(--model glm), the contrast per parcel, averaged over each participant's runs; over "
        "participants the group mean, one-sample t and p. Outputs per parcel in the lake, TSV with "
        "network x hemisphere summaries via --bids-out; `lakepipe plot task` draws the bars."
    )

    connectome: str = option(
        help="parcel-level connectome holding task runs (lakepipe ingest connectome --task)"
    )
    task: str = option(help="the task whose runs to use, e.g. MOTOR")
    contrast: str = option(help='a contrast of conditions, e.g. "lh - rh" or "2*t - lh - rh"')
    hrf_delay: float | None = option(
        None, metavar="S", help="mean model: shift of the onsets (haemodynamic delay, s; default 5 TRs)"
    )
    model: str = option(
        "mean",
        choices=MODELS,
        help="mean: condition means of the delayed frames (default); glm: nilearn first-level GLM",
    )
    units: str = option(
        "psc", choices=UNITS, help="psc: percent of each run's mean (default); raw: the run's mean removed"
    )
    hrf_model: str = option(
        "glover", choices=HRF_MODELS, help="glm: haemodynamic response model (default glover)"
    )
    high_pass: float = option(0.01, metavar="HZ", help="glm: cosine drift cutoff (Hz, default 0.01)")
    noise_model: str = option("ar1", choices=NOISE_MODELS, help="glm: noise model (default ar1)")
