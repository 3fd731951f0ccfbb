"""A small fMRIPrep-style derivatives folder: resting-state BOLD that needs cleaning, with its confounds.

Files are named as fMRIPrep names them (``sub-<p>/func/sub-<p>_task-rest_run-<n>_space-
MNI152NLin6Asym[_res-2]_desc-preproc_bold.nii.gz`` with a JSON sidecar, ``..._desc-brain_mask.nii.gz``,
``..._boldref.nii.gz``, ``sub-<p>_task-rest_run-<n>_desc-confounds_timeseries.tsv`` + ``.json``), and
the BOLD comes from the same latent network model as the tutorial connectome, plus what fMRIPrep
leaves in its outputs and cleaning must remove: a slow scanner drift, head-motion signal (the
intensity change of each voxel under the simulated head displacement: voxel-specific loadings on the
six motion parameters, largest at the brain's edges), intensity dips at high-motion frames (spin
history), physiological noise loading on CSF and white matter (what the ``csf``, ``white_matter`` and
aCompCor regressors capture) and one non-steady-state volume.

The confounds are computed from the written BOLD as fMRIPrep computes them (tissue means, DVARS after
nipype's ``compute_dvars``, aCompCor after nipype's ``compute_noise_components`` with the 50 %
cumulative-variance rule, cosine regressors after nipype's ``_cosine_drift``, motion outliers at
FD > 0.5 mm or standardised DVARS > 1.5), with the column names and JSON metadata that
``nilearn.interfaces.fmriprep.load_confounds`` reads.

Grid. fMRIPrep's default ``MNI152NLin6Asym`` output (``res-native``) keeps the BOLD's own voxel size
and leaves the ``res`` entity out of the name (niworkflows drops ``res-native``); ``res-2`` is the
template's 2 mm grid. The full 2 mm grid (900,000 voxels, 235,375 in the brain) makes large files, so
the default here is a native 4 mm acquisition (about 29,000 brain voxels): a real, if coarse,
resting-state protocol whose files stay a few MB per run. Unlike fMRIPrep, which crops a native-
resolution output to the brain's bounding box, the grid keeps the template's field of view (origin and
axes of the 2 mm grid), so that lakepipe's space check accepts it and its voxel centres fall on 2 mm
voxel centres. Values are stored as int16 with a scale factor (``scl_slope``), as scanners and many
fMRIPrep outputs are, and are zero outside the brain mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakepipe._version import __version__
from lakepipe.space import Grid, mni152_grid
from lakepipe.tutorial.common import SPACE, STREAM_FMRIPREP, generator, save_nifti, smooth_field, write_json
from lakepipe.tutorial.model import LatentModel, network_courses

logger = logging.getLogger(__name__)

#: Repetition time (s) of the fMRIPrep runs.
FMRIPREP_TR = 2.0
#: Task and runs per subject.
TASK = "rest"
N_RUNS = 2
#: fMRIPrep's defaults for motion outliers and its high-pass period for cosine / CompCor (s).
FD_THRESHOLD_MM = 0.5
DVARS_THRESHOLD = 1.5
HIGH_PASS_PERIOD_S = 128.0
#: Radius (mm) used for the framewise displacement of rotations (Power et al. 2012).
FD_RADIUS_MM = 50.0
#: Frames at the start of each run before the magnetisation reaches steady state.
N_NON_STEADY = 1
#: Version string written as fMRIPrep's (the naming follows fMRIPrep >= 21: ``desc-confounds_timeseries``).
FMRIPREP_VERSION = "23.2.1"


@dataclass(frozen=True)
class BoldGrid:
    """The grid of the fMRIPrep outputs and the latent model sampled on it."""

    grid: Grid
    mask: np.ndarray  # bool volume
    res_entity: str | None  # "2" on the template's 2 mm grid, None at native resolution
    loadings: np.ndarray  # (K, V) network loadings at the in-mask voxels (C order)
    baseline: np.ndarray  # (V,)
    scale: np.ndarray  # (V,)
    noise_sd: np.ndarray  # (V,)
    gm: np.ndarray  # (V,) tissue probabilities
    wm: np.ndarray
    csf: np.ndarray
    lateral: np.ndarray  # (V,) tanh(x / 30 mm)
    xyz: np.ndarray  # (V, 3) mm

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())


def bold_grid(voxel_mm: float) -> Grid:
    """The output grid: the 2 mm template grid's origin and axes with ``voxel_mm`` voxels."""
    ref = mni152_grid(2)
    if voxel_mm == 2.0:
        return ref
    extent = (np.array(ref.shape) - 1) * 2.0
    shape = tuple(int(n) for n in np.floor(extent / voxel_mm + 1e-9).astype(int) + 1)
    affine = ref.affine.copy()
    affine[:3, :3] = np.diag([-voxel_mm, voxel_mm, voxel_mm])
    return Grid(shape, affine)  # type: ignore[arg-type]


