"""Parameters of ``atlas derive`` (:mod:`lakepipe.methods.derive_atlas`)."""

from __future__ import annotations

from dataclasses import dataclass

from lakepipe.methods.params.base import Params, option

DECOMPOSITIONS = ("dictlearning", "canica")
THRESHOLDING = ("ratio_n_voxels", "img_value", "percentile")
EXTRACTORS = ("local_regions", "connected_components")


@dataclass(frozen=True)
class DeriveAtlasParams(Params):
    title = "an atlas of regions from a DictLearning/CanICA decomposition of a connectome"
    description = (
        "Decompose the connectome (streamed from the lake a subject at a time) into K network maps with "
        "nilearn's DictLearning or CanICA, split the maps into contiguous regions with nilearn's "
        "RegionExtractor, and write the regions into the lake as an atlas (label volume, one row per "
        "region naming its source component as its network, plus the 4D component maps). The atlas "
        "then works with parcellate, run afnm and plot fc like an ingested one."
    )

    connectome: str = option(help="voxel-level connectome in the lake")
    n_components: int = option(positive=True, metavar="K", help="number of network maps K")
    decomposition: str = option(
        "dictlearning",
        choices=DECOMPOSITIONS,
        flag="--method",
        help="nilearn.decomposition.DictLearning (default) or CanICA",
    )
    name: str | None = option(None, metavar="ATLAS", help="atlas name (default <connectome><method><K>)")
    subjects: int | None = option(
        None, positive=True, metavar="N", help="decompose only the first N subjects (default all)"
    )
    smoothing_fwhm: float | None = option(
        None,
        metavar="MM",
        help="spatial smoothing before the decomposition (default 4 dictlearning, 6 canica)",
    )
    alpha: float = option(10.0, help="DictLearning: sparsity of the maps (default 10)")
    n_epochs: int = option(1, positive=True, help="DictLearning: passes over the data (default 1)")
    dict_method: str = option(
        "cd",
        choices=("cd", "lars"),
        help="DictLearning: the lasso solver (nilearn's method: cd, the default, or lars, often faster)",
    )
    n_init: int = option(10, positive=True, help="CanICA: FastICA runs, the sparsest kept (default 10)")
    random_state: int = option(0, help="seed of the decomposition (default 0)")
    threshold: float = option(
        1.0, help="RegionExtractor threshold, meaning set by --thresholding-strategy (default 1.0)"
    )
    thresholding_strategy: str = option(
        "ratio_n_voxels",
        choices=THRESHOLDING,
        help="ratio_n_voxels (default: keep threshold x n_voxels voxels over all maps), img_value "
        "(map value) or percentile",
    )
    min_region_size: float = option(
        1350.0, metavar="MM3", help="smallest region kept (mm^3, default 1350 as nilearn)"
    )
    extractor: str = option(
        "local_regions",
        choices=EXTRACTORS,
        help="local_regions (default: split at local maxima) or connected_components",
    )
    region_smoothing_fwhm: float = option(
        6.0, metavar="MM", help="smoothing of the maps before finding local maxima (default 6)"
    )
