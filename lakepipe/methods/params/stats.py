"""Parameters of the group statistics (:mod:`lakepipe.methods.stats`): what every test shares
(the maps, cases and controls), the permutation options, and each test's own."""

from __future__ import annotations

from dataclasses import dataclass

from lakepipe.compute.stats.sensitivity import DEFAULT_CRITERION, DEFAULT_THRESHOLD
from lakepipe.methods.params.base import Params, option

#: the covariate (and random-lesion matching) column computed from the masks, mm^3
LESION_VOLUME = "lesion_volume"
QUERY_HELP = (
    "catalog query: KEY=VALUE pairs separated by commas; cohort, label, session, participants (values "
    "joined with +), or any participants.tsv column (e.g. cohort=stroke,label=acuteinfarct,group=case)"
)


@dataclass(frozen=True)
class StatsParams(Params):
    """The inputs of every group test: which maps, and who the cases (and controls) are."""

    cases: str = option(help="the cases' maps, by " + QUERY_HELP, metavar="QUERY")
    controls: str | None = option(None, help="the controls' maps, by the same kind of query", metavar="QUERY")
    maps: str = option(
        "fnm",
        choices=("fnm", "afnm"),
        help="the lesion maps tested: fnm (voxel maps; with --atlas their parcel summaries) or afnm "
        "(parcel scores; needs --atlas)",
    )
    statistic: str | None = option(
        None, help="the maps' statistic (default tmap for fnm, afnmap for afnm)", metavar="NAME"
    )
    atlas: str | None = option(None, help="atlas of the parcel scores (afnm) or FNM parcel summaries")
    connectome: str | None = option(None, help="the connectome the maps were made on (when several)")


@dataclass(frozen=True)
class PermutationParams(StatsParams):
    """Permutation inference options (specificity, symptom maps)."""

    covariates: tuple[str, ...] | None = option(
        None,
        metavar="NAME",
        help=f"covariates: participants.tsv columns, or {LESION_VOLUME} (mm^3, from the masks); text "
        "columns become indicator variables",
    )
    n_permutations: int = option(5000, positive=True, help="permutations for the FWE p (default 5000)")
    seed: int = option(0, help="permutation seed (results do not depend on the number of workers)")
    tail: str = option(
        "two-sided",
        choices=("two-sided", "greater", "less"),
        help="alternative hypothesis (default two-sided)",
    )
    tfce: bool = option(False, help="also threshold-free cluster enhancement with its FWE p (voxel maps)")


@dataclass(frozen=True)
class SensitivityParams(StatsParams):
    title = "fraction of case maps beyond +/-T per voxel or region"
    description = (
        "Sensitivity (DESIGN 3b): per voxel (or region) the fraction of case maps above +T (pos) and "
        "below -T (neg), combined = pos - neg and dominant = pos if pos >= neg else -neg. With "
        "--null random-lesions, the same for sets of control lesions matched on lesion volume."
    )

    threshold: float = option(
        DEFAULT_THRESHOLD,
        positive=True,
        help="T: a map counts where its value is above +T (or below -T); default 7 (t units)",
    )
    criterion: float = option(
        DEFAULT_CRITERION, help="fraction of cases that makes a voxel sensitive (default 0.75)"
    )
    null: str = option(
        "none",
        choices=("none", "random-lesions"),
        help="random-lesions: the same sensitivity for sets of control lesions matched on lesion volume "
        "(needs --controls): per-voxel percentile and p, and the extent of sensitive voxels",
    )
    n_null: int = option(1000, positive=True, help="random lesion sets (default 1000)")
    seed: int = option(0, help="seed of the random lesion sets")


@dataclass(frozen=True)
class SpecificityParams(PermutationParams):
    title = "cases vs controls per voxel or region, permutation FWE and FDR"
    description = (
        "Specificity (DESIGN 3b): per voxel (or region) the t of case vs control in M = b0 + b1 case + "
        "covariates; FWE p from the max statistic over Freedman-Lane permutations (spread over the Dask "
        "cluster; the result does not depend on the number of workers), Benjamini-Hochberg q of the "
        "parametric p, optional TFCE."
    )


@dataclass(frozen=True)
class ConjunctionParams(PermutationParams):
    title = "sensitive and specific with the same sign, and the agreement map"
    description = (
        "Conjunction (DESIGN 3b): |dominant sensitivity| >= criterion, specificity FWE p < alpha and "
        "sign(t) == sign(dominant); agreement = zscore(dominant) * zscore(t) where the signs agree. "
        "Reuses the sensitivity and specificity results in the lake (computing any that is missing)."
    )

    threshold: float = option(DEFAULT_THRESHOLD, positive=True, help="sensitivity threshold T (default 7)")
    criterion: float = option(DEFAULT_CRITERION, help="sensitivity criterion on |dominant| (default 0.75)")
    alpha: float = option(0.05, positive=True, help="FWE level of the specificity test (default 0.05)")


@dataclass(frozen=True)
class SymptomParams(PermutationParams):
    title = "map of correlations with a clinical score, permutation FWE"
    description = (
        "Symptom map (DESIGN 3b): per voxel (or region) Pearson (or Spearman) r over the patients "
        "(--cases) between the map value and a participants.tsv score, partial r with --covariates; "
        "FWE p from the max |r| over score permutations on the Dask cluster, FDR q, optional TFCE."
    )

    score: str | None = option(None, metavar="COLUMN", help="the clinical score: a participants.tsv column")
    correlation: str = option(
        "pearson", choices=("pearson", "spearman"), help="Pearson, or Spearman (ranks of maps and scores)"
    )


@dataclass(frozen=True)
class PredictParams(StatsParams):
    title = "cross-validated prediction of a score from the maps, permutation p"
    description = (
        "Cross-validated prediction (DESIGN 3b): in each fold the model map is the symptom map of the "
        "training patients; a held-out patient's prediction is the correlation over voxels (regions) "
        "of its map with the model; the result r is the correlation of predictions with the observed "
        "scores, its p from the whole cross-validation repeated on permuted scores (one-sided)."
    )

    score: str | None = option(None, metavar="COLUMN", help="the clinical score: a participants.tsv column")
    cv: str = option(
        "loo",
        choices=("loo", "kfold", "cohort"),
        help="cross-validation: leave-one-out, k-fold (--folds, --seed), or leave-one-cohort-out",
    )
    folds: int = option(10, positive=True, help="k of k-fold (default 10)")
    correlation: str = option(
        "pearson", choices=("pearson", "spearman"), help="the model map's correlation (default pearson)"
    )
    n_permutations: int = option(1000, positive=True, help="score permutations for the p (default 1000)")
    seed: int = option(0, help="seed of the k-fold split and of the permutations")