def _sample(volume: np.ndarray, src_affine: np.ndarray, dst: Grid, ijk: np.ndarray, order: int = 1):
    """``volume`` (on ``src_affine``) at the centres of voxels ``ijk`` of ``dst`` (trilinear)."""
    from scipy.ndimage import map_coordinates

    xyz = ijk @ dst.affine[:3, :3].T + dst.affine[:3, 3]
    inv = np.linalg.inv(src_affine)
    src = xyz @ inv[:3, :3].T + inv[:3, 3]
    return map_coordinates(volume, src.T, order=order, mode="constant", cval=0.0)


def _tissue_templates(grid: Grid, ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """nilearn's MNI152 grey and white matter probabilities, smoothed to the voxel size, at ``ijk``."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template
    from scipy.ndimage import gaussian_filter

    out = []
    sigma = max(float(grid.voxel_size.max()) / 2.355, 0.5)  # FWHM = one output voxel (1 mm source)
    for load in (load_mni152_gm_template, load_mni152_wm_template):
        img = load(resolution=1)
        vol = gaussian_filter(np.asarray(img.dataobj, dtype=np.float32), sigma)
        out.append(np.clip(_sample(vol, img.affine, grid, ijk), 0.0, 1.0))
    return out[0], out[1]


def build_bold_grid(model: LatentModel, voxel_mm: float) -> BoldGrid:
    """Sample the latent model (maps, baselines, scales, noise levels) and the tissue classes on the grid."""
    grid = bold_grid(voxel_mm)
    ref = model.grid
    full = np.indices(grid.shape).reshape(3, -1).T
    inside = _sample(model.mask.astype(np.float32), ref.affine, grid, full) >= 0.5
    mask = inside.reshape(grid.shape)
    ijk = np.argwhere(mask)

    def on_grid(values: np.ndarray) -> np.ndarray:
        vol = np.zeros(ref.shape, np.float32)
        vol[model.mask] = values
        weight = _sample(model.mask.astype(np.float32), ref.affine, grid, ijk)
        return (_sample(vol, ref.affine, grid, ijk) / np.maximum(weight, 1e-6)).astype(np.float32)

    loadings = np.stack([on_grid(row) for row in model.loadings])
    gm, wm = _tissue_templates(grid, ijk)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    xyz = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    return BoldGrid(
        grid=grid,
        mask=mask,
        res_entity="2" if voxel_mm == 2.0 else None,
        loadings=loadings,
        baseline=on_grid(model.baseline),
        scale=on_grid(model.scale),
        noise_sd=on_grid(model.noise_sd),
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf.astype(np.float32),
        lateral=np.tanh(xyz[:, 0] / 30.0).astype(np.float32),
        xyz=xyz,
    )


def tissue_masks(bg: BoldGrid) -> dict[str, np.ndarray]:
    """Boolean in-mask vectors of the CSF and white-matter masks used for the means and aCompCor.

    Like fMRIPrep's: conservative (high tissue probability), so that little grey matter leaks in.
    """
    from scipy.ndimage import binary_erosion

    deep = binary_erosion(bg.mask, iterations=2)[bg.mask]  # away from the brain's outer surface
    wm = (bg.wm > 0.9) & binary_erosion(bg.mask, iterations=1)[bg.mask]
    csf = (bg.csf > 0.4) & deep  # ventricles and deep sulci, not the surface CSF
    return {"CSF": csf, "WM": wm, "combined": wm | csf}


# ----------------------------------------------------------------------------------------------
# motion
# ----------------------------------------------------------------------------------------------


def motion_parameters(
    rng: np.random.Generator, timepoints: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Six rigid-body parameters (T, 6): ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (rad).

    A slow drift (smoothed random walk), frame-to-frame jitter and a few sudden movements (a jump that
    partly returns over the next frames). Returns the parameters and the frames of the sudden movements.
    """
    from scipy.ndimage import gaussian_filter1d

    t = timepoints
    walk = np.cumsum(rng.standard_normal((t, 6)), axis=0)
    walk = gaussian_filter1d(walk, 3.0, axis=0, mode="nearest")
    walk -= walk[0]
    unit = np.array([0.03, 0.03, 0.05, 0.0006, 0.0004, 0.0004])  # mm, rad per sqrt(frame)
    params = level * (walk * unit + rng.standard_normal((t, 6)) * unit * 0.4)
    n_events = int(rng.integers(2, 5))
    events = np.sort(rng.choice(np.arange(4, t - 3), size=n_events, replace=False))
    for e in events:
        jump = np.concatenate([rng.normal(0, 0.45, 3), rng.normal(0, 0.006, 3)]) * max(level, 0.8)
        back = float(rng.uniform(0.3, 0.8))  # fraction that returns over the next frames
        profile = np.ones(t - e)
        profile[1:] -= back * (1 - np.exp(-np.arange(1, t - e) / 2.0))
        params[e:] += profile[:, None] * jump
    return params, events


def framewise_displacement(params: np.ndarray) -> np.ndarray:
    """Power et al. (2012) FD: sum of absolute frame differences, rotations as arc length at 50 mm."""
    d = np.abs(np.diff(params, axis=0))
    fd = d[:, :3].sum(axis=1) + FD_RADIUS_MM * d[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def relative_rms(params: np.ndarray, radius: float = 80.0) -> np.ndarray:
    """Relative RMS displacement (Jenkinson 1999) of a sphere of ``radius`` mm, cross terms left out."""
    d = np.diff(params, axis=0)
    rms = np.sqrt((d[:, :3] ** 2).sum(axis=1) + radius**2 / 5.0 * (d[:, 3:] ** 2).sum(axis=1))
    return np.concatenate([[np.nan], rms])


def _motion_loadings(bg: BoldGrid) -> np.ndarray:
    """(6, V) first-order intensity change per unit of each motion parameter.

    A voxel at ``r`` (from the rotation centre) moved by ``t + w x r`` changes by ``-grad(B) . (t + w x r)``,
    ``B`` the baseline image (zero outside the brain, so the edges carry most of it):
    loadings ``-grad(B)`` for translations and ``-(r x grad(B))`` for rotations.
    """
    base = np.zeros(bg.grid.shape, np.float32)
    base[bg.mask] = bg.baseline
    grads = np.gradient(base, *bg.grid.voxel_size)  # per mm along the array axes
    g_ijk = np.stack([g[bg.mask] for g in grads], axis=1)
    g_xyz = g_ijk @ np.linalg.inv(bg.grid.affine[:3, :3] / bg.grid.voxel_size).T  # world axes
    r = bg.xyz - np.array([0.0, -18.0, 18.0])  # about the centre of the head
    return np.concatenate([-g_xyz.T, -np.cross(r, g_xyz).T]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# confounds (as fMRIPrep / nipype compute them)
# ----------------------------------------------------------------------------------------------


def cosine_basis(timepoints: int, tr: float, period: float = HIGH_PASS_PERIOD_S) -> np.ndarray:
    """fMRIPrep's ``cosine`` regressors (T, n): nipype's ``_cosine_drift`` without its constant column."""
    order = max(int(np.floor(2 * timepoints * tr / period)), 1)
    n = np.arange(timepoints)
    cols = [np.sqrt(2.0 / timepoints) * np.cos(np.pi / timepoints * (n + 0.5) * k) for k in range(1, order)]
    return np.stack(cols, axis=1) if cols else np.zeros((timepoints, 0))


def dvars(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and standardised DVARS of (T, V) brain series, after nipype's ``compute_dvars``.

    Intensities scaled to median 1000; robust per-voxel sd (interquartile range / 1.349); predicted sd
    of a temporal difference ``sd * sqrt(2 (1 - ar1))`` with the lag-1 (Yule-Walker) autocorrelation;
    standardised DVARS = DVARS / mean predicted sd. First frame ``nan`` (no difference).
    """
    x = x.astype(np.float64) * (1000.0 / np.median(x))
    q75, q25 = np.percentile(x, [75, 25], axis=0, method="lower")
    sd = (q75 - q25) / 1.349
    xc = x - x.mean(axis=0)
    ar1 = (xc[1:] * xc[:-1]).sum(axis=0) / np.maximum((xc * xc).sum(axis=0), 1e-12)
    diff_sd = np.sqrt(np.maximum(2 * (1 - ar1), 0.0)) * sd
    raw = np.sqrt((np.diff(x, axis=0) ** 2).mean(axis=1))
    nan = np.array([np.nan])
    return np.concatenate([nan, raw]), np.concatenate([nan, raw / diff_sd.mean()])


def compcor(x: np.ndarray, basis: np.ndarray, criterion: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """aCompCor components of (T, n) voxel series, after nipype's ``compute_noise_components``.

    Cosine high-pass (regress out ``basis`` and the mean), variance-normalise each voxel, SVD; keep the
    first components whose cumulative explained variance reaches ``criterion``. Returns the components
    (T, k), unit norm, and all singular values.
    """
    design = np.column_stack([np.ones(x.shape[0]), basis])
    beta, *_ = np.linalg.lstsq(design, x.astype(np.float64), rcond=None)
    m = x - design @ beta
    sd = m.std(axis=0)
    sd[sd == 0] = 1.0
    m /= sd
    # left singular vectors from the small T x T Gram matrix (same u and s as an SVD of m, much faster)
    evals, evecs = np.linalg.eigh(m @ m.T)
    order = np.argsort(evals)[::-1]
    s = np.sqrt(np.clip(evals[order], 0.0, None))
    u = evecs[:, order]
    cumulative = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(cumulative, criterion) + 1)
    u = u[:, :k]
    u *= np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])  # deterministic sign: largest entry > 0
    return u, s


def _with_expansions(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """``name``, ``name_derivative1``, ``name_power2``, ``name_derivative1_power2`` (first derivative nan)."""
    d = np.concatenate([[np.nan], np.diff(values)])
    return {
        name: values,
        f"{name}_derivative1": d,
        f"{name}_power2": values**2,
        f"{name}_derivative1_power2": d**2,
    }


MOTION_NAMES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def confounds_table(
    x: np.ndarray, bg: BoldGrid, params: np.ndarray, tr: float
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Every confound column (name -> (T,) array, nan for n/a) and the JSON metadata."""
    masks = tissue_masks(bg)
    cols: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    means = {
        "global_signal": x.mean(axis=1),
        "csf": x[:, masks["CSF"]].mean(axis=1),
        "white_matter": x[:, masks["WM"]].mean(axis=1),
    }
    for name, v in means.items():
        cols.update(_with_expansions(name, v.astype(np.float64)))
    cols["csf_wm"] = x[:, masks["combined"]].mean(axis=1).astype(np.float64)
    for name in ("global_signal", "csf", "white_matter", "csf_wm"):
        meta[name] = {"Method": "Mean"}
    raw_dvars, std_dvars = dvars(x)
    cols["std_dvars"], cols["dvars"] = std_dvars, raw_dvars
    fd = framewise_displacement(params)
    cols["framewise_displacement"] = fd
    cols["rmsd"] = relative_rms(params)
    basis = cosine_basis(x.shape[0], tr)
    # CompCor ignores the non-steady-state frames, like fMRIPrep
    steady = slice(N_NON_STEADY, None)
    for prefix, mask_name in (("c", "CSF"), ("w", "WM"), ("a", "combined")):
        comps, s = compcor(x[steady][:, masks[mask_name]], basis[steady])
        explained = s**2 / np.sum(s**2)
        cumulative = np.cumsum(explained)
        for j in range(comps.shape[1]):
            name = f"{prefix}_comp_cor_{j:02d}"
            cols[name] = np.concatenate([np.zeros(N_NON_STEADY), comps[:, j]])
            meta[name] = {
                "CumulativeVarianceExplained": float(cumulative[j]),
                "Mask": mask_name,
                "Method": "aCompCor",
                "Retained": True,
                "SingularValue": float(s[j]),
                "VarianceExplained": float(explained[j]),
            }
    for j in range(basis.shape[1]):
        cols[f"cosine{j:02d}"] = basis[:, j]
    for j in range(N_NON_STEADY):
        cols[f"non_steady_state_outlier{j:02d}"] = (np.arange(x.shape[0]) == j).astype(np.float64)
    for j, name in enumerate(MOTION_NAMES):
        cols.update(_with_expansions(name, params[:, j]))
    outliers = np.flatnonzero(
        (np.nan_to_num(fd) > FD_THRESHOLD_MM) | (np.nan_to_num(std_dvars) > DVARS_THRESHOLD)
    )
    for j, frame in enumerate(outliers):
        cols[f"motion_outlier{j:02d}"] = (np.arange(x.shape[0]) == frame).astype(np.float64)
    return cols, meta


# ----------------------------------------------------------------------------------------------
# BOLD
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTruth:
    """What went into one run (for the manifest)."""

    participant: str
    run: int
    motion_events: list[int]
    n_motion_outliers: int
    mean_fd: float
    max_fd: float
    n_acompcor: int


def _fields(model_seed: int, bg: BoldGrid) -> dict[str, np.ndarray]:
    """Subject-independent smooth spatial fields (V,) for the drift, physiology and spike amplitudes."""
    rng = generator(model_seed, STREAM_FMRIPREP, 0)
    sigma = 12.0 / float(bg.grid.voxel_size.min())  # ~12 mm correlation length
    return {name: smooth_field(rng, bg.grid.shape, sigma)[bg.mask] for name in ("drift", "physio", "spike")}


def simulate_run(
    bg: BoldGrid,
    model: LatentModel,
    fields: dict[str, np.ndarray],
    seed: int,
    subject: int,
    run: int,
    timepoints: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One run's BOLD at the in-mask voxels (T, V) float32, its motion parameters and event frames.

    ``x = B (1 + drift) + s (network + noise + physiology) + motion + spikes`` and a brighter first
    volume; ``B`` baseline, ``s`` signal scale (about 1 % of ``B``), all in the model's units.
    """
    t = timepoints
    subj = generator(seed, STREAM_FMRIPREP, 1, subject)
    k = len(model.networks)
    gain = np.clip(subj.normal(1.0, 0.1, k), 0.6, 1.4)
    balance = subj.normal(0.0, 0.1, k)
    noise_level = float(subj.uniform(0.85, 1.15))
    motion_level = float(subj.uniform(0.6, 1.6))
    rng = generator(seed, STREAM_FMRIPREP, 2, subject, run)
    courses = network_courses(rng, model, t)
    loadings = bg.loadings * (gain[:, None] * (1 + balance[:, None] * bg.lateral[None, :]))
    signal = courses.T.astype(np.float32) @ loadings
    signal += rng.standard_normal((t, bg.n_voxels), dtype=np.float32) * (
        bg.noise_sd * np.float32(noise_level)
    )
    # physiology: a slow respiratory-like course and a fast cardiac-like one, strongest in CSF
    from scipy.ndimage import gaussian_filter1d

    resp = gaussian_filter1d(rng.standard_normal(t), 1.5)
    resp /= resp.std()
    cardiac = rng.standard_normal(t)
    tissue = (3.0 * bg.csf + 1.2 * bg.wm + 0.3 * bg.gm) * (1 + 0.3 * np.tanh(fields["physio"]))
    physio = np.outer(resp, tissue * 0.9) + np.outer(cardiac, tissue * 0.5)
    signal += physio.astype(np.float32)
    x = signal * bg.scale
    # slow drift (within the two lowest cosine regressors), a few % of the baseline
    n = np.arange(t)
    drift_basis = np.stack([np.cos(np.pi / t * (n + 0.5) * j) for j in (1, 2)], axis=1)
    amp = rng.normal(0.0, 1.0, 2)[None, :] * (1 + 0.5 * np.tanh(fields["drift"]))[:, None] * 0.02
    x += (drift_basis @ amp.T).astype(np.float32) * bg.baseline
    x += bg.baseline
    params, events = motion_parameters(rng, t, motion_level)
    x += (params.astype(np.float32) @ _motion_loadings(bg)).astype(np.float32)
    dip = (0.025 * (1 + 0.4 * np.tanh(fields["spike"]))).astype(np.float32) * bg.baseline
    for e in events:  # spin-history dips at the sudden movements, recovering over two frames
        x[e] -= dip
        if e + 1 < t:
            x[e + 1] -= 0.4 * dip
    x[:N_NON_STEADY] *= np.float32(1.06)  # not yet at steady state: brighter
    return x, params, events


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def fmriprep_stem(participant: str, run: int) -> str:
    """``sub-<p>_task-rest_run-<n>`` (BIDS run index from 1)."""
    return f"sub-{participant}_task-{TASK}_run-{run}"


def bold_name(participant: str, run: int, res_entity: str | None, suffix: str) -> str:
    """``<stem>_space-MNI152NLin6Asym[_res-<r>]_<suffix>`` (``suffix`` e.g. ``desc-preproc_bold.nii.gz``)."""
    res = f"_res-{res_entity}" if res_entity else ""
    return f"{fmriprep_stem(participant, run)}_space-{SPACE}{res}_{suffix}"


def _dataset_description(root: Path) -> None:
    write_json(
        root / "dataset_description.json",
        {
            "Name": "fMRIPrep - fMRI PREProcessing workflow",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "fMRIPrep",
                    "Version": FMRIPREP_VERSION,
                    "CodeURL": f"https://github.com/nipreps/fmriprep/archive/{FMRIPREP_VERSION}.tar.gz",
                    "Description": "Not run: the files imitate fMRIPrep's outputs (names, layout, "
                    "confounds); see the next entry.",
                },
                {
                    "Name": "lakepipe.tutorial",
                    "Version": __version__,
                    "Description": "Synthetic resting-state BOLD from lakepipe's latent network model, "
                    "with drift, head motion, physiological noise and their confounds.",
                },
            ],
            "HowToAcknowledge": "Synthetic data: nothing to acknowledge. For real fMRIPrep outputs cite "
            "https://doi.org/10.1038/s41592-018-0235-4.",
            "License": "CC0",
        },
    )


def _write_confounds(path_tsv: Path, cols: dict[str, np.ndarray], meta: dict[str, dict]) -> None:
    """The confounds TSV (``n/a`` for missing values) and its JSON sidecar."""
    names = list(cols)
    values = np.column_stack([cols[n] for n in names])
    lines = ["\t".join(names)]
    for row in values:
        lines.append("\t".join("n/a" if np.isnan(v) else f"{v:.10g}" for v in row))
    path_tsv.write_text("\n".join(lines) + "\n")
    write_json(path_tsv.with_suffix(".json"), meta)


def write_fmriprep(
    root: Path, model: LatentModel, seed: int, subjects: int, timepoints: int, voxel_mm: float
) -> dict:
    """Write the fMRIPrep-style derivatives under ``root``; return the manifest section."""
    root.mkdir(parents=True)
    _dataset_description(root)
    bg = build_bold_grid(model, voxel_mm)
    fields = _fields(seed, bg)
    masks = tissue_masks(bg)
    width = max(2, len(str(subjects)))
    runs = []
    for s in range(subjects):
        participant = f"{s + 1:0{width}d}"
        func = root / f"sub-{participant}" / "func"
        func.mkdir(parents=True)
        for r in range(N_RUNS):
            run = r + 1
            x, params, events = simulate_run(bg, model, fields, seed, s, r, timepoints)
            cols, meta = confounds_table(x, bg, params, FMRIPREP_TR)
            vol = np.zeros((*bg.grid.shape, timepoints), np.float32)
            vol[bg.mask] = x.T
            save_nifti(
                vol,
                bg.grid.affine,
                func / bold_name(participant, run, bg.res_entity, "desc-preproc_bold.nii.gz"),
                tr=FMRIPREP_TR,
                dtype=np.int16,
            )
            write_json(
                func / bold_name(participant, run, bg.res_entity, "desc-preproc_bold.json"),
                {
                    "RepetitionTime": FMRIPREP_TR,
                    "TaskName": TASK,
                    "SkullStripped": True,
                    "SliceTimingCorrected": False,
                    "StartTime": 0.0,
                    "Sources": [
                        f"bids:raw:sub-{participant}/func/{fmriprep_stem(participant, run)}_bold.nii.gz"
                    ],
                },
            )
            save_nifti(
                bg.mask.astype(np.uint8),
                bg.grid.affine,
                func / bold_name(participant, run, bg.res_entity, "desc-brain_mask.nii.gz"),
            )
            write_json(
                func / bold_name(participant, run, bg.res_entity, "desc-brain_mask.json"),
                {
                    "Type": "Brain",
                    "RawSources": [f"sub-{participant}/func/{fmriprep_stem(participant, run)}_bold.nii.gz"],
                },
            )
            ref = np.zeros(bg.grid.shape, np.float32)
            ref[bg.mask] = x[N_NON_STEADY:].mean(axis=0)
            save_nifti(
                ref, bg.grid.affine, func / bold_name(participant, run, bg.res_entity, "boldref.nii.gz")
            )
            _write_confounds(
                func / f"{fmriprep_stem(participant, run)}_desc-confounds_timeseries.tsv", cols, meta
            )
            fd = cols["framewise_displacement"][1:]
            runs.append(
                {
                    "participant": participant,
                    "run": run,
                    "motion_events": [int(e) for e in events],
                    "motion_outliers": int(sum(n.startswith("motion_outlier") for n in cols)),
                    "mean_fd_mm": float(fd.mean()),
                    "max_fd_mm": float(fd.max()),
                    "a_comp_cor": int(sum(n.startswith("a_comp_cor") for n in cols)),
                }
            )
        logger.info("fmriprep: wrote sub-%s (%d runs x %d volumes)", participant, N_RUNS, timepoints)
    return {
        "tr": FMRIPREP_TR,
        "task": TASK,
        "n_runs": N_RUNS,
        "timepoints": timepoints,
        "voxel_mm": float(voxel_mm),
        "shape": list(bg.grid.shape),
        "affine": bg.grid.affine.tolist(),
        "n_brain_voxels": bg.n_voxels,
        "n_csf_voxels": int(masks["CSF"].sum()),
        "n_wm_voxels": int(masks["WM"].sum()),
        "runs": runs,
    }
