"""Ingestion of real and tutorial inputs: shared atlases and masks, round trips, the three connectome
source formats, both HDF5 mask_indices orientations, incremental re-ingestion."""

from __future__ import annotations

import shutil

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
from lakepipe.io import stores
from lakepipe.io.bidsfind import find_lesion_files
from lakepipe.lake import Lake
from lakepipe.tutorial import write_hdf5_batch
from tests.conftest import ATLASES, SHARED_LESIONS


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_shared_masks_round_trip_to_identical_nifti(lake, tmp_path):
    res = ingest_lesions(lake, SHARED_LESIONS, cohort="shared")
    assert sorted(res.written) == [f"sub-0{i}_ses-01_label-acuteinfarct" for i in (1, 2, 3)]
    for f in find_lesion_files(SHARED_LESIONS):
        mask, attrs = stores.read_lesion(lake.url, "shared", f.key)
        out = tmp_path / f"{f.key}.nii.gz"
        nib.save(mask.to_nifti(), str(out))
        src, back = nib.load(str(f.path)), nib.load(str(out))
        assert np.array_equal(np.asarray(src.dataobj) > 0, np.asarray(back.dataobj) > 0)
        assert np.array_equal(np.asarray(back.dataobj), (np.asarray(src.dataobj) > 0).astype(np.uint8))
        np.testing.assert_array_equal(src.affine, back.affine)
        assert attrs["space"] == "MNI152NLin6Asym" and attrs["source"].endswith(f.path.name)
    table = lake.participants("shared")
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"] and "age" in table


@pytest.mark.parametrize(
    "desc,name,n,nets",
    [
        ("400Parcels7Networks", "Schaefer2018", 400, 7),
        ("1000Parcels17Networks", "Schaefer2018", 1000, 17),
        ("100Parcels17Networks", "Schaefer2018", 100, 17),
        ("3TS1", "TianSubcortex", 16, 1),
        ("3TS3", "TianSubcortex", 50, 1),
    ],
)
def test_shared_atlases(lake, desc, name, n, nets):
    nii = ATLASES / f"tpl-MNI152NLin6Asym_res-01_atlas-{name}_desc-{desc}_dseg.nii.gz"
    ingest_atlas(lake, nii, labels=nii.with_name(nii.name.replace(".nii.gz", ".txt")), name="A")
    atlas = lake.read_atlas("A")
    src = nib.load(str(nii))
    assert atlas.n_regions == n and atlas.space == "MNI152NLin6Asym"
    assert np.array_equal(atlas.labels, np.asarray(src.dataobj).astype(np.int32))
    np.testing.assert_array_equal(atlas.grid.affine, src.affine)
    assert atlas.table["network"].nunique() == nets
    assert set(atlas.table["hemisphere"]) == {"L", "R"}
    # ingesting the same atlas again is a no-op; other content under the same name is refused
    assert ingest_atlas(
        lake, nii, labels=nii.with_name(nii.name.replace(".nii.gz", ".txt")), name="A"
    ).skipped


