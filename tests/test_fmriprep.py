"""fMRIPrep derivatives as a lake connectome, end to end (issue 12).

The tutorial's fMRIPrep-style folder (3 subjects x 2 runs x 60 volumes of 4 mm BOLD with drift, head
motion, physiological noise and their confounds; lakepipe/tutorial/fmriprep.py) is cleaned with
nilearn and ingested on the 2-worker cluster, into a local and an S3 lake, then mapped with FNM.
References are independent of lakepipe: nilearn's ``load_confounds_strategy``, ``NiftiMasker``,
``NiftiSpheresMasker`` and ``resample_img`` for the cleaned series and the seed example,
tests/reference.py (numpy/scipy loops) for the maps, scipy for p and q values, and the tutorial's
latent network maps as the ground truth. Tolerances come from tests/tolerances.py and the float32
storage arithmetic (comments at each).

Most checks run on the BOLD's own 4 mm grid (``--mask`` the fMRIPrep brain mask): nilearn's
resampling onto the 2 mm grid costs ~0.15 s per volume. One run of one subject goes onto the default
target (the MNI152NLin6Asym 2 mm grid and brain mask) for the comparison with the seed example.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from lakepipe.compute.fisher import Z_TOL
from lakepipe.ingest import ingest_connectome
from lakepipe.io.stores import open_derivative
from lakepipe.io.stores.connectomes import open_connectome
from lakepipe.lake import Lake
from lakepipe.methods.common import connectome_info
from lakepipe.methods.fnm import METHOD as FNM
from lakepipe.methods.seeds import sphere_seed
from lakepipe.space import mni152_brain_mask_2mm, mni152_grid
from lakepipe.tutorial import build_latent_model, write_tutorial
from tests import reference, tolerances
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.integration

N_SUBJECTS, N_VOLUMES, TR = 3, 60, 2.0
PARTICIPANTS = [f"{i + 1:02d}" for i in range(N_SUBJECTS)]
#: seeds at network blobs of the tutorial's model (MNI mm) and the network their maps should show
SEEDS = {
    "DefaultMode": (0.0, -54.0, 28.0),
    "DorsalAttention": (26.0, -62.0, 54.0),
    "Visual": (10.0, -88.0, 2.0),
}
RADIUS = 8.0
#: the recipe's cleaning (the strategy's cosine regressors are its high-pass filter: nilearn's own
#: Butterworth filter runs voxel by voxel, ~10 s per 4 mm run here) and no cleaning at all
CLEAN = {"confounds_strategy": "simple", "smoothing_fwhm": 6.0}
UNCLEANED = {"confounds_strategy": "none", "detrend": False, "standardize": False}
U = tolerances.U32


def _quiet():
    """nilearn's warnings about its own future defaults (resampling, dtype) are not the test's."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def sphere_params(names=tuple(SEEDS)) -> dict:
    return {
        "sphere": [",".join(f"{v:g}" for v in SEEDS[n]) for n in names],
        "sphere_name": list(names),
        "radius": RADIUS,
    }


def _link_runs(src: Path, dst: Path, keep) -> Path:
    """A derivatives folder of symbolic links to the runs of ``src`` for which ``keep(participant,
    run)`` holds (all companions of a run: BOLD, sidecar, masks, confounds)."""
    dst.mkdir(parents=True)
    shutil.copy(src / "dataset_description.json", dst)
    for f in sorted(src.glob("sub-*/func/*")):
        participant = f.name.split("_")[0][4:]
        run = int(f.name.split("_run-")[1].split("_")[0])
        if keep(participant, run):
            (dst / f.parent.relative_to(src)).mkdir(parents=True, exist_ok=True)
            os.symlink(f, dst / f.relative_to(src))
    return dst


# ------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def fp(tmp_path_factory) -> Path:
    tut = write_tutorial(
        tmp_path_factory.mktemp("fmriprep") / "t",
        participants=1,
        subjects=1,
        timepoints=5,
        batch_size=1,
        lnm=False,
        parcel_timeseries=False,
        fmriprep=True,
        fmriprep_subjects=N_SUBJECTS,
        fmriprep_timepoints=N_VOLUMES,
    )
    return tut.fmriprep


@pytest.fixture(scope="module")
def mask4(fp) -> Path:
    """fMRIPrep's brain mask of the runs (one 4 mm grid and mask for all of them)."""
    return fp / "sub-01" / "func" / "sub-01_task-rest_run-1_space-MNI152NLin6Asym_desc-brain_mask.nii.gz"


@pytest.fixture(scope="module")
def uneven(fp, tmp_path_factory) -> Path:
    """The folder without sub-03's second run: participants with 2, 2 and 1 runs."""
    return _link_runs(fp, tmp_path_factory.mktemp("uneven") / "fp", lambda p, r: not (p == "03" and r == 2))


def _bold(folder: Path, participant: str, run: int) -> Path:
    return next(
        folder.glob(
            f"sub-{participant}/func/sub-{participant}_task-rest_run-{run}_*_desc-preproc_bold.nii.gz"
        )
    )


