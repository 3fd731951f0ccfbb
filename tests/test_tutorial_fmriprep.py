"""The tutorial's fMRIPrep-style derivatives (``fmriprep/``): names, confounds, and that cleaning matters.

References are the field's own tools: nilearn's BIDS name parser, ``load_confounds_strategy`` (the
fMRIPrep confound loader), ``create_cosine_drift``, ``NiftiMasker`` / ``NiftiSpheresMasker`` cleaning,
and a plain numpy Power framewise displacement and DVARS.
"""

from __future__ import annotations

import json
import re
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lakepipe.space import mni152_grid
from lakepipe.tutorial import build_latent_model, write_tutorial
from lakepipe.tutorial.fmriprep import bold_grid, bold_name, write_fmriprep

BASE = {"participants": 1, "subjects": 1, "timepoints": 5, "batch_size": 1, "lnm": False}
TR = 2.0
STRATEGIES = ("simple", "scrubbing", "compcor")
#: seeds at network blobs (MNI mm) and the network whose loading map their seed maps should show
SEEDS = {"DefaultMode": (0, -54, 28), "DorsalAttention": (26, -62, 54)}


@pytest.fixture(scope="module")
def tut(tmp_path_factory):
    return write_tutorial(tmp_path_factory.mktemp("fp") / "t", **BASE, fmriprep=True, fmriprep_subjects=2)


@pytest.fixture(scope="module")
def bolds(tut):
    return sorted(tut.fmriprep.glob("sub-*/func/*_desc-preproc_bold.nii.gz"))


def _load(path) -> nib.Nifti1Image:
    """Read (and decompress) an image once; maskers then work on the in-memory copy."""
    img = nib.load(path)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine, img.header)


def _confounds(bold, strategy):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loads without any warning
        return load_confounds_strategy(str(bold), denoise_strategy=strategy)


