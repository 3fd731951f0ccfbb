"""A small synthetic HCP parcellated release in the Neuromatch Academy (NMA) HCP layout.

NMA's HCP seminar data (``hcp_rest`` / ``hcp_task``, 2021) hold, per subject, parcel time series
(360 Glasser parcels x time, ``.npy``) numbered across the HCP runs, the task runs' EVs
(``onset duration amplitude`` per line) and a region table::

    hcp/regions.npy                  (360, 3) str: name, network, myelin (NMA's columns)
    hcp/regions.tsv                  index, name, network, hemisphere, myelin (the same, plus hemisphere)
    hcp/subjects_list.txt            one subject folder name per line
    hcp/subjects/<s>/timeseries/bold<k>_Atlas_MSMAll_Glasser360Cortical.npy   float32 (360, T)
    hcp/subjects/<s>/EVs/tfMRI_MOTOR_<RL|LR>/<condition>.txt

Runs ``k`` follow NMA's numbering of the HCP runs: 1-4 ``rfMRI_REST1_LR``, ``rfMRI_REST1_RL``,
``rfMRI_REST2_LR``, ``rfMRI_REST2_RL``; 5-6 ``tfMRI_MOTOR_RL``, ``tfMRI_MOTOR_LR`` (the other tasks,
7-18, are not written). Parcels are ordered as NMA's: the 180 right-hemisphere parcels (``R_``) first,
then the same 180 on the left (``L_``). TR 0.72 s.

Parcel names are Glasser-like (the HCP-MMP1 area names with ``R_``/``L_``) and networks Cole-Anticevic-
like (NMA's truncated names), but the assignment is synthetic. The series come from a network model
related to the tutorial's latent model (the shared networks keep its between-network correlations):
each network has a course common to both hemispheres and one per hemisphere (AR(1) at TR 0.72 s), each
parcel loads on its network's two courses, plus noise, around a baseline near 10,000 (HCP's grand-mean
scaling). MOTOR runs add a planted, haemodynamically delayed block response: left-hand movement (``lh``)
raises the RIGHT hemisphere's hand parcels (``R_4``, ``R_3b``, ...), right-hand movement (``rh``) the
LEFT ones; feet the contralateral paracentral parcels, tongue both ventral ones, the visual cue the
early visual parcels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lakepipe.tutorial.common import STREAM_HCP, generator

logger = logging.getLogger(__name__)

HCP_TR = 0.72
N_PARCELS_PER_HEMISPHERE = 180
#: NMA's run numbering: run k (1-based) -> HCP run name.
BOLD_NAMES = (
    "rfMRI_REST1_LR",
    "rfMRI_REST1_RL",
    "rfMRI_REST2_LR",
    "rfMRI_REST2_RL",
    "tfMRI_MOTOR_RL",
    "tfMRI_MOTOR_LR",
)
MOTOR_CONDITIONS = ("lf", "rf", "lh", "rh", "t", "cue")
#: HCP MOTOR runs: 284 frames (204.5 s).
MOTOR_TIMEPOINTS = 284
#: Haemodynamic delay: the peak of the response function (s), and in frames.
HRF_PEAK_S = 5.0
DELAY_FRAMES = int(round(HRF_PEAK_S / HCP_TR))

_GLASSER_ORDER = (
    "V1 MST V6 V2 V3 V4 V8 4 3b FEF PEF 55b V3A RSC POS2 V7 IPS1 FFC V3B LO1 LO2 PIT MT A1 PSL SFL PCV "
    "STV 7Pm 7m POS1 23d v23ab d23ab 31pv 5m 5mv 23c 5L 24dd 24dv 7AL SCEF 6ma 7Am 7PL 7PC LIPv VIP MIP "
    "1 2 3a 6d 6mp 6v p24pr 33pr a24pr p32pr a24 d32 8BM p32 10r 47m 8Av 8Ad 9m 8BL 9p 10d 8C 44 45 47l "
    "a47r 6r IFJa IFJp IFSp IFSa p9-46v 46 a9-46v 9-46d 9a 10v a10p 10pp 11l 13l OFC 47s LIPd 6a i6-8 "
    "s6-8 43 OP4 OP1 OP2-3 52 RI PFcm PoI2 TA2 FOP4 MI Pir AVI AAIC FOP1 FOP3 FOP2 PFt AIP EC PreS H "
    "ProS PeEc STGa PBelt A5 PHA1 PHA3 STSda STSdp STSvp TGd TE1a TE1p TE2a TF TE2p PHT PH TPOJ1 TPOJ2 "
    "TPOJ3 DVT PGp IP2 IP1 IP0 PFop PF PFm PGi PGs V6A VMV1 VMV3 PHA2 V4t FST V3CD LO3 VMV2 31pd 31a "
    "VVC 25 s32 pOFC PoI1 Ig FOP5 p10p p47r TGv MBelt LBelt A4 STSva TE1m PI a32pr p24"
)
#: HCP-MMP1 area names in Glasser's order (one hemisphere).
GLASSER_AREAS = tuple(_GLASSER_ORDER.split())

#: Synthetic Cole-Anticevic-like network of each area (NMA's 12-character network names).
_NETWORK_AREAS = {
    "Visual1": "V1 V2 V3",
    "Visual2": "V4 V6 V6A V7 V8 V3A V3B V3CD V4t LO1 LO2 LO3 PIT FFC VVC VMV1 VMV2 VMV3 MST MT FST PH IPS1 "
    "DVT ProS POS1 PHA3",
    "Somatomotor": "4 3a 3b 1 2 6d 6mp 6v 6a OP4 OP1 OP2-3 43 5L 5m 5mv 24dd 24dv 7AL 7Am",
    "Cingulo-Oper": "SCEF 6ma p24pr a24pr 33pr p32pr a32pr MI AVI AAIC FOP1 FOP2 FOP3 FOP4 FOP5 PFcm PoI1 "
    "PoI2 Ig PFop PF 23c 46 p9-46v 6r PI a24 p24",
    "Dorsal-atten": "FEF PEF 7PL 7PC LIPv LIPd VIP MIP AIP IP0 PGp PFt",
    "Language": "44 45 47l 55b SFL PSL STV STSdp STSda STSvp TPOJ1 A5",
    "Frontopariet": "8C 8Av 8Ad i6-8 s6-8 IFJp IFJa IFSp IFSa a9-46v 9-46d a47r p47r a10p p10p 10pp IP1 IP2 "
    "PFm PGs POS2 7Pm 11l 9a TE1m",
    "Auditory": "A1 LBelt MBelt PBelt RI A4 TA2 52",
    "Default": "PCV 7m 31pv 31pd 31a 23d d23ab v23ab RSC PGi TPOJ2 TPOJ3 STSva STGa TE1a TE1p TE2a TGd TGv "
    "8BM 8BL 9m 9p 10d 10r 10v p32 s32 d32 25 47m 47s PHA2 H PreS EC",
    "Posterior-Mu": "TE2p PHT TF",
    "Ventral-Mult": "PeEc PHA1",
    "Orbito-Affec": "OFC pOFC 13l Pir",
}

#: The latent-model network each shared network follows (for the between-network correlations).
_LATENT_OF = {
    "Visual1": "Visual",
    "Visual2": "Visual",
    "Somatomotor": "Somatomotor",
    "Cingulo-Oper": "Salience",
    "Dorsal-atten": "DorsalAttention",
    "Frontopariet": "FrontoParietal",
    "Default": "DefaultMode",
}

#: Planted MOTOR responses: condition -> (side of the parcels, {area: amplitude in % of the baseline}).
#: ``contra`` = the hemisphere opposite the moving limb.
_FOOT = {"5m": 1.5, "5mv": 1.2, "6mp": 1.2, "24dd": 1.0, "24dv": 0.6}
_HAND = {
    "4": 2.5,
    "3b": 2.5,
    "3a": 2.0,
    "1": 2.0,
    "2": 1.5,
    "6d": 1.5,
    "6a": 1.0,
    "OP1": 0.8,
    "7AL": 0.8,
    "5L": 0.6,
}
MOTOR_EFFECTS: dict[str, tuple[str, dict[str, float]]] = {
    "lh": ("right", _HAND),
    "rh": ("left", _HAND),
    "lf": ("right", _FOOT),
    "rf": ("left", _FOOT),
    "t": ("both", {"6v": 1.5, "43": 1.5, "OP4": 1.2, "3a": 0.5}),
    "cue": ("both", {"V1": 0.8, "V2": 0.8, "V3": 0.6, "V4": 0.5}),
}


def _area_networks() -> dict[str, str]:
    out: dict[str, str] = {}
    for net, areas in _NETWORK_AREAS.items():
        for a in areas.split():
            out.setdefault(a, net)
    missing = [a for a in GLASSER_AREAS if a not in out]
    if missing:  # pragma: no cover - guards edits of the tables
        raise ValueError(f"areas without a network: {missing}")
    return out


def region_table() -> list[dict]:
    """One row per parcel in NMA's order (right hemisphere first): index, name, network, hemisphere, myelin.

    Myelin (a T1w/T2w-like value) is synthetic: high in primary sensory and motor areas.
    """
    networks = _area_networks()
    high = {"Visual1": 1.6, "Somatomotor": 1.55, "Auditory": 1.5, "Visual2": 1.45, "Dorsal-atten": 1.4}
    rng = generator(0, STREAM_HCP, 0)  # fixed: the table does not depend on the tutorial seed
    base = {a: high.get(networks[a], 1.25) + float(rng.normal(0, 0.04)) for a in GLASSER_AREAS}
    rows: list[dict] = []
    for hemi, prefix in (("Right", "R"), ("Left", "L")):
        for a in GLASSER_AREAS:
            rows.append(
                {
                    "index": len(rows),
                    "name": f"{prefix}_{a}",
                    "network": networks[a],
                    "hemisphere": hemi,
                    "myelin": round(base[a] + float(rng.normal(0, 0.01)), 4),
                }
            )
    return rows


def spm_hrf(tr: float, length_s: float = 32.0) -> np.ndarray:
    """SPM's canonical haemodynamic response (difference of gammas, peak ~5 s, undershoot ~15 s), sum 1."""
    from scipy.stats import gamma

    t = np.arange(0.0, length_s, tr)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    return h / h.sum()


