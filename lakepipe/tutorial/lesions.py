"""The main BIDS lesion cohort (``bids/``): acute infarcts at stroke sites on the latent networks.

Lesions from a tiny lacune to a large infarct, on the 1 mm and 2 mm grids, some participants with a
follow-up session (the lesion grown and shifted) or an older second lesion; ``participants.tsv`` with
age, sex and an NIHSS that rises with the log of the acute lesion volume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lakepipe._version import __version__
from lakepipe.space import mni152_brain_mask_2mm, mni152_grid
from lakepipe.tutorial.blobs import (
    LesionPlan,
    draw_lesion,
    jitter_site,
    lesion_path,
    upsampled_brain_mask_1mm,
)
from lakepipe.tutorial.common import (
    MAIN_LABEL,
    SECOND_LABEL,
    STREAM_COHORT,
    generator,
    save_nifti,
    write_json,
)

logger = logging.getLogger(__name__)

#: Stroke sites (right hemisphere MNI mm; mirrored for the left) chosen on the latent networks.
CORTICAL_SITES: dict[str, tuple[float, float, float]] = {
    "insula_operculum": (38, 12, 4),
    "precentral": (40, -20, 50),
    "inferior_parietal": (46, -54, 38),
    "occipital": (16, -84, 6),
    "dorsolateral_prefrontal": (40, 30, 28),
    "superior_parietal": (26, -62, 52),
}
SUBCORTICAL_SITES: dict[str, tuple[float, float, float]] = {
    "thalamus": (12, -18, 6),
    "putamen_internal_capsule": (24, 2, 6),
    "caudate": (14, 12, 10),
}


def _cohort_plan(participants: int, seed: int) -> tuple[list[LesionPlan], dict]:
    """Decide every lesion (participant, session, label, grid, site, size) and the clinical table."""
    rng = generator(seed, STREAM_COHORT)
    width = max(2, len(str(participants)))
    ids = [f"{i + 1:0{width}d}" for i in range(participants)]
    # sizes (mm^3): one tiny lacune (< 30 voxels at 1 mm), the rest log-spaced up to a large infarct
    sizes = list(np.geomspace(400, 45000, participants - 1)) if participants > 1 else [45000.0]
    sizes = ([float(rng.integers(12, 28))] + sizes) if participants > 1 else sizes
    order = rng.permutation(participants)
    volume = {ids[o]: sizes[i] for i, o in enumerate(order)}
    ranked = sorted(ids, key=lambda p: volume[p])
    tiny = ranked[0] if participants > 1 else None
    subcortical = set(ranked[:2]) if participants > 2 else ({tiny} - {None})
    # ~30 % on the 2 mm grid (never the tiny one), ~1/3 with a follow-up session
    others = [p for p in ids if p != tiny]
    n_2mm = int(round(0.3 * participants))
    res2 = set(rng.choice(others, size=min(n_2mm, len(others)), replace=False).tolist())
    n_two = int(round(participants / 3))
    two_sessions = set(rng.choice(ids, size=min(n_two, len(ids)), replace=False).tolist())
    singles = [p for p in ids if p != tiny and p not in two_sessions] or [p for p in ids if p != tiny]
    n_second = 1 if participants < 6 else 2
    second = set(singles[:n_second]) if participants > 1 else set()

    # sites cycle through a shuffled list, so a cohort covers many networks
    cycles = {
        id(pool): [str(x) for x in rng.permutation(sorted(pool))]
        for pool in (CORTICAL_SITES, SUBCORTICAL_SITES)
    }
    plans: list[LesionPlan] = []
    clinical: dict[str, dict] = {}
    key = 0
    for p in ids:
        left = bool(rng.random() < 0.5)
        pool = SUBCORTICAL_SITES if p in subcortical else CORTICAL_SITES
        cycle = cycles[id(pool)]
        site = cycle.pop(0)
        cycle.append(site)
        centre = jitter_site(rng, pool[site], left)
        res = 2 if p in res2 else 1
        base = LesionPlan(p, "01", MAIN_LABEL, res, site, centre, volume[p], key)
        plans.append(base)
        onset = int(rng.integers(0, 4))
        sessions = {"01": onset}
        if p in two_sessions:
            radius_mm = (3 * volume[p] / (4 * np.pi)) ** (1 / 3)
            sx, sy, sz = (float(round(s, 1)) for s in rng.normal(0, max(0.5, 0.1 * radius_mm), 3))
            shift = (sx, sy, sz)
            plans.append(
                LesionPlan(
                    p,
                    "02",
                    MAIN_LABEL,
                    res,
                    site,
                    centre,
                    volume[p],
                    key,
                    grow=float(rng.uniform(1.1, 1.4)),
                    shift_mm=shift,
                )
            )
            sessions["02"] = onset + int(rng.integers(3, 8))
        if p in second:
            key += 1
            old_site = str(rng.choice(sorted(SUBCORTICAL_SITES)))
            old_centre = jitter_site(rng, SUBCORTICAL_SITES[old_site], not left)
            old_volume = float(rng.uniform(300, 3000))
            for ses in sessions:
                plans.append(LesionPlan(p, ses, SECOND_LABEL, res, old_site, old_centre, old_volume, key))
        key += 1
        clinical[p] = {
            "age": int(rng.integers(38, 89)),
            "sex": str(rng.choice(["F", "M"])),
            "sessions": sessions,
            "nihss_noise": float(rng.normal(0, 1.5)),
        }
    return plans, clinical


def _nihss(volume_mm3: float, noise: float) -> int:
    """A symptom score (0-42) increasing with the log of the acute lesion volume."""
    return int(np.clip(round(-4 + 5.5 * np.log10(max(volume_mm3, 1.0)) + noise), 0, 42))


def _bids_metadata(bids_dir: Path, clinical: dict, acute_volume: dict[str, float]) -> None:
    """``dataset_description.json``, ``participants.tsv/.json`` and per-participant ``sessions.tsv``."""
    description = {
        "Name": "lakepipe tutorial lesion dataset (synthetic)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["lakepipe"],
        "Description": "Synthetic binary lesion masks in MNI152NLin6Asym space generated by "
        "lakepipe.tutorial for examples and tests. Not real patients.",
        "GeneratedBy": [{"Name": "lakepipe.tutorial", "Version": __version__}],
    }
    write_json(bids_dir / "dataset_description.json", description)
    rows = ["participant_id\tage\tsex\tnihss\tdays_since_onset"]
    for p, c in clinical.items():
        rows.append(
            f"sub-{p}\t{c['age']}\t{c['sex']}\t{_nihss(acute_volume[p], c['nihss_noise'])}"
            f"\t{c['sessions']['01']}"
        )
        ses_rows = ["session_id\tdays_since_onset"] + [f"ses-{s}\t{d}" for s, d in c["sessions"].items()]
        (bids_dir / f"sub-{p}" / f"sub-{p}_sessions.tsv").write_text("\n".join(ses_rows) + "\n")
    (bids_dir / "participants.tsv").write_text("\n".join(rows) + "\n")
    write_json(
        bids_dir / "participants.json",
        {
            "participant_id": {"Description": "Participant label"},
            "age": {"Description": "Age at stroke onset", "Units": "year"},
            "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
            "nihss": {
                "Description": "NIH Stroke Scale at the first session (synthetic; increases with "
                "the log of the acute lesion volume)",
                "Units": "score (0-42)",
            },
            "days_since_onset": {
                "Description": "Days from stroke onset to the first session (ses-01); "
                "see sub-<label>_sessions.tsv for every session",
                "Units": "day",
            },
        },
    )


def write_lesions(bids_dir: Path, participants: int, seed: int) -> list[dict]:
    """Draw and write every lesion mask plus the BIDS metadata; return one manifest row per mask."""
    plans, clinical = _cohort_plan(participants, seed)
    mask2 = mni152_brain_mask_2mm()
    brain = {2: mask2, 1: upsampled_brain_mask_1mm(mask2)}
    rows: list[dict[str, Any]] = []
    acute_volume: dict[str, float] = {}
    for plan in plans:
        data = draw_lesion(plan, seed, brain)
        n = int(data.sum())
        if n == 0:  # pragma: no cover - guarded by construction
            raise RuntimeError(f"empty tutorial lesion for {plan}")
        path = lesion_path(bids_dir, plan)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_nifti(data, mni152_grid(plan.res).affine, path)
        volume = n * float(np.prod(mni152_grid(plan.res).voxel_size))
        if plan.label == MAIN_LABEL and plan.session == "01":
            acute_volume[plan.participant] = volume
        rows.append(
            {
                "participant": plan.participant,
                "session": plan.session,
                "label": plan.label,
                "res_mm": plan.res,
                "site": plan.site,
                "centre_mm": list(plan.centre_mm),
                "n_voxels": n,
                "volume_mm3": volume,
                "path": path.relative_to(bids_dir.parent).as_posix(),
            }
        )
    _bids_metadata(bids_dir, clinical, acute_volume)
    logger.info(
        "lesions: %d masks for %d participants (%d at 2 mm), %d to %d voxels",
        len(rows),
        participants,
        sum(r["res_mm"] == 2 for r in rows),
        min(r["n_voxels"] for r in rows),
        max(r["n_voxels"] for r in rows),
    )
    return rows
