"""FNM end to end from the lake against a straightforward per-seed, per-subject implementation.

The reference (tests/reference.py) reads the raw HDF5 series with h5py, resamples each lesion with
nilearn (nearest) onto the 2 mm grid, takes spheres from nilearn's NiftiSpheresMasker, and for every
seed and subject computes the (weighted) mean seed series, Pearson r with every voxel, arctanh, then
mean / sd / t over subjects with numpy and scipy. The pipeline runs once per module on the tutorial
lesions (1 mm and 2 mm masks), plus a 1 mm lesion straddling the brain edge (voxels dropped), a
weighted 1 mm lesion, a 2 mm lesion stored mirrored (RAS) and three spheres (one partly outside the
brain), on the 2-process cluster.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lakepipe.compute.fnm_conventions import T_MAX
from lakepipe.errors import InputError
from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
from lakepipe.io.bidsfind import find_lesion_files
from lakepipe.io.stores import open_derivative, voxel_volume
from lakepipe.lake import Lake
from lakepipe.methods.common import connectome_info
from lakepipe.methods.fnm import MAPS as FNM_MAPS
from lakepipe.methods.fnm import METHOD as FNM
from lakepipe.methods.seeds import sphere_seed
from tests import reference, tolerances
from tests.conftest import answer_from_catalog

COHORT = "fnmcheck"
ATLAS = "Seitzman2018"
MAPS = (*FNM_MAPS, "avgr")  # every map a run writes (zmap, rmap, tmap, pmap, pfdrmap) and avgr
#: name, x, y, z (mm), radius (mm): on-grid centre (voxels at exactly the radius), off-grid centre,
#: and a sphere on the vertex half outside the brain mask
SPHERES = [
    ("motor", -38.0, -22.0, 52.0, 6.0),
    ("offgrid", 31.0, -7.0, 13.0, 5.0),
    ("vertex", 0.0, -20.0, 76.0, 8.0),
]
N_TIME = 40  # tutorial time points (tests/conftest.py): tolerances scale with it (tests/tolerances.py)


def spheres():
    return [sphere_seed(x, y, z, r, name) for name, x, y, z, r in SPHERES]


def sphere_params() -> dict:
    """The SPHERES as FNM parameters (one radius each: one sphere parameter set per radius)."""
    return {"sphere": [f"{x},{y},{z}" for _, x, y, z, _ in SPHERES], "sphere_name": [s[0] for s in SPHERES]}


def run_fnm(lake: Lake, connectome: str, *, spheres: list | None = None, **params):
    """lake.run("fnm") with sphere seeds given as (name, x, y, z, r) tuples (each its own radius)."""
    if not spheres:
        return lake.run("fnm", connectome=connectome, **params)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        rows = "".join(f"{n}\t{x}\t{y}\t{z}\t{r}\n" for n, x, y, z, r in spheres)
        f.write("name\tx\ty\tz\tradius\n" + rows)
    return lake.run("fnm", connectome=connectome, spheres=f.name, **params)


def seed_voxels(seed, con):
    v = FNM.seed_voxels([seed], con)[0]
    return v.positions, v.weights, v.dropped


def _mni_1mm_like(tutorial) -> nib.Nifti1Image:
    """A 1 mm tutorial lesion file (its grid and header are reused for the extra masks)."""
    return nib.load(
        str(next(p for p in sorted(tutorial.bids.rglob("*_mask.nii.gz")) if "_res-" not in p.name))
    )


def _world_to_1mm(img: nib.Nifti1Image, xyz) -> np.ndarray:
    return np.rint(np.linalg.solve(img.affine, np.r_[np.asarray(xyz, float), 1.0])[:3]).astype(int)


def _save(img_like: nib.Nifti1Image, data: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, img_like.affine), str(path))


@pytest.fixture(scope="module")
def bids(tutorial, tmp_path_factory) -> Path:
    """The tutorial lesions plus an edge lesion (part outside the brain), a weighted lesion and a
    mirrored copy of a tutorial lesion."""
    out = tmp_path_factory.mktemp("fnm") / "bids"
    shutil.copytree(tutorial.bids, out)
    like = _mni_1mm_like(tutorial)
    space = "space-MNI152NLin6Asym"
    # vertex of the brain at x = 0, y = -20 is z = 76 mm on the 2 mm mask: a 9 mm cube around it
    c = _world_to_1mm(like, (0, -20, 76))
    edge = np.zeros(like.shape, np.uint8)
    edge[c[0] - 4 : c[0] + 5, c[1] - 4 : c[1] + 5, c[2] - 4 : c[2] + 5] = 1
    _save(like, edge, out / "sub-07" / "anat" / f"sub-07_{space}_label-edge_mask.nii.gz")
    # weighted: a Gaussian blob (sigma 4 mm, cut at 8 mm) in right parietal cortex
    c = _world_to_1mm(like, (44, -60, 30))
    g = np.indices(like.shape).reshape(3, -1).T
    near = np.all(np.abs(g - c) <= 8, axis=1)
    d2 = ((g[near] - c) ** 2).sum(axis=1)
    w = np.zeros(like.shape, np.float32).reshape(-1)
    w[np.flatnonzero(near)] = np.where(d2 <= 64, np.exp(-d2 / 32.0), 0).astype(np.float32)
    _save(
        like,
        w.reshape(like.shape),
        out / "sub-08" / "ses-01" / "anat" / f"sub-08_ses-01_{space}_label-weighted_mask.nii.gz",
    )
    # sub-02 ses-01's 2 mm lesion stored mirrored (RAS voxel order): the same voxels in the world
    src = nib.load(
        str(
            tutorial.bids
            / "sub-02"
            / "ses-01"
            / "anat"
            / f"sub-02_ses-01_{space}_res-2_label-acuteinfarct_mask.nii.gz"
        )
    )
    flip = np.array([[-1, 0, 0, src.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    ras = nib.Nifti1Image(np.asarray(src.dataobj)[::-1].copy(), src.affine @ flip)
    assert ras.affine[0, 0] > 0
    _save(
        ras,
        np.asarray(ras.dataobj),
        out / "sub-10" / "ses-01" / "anat" / f"sub-10_ses-01_{space}_res-2_label-ras_mask.nii.gz",
    )
    return out


@pytest.fixture(scope="module")
def cohort(ingested, bids) -> str:
    ingest_lesions(ingested, bids, cohort=COHORT, weighted=True)
    return COHORT


@pytest.fixture(scope="module")
def fnm_run(ingested, cohort, dask_client, tmp_path_factory):
    """The pipeline run every comparison reads: all seeds, parcel summaries, BIDS files, avgr."""
    out = tmp_path_factory.mktemp("fnm-bids")
    res = run_fnm(
        ingested,
        "tutorial",
        cohort=cohort,
        spheres=SPHERES,
        atlas=ATLAS,
        bids_out=out,
        avgr=True,
        client=dask_client,
    )
    assert res.store and not res.skipped, res.summary()
    ds = open_derivative(res.store).load()
    return res, ds, out


@pytest.fixture(scope="module")
def raw(tutorial):
    """Raw HDF5 series (float32 as stored; the reference computes in float64), ijk, affine, shape."""
    return reference.load_h5_connectome(tutorial.connectome, dtype=np.float32)


@pytest.fixture(scope="module")
def expected(fnm_run, raw, bids):
    """Reference voxel sets, dropped counts and maps for every seed of the run, in store order."""
    _, ds, _ = fnm_run
    series, ijk, affine, shape = raw
    files = {f.key: f.path for f in find_lesion_files(bids)}
    geometry = {f"sphere-{name}": ((x, y, z), r) for name, x, y, z, r in SPHERES}
    seeds, dropped = [], []
    for key in map(str, ds["seed"].values):
        if key in geometry:
            cols, d = reference.sphere_voxels_nilearn(*geometry[key], ijk, affine, shape)
            weights = None
        else:
            cols, weights, d = reference.seed_voxels_on_grid(files[key], ijk, affine, shape)
        seeds.append((cols, weights))
        dropped.append(d)
    # with, per seed, the bound on |delta r| of the pipeline's float32 arithmetic (tests/tolerances.py)
    maps, dr = tolerances.reference_maps(series, seeds, N_TIME)
    return {"voxels": seeds, "dropped": dropped, "maps": maps, "dr": dr}


def _keys(ds) -> list[str]:
    return [str(k) for k in ds["seed"].values]


# ------------------------------------------------------------------------------- 1. vs the reference


def test_maps_equal_reference(fnm_run, expected, bids):
    res, ds, _ = fnm_run
    keys = _keys(ds)
    assert set(keys) == {f.key for f in find_lesion_files(bids)} | {f"sphere-{s[0]}" for s in SPHERES}
    assert ds.attrs["n_subjects"] == 8 and ds.attrs["conventions"]["ddof"] == 1
    # both grids of the tutorial are covered, and the weighted mask kept its weights
    assert any("_res-2_" in f.path.name for f in find_lesion_files(bids))
    assert any("_res-" not in f.path.name for f in find_lesion_files(bids))
    w = expected["voxels"][keys.index("sub-08_ses-01_label-weighted")][1]
    assert w.min() < 0.2 and w.max() == 1.0
    # voxels dropped outside the mask: counted independently (the edge lesion and vertex sphere lose some)
    assert ds["seed_voxels_dropped"].values.tolist() == expected["dropped"]
    assert res.details["dropped_voxels"] == dict(zip(keys, expected["dropped"], strict=True))
    assert expected["dropped"][keys.index("sub-07_label-edge")] > 10
    assert expected["dropped"][keys.index("sphere-vertex")] > 10
    # the mirrored copy of a lesion is the same seed in the world: the same maps, up to the order of
    # the float32 sums (its column of the batch is another): each within the bound of the exact maps
    ras, las = keys.index("sub-10_ses-01_label-ras"), keys.index("sub-02_ses-01_label-acuteinfarct")
    assert np.array_equal(expected["voxels"][ras][0], expected["voxels"][las][0])
    ref = expected["maps"][las]
    bounds = _bounds(ref, expected["dr"][las])
    for stat in ("zmap", "rmap", "avgr", "tmap"):
        diff = np.abs(ds[stat].values[ras].astype(np.float64) - ds[stat].values[las])
        assert np.all(diff <= 2 * bounds[stat]), (stat, float(diff.max()))
    worst = {}
    for i, key in enumerate(keys):
        ref = expected["maps"][i]
        degenerate = ref["zsd"] <= 1e-6 * np.maximum(np.abs(ref["zmap"]), 1)  # r = +-1 in every subject
        assert degenerate.sum() <= 1, key  # only the single voxel of a one-voxel seed
        bounds = _bounds(ref, expected["dr"][i])
        for stat in ("zmap", "rmap", "avgr", "tmap"):
            got = ds[stat].values[i].astype(np.float64)
            ok = ~degenerate if stat == "tmap" else slice(None)
            diff = np.abs(got[ok] - ref[stat][ok])
            worst[stat] = max(worst.get(stat, 0.0), float((diff / bounds[stat][ok]).max()))
            assert np.all(diff <= bounds[stat][ok]), (key, stat, float(diff.max()))
        # zero variance over subjects: the recorded convention t = sign(mean z) * T_MAX, p ~ 0
        t = ds["tmap"].values[i][degenerate]
        np.testing.assert_array_equal(t, np.sign(ref["zmap"][degenerate]) * T_MAX)
        # p two-sided from Student t with n - 1 df: against scipy's p of the reference t, within the
        # t bound times the largest |dp/dt| = 2 * (density of t with 7 df at 0) < 0.8
        p_ref = 2 * stats.t.sf(np.abs(ref["tmap"]), 7)
        dp = np.minimum(0.8 * bounds["tmap"], 1.0) + tolerances.U32
        assert np.all(np.abs(ds["pmap"].values[i] - p_ref)[~degenerate] <= dp[~degenerate]), key
        # and, given the pipeline's own t, scipy's p to float32 precision (the p table is exact to 1e-11)
        np.testing.assert_allclose(
            ds["pmap"].values[i],
            2 * stats.t.sf(np.abs(ds["tmap"].values[i].astype(np.float64)), 7),
            atol=1e-12,
            # p of the float64 t, the stored t rounded to float32: |d log p / d log t| <= df + 1
            rtol=(8 + 2) * tolerances.U32,
            err_msg=key,
        )
    print("max |pipeline - reference| / bound:", {k: f"{v:.2e}" for k, v in worst.items()})


def _bounds(ref: dict, dr: float) -> dict:
    """Per-voxel bounds of |pipeline - exact| for one seed (tests/tolerances.py)."""
    return tolerances.fnm_bounds(ref, dr, N_TIME, 8)


# ---------------------------------------------------------------------------------------- 2. spheres


def test_sphere_voxels_are_nilearns(ingested, fnm_run, expected, raw, tutorial):
    """The pipeline's sphere voxels are NiftiSpheresMasker's, and its mean series is the same."""
    from nilearn.maskers import NiftiSpheresMasker

    _, ds, _ = fnm_run
    _, ijk, affine, _ = raw
    con = connectome_info(ingested, "tutorial")
    assert np.array_equal(con.ijk, ijk) and np.allclose(con.grid.affine, affine)
    keys = _keys(ds)
    bold = nib.load(str(tutorial.nifti_connectome / "sub-GSP0001_bold.nii.gz"))
    data = np.asarray(bold.dataobj)
    for seed, (name, *_) in zip(spheres(), SPHERES, strict=True):
        pos, w, dropped = seed_voxels(seed, con)
        i = keys.index(seed.key)
        assert np.array_equal(np.sort(pos), expected["voxels"][i][0]), name
        assert dropped == expected["dropped"][i] and np.all(w == 1), name
    # the mean series NiftiSpheresMasker extracts from the 4D NIfTI of the same subject, for the same
    # centres with one radius (one masker)
    radius = 6.0
    masker = NiftiSpheresMasker(
        [s[1:4] for s in SPHERES],
        radius=radius,
        allow_overlap=True,
        standardize=None,
        mask_img=str(tutorial.nifti_connectome / "brain_mask.nii.gz"),
    )
    nilearn_means = masker.fit_transform(nib.Nifti1Image(data, bold.affine))
    for k, (name, x, y, z, _) in enumerate(SPHERES):
        pos, _, _ = seed_voxels(sphere_seed(x, y, z, radius), con)
        ours = data[tuple(ijk[pos].T)].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(ours, nilearn_means[:, k], rtol=1e-5, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------------------- 3. parcels and BIDS


def test_parcel_summaries(fnm_run, expected, raw, tutorial):
    _, ds, _ = fnm_run
    _, ijk, affine, shape = raw
    labels = reference.atlas_on_connectome(tutorial.atlas_nifti, affine, shape)[tuple(ijk.T)]
    present = sorted(set(np.unique(labels[labels > 0]).tolist()))
    assert ds["region"].values.tolist() == present  # parcels with no in-mask voxel are dropped
    members = [np.flatnonzero(labels == lab) for lab in present]
    for stat in MAPS:
        voxel_maps = ds[stat].values.astype(np.float64)
        mean = np.stack([voxel_maps[:, cols].mean(axis=1) for cols in members], axis=1)
        np.testing.assert_allclose(ds[f"parcel_{stat}"].values, mean, rtol=1e-5, atol=1e-6, err_msg=stat)
    # and against the reference maps directly
    ref = np.stack([[m["zmap"][cols].mean() for cols in members] for m in expected["maps"]])
    assert np.abs(ds["parcel_zmap"].values - ref).max() <= 1e-4


def test_bids_outputs(fnm_run, raw):
    res, ds, out = fnm_run
    _, ijk, affine, _ = raw
    keys = _keys(ds)
    files = {p.relative_to(out).as_posix(): p for p in res.files}
    assert len(files) == len(res.files) == len(keys) * len(MAPS) * 2  # a NIfTI and a TSV per map
    assert all(p.exists() and p.with_name(p.name.split(".")[0] + ".json").exists() for p in res.files)
    assert json.loads((out / "dataset_description.json").read_text())
    outside = np.ones(tuple(ds.attrs["grid"]["shape"]), bool)
    outside[tuple(ijk.T)] = False
    # read back: a lesion with a session (1 mm), one without (edge), the weighted one, a sphere
    check = {
        "sub-04_ses-01_label-chronic",
        "sub-07_label-edge",
        "sub-08_ses-01_label-weighted",
        "sphere-vertex",
    }
    for i, key in enumerate(keys):
        p, s, lab = (str(ds[c].values[i]) for c in ("participant", "session", "label"))
        space = "space-MNI152NLin6Asym"
        if p:  # as other LNM tools write them: the participant's anat/ folder, the space in the name
            folder = f"sub-{p}/" + (f"ses-{s}/" if s else "") + "anat/"
            ents = f"sub-{p}" + (f"_ses-{s}" if s else "") + f"_{space}_label-{lab}_method-fnm"
            nii, tsv = f"{ents}_desc-{{}}_statmap.nii.gz", f"{ents}_atlas-{ATLAS}_desc-{{}}_parcelstats.tsv"
        else:  # spheres have no participant: seeds/, named by the seed entity
            folder = "seeds/"
            nii = f"{space}_method-fnm_seed-{lab}_desc-{{}}_statmap.nii.gz"
            tsv = f"{space}_method-fnm_atlas-{ATLAS}_seed-{lab}_desc-{{}}_parcelstats.tsv"
        for stat in MAPS:
            assert folder + nii.format(stat) in files and folder + tsv.format(stat) in files, (key, stat)
            if key not in check:
                continue
            path = files[folder + nii.format(stat)]
            img = nib.load(str(path))
            np.testing.assert_array_equal(img.affine, affine)
            vol = np.asarray(img.dataobj)
            np.testing.assert_array_equal(vol[tuple(ijk.T)], ds[stat].values[i])
            assert np.isnan(vol[outside]).all()
            np.testing.assert_array_equal(voxel_volume(ds, stat, i), vol)
            meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
            assert meta["Statistic"] == stat and meta["NumberOfSubjects"] == 8
            assert meta["Connectome"] == "tutorial"
            assert meta["SeedVoxelsDropped"] == int(ds["seed_voxels_dropped"].values[i])
            table = pd.read_csv(files[folder + tsv.format(stat)], sep="\t")
            assert table["index"].tolist() == ds["region"].values.tolist()
            # the TSV keeps 6 significant digits
            np.testing.assert_allclose(
                table[stat].to_numpy(), ds[f"parcel_{stat}"].values[i], rtol=1e-5, atol=1e-12
            )


# ------------------------------------------------------------------------------------ 4. AFNM vs FNM


@pytest.fixture(scope="module")
def agreement(ingested, cohort, fnm_run, tutorial, dask_client):
    """Spearman rho between AFNM (fractional, fcgroupz) and the parcel-averaged FNM zmap per lesion."""
    _, ds, _ = fnm_run
    participants = sorted({f.participant for f in find_lesion_files(tutorial.bids)})
    res = ingested.run(
        "afnm",
        cohort=cohort,
        atlas=ATLAS,
        connectome="tutorial",
        weighting="fractional",
        participants=participants,
        client=dask_client,
    )
    afnm = open_derivative(res.store).load()
    keys = _keys(ds)
    assert afnm["region"].values.tolist() == ds["region"].values.tolist()
    rho, untouched = {}, []
    for i, key in enumerate(map(str, afnm["seed"].values)):
        score = afnm["score"].values[i]
        if afnm["n_touched"].values[i] == 0:
            assert not score.any()  # no parcel touched: AFNM is all zeros, rho undefined
            untouched.append(key)
            continue
        rho[key] = stats.spearmanr(score, ds["parcel_zmap"].values[keys.index(key)]).statistic
    print(
        "Spearman rho AFNM vs parcel FNM zmap:",
        {k: round(v, 3) for k, v in rho.items()},
        f"median {np.median(list(rho.values())):.3f} min {min(rho.values()):.3f}; untouched {untouched}",
    )
    return rho, untouched


def test_afnm_fnm_agreement(agreement):
    rho, untouched = agreement
    assert len(rho) >= 8 and len(untouched) <= 1  # tutorial sub-06's 19 voxels miss every 5 mm sphere
    assert np.median(list(rho.values())) >= 0.8
    assert all(r > 0 for r in rho.values())


@pytest.mark.xfail(
    strict=True,
    reason=(
        "per lesion rho >= 0.8 does not hold on the 8-subject x 40-timepoint tutorial connectome: "
        "sub-04 chronic (352 voxels on the 2 mm grid, 30 of them inside 3 Seitzman spheres) gives 0.64. "
        "With the reference implementation (no lakepipe code) the same lesion gives 0.68 with 160 "
        "timepoints and 0.81 with 32 subjects (min over lesions 0.807): the shortfall is the few subjects."
    ),
)
def test_afnm_fnm_agreement_every_lesion(agreement):
    rho, _ = agreement
    assert min(rho.values()) >= 0.8, rho


# --------------------------------------------------------------------------------- 5. idempotence


def test_rerun_skips(ingested, cohort, fnm_run, dask_client):
    _, ds, _ = fnm_run
    again = run_fnm(
        ingested, "tutorial", cohort=cohort, spheres=SPHERES, atlas=ATLAS, avgr=True, client=dask_client
    )
    assert again.computed == [] and sorted(again.skipped) == sorted(_keys(ds)) and not again.store
    subset = run_fnm(
        ingested, "tutorial", cohort=cohort, participants=["01"], atlas=ATLAS, avgr=True, client=dask_client
    )
    assert subset.computed == [] and subset.skipped and all(k.startswith("sub-01_") for k in subset.skipped)


def test_cli_rerun_reads_only_the_catalog(ingested, cohort, fnm_run):
    """A command whose outputs are all in the lake answers from the catalog: no store is opened, no
    cluster started, none of the data stack imported (so it returns in well under a second)."""
    import subprocess
    import sys

    argv = ["-q", "--lake", ingested.url, "run", "fnm", "--cohort", cohort, "--connectome", "tutorial"]
    out = answer_from_catalog([*argv, "--atlas", ATLAS, "--avgr"])
    assert "0 seed(s) mapped" in out, out[-2000:]
    # something to compute: the plan opens the store (the seeds are checked against its grid)
    proc = subprocess.run(
        [sys.executable, "-m", "lakepipe.cli.main", *argv[:3], "run", "fnm", "--connectome", "tutorial"]
        + ["--sphere", "10,10,10", "--radius", "4", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "1 to compute" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def assert_same_maps(a, b, idx, expected, stats_=("zmap", "rmap", "tmap", "avgr")) -> dict:
    """Maps of the same seeds from two runs (``b``'s rows ``idx``): a batch's seed series are one
    float32 product over the union of its seeds' voxels, whose summation order depends on the
    batch, so each run is within the bound of the exact maps (tests/tolerances.py) and the two
    within twice that. Parcel summaries are means of the maps: within twice the largest bound."""
    diffs = {}
    for stat in stats_:
        if stat not in a:
            continue
        for j, i in enumerate(idx):
            bound = 2 * _bounds(expected["maps"][i], expected["dr"][i])[stat]
            diff = np.abs(a[stat].values[j].astype(np.float64) - b[stat].values[i])
            ok = np.isfinite(bound)
            assert np.all(diff[ok] <= bound[ok]), (stat, j, float(diff.max()))
            diffs[stat] = max(diffs.get(stat, 0.0), float((diff[ok] / bound[ok]).max()))
            name = f"parcel_{stat}"
            if name in a:
                pd_ = np.abs(a[name].values[j].astype(np.float64) - b[name].values[i])
                assert pd_.max() <= bound[ok].max() + 1e-6 * np.abs(b[name].values[i]).max(), name
    return {k: f"{v:.1e} of the bound" for k, v in diffs.items()}


def test_seed_batches(ingested, cohort, fnm_run, expected, tutorial, dask_client):
    """10 seeds in batches of 3: 4 passes over the connectome, the maps of one pass (to float32 rounding)."""
    _, ds, _ = fnm_run
    # the same masks as a cohort of their own, so nothing is skipped as already published
    ingest_lesions(ingested, tutorial.bids, cohort="fnmbatches")
    res = run_fnm(ingested, "tutorial", cohort="fnmbatches", batch_size=3, client=dask_client)
    assert len(res.computed) == 10 and res.details["passes"] == 4
    batched = open_derivative(res.store)
    keys = _keys(ds)
    idx = [keys.index(k) for k in _keys(batched)]
    diffs = assert_same_maps(batched, ds, idx, expected)
    assert "avgr" not in batched
    print("batch_size=3 vs one pass, max |diff|:", diffs)


# ---------------------------------------------------------------------------------------- 6. bad input


def test_partial_seed_warns(ingested, cohort, fnm_run, expected, caplog):
    _, ds, _ = fnm_run
    key = "sub-07_label-edge"
    n_out = expected["dropped"][_keys(ds).index(key)]
    n_in = expected["voxels"][_keys(ds).index(key)][0].size
    with caplog.at_level(logging.WARNING, logger="lakepipe.methods.fnm"):
        res = run_fnm(ingested, "tutorial", cohort=cohort, participants=["07"], scheduler="synchronous")
    assert res.computed == [key]
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and key in r.getMessage()]
    assert msgs and f"{n_out} of {n_out + n_in} voxel(s)" in msgs[0], msgs


def test_seed_without_voxel_in_mask(ingested, tutorial, tmp_path, raw):
    _, ijk, affine, shape = raw
    # a 1 mm lesion of one voxel at odd mm coordinates: inside the brain, but no 2 mm voxel centre
    # falls in it, so nearest resampling leaves nothing on the connectome grid
    like = _mni_1mm_like(tutorial)
    data = np.zeros(like.shape, np.uint8)
    data[tuple(_world_to_1mm(like, (-41, -21, 51)))] = 1
    path = tmp_path / "bids" / "sub-09" / "anat" / "sub-09_space-MNI152NLin6Asym_label-tiny_mask.nii.gz"
    _save(like, data, path)
    ingest_lesions(ingested, tmp_path / "bids", cohort="fnmtiny")
    assert reference.seed_voxels_on_grid(path, ijk, affine, shape)[0].size == 0
    with pytest.raises(InputError, match="sub-09_label-tiny covers no voxel centre of the connectome grid"):
        run_fnm(ingested, "tutorial", cohort="fnmtiny", scheduler="synchronous")
    # a sphere in the field of view but outside the brain
    assert reference.sphere_voxels_nilearn((0, -120, 0), 4, ijk, affine, shape)[0].size == 0
    with pytest.raises(InputError, match="sphere-scalp has no voxel inside the connectome mask"):
        run_fnm(ingested, "tutorial", spheres=[("scalp", 0, -120, 0, 4)], scheduler="synchronous")
    # nothing was registered for either
    assert ingested.catalog.query(method="fnm", label=["tiny", "scalp"]).empty


def test_bad_spheres(ingested):
    with pytest.raises(InputError, match="sphere seed sphere-sky .* no voxel centre"):  # outside the grid
        run_fnm(ingested, "tutorial", spheres=[("sky", 0, 0, 200, 6)], scheduler="synchronous")
    for radius in (0, -2, float("nan")):
        with pytest.raises(InputError, match="radius"):
            sphere_seed(0, 0, 0, radius)
    with pytest.raises(InputError):
        sphere_seed(0, float("inf"), 0, 4)


def test_fnm_refuses_parcel_connectome(ingested, tutorial):
    ingest_connectome(ingested, tutorial.parcel_timeseries, name="fnmparcels")
    with pytest.raises(InputError, match="voxel connectome"):
        run_fnm(ingested, "fnmparcels", spheres=SPHERES[:1], scheduler="synchronous")


@pytest.fixture
def keep_logging():
    """main() reconfigures the root logger onto the captured stderr: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_spheres(ingested, dask_client, capsys, keep_logging):
    from lakepipe.cli.main import main

    base = [
        "-q",
        "--lake",
        ingested.url,
        "--scheduler",
        dask_client.scheduler.address,
        "run",
        "fnm",
        "--connectome",
        "tutorial",
    ]
    assert main(base + ["--sphere", "-40,-20,50", "--radius", "6"]) == 0
    rows = ingested.catalog.query(method="fnm", label="spherem40xm20y50z6r", statistic="zmap")
    assert len(rows) == 1
    ds = open_derivative(str(Path(ingested.url) / rows["store_uri"].iloc[0]))
    meta = ds.attrs["spheres"]["sphere-spherem40xm20y50z6r"]
    assert meta["center_mm"] == [-40.0, -20.0, 50.0] and meta["radius_mm"] == 6.0
    capsys.readouterr()
    for bad in (
        ["--sphere", "-40,-20", "--radius", "6"],
        ["--sphere", "a,b,c", "--radius", "6"],
        ["--sphere", "-40,-20,50", "--radius", "0"],
        ["--sphere", "-40,-20,50"],
    ):
        assert main(base + bad) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lakepipe: error:"), (bad, err)
        assert "sphere" in err[0] or "radius" in err[0], err


# ------------------------------------------------------------------------------- 7. number of workers


def test_same_maps_in_process(tmp_path, tutorial, bids, fnm_run, expected):
    """A fresh lake computed with the synchronous scheduler (in this process) gives the maps of the
    2-worker cluster, to float32 rounding (measured: 1 ulp on z, not bit for bit)."""
    _, ds, _ = fnm_run
    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name=ATLAS)
    ingest_lesions(lake, bids, cohort=COHORT, weighted=True)
    res = run_fnm(
        lake, "tutorial", cohort=COHORT, spheres=SPHERES, atlas=ATLAS, avgr=True, scheduler="synchronous"
    )
    local = open_derivative(res.store)
    assert _keys(local) == _keys(ds)
    diffs = assert_same_maps(local, ds, list(range(len(_keys(ds)))), expected)
    print("synchronous vs 2 workers, max |diff|:", diffs)
    assert local["seed_voxels_dropped"].values.tolist() == ds["seed_voxels_dropped"].values.tolist()
