"""Tests of lakepipe.tutorial: the deterministic example inputs (lesions, HDF5 connectome, atlas, ...)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lakepipe.bids import parse_entities
from lakepipe.errors import InputError
from lakepipe.space import mni152_brain_mask_2mm, mni152_grid
from lakepipe.tutorial import (
    NETWORKS,
    TutorialPaths,
    build_latent_model,
    subject_timeseries,
    write_hdf5_batch,
    write_tutorial,
)

PARAMS = {
    "participants": 4,
    "subjects": 3,
    "timepoints": 30,
    "batch_size": 2,
    "seed": 0,
    "nifti_connectome": True,
}


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> TutorialPaths:
    return write_tutorial(tmp_path_factory.mktemp("tut") / "data", **PARAMS)


@pytest.fixture(scope="module")
def model():
    return build_latent_model(0)


@pytest.fixture(scope="module")
def series(tutorial) -> tuple[np.ndarray, list[str]]:
    """All subjects' voxel series from the HDF5 batches, (S, T, V), and their ids."""
    xs, ids = [], []
    for f in sorted(tutorial.connectome.glob("batch-*.h5")):
        with h5py.File(f) as h:
            xs.append(h["timeseries"][()])
            ids += [s.decode() for s in h["subject_ids"][()]]
    return np.concatenate(xs), ids


