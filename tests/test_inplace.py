"""HDF5 batches read in place (``ingest connectome --in-place``) and the one-command path
(``run fnm BIDS_DIR --connectome H5_DIR``).

The in-place connectome must give what a copied one gives: the same lazy Dataset, the same FNM maps
and group FC (checked to 1e-5, the issue's criterion; both read the same float32 series centred by the
same function, so they agree far closer), and the FNM maps must equal the naive reference on the raw
batches. A batch that changes after registration must make every read fail with one line telling the
user to re-ingest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from lakepipe.cli.main import main
from lakepipe.errors import InputError
from lakepipe.ingest import ingest_atlas, ingest_connectome
from lakepipe.ingest.inplace import inplace_name
from lakepipe.io.stores.inplace import SourceChangedError
from lakepipe.lake import Lake
from lakepipe.space import mni152_brain_mask_2mm, mni152_grid
from lakepipe.tutorial import write_hdf5_batch
from tests import reference, tolerances
from tests.conftest import shared_atlas

N_TIME, PER_BATCH, N_BATCHES = 30, 2, 3
#: sphere seeds (name, x, y, z mm, radius): one per planted network
SPHERES = [("lpost", -30, -60, 30, 10.0), ("rant", 30, 30, 20, 10.0)]
#: FNM and parcellate of in-place and copied connectomes must agree to this (issue 15)
SAME = 1e-5


def _series(rng, ijk: np.ndarray, affine: np.ndarray, n: int) -> np.ndarray:
    """(n, T, V) raw series: four networks (the brain's quadrants, left/right x front/back), each
    voxel's own loading, noise, and a voxel-specific offset and gain (ingest must undo both)."""
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    net = (xyz[:, 0] > 0).astype(int) * 2 + (xyz[:, 1] > -20).astype(int)
    load = rng.uniform(0.4, 1.2, len(ijk))
    offset, gain = rng.uniform(20, 200, len(ijk)), rng.uniform(0.5, 5, len(ijk))
    out = np.empty((n, N_TIME, len(ijk)), np.float32)
    for s in range(n):
        factors = rng.standard_normal((4, N_TIME))
        x = factors[net].T * load + rng.standard_normal((N_TIME, len(ijk)))
        out[s] = offset + gain * x
    return out


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    """Three HDF5 batches of two subjects on every third voxel of the 2 mm MNI brain (~8,700 voxels)."""
    grid = mni152_grid(2)
    brain = mni152_brain_mask_2mm()
    keep = np.zeros_like(brain)
    keep[::3, ::3, ::3] = brain[::3, ::3, ::3]
    ijk = np.argwhere(keep)
    rng = np.random.default_rng(15)
    folder = tmp_path_factory.mktemp("inplace") / "h5"
    folder.mkdir()
    series = _series(rng, ijk, grid.affine, PER_BATCH * N_BATCHES)
    for b in range(N_BATCHES):
        rows = slice(b * PER_BATCH, (b + 1) * PER_BATCH)
        ids = [f"S{b}{i}" for i in range(PER_BATCH)]
        write_hdf5_batch(folder / f"batch-{b:03d}.h5", series[rows], ijk, grid.affine, grid.shape, ids)
    return folder, series, ijk, grid


@pytest.fixture(scope="module")
def lakes(h5, tmp_path_factory):
    """One lake holding the batches twice: copied (``copied``) and in place (``inplace``), and an atlas."""
    folder, *_ = h5
    lake = Lake(str(tmp_path_factory.mktemp("lake") / "lake"))
    ingest_connectome(lake, folder, name="copied")
    ingest_connectome(lake, folder, name="inplace", in_place=True)
    nii, labels = shared_atlas("100Parcels7Networks")
    ingest_atlas(lake, nii, labels=labels, name="Schaefer100")
    return lake


def _spheres() -> list[str]:
    return [f"{x},{y},{z}" for _, x, y, z, _ in SPHERES]


def _store_bytes(path: Path, what: str = "") -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and (not what or what in f.parts))


