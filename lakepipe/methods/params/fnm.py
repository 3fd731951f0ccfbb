"""Parameters of ``run fnm`` (:mod:`lakepipe.methods.fnm`)."""

from __future__ import annotations

from dataclasses import dataclass

from lakepipe.methods.params.base import Params, option


@dataclass(frozen=True)
class FnmParams(Params):
    title = "classic seed-to-voxel FNM over every connectome subject"
    description = (
        "Classic functional network mapping: for every connectome subject, the seed's mean series "
        "correlated with every voxel, Fisher z, then zmap (mean z), rmap (tanh), tmap and pmap over "
        "subjects, and pfdrmap (Benjamini-Hochberg q of the pmap over the seed's voxels). All seeds "
        "of a batch share one pass over the connectome."
    )

    connectome: str = option(help="voxel connectome in the lake")
    cohort: str | None = option(None, help="use the lesions of this cohort as seeds")
    participants: tuple[str, ...] | None = option(
        None, flag="--participant-label", metavar="ID", help="only these participants"
    )
    sphere: tuple[str, ...] | None = option(
        None, metavar="X,Y,Z", help="sphere seed at MNI mm, e.g. --sphere -40,-20,50 (repeatable)"
    )
    radius: float | None = option(None, positive=True, help="sphere radius in mm")
    sphere_name: tuple[str, ...] | None = option(None, help="names of the --sphere seeds, in order")
    spheres: str | None = option(
        None, metavar="TSV", help="table of sphere seeds: x, y, z[, radius][, name]", path=True
    )
    atlas: str | None = option(None, help="also summarise every map over this atlas's regions")
    avgr: bool = option(False, help="also compute avgr, the plain mean r")
    per_subject: bool = option(
        False,
        help="also write every connectome subject's own z and r map of each seed "
        "(zmap_subjects, rmap_subjects: seed x subject x voxel)",
    )
    batch_size: int | None = option(
        None, positive=True, help="seeds per pass (default: from available memory)"
    )
