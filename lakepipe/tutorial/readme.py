"""The tutorial folder's own ``README.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakepipe.tutorial import cohorts, fmriprep, hcp
from lakepipe.tutorial.atlas import ATLAS_RADIUS_MM
from lakepipe.tutorial.common import REPETITION_TIME, SECOND_LABEL
from lakepipe.tutorial.connectome import N_NIFTI_SUBJECTS
from lakepipe.tutorial.model import NETWORKS

if TYPE_CHECKING:
    from lakepipe.tutorial.writer import TutorialPaths

_README = """# lakepipe tutorial data

Synthetic, deterministic example inputs written by `lakepipe tutorial` (`lakepipe.tutorial.write_tutorial`)
with seed {seed}. Nothing here is real patient or scanner data; nothing was downloaded. Space of
everything: MNI152NLin6Asym (2 mm grid 91 x 109 x 91, 1 mm grid 182 x 218 x 182, FSL/GSP1000 affines).
`tutorial.json` lists the parameters, the lakepipe version and every file with its size.

## bids/  (lesion masks, BIDS 1.9 raw dataset)
{participants} participants; files
`sub-<p>/ses-<s>/anat/sub-<p>_ses-<s>_space-MNI152NLin6Asym[_res-2]_label-<label>_mask.nii.gz`.
Binary uint8 masks. Masks on the 1 mm grid carry **no** `res` entity; masks on the 2 mm grid carry `res-2`.
About a third of the participants have a follow-up session `ses-02` whose lesion is the `ses-01` lesion
grown and slightly shifted; one or two participants also have an older `label-{second}` lesion.
Lesions are smooth irregular blobs (thresholded smoothed noise around a centre) at cortical and subcortical
stroke sites on the latent networks, from one tiny lacune (< 30 voxels) to a large infarct (~45 ml),
each confined to one hemisphere and to the brain mask. `participants.tsv`: `participant_id`, `age`,
`sex`, `nihss` (synthetic symptom score rising with the log of the acute lesion volume),
`days_since_onset` (first session); `sub-<p>/sub-<p>_sessions.tsv` gives every session's day.

## connectome/  (GSP1000 HDF5 batch layout)
{subjects} normative subjects x {timepoints} time points (TR {tr} s) on the 2 mm brain mask
({voxels} voxels), {batch_size} subjects per `batch-NNN.h5`. Each file: `timeseries` (subjects, time,
voxels) float32, raw values (positive baseline ~100-1000 per voxel plus ~1 % signal); `mask_indices`
(V, 3) int32 ijk of the in-mask voxels in C order of the mask; `mask_affine` (4 x 4); root attribute
`mask_shape`; `subject_ids` (bytes, `GSP0001`, ...). Generated from a latent network model: {networks}
smooth bilateral network maps ({network_names}), AR(1) network time courses with a fixed
between-network correlation, subject-specific loadings and white noise. Seed-to-voxel correlations are
about 0.3-0.6 within a network and near 0 elsewhere.

## atlas/
`tpl-MNI152NLin6Asym_res-02_atlas-Seitzman2018_dseg.nii.gz`: the Seitzman et al. 2018 (NeuroImage
206:116290) 300 ROI coordinates shipped by nilearn, as {radius:g} mm spheres labelled 1..300 in the
published order (overlaps go to the nearest centre), restricted to the brain mask. The `.tsv` has
`index`, `name` (`Seitzman_<network>_<n>`), `network`, `hemisphere` (L/R/M), `region`, `x`, `y`, `z`,
`n_voxels`; ROIs with no voxel in the mask ({empty} here) stay in the table with `n_voxels` 0.

## parcel_timeseries/  ({parcel_state})
Per-subject `sub-<id>_timeseries.npy`, float32 parcels x time (HCP parcellated layout), the mean of the
same subjects' voxel series over each non-empty atlas parcel; the last subject is written as a
header-less `.tsv` with the same layout instead. `regions.tsv` (`index`, `name`, `network`) names the rows.

