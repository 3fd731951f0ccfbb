"""A lesion network mapping question with a known answer: spatial neglect cases and stroke controls.

Two BIDS lesion datasets (``lnm/cases``, ``lnm/controls``) and the ground truth (``lnm/truth``):

- **cases**: lesions at varied sites on the blobs of one target network of the latent model
  (:data:`TARGET_NETWORK`, the dorsal attention network, whose damage causes spatial neglect): its
  frontal eye field, superior parietal / intraparietal and MT+ blobs, in either hemisphere, some
  centred on a blob and some beside it (only partly on the network), of varied size;
- **controls**: lesions of the same sizes elsewhere (on the other networks and off every network);
- every participant's ``neglect_score`` follows one score model (:func:`neglect_score`) from how
  strongly the lesion's signal is tied to the target network, plus noise; controls therefore score
  near zero;
- the truth: every latent network's loading map on the 2 mm grid and ``truth.json`` (target
  network, score model, each lesion's loadings).

Everything is keyed by ``(seed, group, index)``: case ``i`` is the same lesion whatever the cohort
sizes, so a larger cohort is a superset of a smaller one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakepipe._version import __version__
from lakepipe.space import mni152_grid
from lakepipe.tutorial.blobs import LesionPlan, draw_lesion, lesion_path
from lakepipe.tutorial.common import (
    MAIN_LABEL,
    STREAM_LNM,
    STREAM_LNM_LESION,
    generator,
    save_nifti,
    write_json,
    write_tsv,
)
from lakepipe.tutorial.model import LatentModel

logger = logging.getLogger(__name__)

#: The network whose damage causes the symptom.
TARGET_NETWORK = "DorsalAttention"
#: The symptom score column of ``participants.tsv``.
SYMPTOM = "neglect_score"
#: Score model: ``clip(round(SCORE_SLOPE * rho + noise), 0, SCORE_MAX)``, noise ~ N(0, SCORE_NOISE_SD).
SCORE_SLOPE = 26.0
SCORE_NOISE_SD = 2.0
SCORE_MAX = 30
#: Lesion volumes (mm^3) of the cases: log-uniform in this range; controls match them within +-20 %.
VOLUME_RANGE_MM3 = (800.0, 24000.0)
#: Distance (mm) of a case lesion's centre from its blob centre, cycled over the cases: centred,
#: near, and beside the blob (the farthest ones lie only partly on the network).
CASE_OFFSETS_MM = (0.0, 11.0, 5.0, 14.0)
#: Grid of every lesion mask here (mm): the connectome's own grid, so no resampling is involved.
LNM_RES = 2

#: Control lesion sites (right hemisphere MNI mm, mirrored for the left): other networks' blobs and
#: places on no network, all at least ~25 mm from every blob of the target network.
CONTROL_SITES: dict[str, tuple[float, float, float]] = {
    "posterior_cingulate": (6, -54, 28),
    "medial_prefrontal": (6, 50, 10),
    "angular_gyrus": (46, -66, 32),
    "precentral_hand": (40, -22, 54),
    "cerebellum": (20, -52, -24),
    "calcarine": (10, -88, 2),
    "anterior_insula": (36, 18, 2),
    "anterior_cingulate": (6, 22, 36),
    "dorsolateral_prefrontal": (44, 32, 30),
    "inferior_parietal_lobule": (52, -46, 44),
    "thalamus": (10, -18, 6),
    "putamen": (26, 4, 2),
    "temporal_pole": (38, 14, -32),
    "orbitofrontal": (22, 36, -16),
    "centrum_semiovale": (26, -14, 30),
    "inferior_temporal": (52, -30, -20),
}

#: Tries to draw a lesion meeting its group's condition (case: tied to the target network,
#: control: not) before giving up; each try has its own random stream.
_MAX_TRIES = 20
_CASE_MIN_RHO, _CONTROL_MAX_MEAN_LOADING = 0.3, 0.05
_GROUPS = ("case", "control")


@dataclass(frozen=True)
class LnmLesion:
    """One drawn lesion of the LNM cohorts with the quantities its score comes from."""

    group: str
    index: int
    participant: str
    site: str
    hemisphere: str
    centre_mm: tuple[float, float, float]
    mask: np.ndarray  # bool on the 2 mm grid
    mean_loading: dict[str, float]  # network -> mean loading over the lesion voxels
    on_network_fraction: float  # lesion voxels with target loading > 0.5
    rho: float  # model correlation of the lesion's mean series with the target network's course
    score: int
    tries: int

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())

    @property
    def volume_mm3(self) -> float:
        return self.n_voxels * float(np.prod(mni152_grid(LNM_RES).voxel_size))


def participant_ids(group: str, n: int) -> list[str]:
    """``case01``, ... / ``ctrl01``, ... (at least two digits)."""
    width = max(2, len(str(n)))
    prefix = "case" if group == "case" else "ctrl"
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


def case_volume(seed: int, index: int) -> float:
    """Planned lesion volume (mm^3) of case ``index``: log-uniform in :data:`VOLUME_RANGE_MM3`."""
    lo, hi = np.log(VOLUME_RANGE_MM3)
    return float(np.exp(generator(seed, STREAM_LNM, 2, index).uniform(lo, hi)))


def lesion_rho(model: LatentModel, lesion: np.ndarray) -> float:
    """Correlation, under the latent model, of a lesion's mean raw series with the target's course.

    The lesion's mean series is ``a @ f(t) + e(t)`` with ``a_k`` the mean of ``scale * loading_k``
    over its voxels, ``f`` the network courses (correlation ``C``) and ``e`` the mean of independent
    voxel noise (variance ``sum(scale^2 noise_sd^2) / n^2``), so ``rho = (C a)_t / sqrt(a C a + var e)``.
    It grows with the lesion's loading on the target network and falls with its loading on other
    networks and with the unstructured noise of a small lesion.
    """
    cols = np.flatnonzero(lesion[model.mask])
    scale = model.scale[cols].astype(np.float64)
    a = (model.loadings[:, cols].astype(np.float64) * scale).mean(axis=1)
    noise = float((scale**2 * model.noise_sd[cols].astype(np.float64) ** 2).sum()) / cols.size**2
    c = model.correlation
    t = [n.name for n in model.networks].index(TARGET_NETWORK)
    return float((c @ a)[t] / np.sqrt(a @ c @ a + noise))


def neglect_score(rho: float, noise: float) -> int:
    """The symptom model: ``clip(round(SCORE_SLOPE * rho + noise), 0, SCORE_MAX)``."""
    return int(np.clip(round(SCORE_SLOPE * rho + noise), 0, SCORE_MAX))


def _target_centres(model: LatentModel) -> list[tuple[str, np.ndarray]]:
    """The target network's blob centres (both hemispheres), named, in a fixed order."""
    net = next(n for n in model.networks if n.name == TARGET_NETWORK)
    names = ("frontal_eye_field", "superior_parietal", "mt_plus")
    out = []
    for name, (x, y, z) in zip(names, net.blobs, strict=True):
        out.append((f"{name}_R", np.array([abs(x), y, z], float)))
        out.append((f"{name}_L", np.array([-abs(x), y, z], float)))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _nearest_other_blob(model: LatentModel, xyz: np.ndarray) -> np.ndarray:
    """Centre of the nearest blob of any other network on the same side of the midline (or on it)."""
    best, best_d = xyz, np.inf
    for net in model.networks:
        if net.name == TARGET_NETWORK:
            continue
        for c in net.centres():
            d = float(np.linalg.norm(c - xyz))
            if c[0] * xyz[0] >= 0 and d < best_d:
                best, best_d = c, d
    return best