def test_tutorial_lesions_incremental(lake, tutorial, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(tutorial.bids, bids)
    keep = shutil.move(str(bids / "sub-03"), str(tmp_path / "held-back"))
    first = ingest_lesions(lake, bids, cohort="tutorial")
    assert first.written and not any(k.startswith("sub-03") for k in first.written)
    shutil.move(keep, str(bids / "sub-03"))
    second = ingest_lesions(lake, bids, cohort="tutorial")
    assert second.written and all(k.startswith("sub-03") for k in second.written)
    assert len(second.skipped) == len(first.written)
    subset = ingest_lesions(lake, bids, cohort="other", participants=["sub-01", "02"])
    assert {k.split("_")[0] for k in subset.written} == {"sub-01", "sub-02"}
    grids = {
        stores.read_lesion(lake.url, "tutorial", k)[0].grid.shape for k in first.written + second.written
    }
    assert grids == {(182, 218, 182), (91, 109, 91)}  # 1 mm and 2 mm masks side by side


def _h5(tmp_path, orientation: str, n_sub=3, t=20):
    from lakepipe.space import mni152_grid

    rng = np.random.default_rng(4)
    grid = mni152_grid(2)
    ijk = np.argwhere(np.ones((6, 5, 4), bool)) + np.array([40, 50, 40])
    ts = rng.standard_normal((n_sub, t, len(ijk))).astype(np.float32) * 3 + 100
    folder = tmp_path / orientation
    folder.mkdir()
    write_hdf5_batch(
        folder / "batch-001.h5",
        ts,
        ijk,
        grid.affine,
        grid.shape,
        [f"S{i}" for i in range(n_sub)],
        indices_orientation=orientation,
    )
    return folder, ts, ijk


def test_hdf5_both_mask_index_orientations(tmp_path):
    for orientation in ("V3", "3V"):
        folder, ts, ijk = _h5(tmp_path, orientation)
        with h5py.File(folder / "batch-001.h5") as f:
            assert f["mask_indices"].shape == ((len(ijk), 3) if orientation == "V3" else (3, len(ijk)))
        lake = Lake(str(tmp_path / f"lake-{orientation}"))
        ingest_connectome(lake, folder, name="c")
        ds = lake.open_connectome("c")
        np.testing.assert_array_equal(ds["ijk"].values, ijk)
        raw = ds["timeseries"].values * ds["scale"].values[:, None, :] + ds["mean"].values[:, None, :]
        np.testing.assert_allclose(raw, ts, rtol=1e-5)
        unit = ds["timeseries"].values
        np.testing.assert_allclose((unit**2).sum(axis=1), 1.0, rtol=1e-4)
        np.testing.assert_allclose(unit.sum(axis=1), 0.0, atol=1e-4)
        assert list(ds["subject"].values) == ["S0", "S1", "S2"]


def test_connectome_append_and_noop(tmp_path, tutorial):
    src = tmp_path / "src"
    src.mkdir()
    batches = sorted(tutorial.connectome.glob("*.h5"))
    shutil.copy(batches[0], src)
    lake = Lake(str(tmp_path / "lake"))
    first = ingest_connectome(lake, src, name="c")
    assert ingest_connectome(lake, src, name="c").written == []  # unchanged source: no-op
    for b in batches[1:]:
        shutil.copy(b, src)
    second = ingest_connectome(lake, src, name="c")
    assert len(second.written) > 0 and len(second.skipped) == len(first.written)
    ds = lake.open_connectome("c")
    assert ds.sizes["subject"] == len(first.written) + len(second.written)
    assert len(lake.catalog.query(kind="connectome", connectome="c")) == ds.sizes["subject"]


def test_nifti_and_parcel_connectomes(tmp_path, tutorial):
    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, tutorial.nifti_connectome, name="bold")
    ingest_connectome(lake, tutorial.connectome, name="h5")
    bold, h5 = lake.open_connectome("bold"), lake.open_connectome("h5")
    n = bold.sizes["subject"]
    assert n >= 1 and bold.sizes["voxel"] == h5.sizes["voxel"] == 235375
    np.testing.assert_array_equal(bold["ijk"].values, h5["ijk"].values)
    raw_b = bold["timeseries"][0].values * bold["scale"][0].values + bold["mean"][0].values
    raw_h = h5["timeseries"][0].values * h5["scale"][0].values + h5["mean"][0].values
    np.testing.assert_allclose(raw_b, raw_h, rtol=1e-5, atol=1e-3)

    ingest_connectome(lake, tutorial.parcel_timeseries, name="parcels")
    par = lake.open_connectome("parcels")
    regions = pd.read_csv(tutorial.parcel_timeseries / "regions.tsv", sep="\t")
    assert par.sizes["region"] == len(regions)
    assert par["region_name"].values.tolist() == regions["name"].tolist()
    assert "voxel" not in par.dims