## nifti_connectome/  ({nifti_state})
The first {n_nifti} subjects as 4D float32 NIfTI `sub-<id>_bold.nii.gz` on the 2 mm grid (zeros outside the
mask), plus `brain_mask.nii.gz`.
"""


def _write_readme(paths: TutorialPaths, params: dict, n_voxels: int, n_empty: int) -> None:
    text = _README.format(
        seed=params["seed"],
        participants=params["participants"],
        second=SECOND_LABEL,
        subjects=params["subjects"],
        timepoints=params["timepoints"],
        tr=REPETITION_TIME,
        voxels=n_voxels,
        batch_size=params["batch_size"],
        networks=len(NETWORKS),
        network_names=", ".join(n.name for n in NETWORKS),
        radius=ATLAS_RADIUS_MM,
        empty=n_empty,
        parcel_state="written" if paths.parcel_timeseries else "not written: parcel_timeseries=False",
        nifti_state="written" if paths.nifti_connectome else "not written: nifti_connectome=False",
        n_nifti=min(N_NIFTI_SUBJECTS, params["subjects"]),
    )
    (paths.root / "README.md").write_text(text)


_LNM = """
## lnm/  (a lesion network mapping question with a known answer{lnm_state})
Which network do lesions causing spatial neglect share? Two BIDS lesion datasets named like `bids/`
(`sub-<p>/ses-01/anat/sub-<p>_ses-01_space-MNI152NLin6Asym_res-2_label-acuteinfarct_mask.nii.gz`,
binary uint8 on the 2 mm grid, the connectome's own grid, so no resampling is involved):
- `cases/`: {cases} neglect cases (`sub-case01`, ...), lesions on the blobs of the **{target}** network
  (frontal eye field, superior parietal / intraparietal, MT+; either hemisphere), some centred on a blob
  and some beside it (partly on a neighbouring network), {vmin:g}-{vmax:g} ml;
- `controls/`: {controls} stroke controls (`sub-ctrl01`, ...) with lesions elsewhere (other networks' blobs,
  places on no network), each volume within about 20 % of the case with the same number, so the volumes
  overlap and a volume-matched random-lesion null can be drawn.
`participants.tsv`: `participant_id`, `group` (case/control), `age`, `sex`, `{symptom}` (0-30, higher is
worse). One score model for everybody: `{symptom} = clip(round({slope:g} * rho + e), 0, 30)`,
`e ~ N(0, {noise:g})`, `rho` the correlation of the lesion's mean signal with the {target} network's time
course under the latent model (it grows with the lesion's loading on that network and falls with its
loading on others); controls therefore score near 0. FNM maps of the cases overlap on the {target}
network (sensitivity), differ from the controls' there (specificity), and the score follows the cases'
connectivity to it (symptom map, cross-validated prediction).
`truth/`: `network-<Name>_loading.nii.gz` (float32, 2 mm grid) for each latent network and `truth.json`
(target network, score model, every lesion's site, volume, mean loading on each network, `rho`, score).
"""

_FMRIPREP = """
## fmriprep/  (fMRIPrep-style derivatives{fmriprep_state})
{fp_subjects} subjects x {n_runs} runs of `task-rest`, {fp_t} volumes each (TR {fp_tr:g} s), named as fMRIPrep
names them: `sub-<p>/func/sub-<p>_task-rest_run-<n>_space-MNI152NLin6Asym{res}_desc-preproc_bold.nii.gz`
(+ `.json` with `RepetitionTime`), `..._desc-brain_mask.nii.gz`, `..._boldref.nii.gz`,
`sub-<p>_task-rest_run-<n>_desc-confounds_timeseries.tsv` (+ `.json`), and `dataset_description.json`
(`DatasetType` derivative). BOLD: {fp_voxel:g} mm voxels in the template's field of view ({shape}),
{res_note};
int16 with a scale factor, zero outside the brain mask. It comes from the same latent network model as
`connectome/` plus what cleaning must remove: a slow drift, head-motion signal (each voxel's intensity
change under the simulated displacement: largest at the brain's edges), intensity dips at the sudden
movements, physiological noise strongest in CSF and white matter, and one non-steady-state volume.
Confounds computed from the BOLD as fMRIPrep does: `global_signal`, `csf`, `white_matter` (each with
`_derivative1`, `_power2`, `_derivative1_power2`), `csf_wm`, `std_dvars`, `dvars`,
`framewise_displacement`, `rmsd`, `c_comp_cor_*`, `w_comp_cor_*`, `a_comp_cor_*` (50 % variance rule,
metadata in the JSON), `cosine*` (128 s), `non_steady_state_outlier00`, the six motion parameters with
their expansions, and `motion_outlier*` (FD > 0.5 mm or standardised DVARS > 1.5).
`nilearn.interfaces.fmriprep.load_confounds_strategy` reads them (`simple`, `scrubbing`, `compcor`);
seed maps of the cleaned runs show the networks, the raw ones much less. No `anat/` folder, no reports.
"""

_HCP = """
## hcp/  (HCP parcellated release, Neuromatch Academy layout{hcp_state})
{hcp_subjects} subjects (`subjects/0`, ...; `subjects_list.txt`), 360 Glasser-like parcels (180 right `R_`,
then 180 left `L_`; synthetic Cole-Anticevic-like networks) in `regions.npy` (NMA's columns: name, network,
myelin) and `regions.tsv` (`index`, `name`, `network`, `hemisphere`, `myelin`). Per subject
`timeseries/bold<k>_Atlas_MSMAll_Glasser360Cortical.npy` (float32, parcels x time, TR {hcp_tr:g} s): runs
1-4 rest (`rfMRI_REST1_LR`, `REST1_RL`, `REST2_LR`, `REST2_RL`; {hcp_rest} frames, the real ones have
1200), 5-6 `tfMRI_MOTOR_RL` / `_LR` ({motor_t} frames) with `EVs/tfMRI_MOTOR_<RL|LR>/<condition>.txt`
(`onset duration amplitude` per block) for {conditions}.
Resting correlations follow networks (a course shared by both hemispheres and one per hemisphere);
MOTOR runs carry a planted response after an SPM haemodynamic delay (peak ~{delay:g} s,
{delay_frames} frames): `lh` raises the RIGHT hemisphere's hand parcels ({hand}),
`rh` the LEFT ones, feet the contralateral paracentral parcels, `t` both ventral ones, `cue` the early
visual ones.
`tutorial.json` (`hcp.truth`) lists the parcels and amplitudes (% of the baseline).
"""


def write_readme(
    paths: TutorialPaths, params: dict, n_voxels: int, n_empty: int, sections: dict | None = None
) -> None:
    """The README of the tutorial folder, for what was written."""
    sections = sections or {}
    text = _README.format(
        seed=params["seed"],
        participants=params["participants"],
        second=SECOND_LABEL,
        subjects=params["subjects"],
        timepoints=params["timepoints"],
        tr=REPETITION_TIME,
        voxels=n_voxels,
        batch_size=params["batch_size"],
        networks=len(NETWORKS),
        network_names=", ".join(n.name for n in NETWORKS),
        radius=ATLAS_RADIUS_MM,
        empty=n_empty,
        parcel_state="written" if paths.parcel_timeseries else "not written: parcel_timeseries=False",
        nifti_state="written" if paths.nifti_connectome else "not written: nifti_connectome=False",
        n_nifti=min(N_NIFTI_SUBJECTS, params["subjects"]),
    )
    text += _LNM.format(
        lnm_state="" if paths.lnm_cases else "; not written: lnm=False",
        cases=params["lnm_cases"],
        controls=params["lnm_controls"],
        target=cohorts.TARGET_NETWORK,
        vmin=cohorts.VOLUME_RANGE_MM3[0] / 1000,
        vmax=cohorts.VOLUME_RANGE_MM3[1] / 1000,
        symptom=cohorts.SYMPTOM,
        slope=cohorts.SCORE_SLOPE,
        noise=cohorts.SCORE_NOISE_SD,
    )
    fp = sections.get("fmriprep") or {}
    v = params["fmriprep_voxel_mm"]
    text += _FMRIPREP.format(
        fmriprep_state="" if paths.fmriprep else "; not written: fmriprep=False",
        fp_subjects=params["fmriprep_subjects"],
        n_runs=fmriprep.N_RUNS,
        fp_t=params["fmriprep_timepoints"],
        fp_tr=fmriprep.FMRIPREP_TR,
        res="_res-2" if v == 2.0 else "",
        fp_voxel=v,
        res_note="the template's 2 mm grid (`res-2`)"
        if v == 2.0
        else "a native-resolution output (fMRIPrep writes no `res` entity for it)",
        shape=" x ".join(str(n) for n in fp.get("shape", fmriprep.bold_grid(v).shape)),
    )
    text += _HCP.format(
        hcp_state="" if paths.hcp else "; not written: hcp=False",
        hcp_subjects=params["hcp_subjects"],
        hcp_tr=hcp.HCP_TR,
        hcp_rest=params["hcp_rest_timepoints"],
        motor_t=hcp.MOTOR_TIMEPOINTS,
        conditions=", ".join(f"`{c}`" for c in hcp.MOTOR_CONDITIONS),
        delay=hcp.HRF_PEAK_S,
        delay_frames=hcp.DELAY_FRAMES,
        hand=", ".join(f"`R_{a}`" for a in list(hcp.MOTOR_EFFECTS["lh"][1])[:4]) + ", ...",
    )
    (paths.root / "README.md").write_text(text)