def test_same_dataset_as_a_copied_ingest(lakes, h5):
    folder, series, ijk, grid = h5
    a, b = lakes.open_connectome("copied"), lakes.open_connectome("inplace")
    assert set(a.variables) == set(b.variables) and a.sizes == b.sizes
    assert b["timeseries"].chunks is not None  # lazy, one block per subject
    for var in ("timeseries", "scale", "mean", "ijk", "subject", "n_valid", "group"):
        np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=var)
    assert b.attrs["grid"] == a.attrs["grid"] and b.attrs["space"] == a.attrs["space"]
    # the raw series come back from mean and scale (float32 rounding of each: 4 u of their size)
    raw = b["timeseries"].values * b["scale"].values[:, None] + b["mean"].values[:, None]
    bound = 4 * tolerances.U32 * (np.abs(b["mean"].values) + b["scale"].values)[:, None]
    assert np.all(np.abs(raw - series) <= bound)
    # what the lake holds: no series, 2 x 4 bytes per subject and voxel besides the geometry
    lake = Path(lakes.url)
    copied = _store_bytes(lake / "connectomes" / "copied.zarr")
    inplace = _store_bytes(lake / "connectomes" / "inplace.zarr")
    assert not (lake / "connectomes" / "inplace.zarr" / "timeseries").exists()
    assert _store_bytes(lake / "connectomes" / "copied.zarr", "timeseries") >= series.nbytes
    assert inplace < 3 * series.shape[0] * series.shape[2] * 4 + 200_000 and inplace * 5 < copied


def test_fnm_and_parcellate_same_as_copied(lakes, h5):
    folder, series, ijk, grid = h5
    out = {}
    for con in ("copied", "inplace"):
        names = [n for n, *_ in SPHERES]
        lakes.run(
            "fnm",
            connectome=con,
            sphere=_spheres(),
            sphere_name=names,
            radius=SPHERES[0][4],
            atlas="Schaefer100",
        )
        lakes.run("parcellate", connectome=con, atlas="Schaefer100")
        seeds = [f"sphere-{n}" for n in names]  # in the order of SPHERES
        out[con] = {
            stat: lakes.collect("fnm", connectome=con, statistic=stat).sel(seed=seeds).values
            for stat in ("zmap", "tmap", "pmap")
        }
        parcel = lakes.collect("fnm", connectome=con, atlas="Schaefer100", statistic="zmap")
        out[con]["parcel"] = parcel.sel(seed=seeds).values
        fc = lakes.collect("parcellate", connectome=con, atlas="Schaefer100", statistic="fcgroupz")
        out[con]["fcgroupz"] = np.asarray(fc.values)
    for key, copied in out["copied"].items():
        assert copied.shape == out["inplace"][key].shape and np.abs(copied).max() > 0.1, key
        np.testing.assert_allclose(out["inplace"][key], copied, rtol=0, atol=SAME, err_msg=key)
    # and both equal the naive reference on the raw batches (within the float32 bound of the maps)
    seeds = [
        reference.sphere_voxels_nilearn((x, y, z), r, ijk, grid.affine, grid.shape)
        for _, x, y, z, r in SPHERES
    ]
    maps, dr = tolerances.reference_maps(series.astype(np.float64), [(c, None) for c, _ in seeds], N_TIME)
    for k in range(len(SPHERES)):
        bound = tolerances.fnm_bounds(maps[k], dr[k], N_TIME, series.shape[0])["zmap"]
        assert np.all(np.abs(out["inplace"]["zmap"][k] - maps[k]["zmap"]) <= bound)
    # the planted networks show: each seed correlates with its own quadrant
    assert out["inplace"]["zmap"][0].max() > 1.0