def _snap_inside(model: LatentModel, xyz: np.ndarray, left: bool) -> tuple[float, float, float]:
    """The in-mask voxel centre nearest to ``xyz`` on its own side (at least 4 mm from the midline)."""
    side = (model.xyz[:, 0] <= -4) if left else (model.xyz[:, 0] >= 4)
    d2 = ((model.xyz - xyz) ** 2).sum(axis=1)
    d2[~side] = np.inf
    v = model.xyz[int(np.argmin(d2))]
    return (float(v[0]), float(v[1]), float(v[2]))


def _plan(
    model: LatentModel, seed: int, group: str, index: int, attempt: int
) -> tuple[str, str, tuple[float, float, float], np.random.Generator]:
    """Site, hemisphere and centre of one lesion (one try)."""
    g = _GROUPS.index(group)
    rng = generator(seed, STREAM_LNM, g, index, attempt)
    if group == "case":
        centres = _target_centres(model)
        site, centre = centres[(index + attempt) % len(centres)]
        left = centre[0] < 0
        offset = CASE_OFFSETS_MM[index % len(CASE_OFFSETS_MM)]
        # beside the blob means towards the nearest blob of another network (with some scatter),
        # so a lesion partly on the target network is partly on a neighbouring one
        toward = _nearest_other_blob(model, centre) - centre
        direction = toward / np.linalg.norm(toward) + 0.5 * _unit(rng.standard_normal(3))
        centre = centre + offset * _unit(direction)
    else:
        names = list(CONTROL_SITES)
        site = names[(index + attempt) % len(names)]
        left = bool(rng.random() < 0.5)
        x, y, z = np.asarray(CONTROL_SITES[site], float) + rng.normal(0, 3.0, 3)
        centre = np.array([-abs(x) if left else abs(x), y, z])
        site = f"{site}_{'L' if left else 'R'}"
    snapped = _snap_inside(model, centre, left)
    return site, ("L" if left else "R"), snapped, rng