@pytest.fixture(scope="module")
def nilearn_runs(fp, mask4) -> dict:
    """Each run cleaned by the recipe itself: ``load_confounds_strategy`` + ``NiftiMasker`` with the
    options of the ``clean`` connectome (float64, nilearn's default for the int16 files)."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiMasker

    out = {}
    ctx = _quiet()
    try:
        for p in PARTICIPANTS:
            for run in (1, 2):
                bold = str(_bold(fp, p, run))
                conf, sample_mask = load_confounds_strategy(bold, denoise_strategy="simple")
                masker = NiftiMasker(
                    mask_img=str(mask4), smoothing_fwhm=6.0, detrend=True, standardize="zscore_sample", t_r=TR
                )
                out[p, run] = masker.fit_transform(bold, confounds=conf, sample_mask=sample_mask)
    finally:
        ctx.__exit__(None, None, None)
    return out


@pytest.fixture(scope="module")
def truth(mask4) -> dict:
    """The tutorial model's loading map of each seed's network on the 4 mm in-mask voxels."""
    from nilearn.image import resample_to_img

    model = build_latent_model(0)
    names = [n.name for n in model.networks]
    mask = nib.load(str(mask4))
    inside = np.asarray(mask.dataobj) > 0
    out = {}
    for net in list(SEEDS) + ["Somatomotor"]:
        vol = np.zeros(model.grid.shape, np.float32)
        vol[model.mask] = model.loadings[names.index(net)]
        img = resample_to_img(
            nib.Nifti1Image(vol, model.grid.affine), mask, interpolation="continuous",
            force_resample=True, copy_header=True,
        )  # fmt: skip
        out[net] = np.asarray(img.dataobj)[inside]  # C order, the connectome's voxel order
    return out


# ------------------------------------------------------------------------------------- the lakes

CONNECTOMES = {
    "clean": (CLEAN, "fp"),
    "uncleaned": (UNCLEANED, "fp"),
    "runs": ({**CLEAN, "runs": "average"}, "uneven"),
}


@pytest.fixture(scope="module")
def local(tmp_path_factory, fp, uneven, mask4, dask_client):
    """A local lake with three connectomes of the folder, ingested on the 2-worker cluster: cleaned
    (runs concatenated), not cleaned, and cleaned with runs kept apart (from ``uneven``)."""
    lake = Lake(str(tmp_path_factory.mktemp("fplake") / "lake"))
    folders = {"fp": fp, "uneven": uneven}
    results = {}
    with lake.run_context("test ingest", client=dask_client) as run:
        for name, (opts, folder) in CONNECTOMES.items():
            results[name] = ingest_connectome(
                lake, folders[folder], name=name, source_format="fmriprep", mask=str(mask4), run=run, **opts
            )
    return lake, results


def _series(ds, row: int) -> np.ndarray:
    """Raw series of one stored row, as the store defines them: ``timeseries * scale + mean`` over
    the row's ``n_valid`` time points (float64)."""
    n = int(ds["n_valid"].values[row])
    return (
        ds["timeseries"].values[row, :n].astype(np.float64) * ds["scale"].values[row] + ds["mean"].values[row]
    )


@pytest.fixture(scope="module")
def stored(local) -> dict:
    lake, _ = local
    return {name: open_connectome(lake.url, name).load() for name in CONNECTOMES}


@pytest.fixture(scope="module")
def maps(local, dask_client) -> dict:
    """FNM with per-subject maps of the two seeds on each connectome (2-worker cluster)."""
    lake, _ = local
    out = {}
    for name in CONNECTOMES:
        res = lake.run("fnm", connectome=name, per_subject=True, client=dask_client, **sphere_params())
        assert res.store and len(res.computed) == len(SEEDS), res.summary()
        out[name] = open_derivative(res.store).load()
    return out


def _sphere_columns(ds) -> list[np.ndarray]:
    """Each seed's connectome voxel columns as NiftiSpheresMasker selects them (tests/reference.py)."""
    grid = ds.attrs["grid"]
    ijk, affine, shape = ds["ijk"].values, np.asarray(grid["affine"]), tuple(grid["shape"])
    return [reference.sphere_voxels_nilearn(SEEDS[n], RADIUS, ijk, affine, shape)[0] for n in SEEDS]


def _z_bound(n_time: int, rmax: np.ndarray, dr: float, z: np.ndarray) -> np.ndarray:
    """|pipeline z - exact z| of one subject (or a mean of such): tests/tolerances.py's bound from the
    float32 correlation, plus the Fisher kernel's own |dz| <= Z_TOL, plus the float32 rounding of the
    stored map."""
    return tolerances.z_error(n_time, rmax, dr) + Z_TOL + U * np.abs(z)


@pytest.fixture(scope="module")
def expected(stored) -> dict:
    """Reference maps (tests/reference.py) of the seeds on the stored series: the whole group, and
    each stored row on its own, with their bounds."""
    out = {}
    cols = _sphere_columns(stored["clean"])  # one grid and mask for all three
    for name, ds in stored.items():
        assert np.array_equal(ds["ijk"].values, stored["clean"]["ijk"].values)
        seeds = [(c, None) for c in cols]
        rows = [_series(ds, i) for i in range(ds.sizes["subject"])]
        per_row = []
        for s in rows:
            maps, dr = tolerances.reference_maps(s[None], seeds, s.shape[0])
            per_row.append({"maps": maps, "dr": dr, "n_time": s.shape[0]})
        group = None
        if len({s.shape[0] for s in rows}) == 1:
            maps, dr = tolerances.reference_maps(np.stack(rows), seeds, rows[0].shape[0])
            group = {"maps": maps, "dr": dr, "n_time": rows[0].shape[0]}
        out[name] = {"columns": cols, "rows": per_row, "group": group}
    return out


# ----------------------------------------------------------------------------------- 1. ingest


def test_ingest_on_the_cluster_records_the_cleaning(local, stored, fp, mask4):
    lake, results = local
    for name, (opts, _) in CONNECTOMES.items():
        ds = stored[name]
        cleaning = ds.attrs["options"]["cleaning"]
        assert cleaning["strategy"] == opts["confounds_strategy"], name
        assert cleaning["detrend"] is opts.get("detrend", True)
        assert cleaning["standardize"] == opts.get("standardize", "zscore_sample")
        assert cleaning["smoothing_fwhm"] == opts.get("smoothing_fwhm")
        assert ds.attrs["options"]["runs"] == opts.get("runs", "concat")
        rows = lake.catalog.query(kind="connectome", connectome=name)
        assert len(rows) == ds.sizes["subject"] == len(results[name].written)
        for params in rows["params"]:  # each subject's record carries the options (its content hash)
            params = json.loads(params) if isinstance(params, str) else params
            assert params["options"]["cleaning"] == cleaning
    # runs concatenated: one row per participant, 2 x 59 volumes (the non-steady-state volume of each
    # run is left out by every strategy's sample mask); kept apart: one row per run, ``group`` its
    # participant
    clean, runs = stored["clean"], stored["runs"]
    assert list(clean["subject"].values) == PARTICIPANTS and list(clean["group"].values) == PARTICIPANTS
    assert clean["n_valid"].values.tolist() == [118] * 3 and clean.attrs["n_time"] == 120
    assert list(runs["group"].values) == ["01", "01", "02", "02", "03"]
    assert runs["n_valid"].values.tolist() == [59] * 5
    assert len(set(runs["subject"].values)) == 5
    # the uncleaned connectome keeps every volume
    assert stored["uncleaned"]["n_valid"].values.tolist() == [120] * 3
    # a re-run with the same options adds nothing; other options under the same name are refused
    again = ingest_connectome(lake, fp, name="clean", source_format="fmriprep", mask=str(mask4), **CLEAN)
    assert again.written == [] and sorted(again.skipped) == PARTICIPANTS
    from lakepipe.errors import InputError

    with pytest.raises(InputError, match="other options"):
        ingest_connectome(lake, fp, name="clean", source_format="fmriprep", mask=str(mask4), **UNCLEANED)