def test_changed_batch_is_refused_until_reingested(h5, tmp_path, capsys):
    src, *_ = h5
    folder = tmp_path / "h5"
    shutil.copytree(src, folder)
    lake_dir = tmp_path / "lake"
    lake = Lake(str(lake_dir))
    ingest_connectome(lake, folder, name="gsp", in_place=True)
    fnm = [
        "run",
        "fnm",
        "--connectome",
        "gsp",
        "--sphere",
        _spheres()[0],
        "--radius",
        "10",
        "--lake",
        str(lake_dir),
    ]
    assert main(fnm) == 0
    n_maps = len(lake.catalog.query(method="fnm"))
    capsys.readouterr()

    # 1. touched: size/time differ -> every read fails, one line, exit 2, nothing registered
    batch = folder / "batch-001.h5"
    st = batch.stat()
    os.utime(batch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(SourceChangedError, match="re-ingest it: lakepipe ingest connectome .* --in-place"):
        lake.open_connectome("gsp")
    assert main([*fnm, "--recompute"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch-001.h5: changed (size or modification time differ)" in err[0], err
    assert "re-ingest" in err[0] and len(lake.catalog.query(method="fnm")) == n_maps

    # 2. re-ingested: the store is rebuilt (the batches are never written) and reads work again
    res = ingest_connectome(lake, folder, name="gsp", in_place=True)
    assert sorted(res.written) == [f"S{b}{i}" for b in range(N_BATCHES) for i in range(PER_BATCH)]
    assert main([*fnm, "--recompute"]) == 0

    # 3. rewritten with the same size and time but another header (subject ids): the hash says so
    with h5py.File(batch, "r+") as f:
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["subject_ids"][()]]
        f["subject_ids"][...] = np.asarray([s.replace("S", "T") for s in ids], dtype=f["subject_ids"].dtype)
    st2 = batch.stat()
    os.utime(batch, ns=(st2.st_atime_ns, _recorded_mtime(lake_dir, "gsp", batch.name)))
    assert batch.stat().st_size == _recorded_size(lake_dir, "gsp", batch.name)
    with pytest.raises(SourceChangedError, match="its header or mask differ"):
        lake.open_connectome("gsp")

    # 4. moved away
    folder.rename(tmp_path / "elsewhere")
    with pytest.raises(SourceChangedError, match="no longer exists"):
        lake.open_connectome("gsp")


def _recorded(lake_dir: Path, name: str, file: str) -> dict:
    import json

    attrs = json.loads((lake_dir / "connectomes" / f"{name}.zarr" / "zarr.json").read_text())["attributes"]
    return next(b for b in attrs["inplace"]["batches"] if b["file"] == file)


def _recorded_mtime(lake_dir: Path, name: str, file: str) -> int:
    return int(_recorded(lake_dir, name, file)["mtime_ns"])


def _recorded_size(lake_dir: Path, name: str, file: str) -> int:
    return int(_recorded(lake_dir, name, file)["size"])


def test_new_batches_are_added_and_a_foreign_mask_refused(h5, tmp_path, capsys):
    src, series, ijk, grid = h5
    folder = tmp_path / "h5"
    folder.mkdir()
    shutil.copy(src / "batch-000.h5", folder)
    lake_dir = tmp_path / "lake"
    lake = Lake(str(lake_dir))
    args = ["ingest", "connectome", str(folder), "--in-place", "--name", "grow", "--lake", str(lake_dir)]
    assert main(args) == 0
    shutil.copy(src / "batch-001.h5", folder)
    res = ingest_connectome(lake, folder, name="grow", in_place=True)
    assert res.written == ["S10", "S11"] and sorted(res.skipped) == ["S00", "S01"]
    assert lake.open_connectome("grow").sizes["subject"] == 4
    # a batch on another mask: one line, exit 2, nothing registered
    write_hdf5_batch(folder / "batch-009.h5", series[:1, :, :-1], ijk[:-1], grid.affine, grid.shape, ["X0"])
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "batch-009.h5: mask differs from the first batch's mask" in err[0], err
    assert len(lake.catalog.query(kind="connectome", connectome="grow")) == 4
    # a copied ingest cannot extend an in-place connectome, nor the other way round
    os.remove(folder / "batch-009.h5")
    with pytest.raises(InputError, match="registered in place"):
        ingest_connectome(lake, folder, name="grow")
    ingest_connectome(lake, src, name="copy")
    with pytest.raises(InputError, match="holds copied series"):
        ingest_connectome(lake, folder, name="copy", in_place=True)


# --------------------------------------------------------------------------- the one-command path


def test_one_command_from_folders(tutorial, tmp_path, capsys):
    """``run fnm BIDS_DIR --connectome H5_DIR`` from an empty lake: lesions ingested, the batches
    registered in place, the maps made; a second run reuses all of it; the maps equal those of the
    separate steps (copied ingest, then run fnm)."""
    lake_dir = tmp_path / "lake"
    cmd = [
        "run",
        "fnm",
        str(tutorial.bids),
        "--connectome",
        str(tutorial.connectome),
        "--lake",
        str(lake_dir),
    ]
    assert main(cmd) == 0
    out = capsys.readouterr().out
    lake = Lake(str(lake_dir))
    name = inplace_name(tutorial.connectome)
    cohort = "".join(ch for ch in tutorial.bids.name if ch.isalnum())
    assert f"connectome '{name}'" in out and "registered in place" in out and "FNM:" in out
    assert lake.catalog.count(kind="lesion", cohort=cohort) > 0
    n_sub = lake.catalog.count(kind="connectome", connectome=name)
    assert n_sub == 8 and lake.open_connectome(name).attrs["storage"] == "in-place-hdf5"
    n_maps = lake.catalog.count(method="fnm")
    # again: everything reused, nothing computed
    assert main(cmd) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "0 seed(s) mapped" in out
    assert lake.catalog.count(method="fnm") == n_maps and lake.catalog.count(kind="connectome") == n_sub

    # the separate steps on a copied connectome give the same maps
    sep = Lake(str(tmp_path / "separate"))
    for argv in (
        ["ingest", "lesions", str(tutorial.bids), "--cohort", cohort],
        ["ingest", "connectome", str(tutorial.connectome), "--name", "tutorial"],
        ["run", "fnm", "--cohort", cohort, "--connectome", "tutorial"],
    ):
        assert main([*argv, "--lake", sep.url]) == 0
    a = lake.collect("fnm", statistic="zmap")
    b = sep.collect("fnm", statistic="zmap")
    assert list(a["seed"].values) == list(b["seed"].values)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=SAME)

    # parcellate and afnm alike (the atlas is a lake name)
    assert main(["ingest", "atlas", str(tutorial.atlas_nifti), "--labels", str(tutorial.atlas_labels),
                 "--name", "Seitzman", "--lake", str(lake_dir)]) == 0  # fmt: skip
    assert main(["parcellate", "--connectome", str(tutorial.connectome), "--atlas", "Seitzman",
                 "--lake", str(lake_dir)]) == 0  # fmt: skip
    assert main(["run", "afnm", str(tutorial.bids), "--connectome", str(tutorial.connectome), "--atlas",
                 "Seitzman", "--lake", str(lake_dir)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("reused") >= 2 and lake.catalog.count(kind="connectome") == n_sub
    assert lake.catalog.count(method="afnm") > 0


def test_one_command_bad_folders_register_nothing(tutorial, tmp_path, capsys):
    lake_dir = tmp_path / "lake"
    # a connectome folder that is not HDF5 batches: refused before the lesions are ingested
    code = main(["run", "fnm", str(tutorial.bids), "--connectome", str(tutorial.nifti_connectome),
                 "--lake", str(lake_dir)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "must hold HDF5 batches" in err[0], err
    # a BIDS folder without lesion masks: nothing registered, the batches neither
    empty = tmp_path / "empty_bids"
    empty.mkdir()
    (empty / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    code = main(["run", "fnm", str(empty), "--connectome", str(tutorial.connectome), "--lake", str(lake_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    if (lake_dir / "catalog.sqlite").exists():
        lake = Lake(str(lake_dir))
        assert lake.catalog.count(kind="lesion") == 0 and lake.catalog.count(kind="connectome") == 0
