"""Parameters of ``parcellate`` (:mod:`lakepipe.methods.parcellate`)."""

from __future__ import annotations

from dataclasses import dataclass

from lakepipe.methods.params.base import Params, option


@dataclass(frozen=True)
class ParcellateParams(Params):
    title = "group FC matrix (fcgroupz, fcgroupr) of a connectome under an atlas"
    description = (
        "Parcel-mean time series per connectome subject, Pearson r, Fisher z, mean over subjects "
        "(float64): fcgroupz (diagonal 0) and fcgroupr = tanh(mean z) (diagonal 1). Streams subject "
        "groups through Dask; memory stays bounded. Matrices already in the lake are reused."
    )

    connectome: str = option(help="connectome name in the lake")
    atlas: str | None = option(None, help="atlas name in the lake (optional for parcel-level connectomes)")