def test_cleaned_series_equal_nilearn(stored, nilearn_runs):
    """Each subject's stored series is the recipe's runs, cleaned each, concatenated (and each run
    its own row when runs are kept apart)."""

    def check(got, want, what):
        # lakepipe runs the same float64 nilearn code on the same file, then stores float32: the
        # series rounded (u |x|), centred and scaled in float64, unit series, scale and mean rounded
        # (u each): |raw - x| <= u (|x| + 2 |x - mean| + |mean|) <= 6 u max|x| per voxel; 1e-9 more for
        # another BLAS's float64 regression (nilearn's lstsq). The 1e-5 holds a fortiori.
        assert got.shape == want.shape, what
        bound = (6 * U + 1e-9) * np.abs(want).max(axis=0)
        err = np.abs(got - want)
        assert np.all(err <= bound), (what, float((err / bound).max()))

    for i, p in enumerate(PARTICIPANTS):
        check(_series(stored["clean"], i), np.concatenate([nilearn_runs[p, 1], nilearn_runs[p, 2]]), p)
    runs = stored["runs"]
    for i, sid in enumerate(runs["subject"].values):
        p, run = (
            str(runs["group"].values[i]),
            1 + list(runs["group"].values[:i]).count(runs["group"].values[i]),
        )
        check(_series(runs, i), nilearn_runs[p, run], sid)