def motor_blocks(rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """One MOTOR run's EVs ``(condition, onset s, duration s)``, HCP-like.

    Ten 12 s movement blocks (two each of lf, rf, lh, rh, t) in a shuffled order, each after a 3 s
    cue, with three 15 s fixation blocks; the first cue at 8 s.
    """
    while True:  # a shuffled order with no condition twice in a row
        order = [str(c) for c in rng.permutation(["lf", "rf", "lh", "rh", "t"] * 2)]
        if all(a != b for a, b in zip(order, order[1:], strict=False)):
            break
    events, t = [], 8.0
    for i, cond in enumerate(order):
        events.append(("cue", t, 3.0))
        events.append((cond, t + 3.0, 12.0))
        t += 15.0
        if i in (3, 6, 9):
            t += 15.0  # fixation
    return events


def _network_correlation(names: list[str]) -> np.ndarray:
    """Between-network correlation of the shared courses: the latent model's where both map to it."""
    from lakepipe.tutorial.model import NETWORK_CORRELATIONS

    c = np.eye(len(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i < j:
                la, lb = _LATENT_OF.get(a), _LATENT_OF.get(b)
                r = 0.0
                if la and lb and la == lb:
                    r = 0.5  # Visual1 / Visual2
                elif la and lb:
                    r = NETWORK_CORRELATIONS.get((la, lb), NETWORK_CORRELATIONS.get((lb, la), 0.0))
                elif {a, b} in ({"Auditory", "Somatomotor"}, {"Language", "Default"}):
                    r = 0.3
                c[i, j] = c[j, i] = r
    if np.linalg.eigvalsh(c).min() <= 0:  # pragma: no cover - guards edits of the tables
        raise ValueError("HCP network correlations are not positive definite")
    return c


def _ar1(rng: np.random.Generator, n: int, t: int, phi: float, chol: np.ndarray | None = None) -> np.ndarray:
    """``n`` stationary AR(1) series (n, t), unit variance, innovations correlated by ``chol``."""
    z = rng.standard_normal((n, t))
    if chol is not None:
        z = chol @ z
    out = np.empty((n, t))
    out[:, 0] = z[:, 0]
    for i in range(1, t):
        out[:, i] = phi * out[:, i - 1] + np.sqrt(1 - phi**2) * z[:, i]
    return out


class _SubjectModel:
    """One subject's parcel loadings, baselines and noise levels (fixed over runs)."""

    def __init__(self, seed: int, subject: int, rows: list[dict]):
        rng = generator(seed, STREAM_HCP, 1, subject)
        self.names = sorted({r["network"] for r in rows})
        self.net = np.array([self.names.index(r["network"]) for r in rows])
        self.hemi = np.array([0 if r["hemisphere"] == "Right" else 1 for r in rows])
        n = len(rows)
        self.shared = rng.uniform(0.55, 0.85, n)  # loading on the network's bilateral course
        self.local = rng.uniform(0.3, 0.5, n)  # on its hemisphere's course
        self.noise = rng.uniform(0.5, 0.8, n)
        self.baseline = 10000.0 * (1 + 0.08 * rng.standard_normal(n))
        self.scale = 0.01 * self.baseline  # 1 unit = 1 % signal change
        self.task_gain = float(np.clip(rng.normal(1.0, 0.2), 0.5, 1.5))
        self.chol = np.linalg.cholesky(_network_correlation(self.names))

    def series(self, rng: np.random.Generator, t: int) -> np.ndarray:
        """Resting parcel series (360, t) in signal units (before baseline and scale)."""
        k = len(self.names)
        shared = _ar1(rng, k, t, 0.9, self.chol)
        local = _ar1(rng, 2 * k, t, 0.9)
        x = self.shared[:, None] * shared[self.net] + self.local[:, None] * local[self.net * 2 + self.hemi]
        x += self.noise[:, None] * _ar1(rng, x.shape[0], t, 0.3)
        return x


def motor_response(
    rows: list[dict], events: list[tuple[str, float, float]], t: int
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Planted response (360, t) in % signal change and, per condition, the parcels that carry it."""
    index = {r["name"]: r["index"] for r in rows}
    hrf = spm_hrf(HCP_TR)
    out = np.zeros((len(rows), t))
    carriers: dict[str, list[str]] = {}
    for cond, (side, areas) in MOTOR_EFFECTS.items():
        box = np.zeros(t)
        for c, onset, duration in events:
            if c == cond:
                box[int(np.floor(onset / HCP_TR)) : int(np.ceil((onset + duration) / HCP_TR))] = 1.0
        course = np.convolve(box, hrf)[:t] / max(hrf.sum(), 1e-12)
        prefixes = {"right": ["R"], "left": ["L"], "both": ["R", "L"]}[side]
        carriers[cond] = []
        for p in prefixes:
            for area, amp in areas.items():
                name = f"{p}_{area}"
                out[index[name]] += amp * course
                carriers[cond].append(name)
    return out, carriers


def write_ev(path: Path, events: list[tuple[str, float, float]], condition: str) -> None:
    """HCP EV file: ``onset<TAB>duration<TAB>amplitude`` per block of ``condition``."""
    lines = [f"{onset:.3f}\t{duration:.1f}\t1" for c, onset, duration in events if c == condition]
    path.write_text("\n".join(lines) + "\n")


def write_hcp(root: Path, seed: int, subjects: int, rest_timepoints: int) -> dict:
    """Write the synthetic HCP release under ``root``; return the manifest section (with the truth)."""
    root.mkdir(parents=True)
    rows = region_table()
    np.save(root / "regions.npy", np.array([[r["name"], r["network"], f"{r['myelin']:.4f}"] for r in rows]))
    lines = ["index\tname\tnetwork\themisphere\tmyelin"]
    lines += [
        f"{r['index']}\t{r['name']}\t{r['network']}\t{r['hemisphere']}\t{r['myelin']:.4f}" for r in rows
    ]
    (root / "regions.tsv").write_text("\n".join(lines) + "\n")
    ids = [str(s) for s in range(subjects)]
    (root / "subjects_list.txt").write_text("\n".join(ids) + "\n")
    run_events = {
        name: motor_blocks(generator(seed, STREAM_HCP, 2, k))
        for k, name in enumerate(BOLD_NAMES)
        if "MOTOR" in name
    }
    carriers: dict[str, list[str]] = {}
    for s, sid in enumerate(ids):
        sm = _SubjectModel(seed, s, rows)
        ts_dir = root / "subjects" / sid / "timeseries"
        ts_dir.mkdir(parents=True)
        for k, name in enumerate(BOLD_NAMES):
            rng = generator(seed, STREAM_HCP, 3, s, k)
            t = MOTOR_TIMEPOINTS if "MOTOR" in name else rest_timepoints
            x = sm.series(rng, t)
            if "MOTOR" in name:
                jitter = rng.normal(0.0, 0.05, len(run_events[name]))  # E-Prime timing differs a little
                events = [
                    (c, round(o + j, 3), d) for (c, o, d), j in zip(run_events[name], jitter, strict=True)
                ]
                response, carriers = motor_response(rows, events, t)
                x = x + sm.task_gain * response
                ev_dir = root / "subjects" / sid / "EVs" / name
                ev_dir.mkdir(parents=True)
                for cond in MOTOR_CONDITIONS:
                    write_ev(ev_dir / f"{cond}.txt", events, cond)
            bold = (sm.baseline[:, None] + sm.scale[:, None] * x).astype(np.float32)
            np.save(ts_dir / f"bold{k + 1}_Atlas_MSMAll_Glasser360Cortical.npy", bold)
        logger.info("hcp: wrote subject %s (%d rest + 2 MOTOR runs)", sid, 4)
    return {
        "layout": "Neuromatch Academy HCP (2021): subjects/<s>/timeseries/"
        "bold<k>_Atlas_MSMAll_Glasser360Cortical.npy, subjects/<s>/EVs/<run>/<condition>.txt, regions.npy",
        "tr": HCP_TR,
        "n_parcels": len(rows),
        "subjects": ids,
        "runs": {str(k + 1): name for k, name in enumerate(BOLD_NAMES)},
        "rest_timepoints": rest_timepoints,
        "motor_timepoints": MOTOR_TIMEPOINTS,
        "conditions": list(MOTOR_CONDITIONS),
        "truth": {
            "hrf": "SPM canonical (gamma(6) - gamma(16) / 6), peak ~5 s",
            "delay_s": HRF_PEAK_S,
            "delay_frames": DELAY_FRAMES,
            "effects_percent": {
                cond: {name: MOTOR_EFFECTS[cond][1][name.split("_", 1)[1]] for name in names}
                for cond, names in carriers.items()
            },
            "subject_gain": "each subject's responses scaled by a gain ~ N(1, 0.2) clipped to [0.5, 1.5]",
            "contrast": "lh - rh: positive in R_ hand parcels, negative in L_ hand parcels",
        },
    }
