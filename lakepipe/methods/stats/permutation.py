"""Max-statistic permutation tests on the cluster: the GLM of specificity and symptom maps, split by
feature block and permutation chunk (every split gives the same bits), plus TFCE over whole maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lakepipe.compute import stats
from lakepipe.methods.stats.tasks import MapSource, feature_blocks, glm_task, tfce_task

if TYPE_CHECKING:
    from lakepipe.runtime import RunContext

#: permutations per GEMM block (a multiple of the kernel's 512-permutation tile)
PERM_BLOCK = 1024
#: permutations per TFCE task (each holds this many whole float64 maps)
TFCE_BLOCK = 64


@dataclass(frozen=True)
class PermutationOutcome:
    """What a permutation test gives: observed statistic (partial correlation ``u``), FWE p, the null
    maxima (in ``u``) and, with TFCE, the enhanced map, its FWE p and null maxima."""

    u: np.ndarray
    p_fwe: np.ndarray
    null_u: np.ndarray
    tie_tol: float
    dtype: str
    tfce: np.ndarray | None = None
    p_fwe_tfce: np.ndarray | None = None
    null_tfce: np.ndarray | None = None


def _chunks(n_perm: int, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous permutation ranges aligned to :data:`PERM_BLOCK`."""
    size = -(-n_perm // max(n, 1))
    size = max(PERM_BLOCK, -(-size // PERM_BLOCK) * PERM_BLOCK)
    return [(a, min(a + size, n_perm)) for a in range(0, n_perm, size)]


class _Chunk:
    """A contiguous range of a plan's permutations, as a plan (for the task's ``blocks``/``block``)."""

    def __init__(self, plan: stats.PermutationPlan, start: int, stop: int):
        self.plan, self.start, self.stop = plan, start, stop

    def blocks(self, size: int) -> list[tuple[int, int]]:
        return [(a, min(a + size, self.stop)) for a in range(self.start, self.stop, size)]

    def block(self, a: int, b: int) -> np.ndarray:
        return self.plan.block(a, b)


def permutation_test(
    run: RunContext,
    src: MapSource,
    design: stats.LinearDesign,
    plan: stats.PermutationPlan,
    tail: str,
    *,
    spearman: bool = False,
    tfce_grid: tuple[np.ndarray, tuple[int, int, int]] | None = None,
    desc: str = "permutations",
) -> PermutationOutcome:
    """Observed statistic, FWE p and null of a GLM permutation test, on the cluster.

    Tasks are (feature block x permutation chunk): several blocks per worker for voxel maps, and
    for few features (parcel scores) the permutations split into chunks instead. float64 when the
    plan enumerates every relabelling (exact ties must stay ties), float32 products otherwise.
    """
    import dask

    dtype = "float64" if plan.exact else "float32"
    n_workers = run.runtime.n_workers
    # two wide blocks per worker: each block costs a decompression of every map (see tasks.py)
    blocks = feature_blocks(src.n_features, n_workers, per_worker=2, n_maps=src.n)
    chunks = _chunks(plan.n_perm, max(1, -(-2 * n_workers // len(blocks))))
    tasks = [
        dask.delayed(glm_task, pure=False)(
            src, lo, hi, design, _Chunk(plan, a, b), tail, dtype, PERM_BLOCK, spearman
        )
        for lo, hi in blocks
        for a, b in chunks
    ]
    parts: list[dict[str, Any]] = list(run.runtime.compute(*tasks, desc=desc))
    u = np.empty(src.n_features)
    by_chunk: list[list[np.ndarray]] = [[] for _ in chunks]
    for k, part in enumerate(parts):
        lo = part["lo"]
        u[lo : lo + part["u"].size] = part["u"]
        by_chunk[k % len(chunks)].append(np.concatenate(part["max_u"]))
    null_u = np.concatenate([stats.combine_voxel_blocks(c) for c in by_chunk])
    tie = stats.null_tie_tol(design, np.dtype(dtype))
    out = PermutationOutcome(
        u=u,
        p_fwe=stats.max_statistic_pvalues(u, null_u, tail, tie_tol=tie),
        null_u=null_u,
        tie_tol=tie,
        dtype=dtype,
    )
    if tfce_grid is None:
        return out
    ijk, shape = tfce_grid
    t_obs = stats.t_from_u(u, design.df)
    enhanced = stats.tfce_maps(t_obs, ijk, shape, tail)
    tasks = [
        dask.delayed(tfce_task, pure=False)(
            src, design, plan, a, b, tail, dtype, ijk, shape, design.df, spearman
        )
        for a, b in plan.blocks(TFCE_BLOCK)
    ]
    null_tfce = np.concatenate(list(run.runtime.compute(*tasks, desc=f"{desc} (TFCE)")))
    # the observed map recurs among random draws (the identity): enhanced values within rounding of
    # the observed count as ties; TFCE sums thresholded cluster extents, so its rounding follows the
    # t maps' relative rounding (~1e-6 in float32 products): a relative tolerance of 1e-5
    tie_tfce = 1e-5 * float(np.max(np.abs(enhanced))) if enhanced.size else 0.0
    return PermutationOutcome(
        **{**out.__dict__},
        tfce=enhanced,
        p_fwe_tfce=stats.max_statistic_pvalues(enhanced, null_tfce, tail, tie_tol=tie_tfce),
        null_tfce=null_tfce,
    )
