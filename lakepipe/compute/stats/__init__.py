"""Cohort-level lesion network mapping statistics (DESIGN section 3b): pure numpy/scipy kernels.

Work splits two ways, and results do not depend on the split:

- by voxel (column) block: every per-voxel statistic comes from a block of columns of the
  (n_maps, V) data; the max-statistic null of a permutation block is the elementwise max over voxel
  blocks of each block's maxima (:func:`combine_voxel_blocks`);
- by permutation block: permutation k depends only on ``(seed, k)`` (:class:`PermutationPlan`).

Given the global offsets of the blocks, every (voxel, permutation) value is the same bits in any
split (the GEMMs run on a fixed global tile grid), for a given BLAS kernel and BLAS thread count;
OpenBLAS's Haswell kernel rounds differently with the thread count, its SkylakeX kernel does not.

A scheduler runs, per voxel block ``b`` and permutation block ``j``::

    design = linear_design(is_case, covariates)            # or symptom_design(scores, ...)
    plan = permutation_plan(n, n_perm, seed, cases=is_case, covariates=k > 0)
    prep = prepare_maps(design, maps[:, lo:hi], offset=lo)    # observed u (-> t_from_u), residuals
    part[b, j] = null_max_block(design, prep, plan.block(start, stop), tail, perm_offset=start).max_u
    null_u = concatenate([combine_voxel_blocks(part[:, j]) for j in ...])
    p_fwe = max_statistic_pvalues(u, null_u, tail, tie_tol=null_tie_tol(design, dtype))

with ``dtype = float64`` when ``plan.exact`` (all relabellings enumerated: exact ties must stay ties).
TFCE needs whole maps: per permutation block, ``permuted_u_maps`` of every voxel block, joined,
``t_from_u``, then ``tfce_null_max`` (one task per permutation block, over all voxels).
:func:`specificity`, :func:`symptom_map` and :func:`predict` do all of it in one process.
Modules: ``validation``, ``permutations``, ``glm`` (specificity), ``symptom``, ``sensitivity``,
``conjunction``, ``predict``, ``nulls`` (random-lesion null), ``fdr`` (``pfdrmap``), ``tfce``.
"""

from lakepipe.compute.stats.conjunction import (
    CONJUNCTION_CONVENTIONS,
    Conjunction,
    agreement_map,
    conjunction,
)
from lakepipe.compute.stats.fdr import fdr_q, pfdrmap
from lakepipe.compute.stats.glm import (
    GLM_CONVENTIONS,
    T_MAX,
    LinearDesign,
    NullBlock,
    PermutationTestResult,
    PreparedMaps,
    linear_design,
    null_max_block,
    null_tie_tol,
    parametric_p,
    permuted_u_maps,
    prepare_maps,
    run_permutation_test,
    specificity,
    t_from_u,
)
from lakepipe.compute.stats.nulls import NullComparison, null_percentile, random_lesion_sets
from lakepipe.compute.stats.permutations import (
    TIE_TOL,
    PermutationPlan,
    combine_voxel_blocks,
    exceedance_pvalues,
    max_statistic_pvalues,
    permutation_plan,
    tail_statistic,
)
from lakepipe.compute.stats.predict import (
    PREDICT_CONVENTIONS,
    FoldGrams,
    PredictionResult,
    cv_folds,
    cv_predictions,
    cv_statistic,
    fold_grams,
    permuted_statistic,
    predict,
)
from lakepipe.compute.stats.sensitivity import (
    SENSITIVITY_CONVENTIONS,
    Sensitivity,
    meets_criterion,
    sensitivity,
)
from lakepipe.compute.stats.symptom import (
    SYMPTOM_CONVENTIONS,
    rank_maps,
    symptom_design,
    symptom_map,
    symptom_prepare,
)
from lakepipe.compute.stats.tfce import TFCE_CONVENTIONS, tfce_maps, tfce_null_max
from lakepipe.compute.stats.validation import (
    MIN_GROUP_SIZE,
    StatsInputError,
    check_covariates,
    check_groups,
    check_maps,
    check_scores,
)

__all__ = [
    "CONJUNCTION_CONVENTIONS",
    "GLM_CONVENTIONS",
    "MIN_GROUP_SIZE",
    "PREDICT_CONVENTIONS",
    "SENSITIVITY_CONVENTIONS",
    "SYMPTOM_CONVENTIONS",
    "TFCE_CONVENTIONS",
    "TIE_TOL",
    "T_MAX",
    "Conjunction",
    "FoldGrams",
    "LinearDesign",
    "NullBlock",
    "NullComparison",
    "PermutationPlan",
    "PermutationTestResult",
    "PredictionResult",
    "PreparedMaps",
    "Sensitivity",
    "StatsInputError",
    "agreement_map",
    "check_covariates",
    "check_groups",
    "check_maps",
    "check_scores",
    "combine_voxel_blocks",
    "conjunction",
    "cv_folds",
    "cv_predictions",
    "cv_statistic",
    "exceedance_pvalues",
    "fdr_q",
    "fold_grams",
    "linear_design",
    "max_statistic_pvalues",
    "meets_criterion",
    "null_max_block",
    "null_percentile",
    "null_tie_tol",
    "parametric_p",
    "permutation_plan",
    "permuted_statistic",
    "permuted_u_maps",
    "pfdrmap",
    "predict",
    "prepare_maps",
    "random_lesion_sets",
    "rank_maps",
    "run_permutation_test",
    "sensitivity",
    "specificity",
    "symptom_design",
    "symptom_map",
    "symptom_prepare",
    "t_from_u",
    "tail_statistic",
    "tfce_maps",
    "tfce_null_max",
]