def draw_lnm_lesion(
    model: LatentModel, seed: int, group: str, index: int, participant: str, brain: np.ndarray
) -> LnmLesion:
    """Draw case or control ``index`` until it meets its group's condition (deterministic tries)."""
    g = _GROUPS.index(group)
    target = [n.name for n in model.networks].index(TARGET_NETWORK)
    volume = case_volume(seed, index)  # a control matches the case of the same index (+-20 %)
    for attempt in range(_MAX_TRIES):
        site, hemi, centre, rng = _plan(model, seed, group, index, attempt)
        vol = volume if group == "case" else volume * float(rng.uniform(0.8, 1.25))
        key = 2 * (index * _MAX_TRIES + attempt) + g
        plan = LesionPlan(participant, "01", MAIN_LABEL, LNM_RES, site, centre, vol, key)
        mask = draw_lesion(plan, seed, {LNM_RES: brain}, stream=STREAM_LNM_LESION).astype(bool)
        cols = np.flatnonzero(mask[model.mask])
        loads = model.loadings[:, cols].astype(np.float64).mean(axis=1)
        rho = lesion_rho(model, mask)
        ok = rho >= _CASE_MIN_RHO if group == "case" else loads[target] <= _CONTROL_MAX_MEAN_LOADING
        if ok:
            break
    else:  # pragma: no cover - guarded by the site lists
        raise RuntimeError(f"could not place LNM {group} {index}")
    noise = float(rng.normal(0.0, SCORE_NOISE_SD))
    return LnmLesion(
        group=group,
        index=index,
        participant=participant,
        site=site,
        hemisphere=hemi,
        centre_mm=centre,
        mask=mask,
        mean_loading={n.name: float(v) for n, v in zip(model.networks, loads, strict=True)},
        on_network_fraction=float((model.loadings[target, cols] > 0.5).mean()),
        rho=rho,
        score=neglect_score(rho, noise),
        tries=attempt + 1,
    )


def _participant_rows(lesions: list[LnmLesion], seed: int) -> list[list[object]]:
    """``participants.tsv`` rows: id, group, age, sex, score (age and sex from their own stream)."""
    rows = []
    for les in lesions:
        rng = generator(seed, STREAM_LNM, 3 + _GROUPS.index(les.group), les.index)
        age, sex = int(rng.integers(40, 86)), str(rng.choice(["F", "M"]))
        rows.append([f"sub-{les.participant}", les.group, age, sex, les.score])
    return rows


def _write_dataset(root: Path, group: str, lesions: list[LnmLesion], seed: int) -> list[dict]:
    """One BIDS lesion dataset (masks, ``dataset_description.json``, ``participants.tsv/.json``)."""
    root.mkdir(parents=True)
    grid = mni152_grid(LNM_RES)
    write_json(
        root / "dataset_description.json",
        {
            "Name": f"lakepipe tutorial LNM {group}s (synthetic)",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["lakepipe"],
            "Description": f"Synthetic binary stroke lesion masks ({group}s of the spatial-neglect "
            "lesion network mapping example) in MNI152NLin6Asym space at 2 mm, generated by "
            "lakepipe.tutorial. Not real patients. Ground truth in ../truth.",
            "GeneratedBy": [{"Name": "lakepipe.tutorial", "Version": __version__}],
        },
    )
    out = []
    for les in lesions:
        plan = LesionPlan(les.participant, "01", MAIN_LABEL, LNM_RES, les.site, les.centre_mm, 0.0, 0)
        path = lesion_path(root, plan)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_nifti(les.mask.astype(np.uint8), grid.affine, path)
        out.append(
            {"participant_id": f"sub-{les.participant}", "path": path.relative_to(root.parent).as_posix()}
        )
    write_tsv(
        root / "participants.tsv",
        ["participant_id", "group", "age", "sex", SYMPTOM],
        _participant_rows(lesions, seed),
    )
    write_json(
        root / "participants.json",
        {
            "participant_id": {"Description": "Participant label"},
            "group": {
                "Description": "Study group",
                "Levels": {"case": "neglect case", "control": "stroke control"},
            },
            "age": {"Description": "Age at stroke onset", "Units": "year"},
            "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
            SYMPTOM: {
                "Description": "Spatial neglect severity (synthetic, 0-30, higher is worse; the range of the "
                "Catherine Bergego Scale). The same model for cases and controls: "
                f"clip(round({SCORE_SLOPE:g} * rho + e), 0, {SCORE_MAX}), e ~ N(0, {SCORE_NOISE_SD:g}), "
                f"rho the correlation of the lesion's mean signal with the {TARGET_NETWORK} network's time "
                "course under the tutorial's latent model (../truth/truth.json); controls therefore score "
                "near 0.",
                "Units": "score (0-30)",
            },
        },
    )
    return out


