"""Parameters of ``run afnm`` (:mod:`lakepipe.methods.afnm`)."""

from __future__ import annotations

from dataclasses import dataclass

from lakepipe.compute.weights import WEIGHTINGS
from lakepipe.methods.params.base import Params, option

#: what to do with a lesion that touches no parcel
ON_EMPTY = ("warn", "error", "skip")


@dataclass(frozen=True)
class AfnmParams(Params):
    title = "accelerated FNM: score = m @ C for every lesion of a cohort"
    description = (
        "Accelerated functional network mapping. For every lesion, a weight vector m over atlas "
        "regions (see --lesion-weighting) times the group FC matrix C (fcgroupz by default): one matrix "
        "product for the whole cohort. Lesions already mapped with the same inputs are skipped."
    )

    cohort: str = option(help="lesion cohort in the lake")
    atlas: str = option(help="atlas name in the lake")
    connectome: str | None = option(
        None, help="connectome whose group FC to use (parcellate runs first if needed)"
    )
    matrix: str | None = option(
        None,
        help="fcgroupz (default) or fcgroupr from the lake, or a file: .mat, .npy "
        "(with --matrix-labels) or labelled .tsv",
        path=True,
    )
    matrix_variable: str | None = option(None, help="variable name inside a .mat file")
    matrix_labels: str | None = option(
        None, help="region names of a .npy/.mat matrix in its own order", path=True
    )
    matrix_order: str | None = option(
        None,
        help="file listing the matrix's region order (names or label indices), mapped onto the atlas order",
        path=True,
    )
    weighting: str = option(
        "fractional",
        choices=WEIGHTINGS,
        flag="--lesion-weighting",
        help="fractional: 1/n_touched per touched parcel (default); binary: 1 per "
        "touched parcel; voxel_count: fraction of the parcel covered; "
        "coverage: van den Heuvel et al. 2026",
    )
    participants: tuple[str, ...] | None = option(
        None, flag="--participant-label", metavar="ID", help="only these participants"
    )
    on_empty: str = option(
        "warn",
        choices=ON_EMPTY,
        help="a lesion touching no parcel: zeros and a warning (default), error, or skip",
    )
    with_weights: bool = option(False, help="also store and export the weight vectors")
    coverage_small: int = option(
        1000,
        positive=True,
        help="coverage weighting: lesions of at most this many voxels count touched parcels (default 1000)",
    )
    coverage_fraction: float = option(
        0.5,
        help="coverage weighting: parcels more than this fraction covered "
        "count for larger lesions (default 0.5)",
    )