def test_names_match_fmriprep(tut, bolds):
    from nilearn.interfaces.bids import parse_bids_filename

    desc = json.loads((tut.fmriprep / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "fMRIPrep"
    expected = set()
    for p in ("01", "02"):
        for run in (1, 2):
            stem = f"sub-{p}_task-rest_run-{run}"
            space = f"{stem}_space-MNI152NLin6Asym"  # 4 mm native resolution: fMRIPrep writes no res
            for suffix in ("desc-preproc_bold.nii.gz", "desc-preproc_bold.json", "desc-brain_mask.nii.gz",
                           "desc-brain_mask.json", "boldref.nii.gz"):  # fmt: skip
                expected.add(f"sub-{p}/func/{space}_{suffix}")
            expected |= {f"sub-{p}/func/{stem}_desc-confounds_timeseries.{e}" for e in ("tsv", "json")}
    found = {p.relative_to(tut.fmriprep).as_posix() for p in tut.fmriprep.rglob("*") if p.is_file()}
    assert found == expected | {"dataset_description.json"}
    assert len(bolds) == 4
    for bold in bolds:
        ent = parse_bids_filename(str(bold))["entities"]
        assert (ent["task"], ent["space"], ent["desc"]) == ("rest", "MNI152NLin6Asym", "preproc")
        assert "res" not in ent
        img = nib.load(bold)
        sidecar = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["RepetitionTime"] == TR == img.header.get_zooms()[3]
        assert img.get_data_dtype() == np.int16 and img.dataobj.slope > 0  # int16 with scaling
        assert img.shape == (46, 55, 46, 120)
        np.testing.assert_allclose(img.affine, bold_grid(4.0).affine)
        mask = nib.load(str(bold).replace("desc-preproc_bold", "desc-brain_mask"))
        assert mask.get_data_dtype() == np.uint8 and np.allclose(mask.affine, img.affine)
    # on the template's 2 mm grid the name carries res-2, as fMRIPrep's MNI152NLin6Asym:res-2 output does
    assert bold_grid(2.0).same_as(mni152_grid(2))
    assert bold_name("01", 1, "2", "desc-preproc_bold.nii.gz") == (
        "sub-01_task-rest_run-1_space-MNI152NLin6Asym_res-2_desc-preproc_bold.nii.gz"
    )
    # fMRIPrep >= 21 confounds columns
    table = pd.read_csv(str(bolds[0]).split("_space-")[0] + "_desc-confounds_timeseries.tsv", sep="\t")
    motion = [f"{a}_{b}" for a in ("trans", "rot") for b in "xyz"]
    for name in motion + ["csf", "white_matter", "global_signal"]:
        for col in (name, f"{name}_derivative1", f"{name}_power2", f"{name}_derivative1_power2"):
            assert col in table.columns, col
    for col in (
        "framewise_displacement",
        "std_dvars",
        "dvars",
        "rmsd",
        "csf_wm",
        "non_steady_state_outlier00",
    ):
        assert col in table.columns, col
    for prefix in ("cosine", "a_comp_cor_", "motion_outlier"):
        assert any(re.fullmatch(rf"{prefix}\d\d", c) for c in table.columns), prefix


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_confounds_load_with_nilearn(bolds, strategy):
    for bold in bolds:
        conf, sample_mask = _confounds(bold, strategy)
        assert conf.shape[0] == 120 and np.isfinite(conf.to_numpy()).all()
        motion = {f"{a}_{b}{s}" for a in ("trans", "rot") for b in "xyz" for s in ("", "_derivative1",
                  "_power2", "_derivative1_power2")}  # fmt: skip
        assert motion <= set(conf.columns)  # every strategy: the 24-parameter motion model
        assert any(c.startswith("cosine") for c in conf.columns)  # high_pass
        assert 0 not in sample_mask  # the non-steady-state volume is always left out
        if strategy == "compcor":
            assert any(c.startswith("a_comp_cor_") for c in conf.columns)
        else:
            assert {"csf", "white_matter"} <= set(conf.columns)
        if strategy == "scrubbing":  # high-motion frames censored
            table = pd.read_csv(str(bold).split("_space-")[0] + "_desc-confounds_timeseries.tsv", sep="\t")
            high = np.flatnonzero(table["framewise_displacement"].fillna(0).to_numpy() > 0.5)
            assert high.size and not set(high) & set(sample_mask)
        else:
            assert len(sample_mask) == 119


def test_confounds_follow_from_the_data(bolds):
    from nilearn.glm.first_level.design_matrix import create_cosine_drift

    for bold in bolds:
        table = pd.read_csv(str(bold).split("_space-")[0] + "_desc-confounds_timeseries.tsv", sep="\t")
        meta = json.loads(
            (bold.parent / (bold.name.split("_space-")[0] + "_desc-confounds_timeseries.json")).read_text()
        )
        # Power FD from the six motion columns: plain loop, rotations as arc length at 50 mm
        params = table[[f"{a}_{b}" for a in ("trans", "rot") for b in "xyz"]].to_numpy()
        fd = [
            sum(abs(params[t, j] - params[t - 1, j]) * (1 if j < 3 else 50) for j in range(6))
            for t in range(1, 120)
        ]
        # values are written with 10 significant digits (relative error <= 5e-10 each): FD from 12 rounded
        # parameters is off by <= 5e-10 * sum of their magnitudes (rotations weighted by 50 mm)
        scale = 2 * (np.abs(params[:, :3]).max() * 3 + 50 * np.abs(params[:, 3:]).max() * 3)
        np.testing.assert_allclose(table["framewise_displacement"][1:], fd, rtol=5e-10, atol=5e-10 * scale)
        assert np.isnan(table["framewise_displacement"][0]) and np.isnan(table["trans_x_derivative1"][0])
        # motion outliers: one column per frame with FD > 0.5 mm or standardised DVARS > 1.5
        flagged = sorted(int(np.argmax(table[c])) for c in table.columns if c.startswith("motion_outlier"))
        high = (table["framewise_displacement"].fillna(0) > 0.5) | (table["std_dvars"].fillna(0) > 1.5)
        assert flagged == list(np.flatnonzero(high))
        # cosine regressors: nilearn's DCT basis (nipype's, which fMRIPrep uses, has one fewer)
        cos = table[sorted(c for c in table.columns if c.startswith("cosine"))].to_numpy()
        ref = create_cosine_drift(1 / 128, np.arange(120) * TR)[:, : cos.shape[1]]
        np.testing.assert_allclose(cos, ref, atol=1e-9)  # 10 significant digits of values <= 0.13
        # tissue means and DVARS from the written BOLD (int16: each value off by <= scl_slope / 2)
        img = nib.load(bold)
        mask = np.asarray(nib.load(str(bold).replace("desc-preproc_bold", "desc-brain_mask")).dataobj) > 0
        x = np.asarray(img.dataobj, dtype=np.float64)[mask].T  # (T, V)
        step = float(img.dataobj.slope)
        np.testing.assert_allclose(table["global_signal"], x.mean(axis=1), atol=step)
        scaled = x * (1000 / np.median(x))
        dvars = np.sqrt((np.diff(scaled, axis=0) ** 2).mean(axis=1))
        # int16 storage moves each value by less than one step (nibabel may truncate): the median (the
        # intensity scale) by a relative step / median, and the mean square difference by about
        # 2 (step * 1000 / median)^2 / 12 (independent errors of variance step^2 / 12), i.e. DVARS by
        # half that relative to DVARS^2; twice that allows for the spread of the mean over the voxels
        k = 1000 / np.median(x)
        bound = step / np.median(x) + 2 * (2 * (step * k) ** 2 / 12) / (2 * dvars.min() ** 2)
        np.testing.assert_allclose(table["dvars"][1:], dvars, rtol=bound)
        # aCompCor: unit-norm components, metadata that nilearn needs, 50 % cumulative variance rule
        acc = sorted(c for c in table.columns if c.startswith("a_comp_cor_"))
        comps = table[acc].to_numpy()[1:]  # the non-steady-state row is 0
        np.testing.assert_allclose(np.linalg.norm(comps, axis=0), 1.0, rtol=1e-8)
        np.testing.assert_allclose(comps.T @ comps, np.eye(len(acc)), atol=1e-8)
        cum = [meta[c]["CumulativeVarianceExplained"] for c in acc]
        assert all(meta[c]["Mask"] == "combined" and meta[c]["Method"] == "aCompCor" for c in acc)
        assert cum[-1] >= 0.5 and (len(cum) == 1 or cum[-2] < 0.5)


def test_cleaning_recovers_the_networks(bolds):
    """Cleaned seed maps match the true network loadings; raw ones much less."""
    from nilearn.image import resample_to_img
    from nilearn.maskers import NiftiMasker, NiftiSpheresMasker

    model = build_latent_model(0)
    names = [n.name for n in model.networks]
    mask = nib.load(str(bolds[0]).replace("desc-preproc_bold", "desc-brain_mask"))  # one grid for all runs
    truth = {}
    for net in SEEDS:
        vol = np.zeros(model.grid.shape, np.float32)
        vol[model.mask] = model.loadings[names.index(net)]
        img = resample_to_img(
            nib.Nifti1Image(vol, model.grid.affine), mask, interpolation="continuous",
            force_resample=True, copy_header=True,
        )  # fmt: skip
        truth[net] = NiftiMasker(mask_img=mask, standardize=None).fit().transform(img).ravel()
    results = {"cleaned": [], "uncleaned": []}
    for bold in bolds:
        img = _load(bold)
        conf, sample_mask = _confounds(bold, "simple")
        for kind in results:
            if kind == "cleaned":
                # the high-pass filter is the strategy's cosine regressors (its "high_pass" part): nilearn's
                # own Butterworth high_pass runs scipy once per voxel (~5 s a run here) for the same effect
                kw = {"detrend": True, "standardize": "zscore_sample", "t_r": TR}
                args = {"confounds": conf, "sample_mask": sample_mask}
            else:
                kw, args = {"standardize": "zscore_sample"}, {}
            x = NiftiMasker(mask_img=mask, **kw).fit().transform(img, **args)
            spheres = NiftiSpheresMasker(list(SEEDS.values()), radius=6.0, mask_img=mask, **kw)
            seeds = spheres.fit().transform(img, **args)
            seeds = (seeds - seeds.mean(axis=0)) / seeds.std(axis=0, ddof=1)
            r = seeds.T @ x / (len(seeds) - 1)  # Pearson r of each seed with every voxel
            for j, net in enumerate(SEEDS):
                results[kind].append(np.corrcoef(r[j], truth[net])[0, 1])
    cleaned, raw = np.array(results["cleaned"]), np.array(results["uncleaned"])
    print(
        f"\nseed map vs true loading map (r over voxels, {len(cleaned)} run x seed): cleaned mean "
        f"{cleaned.mean():.2f} (min {cleaned.min():.2f}), uncleaned mean {raw.mean():.2f} "
        f"(max {raw.max():.2f})"
    )
    assert cleaned.min() > 0.35
    assert raw.mean() < 0.25
    assert (cleaned - raw).min() > 0.15  # cleaning helps in every run and for every seed


def test_deterministic_and_nested(tut, tmp_path):
    # the same subject whatever the number of subjects, byte for byte
    model = build_latent_model(0)
    write_fmriprep(tmp_path / "fp", model, 0, 1, 120, 4.0)
    files = sorted(p.relative_to(tmp_path / "fp") for p in (tmp_path / "fp").rglob("*") if p.is_file())
    assert any(f.name.endswith("_bold.nii.gz") for f in files)
    for rel in files:
        if rel.name != "dataset_description.json":
            assert (tmp_path / "fp" / rel).read_bytes() == (tut.fmriprep / rel).read_bytes(), rel
