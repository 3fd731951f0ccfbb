"""Worker tasks of the group tests: each reads one block of voxels (or regions) of every map from
the derivative stores and runs a kernel of :mod:`lakepipe.compute.stats` on it.

Blocks are contiguous feature ranges at fixed global offsets, so results are the same bits for
any number of workers (the kernels' tiles sit on a global grid). Memory per task: the maps of one
block plus the kernels' tiles; with the number of maps given, blocks are narrowed to keep that
under :data:`MAX_BLOCK_BYTES` whatever the number of maps. The FNM stores hold one chunk per map
row, so a task decompresses every row once and keeps its block: each block costs one decompression
of all the maps, about as much CPU as the permutation products of a 30,000-voxel block with 5,000
permutations, so the permutation tests use few, wide blocks (measured, zstd rows of 235,375 float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype

from lakepipe.compute import stats
from lakepipe.io.storage import StoreRef, get_array

#: features per block are a multiple of this (the kernels' tile width: no padding)
BLOCK_ALIGN = 2048
#: at most this many features per block (n x block float64 per task)
MAX_BLOCK = 65536
#: with ``n_maps`` given: at most this many bytes of maps per block, counted as 8 bytes per value (a
#: float32 block and the float32 residuals the GLM kernel makes of it)
MAX_BLOCK_BYTES = 96 * 2**20


def feature_blocks(
    n_features: int, n_workers: int, per_worker: int = 4, n_maps: int | None = None
) -> list[tuple[int, int]]:
    """Contiguous ``(lo, hi)`` feature blocks of about equal width: ``per_worker`` per worker,
    aligned to the kernels' tiles, each at most :data:`MAX_BLOCK` wide, or with ``n_maps`` at most
    :data:`MAX_BLOCK_BYTES` of maps (then more blocks, not wider ones, as the maps grow in number;
    never narrower than one tile)."""
    want = max(1, n_workers * per_worker)
    cap = MAX_BLOCK if n_maps is None else MAX_BLOCK_BYTES // (8 * max(1, n_maps))
    cap = max(BLOCK_ALIGN, cap // BLOCK_ALIGN * BLOCK_ALIGN)
    count = max(want, -(-n_features // cap))
    size = -(-n_features // count)
    size = int(min(cap, max(BLOCK_ALIGN, -(-size // BLOCK_ALIGN) * BLOCK_ALIGN)))
    return [(lo, min(lo + size, n_features)) for lo in range(0, n_features, size)]


@dataclass(frozen=True)
class MapSource:
    """Where the maps of a test live: per store, its variable, the rows to read and their positions."""

    parts: tuple[tuple[StoreRef, str, tuple[int, ...], tuple[int, ...]], ...]
    n: int
    n_features: int

    def read(
        self,
        lo: int = 0,
        hi: int | None = None,
        rows: Sequence[int] | None = None,
        dtype: type[np.floating[Any]] = np.float64,
    ) -> np.ndarray:
        """(n or len(rows), hi - lo) block of the maps (``rows``: positions among the n maps), float64
        or, exactly as stored, float32."""
        hi = self.n_features if hi is None else hi
        want = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.intp)
        where = np.full(self.n, -1, np.intp)
        where[want] = np.arange(want.size)
        out = np.empty((want.size, hi - lo), dtype=dtype)
        for ref, variable, index, position in self.parts:
            pos = np.asarray(position, dtype=np.intp)
            take = where[pos] >= 0
            if not take.any():
                continue
            arr = get_array(ref.group(), variable)
            dest = where[pos[take]]
            # contiguous runs of store rows as basic slices: zarr's orthogonal selection with an index
            # array costs about twice the CPU of slicing the same rows (measured, zarr 3.1); a run that
            # lands on consecutive rows of ``out`` is decoded straight into them (no temporary block)
            for a, b, sel in _row_runs(np.asarray(index, dtype=np.intp)[take]):
                rows_out = dest[sel]
                d = int(rows_out[0])
                if out.dtype == arr.dtype and np.array_equal(rows_out, np.arange(d, d + rows_out.size)):
                    view = default_buffer_prototype().nd_buffer.from_numpy_array(out[d : d + rows_out.size])
                    arr.get_basic_selection((slice(a, b), slice(lo, hi)), out=view)
                else:
                    out[rows_out] = arr[a:b, lo:hi]
        return out


def _row_runs(rows: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """``rows`` as runs of consecutive store rows: ``(first, stop, where in rows)`` per run."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    cuts = np.flatnonzero(np.diff(ordered) != 1) + 1
    return [
        (int(ordered[a]), int(ordered[b - 1]) + 1, order[a:b])
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, ordered.size], strict=True)
    ]


