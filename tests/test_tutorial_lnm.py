"""The tutorial's LNM question (``lnm/``): neglect cases on the dorsal attention network, controls elsewhere.

Checked with plain numpy / scipy on the written files: the cases' lesions lie on the target network's
high-loading voxels and the controls' do not, the symptom score follows the lesions' target loading,
case and control volumes overlap (a volume-matched null is possible), the truth maps are the model's,
and the cohorts are deterministic and nested (a smaller cohort is a prefix of a larger one).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lakepipe.bids import parse_entities
from lakepipe.space import mni152_brain_mask_2mm, mni152_grid
from lakepipe.tutorial import build_latent_model, write_tutorial

#: a minimal tutorial around the LNM cohorts (the default cohort sizes: 16 + 16)
BASE = {"participants": 1, "subjects": 1, "timepoints": 5, "batch_size": 1}
#: "high-loading" voxels of a network: loading above 0.5 (the maps peak at about 1.2)
HIGH = 0.5


@pytest.fixture(scope="module")
def tut(tmp_path_factory):
    return write_tutorial(tmp_path_factory.mktemp("lnm") / "t", **BASE)


@pytest.fixture(scope="module")
def truth(tut) -> dict:
    return json.loads((tut.lnm_truth / "truth.json").read_text())


@pytest.fixture(scope="module")
def lesions(tut) -> pd.DataFrame:
    """One row per participant: group, score, mask (bool 2 mm volume), volume, target loading stats."""
    target = json.loads((tut.lnm_truth / "truth.json").read_text())["target_network"]
    loading = np.asarray(nib.load(tut.lnm_truth / f"network-{target}_loading.nii.gz").dataobj)
    rows = []
    for folder in (tut.lnm_cases, tut.lnm_controls):
        table = pd.read_csv(folder / "participants.tsv", sep="\t").set_index("participant_id")
        for f in sorted(folder.glob("sub-*/ses-*/anat/*_mask.nii.gz")):
            mask = np.asarray(nib.load(f).dataobj).astype(bool)
            pid = f"sub-{parse_entities(f.name)['sub']}"
            on = loading[mask]
            rows.append(
                {
                    "participant_id": pid,
                    "group": table.loc[pid, "group"],
                    "score": int(table.loc[pid, "neglect_score"]),
                    "mask": mask,
                    "volume_mm3": 8.0 * mask.sum(),
                    "mean_loading": float(on.mean()),
                    "high_fraction": float((on > HIGH).mean()),
                }
            )
    return pd.DataFrame(rows).set_index("participant_id")


def test_layout_is_two_bids_lesion_datasets(tut):
    grid, brain = mni152_grid(2), mni152_brain_mask_2mm()
    for folder, group, prefix in ((tut.lnm_cases, "case", "case"), (tut.lnm_controls, "control", "ctrl")):
        desc = json.loads((folder / "dataset_description.json").read_text())
        assert desc["BIDSVersion"] and desc["DatasetType"] == "raw"
        table = pd.read_csv(folder / "participants.tsv", sep="\t")
        assert list(table.columns) == ["participant_id", "group", "age", "sex", "neglect_score"]
        assert list(table["participant_id"]) == [f"sub-{prefix}{i:02d}" for i in range(1, 17)]
        assert set(table["group"]) == {group}
        assert table["neglect_score"].between(0, 30).all()
        sidecar = json.loads((folder / "participants.json").read_text())
        assert set(sidecar) == set(table.columns) and "Description" in sidecar["neglect_score"]
        files = sorted(folder.glob("sub-*/ses-*/anat/*_mask.nii.gz"))
        assert len(files) == len(table)  # one lesion each
        for f in files:
            ent = parse_entities(f.name)
            assert ent["space"] == "MNI152NLin6Asym" and ent["res"] == "2" and ent["label"] == "acuteinfarct"
            assert f.parent == folder / f"sub-{ent['sub']}" / f"ses-{ent['ses']}" / "anat"
            img = nib.load(f)
            data = np.asarray(img.dataobj)
            assert data.dtype == np.uint8 and set(np.unique(data)) == {0, 1}
            assert data.shape == grid.shape and np.allclose(img.affine, grid.affine)
            assert not data[~brain].any()  # inside the connectome's brain mask: no voxel dropped by FNM
            x = (np.argwhere(data) @ img.affine[:3, :3].T + img.affine[:3, 3])[:, 0]
            assert (x > 0).all() or (x < 0).all(), f"{f} crosses the midline"


def test_truth_maps_are_the_model_loadings(tut, truth):
    model = build_latent_model(0)
    assert truth["target_network"] == "DorsalAttention" and truth["symptom"] == "neglect_score"
    assert set(truth["loading_maps"]) == {n.name for n in model.networks}
    for k, net in enumerate(model.networks):
        vol = np.asarray(nib.load(tut.lnm_truth / f"network-{net.name}_loading.nii.gz").dataobj)
        assert vol.dtype == np.float32
        np.testing.assert_array_equal(vol[model.mask], model.loadings[k])  # stored exactly (float32)
        assert not vol[~model.mask].any()
    assert {p["participant_id"] for p in truth["participants"]} == {
        f"sub-{g}{i:02d}" for g in ("case", "ctrl") for i in range(1, 17)
    }


def test_cases_lie_on_the_target_network_and_controls_do_not(lesions, truth):
    cases, controls = lesions[lesions["group"] == "case"], lesions[lesions["group"] == "control"]
    print(
        f"\nhigh-loading fraction of the lesion: cases mean {cases['high_fraction'].mean():.2f} "
        f"(min {cases['high_fraction'].min():.2f}), controls max {controls['high_fraction'].max():.3f}; "
        f"mean target loading: cases {cases['mean_loading'].mean():.2f}, "
        f"controls {controls['mean_loading'].mean():.3f}"
    )
    assert cases["high_fraction"].mean() > 0.3
    assert controls["high_fraction"].max() < 0.01
    assert cases["mean_loading"].min() > 0.1  # every case is on the network...
    assert controls["mean_loading"].max() < 0.05  # ...and no control is
    assert (cases["high_fraction"] < 0.5).sum() >= 4  # several only partly on it
    # varied sites: both hemispheres and all three blob pairs of the network
    target = next(n for n in build_latent_model(0).networks if n.name == truth["target_network"])
    centres = target.centres()
    nearest = set()
    for mask in cases["mask"]:
        xyz = np.argwhere(mask) @ mni152_grid(2).affine[:3, :3].T + mni152_grid(2).affine[:3, 3]
        nearest.add(int(np.argmin(((centres - xyz.mean(axis=0)) ** 2).sum(axis=1))))
    assert len(nearest) >= 5, nearest  # of the 6 blob centres (3 blobs x 2 hemispheres)


def test_score_follows_target_loading(lesions, truth):
    cases = lesions[lesions["group"] == "case"]
    r_cases = stats.pearsonr(cases["score"], cases["mean_loading"]).statistic
    rho_all = stats.spearmanr(lesions["score"], lesions["mean_loading"]).statistic
    mw = stats.mannwhitneyu(cases["score"], lesions.loc[lesions["group"] == "control", "score"])
    print(
        f"\nscore ~ mean target loading: Pearson r over cases {r_cases:.2f}, Spearman over all {rho_all:.2f}"
    )
    assert r_cases > 0.4
    assert rho_all > 0.7
    assert mw.pvalue < 1e-4
    # the score model of truth.json: score = clip(round(slope * rho + e), 0, max), e ~ N(0, noise_sd)
    model = truth["score_model"]
    by_id = {p["participant_id"]: p for p in truth["participants"]}
    rho = np.array([by_id[p]["rho"] for p in lesions.index])
    expected = np.clip(model["slope"] * rho, 0, model["max"])
    residual = lesions["score"].to_numpy() - expected
    inside = (expected > 3) & (expected < model["max"] - 3)  # away from the clipping bounds
    # rounding adds at most 0.5; 8 sd of the noise bounds every one of 32 draws (p ~ 1e-15)
    assert np.abs(residual).max() <= 8 * model["noise_sd"] + 0.5
    assert 0.5 * model["noise_sd"] < residual[inside].std() < 2 * model["noise_sd"]


def test_rho_matches_the_latent_model(lesions, truth):
    # rho from the model by a plain loop over the lesion's voxels: mean signal a_k = mean(scale * L_k),
    # var = a' C a + sum(scale^2 sd^2) / n^2, cov with the target course = (C a)_t
    model = build_latent_model(0)
    names = [n.name for n in model.networks]
    t = names.index(truth["target_network"])
    col = np.full(model.mask.shape, -1)
    col[model.mask] = np.arange(model.n_voxels)
    by_id = {p["participant_id"]: p for p in truth["participants"]}
    for pid, row in lesions.iterrows():
        cols = col[row["mask"]]
        a = np.zeros(len(names))
        noise = 0.0
        for v in cols:
            a += float(model.scale[v]) * model.loadings[:, v].astype(np.float64)
            noise += float(model.scale[v]) ** 2 * float(model.noise_sd[v]) ** 2
        a /= cols.size
        noise /= cols.size**2
        c = model.correlation
        rho = (c @ a)[t] / np.sqrt(a @ c @ a + noise)
        # float64 sums of <= 3000 float32-exact terms: relative error ~ 3000 * 2^-53, far below 1e-9
        assert by_id[pid]["rho"] == pytest.approx(rho, rel=1e-9), pid
        assert by_id[pid]["mean_loading"][names[t]] == pytest.approx(row["mean_loading"], rel=1e-6)


def test_volumes_overlap(lesions):
    cases = lesions.loc[lesions["group"] == "case", "volume_mm3"]
    controls = lesions.loc[lesions["group"] == "control", "volume_mm3"]
    print(
        f"\nvolumes (ml): cases {cases.min() / 1e3:.1f}-{cases.max() / 1e3:.1f}, "
        f"controls {controls.min() / 1e3:.1f}-{controls.max() / 1e3:.1f}"
    )
    assert max(cases.min(), controls.min()) < min(cases.max(), controls.max())
    assert stats.mannwhitneyu(cases, controls).pvalue > 0.2  # no volume difference between the groups
    assert cases.max() / cases.min() > 5  # varied sizes
    # a volume-matched null (DESIGN 3b): each case gets the nearest unused control volume, all close
    unused = list(controls)
    ratios = []
    for v in cases:
        j = int(np.argmin([abs(np.log(u / v)) for u in unused]))
        ratios.append(unused.pop(j) / v)
    assert max(abs(np.log(ratios))) < np.log(1.5), ratios


def test_deterministic_and_nested(tut, tmp_path):
    small = write_tutorial(tmp_path / "small", **BASE, lnm_cases=4, lnm_controls=3)
    for folder, big in ((small.lnm_cases, tut.lnm_cases), (small.lnm_controls, tut.lnm_controls)):
        files = sorted(p.relative_to(folder) for p in folder.rglob("*.nii.gz"))
        assert len(files) == (4 if folder == small.lnm_cases else 3)
        for rel in files:  # the same lesion for the same participant whatever the cohort size
            assert (folder / rel).read_bytes() == (big / rel).read_bytes(), rel
        small_rows = (folder / "participants.tsv").read_text().splitlines()
        assert small_rows == (big / "participants.tsv").read_text().splitlines()[: len(small_rows)]
    for name in (p.name for p in tut.lnm_truth.glob("*.nii.gz")):
        assert (small.lnm_truth / name).read_bytes() == (tut.lnm_truth / name).read_bytes()
    # a rerun with the same arguments leaves the folder alone; other cohort sizes rewrite it
    before = {p: p.stat().st_mtime_ns for p in small.root.rglob("*") if p.is_file()}
    write_tutorial(small.root, **BASE, lnm_cases=4, lnm_controls=3)
    assert {p: p.stat().st_mtime_ns for p in small.root.rglob("*") if p.is_file()} == before
    again = write_tutorial(small.root, **BASE, lnm_cases=2, lnm_controls=3)
    assert len(list(again.lnm_cases.glob("sub-*"))) == 2
    off = write_tutorial(tmp_path / "off", **BASE, lnm=False)
    assert off.lnm_cases is None and not (off.root / "lnm").exists()