def write_lnm(root: Path, model: LatentModel, seed: int, cases: int, controls: int) -> dict:
    """Write ``cases/``, ``controls/`` and ``truth/`` under ``root``; return the manifest section."""
    from lakepipe.space import mni152_brain_mask_2mm

    brain = mni152_brain_mask_2mm()
    drawn = {
        group: [
            draw_lnm_lesion(model, seed, group, i, pid, brain)
            for i, pid in enumerate(participant_ids(group, n))
        ]
        for group, n in (("case", cases), ("control", controls))
    }
    paths = {}
    for group, folder in (("case", "cases"), ("control", "controls")):
        for row in _write_dataset(root / folder, group, drawn[group], seed):
            paths[row["participant_id"]] = row["path"]
    truth = root / "truth"
    truth.mkdir(parents=True)
    grid = mni152_grid(LNM_RES)
    maps = {}
    for net, loading in zip(model.networks, model.loadings, strict=True):
        vol = np.zeros(grid.shape, np.float32)
        vol[model.mask] = loading
        name = f"network-{net.name}_loading.nii.gz"
        save_nifti(vol, grid.affine, truth / name)
        maps[net.name] = f"truth/{name}"
    participants = [
        {
            "participant_id": f"sub-{les.participant}",
            "group": les.group,
            "mask": paths[f"sub-{les.participant}"],
            "site": les.site,
            "hemisphere": les.hemisphere,
            "centre_mm": list(les.centre_mm),
            "n_voxels": les.n_voxels,
            "volume_mm3": les.volume_mm3,
            "mean_loading": les.mean_loading,
            "target_on_network_fraction": les.on_network_fraction,
            "rho": les.rho,
            SYMPTOM: les.score,
        }
        for group in ("case", "control")
        for les in drawn[group]
    ]
    doc = {
        "question": f"Which network do lesions causing spatial neglect ({SYMPTOM}) share?",
        "target_network": TARGET_NETWORK,
        "target_blobs_mm": next(n for n in model.networks if n.name == TARGET_NETWORK).centres().tolist(),
        "symptom": SYMPTOM,
        "score_model": {
            "formula": f"{SYMPTOM} = clip(round(slope * rho + e), 0, max), e ~ N(0, noise_sd)",
            "slope": SCORE_SLOPE,
            "noise_sd": SCORE_NOISE_SD,
            "max": SCORE_MAX,
            "rho": "correlation of the lesion's mean raw series with the target network's course under the "
            "latent model: (C a)_t / sqrt(a' C a + var_e), a_k = mean over lesion voxels of "
            "scale * loading_k, C the between-network correlation, var_e = sum(scale^2 noise_sd^2) / n^2",
            "applies_to": "cases and controls alike",
        },
        "expected": "FNM maps of the cases overlap on the target network (sensitivity), differ from the "
        "controls' there (specificity), and the score tracks the cases' connectivity to it (symptom map, "
        "prediction); lesion volumes of cases and controls overlap (volume-matched random-lesion null).",
        "loading_maps": maps,
        "lesion_grid_mm": LNM_RES,
        "participants": participants,
    }
    write_json(truth / "truth.json", doc)
    vols = {g: [les.volume_mm3 for les in drawn[g]] for g in drawn}
    logger.info(
        "lnm: %d cases (%.0f-%.0f mm3), %d controls (%.0f-%.0f mm3), target %s",
        cases,
        min(vols["case"], default=0),
        max(vols["case"], default=0),
        controls,
        min(vols["control"], default=0),
        max(vols["control"], default=0),
        TARGET_NETWORK,
    )
    return {
        "target_network": TARGET_NETWORK,
        "symptom": SYMPTOM,
        "n_cases": cases,
        "n_controls": controls,
        "truth": "lnm/truth/truth.json",
        "loading_maps": {k: f"lnm/{v}" for k, v in maps.items()},
    }