def sensitivity_task(
    src: MapSource,
    lo: int,
    hi: int,
    cases: Sequence[int],
    threshold: float,
    criterion: float,
    null_rows: Sequence[int] | None = None,
    draws: np.ndarray | None = None,
) -> dict[str, Any]:
    """Sensitivity of the cases on one block; with ``draws`` ((D, n_cases) indices into
    ``null_rows``), the same for each volume-matched control set: per-voxel percentile and p of the
    observed |dominant|, and per draw the number of voxels meeting the criterion."""
    s = stats.sensitivity(src.read(lo, hi, cases), threshold)
    out: dict[str, Any] = {
        "lo": lo,
        "pos": s.pos,
        "neg": s.neg,
        "combined": s.combined,
        "dominant": s.dominant,
        "extent": int(stats.meets_criterion(s.dominant, criterion).sum()),
    }
    if draws is not None and null_rows is not None:
        pool = src.read(lo, hi, null_rows)
        null = np.empty((draws.shape[0], hi - lo))
        extent = np.empty(draws.shape[0], np.int64)
        for d, idx in enumerate(draws):
            dom = stats.sensitivity(pool[idx], threshold).dominant
            null[d] = np.abs(dom)
            extent[d] = int(stats.meets_criterion(dom, criterion).sum())
        cmp = stats.null_percentile(np.abs(s.dominant), null)
        out.update(null_percentile=cmp.percentile, null_p=cmp.p_greater, null_extent=extent)
    return out


def glm_task(
    src: MapSource,
    lo: int,
    hi: int,
    design: stats.LinearDesign,
    plan: stats.PermutationPlan,
    tail: str,
    dtype: str,
    perm_block: int,
    spearman: bool = False,
    exceedances: bool = False,
) -> dict[str, Any]:
    """Observed partial correlation u and the null maxima of every permutation block, on one block
    of features (ranked over maps first for Spearman). The maps stay float32 as stored (the kernel
    widens them tile by tile: the same bits as from float64, half the memory)."""
    block = src.read(lo, hi, dtype=np.float32)
    if spearman:
        block = stats.rank_maps(block)
    prep = stats.prepare_maps(design, block, np.dtype(dtype), offset=lo)
    maxima, counts = [], np.zeros(hi - lo, np.int64) if exceedances else None
    for a, b in plan.blocks(perm_block):
        res = stats.null_max_block(
            design, prep, plan.block(a, b), tail, exceedances=exceedances, perm_offset=a
        )
        maxima.append(res.max_u)
        if counts is not None and res.exceed is not None:
            counts += res.exceed
    return {"lo": lo, "u": prep.u, "max_u": maxima, "counts": counts}


def tfce_task(
    src: MapSource,
    design: stats.LinearDesign,
    plan: stats.PermutationPlan,
    start: int,
    stop: int,
    tail: str,
    dtype: str,
    ijk: np.ndarray,
    shape: tuple[int, int, int],
    df: int,
    spearman: bool = False,
) -> np.ndarray:
    """Null maxima of TFCE for permutations ``start..stop-1`` (TFCE needs whole maps: all features)."""
    maps = src.read(dtype=np.float32)  # widened tile by tile in the kernel: the same bits
    if spearman:
        maps = stats.rank_maps(maps)
    prep = stats.prepare_maps(design, maps, np.dtype(dtype))
    u = stats.permuted_u_maps(design, prep, plan.block(start, stop), perm_offset=start)
    return stats.tfce_null_max(stats.t_from_u(u, df), ijk, shape, tail)


def grams_task(src: MapSource, lo: int, hi: int, folds: list[np.ndarray], method: str) -> stats.FoldGrams:
    """Fold sums of one block for cross-validated prediction (added over blocks)."""
    return stats.fold_grams(src.read(lo, hi), folds, method)