def _corr_with(x: np.ndarray, seed: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    s = seed - seed.mean()
    return (s @ x) / np.sqrt((s @ s) * (x * x).sum(axis=0))


def _mask_files(bids: Path) -> list[Path]:
    return sorted(bids.glob("sub-*/ses-*/anat/*_mask.nii.gz"))


# ---------------------------------------------------------------------------------------------- layout


def test_paths_and_manifest(tutorial):
    for p in (
        tutorial.bids,
        tutorial.connectome,
        tutorial.atlas_nifti,
        tutorial.atlas_labels,
        tutorial.parcel_timeseries,
        tutorial.nifti_connectome,
        tutorial.lnm_cases,  # the LNM question is written by default
        tutorial.lnm_controls,
        tutorial.lnm_truth,
        tutorial.manifest,
        tutorial.root / "README.md",
    ):
        assert p is not None and p.exists(), p
    assert tutorial.fmriprep is None and tutorial.hcp is None  # optional, off by default
    assert not (tutorial.root / "fmriprep").exists() and not (tutorial.root / "hcp").exists()
    manifest = json.loads(tutorial.manifest.read_text())
    import lakepipe

    assert manifest["lakepipe_version"] == lakepipe.__version__
    assert manifest["seed"] == 0
    defaults = {
        name: p.default
        for name, p in inspect.signature(write_tutorial).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert manifest["parameters"] == {**defaults, **PARAMS}
    assert manifest["lnm"]["target_network"] == "DorsalAttention"
    assert manifest["fmriprep"] is None and manifest["hcp"] is None
    for rel, size in manifest["files"].items():
        assert (tutorial.root / rel).stat().st_size == size


def test_deterministic(tutorial, tmp_path):
    # same seed -> identical bytes (the 4D NIfTI, slow to gzip, are left out of the second run; they
    # are checked against the HDF5 series in test_nifti_connectome)
    params = {**PARAMS, "nifti_connectome": False}
    again = write_tutorial(tmp_path / "again", **params)
    skip = {"README.md", "tutorial.json"}
    first = sorted(
        p.relative_to(tutorial.root)
        for p in tutorial.root.rglob("*")
        if p.is_file() and "nifti_connectome" not in p.parts
    )
    second = sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        if rel.name not in skip:
            assert (tutorial.root / rel).read_bytes() == (again.root / rel).read_bytes(), rel
    manifest = json.loads(again.manifest.read_text())
    assert manifest["lesions"] == json.loads(tutorial.manifest.read_text())["lesions"]


def test_other_seed_differs_and_subject_stream_is_stable(series, model):
    x, _ = series
    # subject k depends only on (seed, k): regenerating it alone gives the stored series
    np.testing.assert_array_equal(subject_timeseries(model, 0, 2, PARAMS["timepoints"]), x[2])
    other = subject_timeseries(model, 1, 2, PARAMS["timepoints"])
    assert not np.allclose(other, x[2])


def test_rerun_is_noop_and_foreign_folder_refused(tutorial, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tutorial.root.rglob("*") if p.is_file()}
    write_tutorial(tutorial.root, **PARAMS)
    assert {p: p.stat().st_mtime_ns for p in tutorial.root.rglob("*") if p.is_file()} == before
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a lakepipe tutorial"):
        write_tutorial(tmp_path, participants=2, subjects=1, timepoints=5)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    own = tmp_path / "study"
    (own / "bids").mkdir(parents=True)  # a user's own folder with a tutorial-like name: never cleared
    (own / "bids" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a lakepipe tutorial"):
        write_tutorial(own, participants=2, subjects=1, timepoints=5)
    assert (own / "bids" / "keep.txt").exists()
    with pytest.raises(InputError, match="timepoints"):
        write_tutorial(tmp_path / "x", timepoints=1)


# ---------------------------------------------------------------------------------------------- HDF5


def test_hdf5_layout(tutorial):
    grid, mask = mni152_grid(2), mni152_brain_mask_2mm()
    files = sorted(tutorial.connectome.glob("*.h5"))
    assert [f.name for f in files] == ["batch-001.h5", "batch-002.h5"]
    ids = []
    for f, n in zip(files, (2, 1), strict=True):
        with h5py.File(f) as h:
            ts = h["timeseries"]
            assert ts.dtype == np.float32
            assert ts.shape == (n, PARAMS["timepoints"], int(mask.sum()))
            assert ts.chunks[0] == 1 and ts.chunks[1] == PARAMS["timepoints"]
            idx = h["mask_indices"][()]
            assert idx.shape == (mask.sum(), 3) and np.issubdtype(idx.dtype, np.integer)
            np.testing.assert_array_equal(idx, np.argwhere(mask))
            np.testing.assert_array_equal(h["mask_affine"][()], grid.affine)
            assert tuple(h.attrs["mask_shape"]) == grid.shape
            assert h["subject_ids"].dtype.kind == "S"
            ids += [s.decode() for s in h["subject_ids"][()]]
            data = ts[()]
            assert np.isfinite(data).all() and data.min() > 0
            assert 100 <= np.median(data.mean(axis=1)) <= 1000
    assert ids == ["GSP0001", "GSP0002", "GSP0003"]


@pytest.mark.parametrize("orientation", ["V3", "3V"])
def test_write_hdf5_batch_orientations(tmp_path, orientation):
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2:4, 1:5] = True
    idx = np.argwhere(mask)
    x = np.random.default_rng(0).standard_normal((3, 7, len(idx))).astype(np.float32)
    affine = np.diag([-2.0, 2, 2, 1])
    # an array and a generator of subjects give the same file contents
    for name, source in (("a.h5", x), ("b.h5", (s for s in x))):
        write_hdf5_batch(
            tmp_path / name,
            source,
            idx,
            affine,
            mask.shape,
            subject_ids=["s1", "s2", "s3"],
            indices_orientation=orientation,
        )
        with h5py.File(tmp_path / name) as h:
            stored = h["mask_indices"][()]
            assert stored.shape == ((len(idx), 3) if orientation == "V3" else (3, len(idx)))
            np.testing.assert_array_equal(stored if orientation == "V3" else stored.T, idx)
            np.testing.assert_array_equal(h["timeseries"][()], x)
            assert list(h["subject_ids"][()]) == [b"s1", b"s2", b"s3"]
    assert not list(tmp_path.glob("*.tmp"))


def test_write_hdf5_batch_checks(tmp_path):
    idx = np.argwhere(np.ones((2, 2, 2), bool))
    good = np.ones((1, 4, 8), np.float32)
    write_hdf5_batch(tmp_path / "noids.h5", good, idx, np.eye(4), (2, 2, 2))
    with h5py.File(tmp_path / "noids.h5") as h:
        assert "subject_ids" not in h
    with pytest.raises(InputError, match="mask"):
        write_hdf5_batch(tmp_path / "bad.h5", np.ones((1, 4, 7), np.float32), idx, np.eye(4), (2, 2, 2))
    with pytest.raises(InputError, match="subject ids"):
        write_hdf5_batch(tmp_path / "bad.h5", good, idx, np.eye(4), (2, 2, 2), subject_ids=["a", "b"])
    assert not (tmp_path / "bad.h5").exists()
    # deliberately broken files for reader tests
    write_hdf5_batch(
        tmp_path / "broken.h5", np.ones((1, 4, 7), np.float32), idx, np.eye(4), (2, 2, 2), validate=False
    )
    with h5py.File(tmp_path / "broken.h5") as h:
        assert h["timeseries"].shape == (1, 4, 7)


# ---------------------------------------------------------------------------------------------- lesions


def _inside_2mm_mask(img: nib.Nifti1Image, data: np.ndarray) -> bool:
    """Every lesion voxel lands inside the 2 mm brain mask, rounding down or up."""
    mask, grid = mni152_brain_mask_2mm(), mni152_grid(2)
    ijk = np.argwhere(data)
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    inv = np.linalg.inv(grid.affine)
    v = xyz @ inv[:3, :3].T + inv[:3, 3]
    for target in (np.floor(v + 1e-6), np.ceil(v - 1e-6)):
        t = target.astype(int)
        if np.any(t < 0) or np.any(t >= np.array(grid.shape)) or not mask[tuple(t.T)].all():
            return False
    return True


def test_lesion_masks(tutorial):
    files = _mask_files(tutorial.bids)
    assert files
    counts = {}
    for f in files:
        ent = parse_entities(f.name)
        assert ent["space"] == "MNI152NLin6Asym" and ent["suffix"] == "mask"
        assert f.parent == tutorial.bids / f"sub-{ent['sub']}" / f"ses-{ent['ses']}" / "anat"
        img = nib.load(f)
        data = np.asarray(img.dataobj)
        assert data.dtype == np.uint8 and img.get_data_dtype() == np.uint8
        assert set(np.unique(data)) == {0, 1}, f
        grid = mni152_grid(2 if ent.get("res") == "2" else 1)
        assert ent.get("res") in (None, "2")
        assert data.shape == grid.shape and np.allclose(img.affine, grid.affine), f
        assert _inside_2mm_mask(img, data), f
        x = (np.argwhere(data) @ img.affine[:3, :3].T + img.affine[:3, 3])[:, 0]
        assert (x > 0).all() or (x < 0).all(), f"{f} crosses the midline"
        counts[f.name] = int(data.sum())
    assert min(counts.values()) < 30  # one tiny lesion
    assert any("res-2" in n for n in counts) and any("res-" not in n for n in counts)


def test_lesion_cohort(tutorial):
    files = _mask_files(tutorial.bids)
    ents = [parse_entities(f.name) for f in files]
    subs = sorted({e["sub"] for e in ents})
    assert subs == ["01", "02", "03", "04"]
    assert any(e["ses"] == "02" for e in ents)
    assert {e["label"] for e in ents} == {"acuteinfarct", "chronic"}
    desc = json.loads((tutorial.bids / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == "1.9.0" and desc["DatasetType"] == "raw"
    table = pd.read_csv(tutorial.bids / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "age", "sex", "nihss", "days_since_onset"]
    assert list(table["participant_id"]) == [f"sub-{s}" for s in subs]
    sidecar = json.loads((tutorial.bids / "participants.json").read_text())
    assert set(sidecar) == set(table.columns)
    # symptom score rises with the acute lesion volume (mm^3)
    manifest = json.loads(tutorial.manifest.read_text())
    vol = {
        f"sub-{r['participant']}": r["volume_mm3"]
        for r in manifest["lesions"]
        if r["label"] == "acuteinfarct" and r["session"] == "01"
    }
    assert table["nihss"].corr(table["participant_id"].map(vol), method="spearman") > 0.7
    assert max(vol.values()) >= 20000


def test_follow_up_is_grown_first_lesion(tutorial):
    for ses2 in tutorial.bids.glob("sub-*/ses-02/anat/*label-acuteinfarct_mask.nii.gz"):
        ses1 = next((ses2.parent.parent.parent / "ses-01" / "anat").glob("*label-acuteinfarct_mask.nii.gz"))
        a, b = (np.asarray(nib.load(p).dataobj).astype(bool) for p in (ses1, ses2))
        assert b.sum() > a.sum()
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.5


# ---------------------------------------------------------------------------------------------- networks


def test_network_structure(series, model):
    x, _ = series

    def r_mean(seed_mm, target_voxels) -> float:
        """Seed-voxel correlation, averaged over target voxels and subjects."""
        seed = model.voxel_index(seed_mm)
        return float(np.mean([_corr_with(s[:, target_voxels], s[:, seed]).mean() for s in x]))

    for net in NETWORKS:
        right = next(c for c in net.blobs if c[0] != 0)
        left = (-right[0], *right[1:])
        assert r_mean(left, [model.voxel_index(right)]) > 0.3, net.name
    # a far network with no course correlation: near 0 (mean over a small sphere and the subjects)
    far = np.where(((model.xyz - np.array([38, -24, 56])) ** 2).sum(axis=1) <= 36)[0]  # right hand area
    assert abs(r_mean((-46, -66, 32), far)) < 0.2  # from the left angular gyrus (default mode)


# ---------------------------------------------------------------------------------------------- atlas


def test_atlas(tutorial):
    grid, mask = mni152_grid(2), mni152_brain_mask_2mm()
    img = nib.load(tutorial.atlas_nifti)
    vol = np.asarray(img.dataobj)
    assert vol.dtype == np.int16 and vol.shape == grid.shape and np.allclose(img.affine, grid.affine)
    assert not vol[~mask].any()
    table = pd.read_csv(tutorial.atlas_labels, sep="\t")
    assert list(table.columns[:4]) == ["index", "name", "network", "hemisphere"]
    assert list(table["index"]) == list(range(1, 301))
    assert table["name"].is_unique
    assert all(
        n.startswith(f"Seitzman_{net}_") for n, net in zip(table["name"], table["network"], strict=True)
    )
    assert set(np.unique(vol)) - {0} <= set(table["index"])
    np.testing.assert_array_equal(np.bincount(vol.ravel(), minlength=301)[1:], table["n_voxels"])
    hemi = np.where(table["x"].abs() < 2, "M", np.where(table["x"] < 0, "L", "R"))
    np.testing.assert_array_equal(table["hemisphere"], hemi)
    # every labelled voxel lies within the 5 mm sphere of its own centre
    ijk = np.argwhere(vol)
    xyz = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    centres = table.set_index("index").loc[vol[tuple(ijk.T)], ["x", "y", "z"]].to_numpy()
    assert np.sqrt(((xyz - centres) ** 2).sum(axis=1)).max() <= 5.0 + 1e-6


# ------------------------------------------------------------------------------------ parcels, NIfTI


def test_parcel_timeseries_are_parcel_means(tutorial, series):
    x, ids = series
    mask = mni152_brain_mask_2mm()
    labels = np.asarray(nib.load(tutorial.atlas_nifti).dataobj)[mask]
    present = np.unique(labels[labels > 0])
    regions = pd.read_csv(tutorial.parcel_timeseries / "regions.tsv", sep="\t")
    assert list(regions.columns) == ["index", "name", "network"]
    np.testing.assert_array_equal(regions["index"], present)
    atlas_table = pd.read_csv(tutorial.atlas_labels, sep="\t").set_index("index")
    assert list(regions["name"]) == list(atlas_table.loc[present, "name"])
    for s, sid in enumerate(ids):
        npy = tutorial.parcel_timeseries / f"sub-{sid}_timeseries.npy"
        got = (
            np.load(npy)
            if npy.exists()
            else np.loadtxt(tutorial.parcel_timeseries / f"sub-{sid}_timeseries.tsv", delimiter="\t", ndmin=2)
        )
        expected = np.stack([x[s][:, labels == k].astype(np.float64).mean(axis=1) for k in present])
        assert got.shape == (len(present), PARAMS["timepoints"])
        np.testing.assert_allclose(got, expected, rtol=1e-7)  # float32 rounding
    assert len(list(tutorial.parcel_timeseries.glob("*.tsv"))) == 2  # regions + one subject as TSV


def test_nifti_connectome(tutorial, series):
    x, ids = series
    mask = mni152_brain_mask_2mm()
    m = nib.load(tutorial.nifti_connectome / "brain_mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(m.dataobj).astype(bool), mask)
    files = sorted(tutorial.nifti_connectome.glob("sub-*_bold.nii.gz"))
    assert [f.name for f in files] == [f"sub-{i}_bold.nii.gz" for i in ids]  # 3 subjects: all of them
    for f in files:
        img = nib.load(f)
        assert img.get_data_dtype() == np.float32
        assert img.shape == (*mask.shape, PARAMS["timepoints"])
        np.testing.assert_allclose(img.affine, mni152_grid(2).affine)
    data = np.asarray(nib.load(files[-1]).dataobj)  # one read in full (gunzip is slow)
    np.testing.assert_array_equal(data[mask].T, x[-1])
    assert not data[~mask].any()