def test_float_runs_are_read_once_and_cleaned_as_nilearn_cleans_the_file(fp, mask4, tmp_path):
    """Float BOLD is read once (checked for NaN, then handed to the masker in memory): the series
    equal NiftiMasker's on the same file read from disk, within the bound above."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiMasker

    folder = _one_subject(fp, tmp_path / "fp")
    for run in (1, 2):
        bold = _replace(_bold(folder, "01", run))
        img = nib.load(str(bold))
        hdr = img.header.copy()
        hdr.set_data_dtype(np.float32)
        data = np.asarray(img.dataobj, dtype=np.float32)
        bold.unlink()
        nib.save(nib.Nifti1Image(data, img.affine, hdr), str(bold))
    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, folder, name="float", source_format="fmriprep", mask=str(mask4), **CLEAN)
    ds = lake.open_connectome("float")
    want = []
    ctx = _quiet()
    try:
        for run in (1, 2):
            bold = str(_bold(folder, "01", run))
            conf, sample_mask = load_confounds_strategy(bold, denoise_strategy="simple")
            masker = NiftiMasker(
                mask_img=str(mask4), smoothing_fwhm=6.0, detrend=True, standardize="zscore_sample", t_r=TR
            )
            want.append(masker.fit_transform(bold, confounds=conf, sample_mask=sample_mask))
    finally:
        ctx.__exit__(None, None, None)
    want_all = np.concatenate(want)
    got = _series(ds, 0)
    # as above: the stored float32 rounding (6 u max|x| per voxel) plus 1e-9 for another BLAS;
    # nilearn cleans float32 data in float32 either way, from memory or from the file
    bound = (6 * U + 1e-9) * np.abs(want_all).max(axis=0)
    assert got.shape == want_all.shape
    assert np.all(np.abs(got - want_all) <= bound), float((np.abs(got - want_all) / bound).max())


# ------------------------------------------------------------------------------- 2. the networks


def test_cleaning_shows_the_networks(maps, truth):
    """Seed in a network: the cleaned group map is that network's map; without cleaning it is not.

    Drift (a few % of the baseline, its own smooth spatial field), motion (baseline gradients: the
    brain's edges) and physiological noise (CSF, white matter) are several times the network signal
    (~1 % of the baseline) and none has the networks' spatial pattern, so the uncleaned maps are
    dominated by them: measured r ~0.1 with the truth. Cleaned, the map is the network's up to noise
    (3 subjects x 118 volumes: r ~0.7 measured). The thresholds leave that margin either way: the
    cleaned map must explain over a quarter of the truth's spatial variance (r > 0.5) and correlate
    with it more than with any other network's map, the uncleaned one under a tenth (r < 0.3), and
    cleaning must gain 0.3.
    """
    keys = list(maps["clean"]["seed"].values)
    report = {}
    for net in SEEDS:
        j = keys.index(f"sphere-{net}")
        clean = np.corrcoef(maps["clean"]["zmap"].values[j], truth[net])[0, 1]
        raw = np.corrcoef(maps["uncleaned"]["zmap"].values[j], truth[net])[0, 1]
        others = [np.corrcoef(maps["clean"]["zmap"].values[j], truth[o])[0, 1] for o in truth if o != net]
        report[net] = (round(clean, 3), round(raw, 3), [round(o, 3) for o in others])
        assert clean > 0.5 and raw < 0.3 and clean - raw > 0.3, (net, clean, raw)
        assert clean > max(others), (net, clean, others)
    print("\nr(group zmap, true network map): (cleaned, uncleaned, cleaned vs other networks)", report)


# ----------------------------------------------------------------------------------- 3. the maps


def _assert_group_maps(ds, exp, n_sub: int, what: str) -> None:
    """Group maps of every seed against the reference maps, within the float32 bounds."""
    keys = list(ds["seed"].values)
    g = exp["group"]
    for j, net in enumerate(SEEDS):
        i = keys.index(f"sphere-{net}")
        ref, dr = g["maps"][j], g["dr"][j]
        b = tolerances.fnm_bounds(ref, dr, g["n_time"], n_sub)
        b["zmap"] = b["zmap"] + Z_TOL
        b["rmap"] = b["rmap"] + Z_TOL
        for stat in ("zmap", "rmap", "tmap"):
            err = np.abs(ds[stat].values[i].astype(np.float64) - ref[stat])
            assert np.all(err <= b[stat]), (what, net, stat, float((err / b[stat]).max()))
        # p from Student t with n - 1 df, given the pipeline's own t (rounded to float32: |d log p / d
        # log t| <= df + 1), and its p table (relative 1e-11)
        t = ds["tmap"].values[i].astype(np.float64)
        np.testing.assert_allclose(
            ds["pmap"].values[i],
            2 * stats.t.sf(np.abs(t), n_sub - 1),
            rtol=(n_sub + 1) * U + 1e-11,
            atol=1e-12,
        )
        # q: scipy's Benjamini-Hochberg of the stored p map over the seed's voxels, exactly
        q = stats.false_discovery_control(ds["pmap"].values[i].astype(np.float64), method="bh")
        np.testing.assert_array_equal(ds["pfdrmap"].values[i], q.astype(np.float32))


def test_group_maps_equal_reference(maps, expected):
    for name in ("clean", "uncleaned"):
        assert maps[name].attrs["n_subjects"] == N_SUBJECTS
        _assert_group_maps(maps[name], expected[name], N_SUBJECTS, name)


def test_per_subject_maps(maps, expected, local, tmp_path, capsys):
    """zmap_subjects: each subject's own z map (the reference's single-subject map); their mean is
    the group zmap; rmap_subjects is their tanh; collect and the 4D export give them back."""
    lake, _ = local
    ds, exp = maps["clean"], expected["clean"]
    keys = list(ds["seed"].values)
    assert list(ds["subject"].values) == PARTICIPANTS
    assert ds["zmap_subjects"].shape == (len(SEEDS), N_SUBJECTS, ds.sizes["voxel"])
    for j, net in enumerate(SEEDS):
        i = keys.index(f"sphere-{net}")
        zs = ds["zmap_subjects"].values[i].astype(np.float64)
        for s, row in enumerate(exp["rows"]):
            ref = row["maps"][j]
            bound = _z_bound(row["n_time"], ref["rmax"], row["dr"][j], ref["zmap"])
            assert np.all(np.abs(zs[s] - ref["zmap"]) <= bound), (net, s)
        # the stored subject maps are float32 roundings of the float64 z whose mean (float64, then
        # rounded) is the stored zmap: |mean_s zs - zmap| <= u (mean_s |zs| + |zmap|) (+ float64 sums)
        zmap = ds["zmap"].values[i].astype(np.float64)
        bound = U * (np.abs(zs).mean(axis=0) + np.abs(zmap)) + 1e-12
        assert np.all(np.abs(zs.mean(axis=0) - zmap) <= bound), net
        # tanh in float32 of the float32 z: within a few ulp of r (numpy's float32 tanh: <= 2 ulp)
        rs = ds["rmap_subjects"].values[i].astype(np.float64)
        np.testing.assert_allclose(rs, np.tanh(zs), rtol=4 * U, atol=4 * U * U)
    # collect: (seed, subject, voxel)
    got = lake.collect("fnm", statistic="zmap_subjects", connectome="clean").compute(scheduler="threads")
    assert got.dims[0] == "seed" and got.sizes["subject"] == N_SUBJECTS
    for k, key in enumerate(got["seed"].values):
        np.testing.assert_array_equal(got.values[k], ds["zmap_subjects"].values[keys.index(key)])
    # the command line's export: one 4D NIfTI per seed, one volume per subject, in the sidecar's order
    from lakepipe.cli.main import main

    out = tmp_path / "export"
    argv = ["-q", "--lake", lake.url, "export", "--method", "fnm", "--connectome", "clean"]
    assert main(argv + ["--statistic", "zmap_subjects", "--out", str(out)]) == 0, capsys.readouterr().err
    files = sorted(out.rglob("*desc-zmapsubjects_statmap.nii.gz"))
    assert len(files) == len(SEEDS)
    ijk = ds["ijk"].values
    for path in files:
        meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert meta["VolumeSubjects"] == PARTICIPANTS and meta["Statistic"] == "zmap_subjects"
        key = next(k for k in keys if k.split("-", 1)[1] in path.name)
        img = nib.load(str(path))
        assert img.shape == (*ds.attrs["grid"]["shape"], N_SUBJECTS)
        np.testing.assert_allclose(img.affine, np.asarray(ds.attrs["grid"]["affine"]))
        vol = np.asarray(img.dataobj)
        for s in range(N_SUBJECTS):
            np.testing.assert_array_equal(
                vol[..., s][tuple(ijk.T)], ds["zmap_subjects"].values[keys.index(key), s]
            )


def test_runs_concatenated_or_averaged(maps, expected, stored):
    """Runs kept apart: each participant counts once, with the mean of its runs' z maps (Lead-DBS);
    sub-03 has one run, so that differs from the mean over runs."""
    ds, exp = maps["runs"], expected["runs"]
    groups = list(stored["runs"]["group"].values)
    assert ds.attrs["n_subjects"] == N_SUBJECTS and list(ds["subject"].values) == PARTICIPANTS
    keys = list(ds["seed"].values)
    for j, net in enumerate(SEEDS):
        i = keys.index(f"sphere-{net}")
        rows = exp["rows"]
        per_p, bounds = [], []
        for p in PARTICIPANTS:
            mine = [k for k, g in enumerate(groups) if g == p]
            z = np.mean([rows[k]["maps"][j]["zmap"] for k in mine], axis=0)
            # the mean of the runs' z moves by at most the largest of their bounds
            b = np.max(
                [_z_bound(rows[k]["n_time"], rows[k]["maps"][j]["rmax"], rows[k]["dr"][j], z) for k in mine],
                axis=0,
            )
            per_p.append(z)
            bounds.append(b)
        per_p, bounds = np.array(per_p), np.array(bounds)
        zs = ds["zmap_subjects"].values[i].astype(np.float64)
        assert np.all(np.abs(zs - per_p) <= bounds), net
        zmap = per_p.mean(axis=0)
        assert np.all(np.abs(ds["zmap"].values[i] - zmap) <= bounds.max(axis=0) + U * np.abs(zmap)), net
        # one-sample t over the 3 participants (ddof 1), from tolerances.t_error with the largest
        # per-run bound
        rmax = np.max([r["maps"][j]["rmax"] for r in rows], axis=0)
        dr = max(r["dr"][j] for r in rows)
        zsd = per_p.std(axis=0, ddof=1)
        t_ref = zmap / (zsd / np.sqrt(N_SUBJECTS))
        bt = tolerances.t_error(59, N_SUBJECTS, zmap, zsd, rmax, dr + Z_TOL)
        ok = np.isfinite(bt)
        assert ok.mean() > 0.99
        assert np.all(np.abs(ds["tmap"].values[i] - t_ref)[ok] <= bt[ok]), net
        # the mean over the 5 runs is another map (sub-03's single run would count as much as a run of
        # the others): more than the bounds apart somewhere
        all_runs = np.mean([r["maps"][j]["zmap"] for r in rows], axis=0)
        assert np.abs(all_runs - zmap).max() > 100 * bounds.max(), net
    # concatenated runs are one series per participant: its z map is not the mean of its runs' maps
    cat = maps["clean"]["zmap_subjects"].values[
        list(maps["clean"]["seed"].values).index("sphere-DefaultMode"), 0
    ]
    runs01 = ds["zmap_subjects"].values[keys.index("sphere-DefaultMode"), 0]
    assert np.abs(cat - runs01).max() > 0.01


# ------------------------------------------------------------- 4. the nilearn seed example, 2 mm

#: the seed of nilearn's seed-to-voxel example (posterior cingulate, 8 mm), and a 3 mm sphere whose
#: float32 seed sum is short enough for a derived bound under the issue's 1e-5
RECIPE_SPHERES = [("pcc8", 0.0, -52.0, 18.0, 8.0), ("pcc3", 0.0, -52.0, 18.0, 3.0)]
#: the recipe's confounds; standardize off: z-scoring does not commute with averaging a sphere's
#: voxels (NiftiSpheresMasker averages first)
RECIPE = {"confounds_strategy": "simple", "standardize": False}
#: volumes of the run resampled onto the 2 mm grid (nilearn's cubic spline: ~0.15 s per volume); 47
#: are kept (the non-steady-state one is left out: the store pads the subject), 19 degrees of freedom
#: left by the 28 confounds and the linear trend
SHORT = 48


def _short_run(fp: Path, dst: Path, n: int) -> Path:
    """sub-01's first run cut to its first ``n`` volumes (BOLD and confounds rows), as a folder."""
    folder = _link_runs(fp, dst, lambda p, r: p == "01" and r == 1)
    bold = _bold(folder, "01", 1)
    img = nib.load(str(bold.resolve()))
    bold.unlink()
    nib.save(img.slicer[..., :n], str(bold))
    conf = next(folder.glob("sub-01/func/*_desc-confounds_timeseries.tsv"))
    lines = conf.resolve().read_text().splitlines(keepends=True)
    conf.unlink()
    conf.write_text("".join(lines[: n + 1]))
    return folder


