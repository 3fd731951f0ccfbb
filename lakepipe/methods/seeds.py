"""Seeds of a run: the lesions of a cohort read from the lake, or spheres at MNI coordinates."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lakepipe.bids import check_entity
from lakepipe.errors import InputError, NotFoundError

if TYPE_CHECKING:  # the lesion stores (Zarr) are imported where masks are read
    from lakepipe.io.nifti import Mask
    from lakepipe.lake import Lake

log = logging.getLogger(__name__)


@dataclass
class Seed:
    """One seed: a lesion entry of a cohort, or a sphere (``mask`` filled on demand)."""

    key: str  #: unique within the run: the lesion entry key, or ``sphere-<name>``
    participant: str | None
    session: str | None
    label: str
    content_hash: str
    mask: Mask | None = None
    sphere: tuple[float, float, float, float] | None = None  #: x, y, z, radius (mm)
    meta: dict = field(default_factory=dict)

    @property
    def entities(self) -> dict:
        return {"sub": self.participant, "ses": self.session, "label": self.label}


def cohort_seeds(
    lake: Lake, cohort: str, participants: list[str] | None = None, with_masks: bool = True, threads: int = 8
) -> list[Seed]:
    """Registered lesion entries of ``cohort`` (optionally a participant subset), masks read in parallel."""
    cohort = check_entity(cohort, "cohort")
    if participants:
        participants = [check_entity(p, "sub") for p in participants]
    rows = lake.catalog.query(kind="lesion", cohort=cohort, participant=participants)
    if rows.empty:
        known = lake.catalog.query(kind="lesion")
        cohorts = sorted(set(known["cohort"])) if len(known) else []
        what = f"participants {participants} in " if participants else ""
        raise NotFoundError(
            f"no lesions for {what}cohort '{cohort}' in the lake (cohorts: {cohorts or 'none'})"
        )
    seeds = [
        Seed(r.store_index, r.participant, r.session, r.label, r.inputs["mask"]) for r in rows.itertuples()
    ]
    return read_masks(lake, cohort, seeds, threads) if with_masks else seeds


#: entries read one by one before :func:`read_masks` refreshes the cohort's packed index
INDEX_REFRESH = 16


def read_masks(lake: Lake, cohort: str, seeds: list[Seed], threads: int = 8) -> list[Seed]:
    """Fill ``seed.mask`` from the lesion store.

    Masks come from the cohort's packed index (:class:`lakepipe.io.stores.LesionIndex`, a few
    reads for the whole cohort) where it holds the entry with the content hash the catalog
    registered; any other entry is read on its own (threads: many small sparse arrays), and when
    there were many of those the index is refreshed for the next run (best effort).
    """
    from lakepipe.io import stores

    index = stores.read_lesion_index(lake.url, cohort)
    hits = [s for s in seeds if index is not None and index.has(s.key, s.content_hash)]
    if hits:
        assert index is not None  # hits are entries of the index
        for seed, mask in zip(hits, index.masks([s.key for s in hits]), strict=True):
            seed.mask = mask
    misses = [s for s in seeds if index is None or not index.has(s.key, s.content_hash)]
    if misses:
        with ThreadPoolExecutor(threads) as pool:
            masks = list(pool.map(lambda s: stores.read_lesion(lake.url, cohort, s.key)[0], misses))
        for seed, mask in zip(misses, masks, strict=True):
            seed.mask = mask
    if len(misses) >= INDEX_REFRESH:
        good = {
            s.key: (s.mask, s.content_hash)
            for s in misses
            if s.mask is not None and s.mask.content_hash() == s.content_hash  # every miss was just read
        }
        try:
            stores.update_lesion_index(lake.url, cohort, good)
        except Exception as exc:  # noqa: BLE001 - a read-only lake, a concurrent writer: next time
            log.debug("lesion index of cohort %s not refreshed: %s", cohort, exc)
    return seeds


def sphere_seed(
    x: float, y: float, z: float, radius: float, name: str | None = None, space: str = "MNI152NLin6Asym"
) -> Seed:
    """A sphere seed (mask is built on the connectome grid when the run needs it)."""
    if not radius > 0:
        raise InputError(f"sphere radius must be positive, got {radius}")
    for v in (x, y, z):
        if not np.isfinite(v):
            raise InputError(f"sphere centre must be finite, got {(x, y, z)}")
    label = check_entity(name, "label") if name else _coord_label(x, y, z, radius)
    from lakepipe.catalog import content_hash

    ident = content_hash(
        {"sphere": [round(x, 3), round(y, 3), round(z, 3)], "radius": round(radius, 3), "space": space}
    )
    return Seed(
        f"sphere-{label}",
        None,
        None,
        label,
        ident,
        sphere=(x, y, z, radius),
        meta={"center_mm": [x, y, z], "radius_mm": radius, "space": space},
    )


def _coord_label(x: float, y: float, z: float, r: float) -> str:
    def f(v: float) -> str:
        return ("m" if v < 0 else "") + f"{abs(v):g}".replace(".", "p")

    return f"sphere{f(x)}x{f(y)}y{f(z)}z{f(r)}r"


def spheres_from_table(path: str | Path, radius: float | None = None) -> list[Seed]:
    """Sphere seeds from a TSV with columns x, y, z [, radius] [, name]."""
    path = Path(path)
    if not path.exists():
        raise InputError("sphere table not found", path)
    df = pd.read_csv(path, sep="\t")
    df.columns = [c.lower() for c in df.columns]
    if not {"x", "y", "z"} <= set(df.columns):
        raise InputError("sphere table needs columns x, y, z (and optionally radius, name)", path)
    seeds = []
    for row in df.itertuples():
        r = float(row.radius if "radius" in df.columns else (radius or np.nan))
        if not np.isfinite(r):
            raise InputError("sphere table has no radius column: pass --radius", path)
        name = str(row.name) if "name" in df.columns else None
        seeds.append(sphere_seed(float(row.x), float(row.y), float(row.z), r, name))
    return seeds