def _pearson(seed: np.ndarray, x: np.ndarray) -> np.ndarray:
    sc = seed - seed.mean()
    xc = x - x.mean(axis=0)
    den = np.sqrt((sc**2).sum() * (xc**2).sum(axis=0))
    return np.where(den > 0, sc @ xc / np.where(den > 0, den, 1), 0.0)


def test_seed_example_on_the_2mm_target(fp, tmp_path):
    """One run onto the default target (MNI152NLin6Asym 2 mm grid and brain mask): the stored series
    is NiftiMasker's, and the subject's r map of a sphere seed is NiftiSpheresMasker's seed
    correlated with NiftiMasker's voxels (the nilearn seed-to-voxel example)."""
    from nilearn.image import load_img, resample_img
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiMasker, NiftiSpheresMasker

    one = _short_run(fp, tmp_path / "one", SHORT)
    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, one, name="one", source_format="fmriprep", **RECIPE)
    table = tmp_path / "spheres.tsv"
    table.write_text(
        "name\tx\ty\tz\tradius\n" + "".join("\t".join(map(str, s)) + "\n" for s in RECIPE_SPHERES)
    )
    res = lake.run("fnm", connectome="one", spheres=str(table), per_subject=True)
    ds = open_derivative(res.store).load()
    con = open_connectome(lake.url, "one").load()

    bold = str(_bold(one, "01", 1))
    grid, mask = mni152_grid(2), mni152_brain_mask_2mm()
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), grid.affine)
    kw = {"detrend": True, "standardize": None, "t_r": TR}
    ctx = _quiet()
    try:
        conf, sample_mask = load_confounds_strategy(bold, denoise_strategy="simple")
        # the BOLD on the target grid as lakepipe's default resamples it (nilearn's resample_img,
        # linear), once for both maskers
        img = resample_img(
            load_img(bold), interpolation="linear", target_shape=grid.shape, target_affine=grid.affine,
            force_resample=True, copy_header=True,
        )  # fmt: skip
        x = NiftiMasker(mask_img=mask_img, **kw).fit_transform(img, confounds=conf, sample_mask=sample_mask)
        intensity = NiftiMasker(mask_img=mask_img).fit_transform(img).mean(axis=0)
        seeds = {
            name: NiftiSpheresMasker([(sx, sy, sz)], radius=r, mask_img=mask_img, **kw).fit_transform(
                img, confounds=conf, sample_mask=sample_mask
            )[:, 0]
            for name, sx, sy, sz, r in RECIPE_SPHERES
        }
    finally:
        ctx.__exit__(None, None, None)

    # the cleaned series (bound: test_cleaned_series_equal_nilearn)
    assert con["n_valid"].values.tolist() == [len(sample_mask)] and con.attrs["n_time"] == SHORT
    assert len(sample_mask) < SHORT and len(sample_mask) - conf.shape[1] - 2 >= 10  # not saturated
    assert np.array_equal(con["ijk"].values, np.argwhere(mask))
    got = _series(con, 0)
    assert np.all(np.abs(got - x) <= (6 * U + 1e-9) * np.abs(x).max(axis=0))
    assert not con["timeseries"].values[0, len(sample_mask) :].any()  # zero past the subject's points

    # the r maps, on the voxels inside the acquired brain: the template mask also holds voxels the 4 mm
    # BOLD does not cover, whose resampled series are zero or a fraction of an edge voxel's
    acquired = intensity > 0.1 * np.median(intensity[intensity > 0])
    assert acquired.mean() > 0.95
    n_time = len(sample_mask)
    keys = list(ds["seed"].values)
    info = connectome_info(lake, "one")
    for name, sx, sy, sz, r in RECIPE_SPHERES:
        cols = np.sort(FNM.seed_voxels([sphere_seed(sx, sy, sz, r)], info)[0].positions)
        # lakepipe's sphere has NiftiSpheresMasker's voxels: cleaning is linear (standardize off), so
        # nilearn's cleaned sphere mean is the mean of the cleaned voxels up to float64 rounding; one
        # voxel more or less would move it by ~1/K
        mean = x[:, cols].mean(axis=1)
        assert np.abs(seeds[name] - mean).max() <= 1e-9 * np.abs(mean).max(), name
        r_ref = _pearson(seeds[name], x)
        r_got = ds["rmap_subjects"].values[keys.index(f"sphere-{name}"), 0].astype(np.float64)
        # float32 correlation of the stored unit series (tests/tolerances.py: T + 2 products, the
        # K-voxel seed sum), the stored series being the float32 cast of x (each vector moves <= u: r by
        # <= 4 u), the Fisher kernel (|dz| <= Z_TOL, r moves less) and tanh/z rounded to float32 (3 u)
        bound = tolerances.r_error(n_time, len(cols), tolerances.seed_condition(x[None], cols, None))
        bound += 4 * U + Z_TOL + 3 * U
        err = np.abs(r_got - r_ref)[acquired]
        print(f"\n{name}: {len(cols)} voxels, max |r - nilearn r| {err.max():.2e} (bound {bound:.2e})")
        assert err.max() <= bound, (name, err.max(), bound)
        if name == "pcc3":
            assert bound < 1e-5  # the figure, as a derived bound
        # one subject: the group r map is the subject's (tanh of the float64 or of the float32 z)
        group = ds["rmap"].values[keys.index(f"sphere-{name}")].astype(np.float64)
        np.testing.assert_allclose(group, r_got, rtol=4 * U, atol=4 * U * U)


@pytest.mark.filterwarnings("ignore:NaNs or infinite values are present:RuntimeWarning")  # nilearn's
@pytest.mark.parametrize(
    ("interpolation", "nan_outside"),
    [("linear", False), ("continuous", False), ("nearest", False), ("linear", True)],
)
def test_resampling_is_nilearns_for_each_interpolation(fp, tmp_path, interpolation, nan_outside):
    """``interpolation`` onto another grid (a 4 mm target mask half a voxel off the BOLD's lattice,
    where the spline costs little):
    ``continuous`` is NiftiMasker's own resampling of the file (its default, cubic spline), ``linear``
    (the default) and ``nearest`` are nilearn's resample_img before the same masker, and the choice
    is recorded with the connectome. ``nan_outside``: a float run with a NaN in a corner, far from the
    brain (accepted; nilearn fills it before it interpolates, as the sparse product could not)."""
    from nilearn.image import load_img, resample_img
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiMasker

    one = _short_run(fp, tmp_path / "one", SHORT)
    if nan_outside:
        path = _bold(one, "01", 1)
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        data[0, 0, 0, 5] = np.nan
        header = img.header.copy()
        header.set_data_dtype(np.float32)
        path.unlink()
        nib.save(nib.Nifti1Image(data, img.affine, header), str(path))
    grid2 = mni152_grid(2)
    coarse = np.array(grid2.affine, float)
    coarse[:3, :3] *= 2  # 4 mm voxels whose centres sit between the BOLD's (its corner: the 2 mm grid's)
    coarse[:3, 3] += 2.0
    shape4 = tuple(int(n) for n in np.ceil(np.asarray(grid2.shape) / 2))
    mask4_shifted = resample_img(
        nib.Nifti1Image(mni152_brain_mask_2mm().astype(np.uint8), grid2.affine),
        target_affine=coarse, target_shape=shape4, interpolation="nearest",
        force_resample=True, copy_header=True,
    )  # fmt: skip
    mask_path = tmp_path / "mask4_shifted.nii.gz"
    nib.save(mask4_shifted, str(mask_path))
    lake = Lake(str(tmp_path / "lake"))
    options = {**RECIPE, "mask": str(mask_path)}
    if interpolation != "linear":
        options["interpolation"] = interpolation
    ingest_connectome(lake, one, name="one", source_format="fmriprep", **options)
    con = open_connectome(lake.url, "one").load()

    bold = str(_bold(one, "01", 1))
    conf, sample_mask = load_confounds_strategy(bold, denoise_strategy="simple")
    masker = NiftiMasker(mask_img=mask4_shifted, detrend=True, standardize=None, t_r=TR)
    ctx = _quiet()
    try:
        if interpolation == "continuous":  # NiftiMasker resamples the file itself
            x = masker.fit_transform(bold, confounds=conf, sample_mask=sample_mask)
        else:
            img = resample_img(
                load_img(bold), interpolation=interpolation, target_shape=shape4, target_affine=coarse,
                force_resample=True, copy_header=True,
            )  # fmt: skip
            x = masker.fit_transform(img, confounds=conf, sample_mask=sample_mask)
    finally:
        ctx.__exit__(None, None, None)
    # the stored float32 rounding (bound: test_cleaned_series_equal_nilearn)
    got = _series(con, 0)
    assert got.shape == x.shape and np.abs(x).max() > 0
    assert np.all(np.abs(got - x) <= (6 * U + 1e-9) * np.abs(x).max(axis=0))
    recorded = con.attrs["options"]
    assert recorded["cleaning"]["interpolation"] == interpolation
    line = f"nilearn resample_img ({interpolation}) onto the target grid"
    if interpolation == "linear":
        line += ", as one sparse trilinear product per run of finite values"
    assert recorded["resampling"] == line


# -------------------------------------------------------------------------------------- 5. S3


def test_s3_lake_on_the_cluster(s3_server, dask_client, fp, mask4, tmp_path, stored, maps, expected):
    """The same connectome into a lake on the S3-protocol server, on the 2-worker cluster (each task
    writes its row to S3); the same maps."""
    lake = Lake(f"s3://lake/fp-{uuid.uuid4().hex[:8]}", catalog=f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    with lake.run_context("test ingest s3", client=dask_client) as run:
        res = ingest_connectome(
            lake, fp, name="clean", source_format="fmriprep", mask=str(mask4), run=run, **CLEAN
        )
    assert sorted(res.written) == PARTICIPANTS
    remote = open_connectome(lake.url, "clean").load()
    local = stored["clean"]
    assert remote.attrs["options"] == local.attrs["options"]
    for i in range(N_SUBJECTS):
        # both within 6 u (+ float64 regression rounding) of the same nilearn series
        a, b = _series(remote, i), _series(local, i)
        assert np.all(np.abs(a - b) <= 2 * (6 * U + 1e-9) * np.abs(b).max(axis=0))
    fnm = lake.run("fnm", connectome="clean", per_subject=True, client=dask_client, **sphere_params())
    ds = open_derivative(fnm.store).load()
    _assert_group_maps(ds, expected["clean"], N_SUBJECTS, "s3")
    assert lake.catalog.count(method="fnm") == len(SEEDS) * 7  # 5 group maps + 2 subject maps per seed
    # each subject's map: both lakes within the bound of the exact map, so within twice it of each other
    keys, lkeys = list(ds["seed"].values), list(maps["clean"]["seed"].values)
    for j, net in enumerate(SEEDS):
        for s, row in enumerate(expected["clean"]["rows"]):
            ref = row["maps"][j]
            bound = 2 * _z_bound(row["n_time"], ref["rmax"], row["dr"][j], ref["zmap"])
            a = ds["zmap_subjects"].values[keys.index(f"sphere-{net}"), s].astype(np.float64)
            b = maps["clean"]["zmap_subjects"].values[lkeys.index(f"sphere-{net}"), s]
            assert np.all(np.abs(a - b) <= bound), (net, s)


# ------------------------------------------------------------------- 6. object storage failing

#: a log record of the command line (``-v``): everything else on stderr is the error report
LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")
FAULT_LAKE, FAULT_NAME = "s3://faults/lake", "faulty"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultServer:
    """An S3-protocol server (moto) on a fixed port that can be stopped and started again: moto keeps
    its buckets in this process, so what was written before the stop is there after the start."""

    def __init__(self):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    import logging

    import boto3

    werkzeug = logging.getLogger("werkzeug")  # one line per request otherwise
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)
    server = FaultServer()
    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(Bucket="faults")
    server.catalog = tmp_path_factory.mktemp("faults") / "catalog.sqlite"
    # the command lines: a local cluster of their own, this server, one attempt per request (botocore
    # would otherwise retry each with back-off for ~10 s before the same failure)
    server.env = {
        "LAKEPIPE_SCHEDULER": "",
        "LAKEPIPE_S3_ENDPOINT": server.endpoint,
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "PYTHONUNBUFFERED": "1",
    }
    server.base = ["-v", "--lake", FAULT_LAKE, "--catalog", f"sqlite:///{server.catalog}"]
    yield server
    server.stop()
    werkzeug.setLevel(level)


def _interrupted(server: FaultServer, args: list[str], trigger: str) -> tuple[int, str]:
    """Run the command line, stop the server when ``trigger`` appears in its log, let the command end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakepipe.cli.main", *server.base, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **server.env},
        cwd=ROOT,
    )
    seen, stopped = [], False
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if trigger in line:
            server.stop()
            stopped = True
            break
    try:
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + rest
    assert stopped, err[-3000:]
    return proc.returncode, err


def _assert_one_line_error(rc: int, err: str, server: FaultServer) -> None:
    report = [ln for ln in err.splitlines() if ln.strip() and not LOG_RECORD.match(ln)]
    assert rc != 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(report) == 1 and report[0].startswith("lakepipe: error:"), report
    assert f"127.0.0.1:{server.port}" in report[0] or "s3://faults" in report[0], report  # names the URL


def _fault_catalog(server: FaultServer):
    from lakepipe.catalog import Catalog

    return Catalog(f"sqlite:///{server.catalog}")


@pytest.fixture(scope="module")
def faulted_ingest(fault_server, fp, mask4):
    """The server stopped while the command line's cluster ingests (the store is made and the
    workers are cleaning), then the same command again with the server back."""
    args = ["ingest", "connectome", str(fp), "--from", "fmriprep", "--name", FAULT_NAME, "--mask", str(mask4)]
    args += ["--confounds-strategy", "simple", "--smoothing-fwhm", "6"]
    # the cluster starts when the first graph runs: the store exists, no row is written yet
    rc, err = _interrupted(fault_server, args, "local Dask cluster")
    registered = _fault_catalog(fault_server).query(kind="connectome")
    fault_server.start()
    again = run_cli(*fault_server.base, *args, env=fault_server.env)
    return rc, err, registered, again


def test_storage_fault_during_ingest(faulted_ingest, fault_server, stored, monkeypatch):
    rc, err, registered, again = faulted_ingest
    _assert_one_line_error(rc, err, fault_server)
    assert registered.empty  # nothing half-written is registered
    assert again.returncode == 0, again.stderr[-3000:]
    rows = _fault_catalog(fault_server).query(kind="connectome", connectome=FAULT_NAME)
    assert sorted(rows["store_index"]) == PARTICIPANTS
    # the re-run's connectome is the uninterrupted one (the local lake's, same options)
    monkeypatch.setenv("LAKEPIPE_S3_ENDPOINT", fault_server.endpoint)
    ds = open_connectome(FAULT_LAKE, FAULT_NAME).load()
    assert list(ds["subject"].values) == PARTICIPANTS and ds.attrs["n_subjects"] == N_SUBJECTS
    assert ds.attrs["options"] == stored["clean"].attrs["options"]
    for i in range(N_SUBJECTS):
        a, b = _series(ds, i), _series(stored["clean"], i)
        # both within 6 u (+ float64 regression rounding) of the same nilearn series
        assert np.all(np.abs(a - b) <= 2 * (6 * U + 1e-9) * np.abs(b).max(axis=0))


def test_storage_fault_during_fnm(faulted_ingest, fault_server, maps, expected, monkeypatch):
    assert faulted_ingest[3].returncode == 0
    args = [
        "run",
        "fnm",
        "--connectome",
        FAULT_NAME,
        "--per-subject",
        "--batch-size",
        "1",
        "--radius",
        str(RADIUS),
    ]
    for net, xyz in SEEDS.items():
        args += ["--sphere", ",".join(f"{v:g}" for v in xyz), "--sphere-name", net]
    # logged once the derivative store is laid out, before the first of the 3 passes
    rc, err = _interrupted(fault_server, args, "seed(s) x")
    _assert_one_line_error(rc, err, fault_server)
    full = {"zmap", "rmap", "tmap", "pmap", "pfdrmap", "zmap_subjects", "rmap_subjects"}
    rows = _fault_catalog(fault_server).query(method="fnm")
    for _, seed_rows in rows.groupby("label"):  # a seed is registered with all its maps, or not at all
        assert set(seed_rows["statistic"]) == full and len(seed_rows) == len(full)
    fault_server.start()
    again = run_cli(*fault_server.base, *args, env=fault_server.env)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = _fault_catalog(fault_server).query(method="fnm")
    assert len(rows) == len(SEEDS) * len(full) and not rows[["label", "statistic"]].duplicated().any()
    # the maps of the uninterrupted run (the local lake's), within twice the bound of the exact maps
    monkeypatch.setenv("LAKEPIPE_S3_ENDPOINT", fault_server.endpoint)
    lake = Lake(FAULT_LAKE, catalog=f"sqlite:///{fault_server.catalog}")
    local = maps["clean"]
    lkeys = list(local["seed"].values)
    g = expected["clean"]["group"]
    for stat in ("zmap", "tmap", "zmap_subjects"):
        got = lake.collect("fnm", statistic=stat, connectome=FAULT_NAME).compute(scheduler="threads")
        for k, key in enumerate(got["seed"].values):
            j = list(SEEDS).index(str(key).removeprefix("sphere-"))
            if stat == "zmap_subjects":
                for s, row in enumerate(expected["clean"]["rows"]):
                    ref = row["maps"][j]
                    bound = 2 * _z_bound(row["n_time"], ref["rmax"], row["dr"][j], ref["zmap"])
                    assert np.all(np.abs(got.values[k, s] - local[stat].values[lkeys.index(key), s]) <= bound)
                continue
            b = tolerances.fnm_bounds(g["maps"][j], g["dr"][j], g["n_time"], N_SUBJECTS)[stat] + Z_TOL
            diff = np.abs(got.values[k].astype(np.float64) - local[stat].values[lkeys.index(key)])
            ok = np.isfinite(b)
            assert np.all(diff[ok] <= 2 * b[ok]), (stat, key)


# -------------------------------------------------------------------------------- 7. bad input


def _one_subject(fp: Path, dst: Path) -> Path:
    return _link_runs(fp, dst, lambda p, r: p == "01")


def _replace(path: Path) -> Path:
    """Make a linked file a real copy, to be changed."""
    target = path.resolve()
    path.unlink()
    shutil.copy(target, path)
    return path


def _set_tr(bold: Path, tr: float, header: bool) -> None:
    side = bold.with_name(bold.name.replace(".nii.gz", ".json"))
    meta = json.loads(_replace(side).read_text())
    meta["RepetitionTime"] = tr
    side.write_text(json.dumps(meta))
    if header:
        img = nib.load(str(bold.resolve()))
        hdr = img.header.copy()
        hdr.set_zooms((*hdr.get_zooms()[:3], tr))
        bold.unlink()
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, hdr), str(bold))


def _bad_no_confounds(fp, d):
    folder = _one_subject(fp, d)
    next(folder.glob("sub-01/func/*run-2_desc-confounds_timeseries.tsv")).unlink()
    return (
        folder,
        [],
        "no confounds file for this run (expected sub-01_task-rest_run-2_desc-confounds_timeseries.tsv)",
    )


def _bad_tr_sidecar(fp, d):
    folder = _one_subject(fp, d)
    _set_tr(_bold(folder, "01", 2), 2.5, header=False)
    return folder, [], "the NIfTI header says TR 2 s, the sidecar 2.5 s"


def _bad_tr_option(fp, d):
    return _one_subject(fp, d), ["--t-r", "2.5"], "--t-r 2.5 s differs from the sidecar's RepetitionTime 2 s"


def _bad_tr_between_runs(fp, d):
    folder = _one_subject(fp, d)
    _set_tr(_bold(folder, "01", 2), 2.5, header=True)
    return folder, [], "runs have different repetition times (2 s in"


def _bad_space(fp, d):
    folder = _one_subject(fp, d)
    for f in list(folder.glob("sub-01/func/*_space-*")):
        f.rename(f.with_name(f.name.replace("space-MNI152NLin6Asym", "space-MNI152NLin2009cAsym")))
    return folder, [], "no BOLD run in space MNI152NLin6Asym (spaces found: ['MNI152NLin2009cAsym']"


def _bad_scrubbed(fp, d):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    folder = _one_subject(fp, d)
    ctx = _quiet()
    try:
        _, kept = load_confounds_strategy(
            str(_bold(folder, "01", 1)), denoise_strategy="scrubbing", fd_threshold=0.15
        )
    finally:
        ctx.__exit__(None, None, None)
    assert len(kept) < 30  # the case: most frames move more than 0.15 mm
    args = ["--confounds-strategy", "scrubbing", "--fd-threshold", "0.15"]
    return (
        folder,
        args,
        f"{len(kept)} of {N_VOLUMES} volumes remain after scrubbing (fewer than --min-volumes 30)",
    )


def _bad_fov(fp, d):
    folder = _one_subject(fp, d)
    mask = nib.load(str(next(folder.glob("sub-01/func/*run-1*desc-brain_mask.nii.gz"))))
    affine = mask.affine.copy()
    affine[:3, 3] += 400.0  # the same mask 40 cm away
    path = d.parent / f"{d.name}-mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(mask.dataobj), affine), str(path))
    return folder, ["--mask", str(path)], "the brain mask does not overlap the BOLD field of view"


def _bad_nan(fp, d):
    folder = _one_subject(fp, d)
    bold = _bold(folder, "01", 2)
    img = nib.load(str(bold.resolve()))
    data = np.asarray(img.dataobj, dtype=np.float32)  # float data (int16 cannot hold NaN)
    brain = np.argwhere(
        np.asarray(nib.load(str(bold).replace("desc-preproc_bold", "desc-brain_mask")).dataobj) > 0
    )
    i, j, k = brain[len(brain) // 2]
    data[i, j, k, 17] = np.nan
    hdr = img.header.copy()
    hdr.set_data_dtype(np.float32)
    bold.unlink()
    nib.save(nib.Nifti1Image(data, img.affine, hdr), str(bold))
    return folder, [], "the run holds 1 NaN or infinite value(s) inside the brain mask (first in volume 17)"


BAD = {
    "no-confounds": _bad_no_confounds,
    "tr-header-vs-sidecar": _bad_tr_sidecar,
    "tr-option-vs-sidecar": _bad_tr_option,
    "tr-between-runs": _bad_tr_between_runs,
    "other-space": _bad_space,
    "too-few-volumes": _bad_scrubbed,
    "mask-outside-fov": _bad_fov,
    "nan": _bad_nan,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, fp, mask4, tmp_path, capsys, dask_client):
    from lakepipe.cli.main import main

    folder, args, message = BAD[case](fp, tmp_path / "fp")
    lake = tmp_path / "lake"
    mask = [] if "--mask" in args else ["--mask", str(mask4)]
    # the last two fail in the workers' cleaning: run there, on the cluster
    where = ["--scheduler", dask_client.scheduler.address] if case in ("too-few-volumes", "nan") else []
    capsys.readouterr()
    argv = [
        "--lake",
        str(lake),
        *where,
        "ingest",
        "connectome",
        str(folder),
        "--from",
        "fmriprep",
        "--name",
        "bad",
    ]
    rc = main([*argv, *mask, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("lakepipe: error: "), err
    assert message in err[0], err
    assert Lake(str(lake)).catalog.query(kind="connectome").empty  # nothing registered
    assert not (lake / "connectomes" / "bad.zarr").exists()  # nor left in the lake
