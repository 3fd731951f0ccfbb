"""Every kind of bad input gets a one-line error naming the file and the problem, exit status 2,
and leaves nothing in the lake."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from lakepipe.cli.main import main
from lakepipe.lake import Lake
from lakepipe.space import mni152_grid
from lakepipe.tutorial import write_hdf5_batch

SPACE = "space-MNI152NLin6Asym"


def make_bids(
    root: Path, data: np.ndarray | None = None, affine=None, participant="01", space=SPACE, dtype=np.uint8
) -> Path:
    """A one-participant BIDS dataset with a blob in the left motor cortex (or ``data``)."""
    grid = mni152_grid(2)
    if data is None:
        data = np.zeros(grid.shape, dtype)
        data[60:64, 60:64, 60:64] = 1
    anat = root / f"sub-{participant}" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    name = f"sub-{participant}_ses-01_{space + '_' if space else ''}res-2_label-acuteinfarct_mask.nii.gz"
    nib.save(nib.Nifti1Image(data, grid.affine if affine is None else affine), str(anat / name))
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    return anat / name


def assert_rejected(capsys, argv: list[str], *needles: str, lake: Path) -> str:
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    for needle in needles:
        assert needle in err, err
    assert_lake_empty(lake)
    return err


def assert_lake_empty(lake: Path) -> None:
    stores = list(lake.rglob("*.zarr")) if lake.exists() else []
    assert stores == [], stores
    if (lake / "catalog.sqlite").exists():
        assert Lake(str(lake)).catalog.query().empty


@pytest.fixture
def lake(tmp_path) -> Path:
    return tmp_path / "lake"


def ingest(lake: Path, bids: Path, *extra: str) -> list[str]:
    return ["--lake", str(lake), "ingest", "lesions", str(bids), "--cohort", "c", *extra]


# ------------------------------------------------------------------------------------------- masks


def test_non_binary_mask(tmp_path, lake, capsys):
    data = np.zeros(mni152_grid(2).shape, np.float32)
    data[60:64, 60:64, 60:64] = 0.5
    path = make_bids(tmp_path / "bids", data)
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), path.name, "not binary", lake=lake)


def test_weighted_mask_allowed_when_asked(tmp_path, lake, capsys):
    data = np.zeros(mni152_grid(2).shape, np.float32)
    data[60:64, 60:64, 60:64] = 0.5
    make_bids(tmp_path / "bids", data)
    assert main(ingest(lake, tmp_path / "bids", "--weighted")) == 0
    assert len(Lake(str(lake)).catalog.query(kind="lesion")) == 1


def test_4d_mask(tmp_path, lake, capsys):
    data = np.zeros((*mni152_grid(2).shape, 2), np.uint8)
    data[60:64, 60:64, 60:64] = 1
    path = make_bids(tmp_path / "bids", data)
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), path.name, "3D", lake=lake)


def test_empty_mask(tmp_path, lake, capsys):
    path = make_bids(tmp_path / "bids", np.zeros(mni152_grid(2).shape, np.uint8))
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), path.name, "empty", lake=lake)


def test_out_of_brain_mask(tmp_path, lake, capsys):
    data = np.zeros(mni152_grid(2).shape, np.uint8)
    data[0:3, 0:3, 0:3] = 1  # a corner of the box, outside the head
    path = make_bids(tmp_path / "bids", data)
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), path.name, "outside the brain", lake=lake)


def test_non_invertible_affine(tmp_path, lake, capsys):
    import struct

    path = make_bids(tmp_path / "bids")
    # nibabel refuses to write a singular affine, so patch the header: no qform, sform z row zero
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[252:254] = struct.pack("<h", 0)  # qform_code
    raw[312:328] = struct.pack("<4f", 0, 0, 0, -72)  # srow_z
    path.write_bytes(gzip.compress(bytes(raw)))
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), path.name, "not invertible", lake=lake)


@pytest.mark.parametrize("case", ["voxel-size", "elsewhere", "small-box"])
def test_grid_does_not_match_space(tmp_path, lake, capsys, case):
    grid = mni152_grid(2)
    affine, shape = grid.affine.copy(), grid.shape
    if case == "voxel-size":
        affine[:3, :3] *= 3  # 6 mm voxels: not a template grid
    elif case == "elsewhere":
        affine[:3, 3] += 120.0  # a box that misses the template brain (native space mislabelled)
    else:
        shape = (40, 40, 40)
    data = np.zeros(shape, np.uint8)
    data[20:24, 20:24, 20:24] = 1
    path = make_bids(tmp_path / "bids", data, affine)
    assert_rejected(
        capsys, ingest(lake, tmp_path / "bids"), path.name, "does not match the stated space", lake=lake
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_nifti(tmp_path, lake, capsys, damage):
    path = make_bids(tmp_path / "bids")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.write_bytes(gzip.compress(b"this is not a nifti file" * 20))
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), path.name, lake=lake)


def test_nan_in_mask(tmp_path, lake, capsys):
    data = np.zeros(mni152_grid(2).shape, np.float32)
    data[60:64, 60:64, 60:64] = 1
    data[61, 61, 61] = np.nan
    path = make_bids(tmp_path / "bids", data)
    assert_rejected(capsys, ingest(lake, tmp_path / "bids", "--weighted"), path.name, "NaN", lake=lake)


def test_one_bad_mask_writes_nothing(tmp_path, lake, capsys):
    """Validation comes before any write: a good mask next to a bad one is not ingested either."""
    make_bids(tmp_path / "bids", participant="01")
    bad = make_bids(tmp_path / "bids2", np.zeros(mni152_grid(2).shape, np.uint8), participant="02")
    shutil.move(str(tmp_path / "bids2" / "sub-02"), str(tmp_path / "bids" / "sub-02"))
    assert_rejected(capsys, ingest(lake, tmp_path / "bids"), bad.name, "empty", lake=lake)


@pytest.mark.parametrize("label", ["../x", "a b", "a/b", "sub-01_x"])
def test_unsafe_participant_label(tmp_path, lake, capsys, label):
    make_bids(tmp_path / "bids")
    assert_rejected(
        capsys, ingest(lake, tmp_path / "bids", "--participant-label", label), "not BIDS-safe", lake=lake
    )


@pytest.mark.parametrize("cohort", ["../x", "a b", "a/b"])
def test_unsafe_cohort_name(tmp_path, lake, capsys, cohort):
    make_bids(tmp_path / "bids")
    argv = ["--lake", str(lake), "ingest", "lesions", str(tmp_path / "bids"), "--cohort", cohort]
    assert_rejected(capsys, argv, "not BIDS-safe", lake=lake)


def test_unsafe_label_in_file_name(tmp_path, lake, capsys):
    path = make_bids(tmp_path / "bids")
    bad = path.with_name(path.name.replace("label-acuteinfarct", "label-acute.infarct"))
    path.rename(bad)
    # the entity parser does not recognise the label: it falls back to "lesion" or refuses; never a path
    code = main(["-q", *ingest(lake, tmp_path / "bids")])
    err = capsys.readouterr().err
    if code == 0:
        keys = Lake(str(lake)).catalog.query(kind="lesion")["label"].tolist()
        assert all(k.isalnum() for k in keys)
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ connectomes


def h5_batch(
    folder: Path, *, n_sub=2, t=10, drop: str | None = None, nan: bool = False, wrong_size: bool = False
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grid = mni152_grid(2)
    ijk = np.argwhere(np.ones((4, 4, 4), bool)) + 40
    ts = rng.standard_normal((n_sub, t, len(ijk))).astype(np.float32)
    if nan:
        ts[1, 3, 5] = np.nan
    path = write_hdf5_batch(folder / "batch-001.h5", ts, ijk, grid.affine, grid.shape, validate=False)
    if drop or wrong_size:
        with h5py.File(path, "a") as f:
            if drop:
                del f[drop]
            if wrong_size:
                del f["mask_indices"]
                f["mask_indices"] = ijk[:-3]
    return path


def connectome_argv(lake: Path, src: Path) -> list[str]:
    return ["--lake", str(lake), "ingest", "connectome", str(src), "--name", "gsp"]


def test_hdf5_without_timeseries(tmp_path, lake, capsys):
    path = h5_batch(tmp_path / "src", drop="timeseries")
    assert_rejected(capsys, connectome_argv(lake, tmp_path / "src"), path.name, "timeseries", lake=lake)


def test_hdf5_mask_size_mismatch(tmp_path, lake, capsys):
    path = h5_batch(tmp_path / "src", wrong_size=True)
    assert_rejected(
        capsys, connectome_argv(lake, tmp_path / "src"), path.name, "mask size does not match", lake=lake
    )


def test_hdf5_nan_in_timeseries(tmp_path, lake, capsys):
    path = h5_batch(tmp_path / "src", nan=True)
    assert_rejected(capsys, connectome_argv(lake, tmp_path / "src"), path.name, "NaN", lake=lake)


def test_hdf5_corrupt(tmp_path, lake, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "batch-001.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert_rejected(capsys, connectome_argv(lake, src), "batch-001.h5", "HDF5", lake=lake)


def test_parcel_series_nan(tmp_path, lake, capsys):
    src = tmp_path / "parcels"
    src.mkdir()
    (src / "regions.tsv").write_text("index\tname\tnetwork\n1\tA\tN1\n2\tB\tN2\n")
    arr = np.random.default_rng(0).standard_normal((2, 20))
    arr[0, 3] = np.inf
    np.save(src / "sub-01_timeseries.npy", arr)
    assert_rejected(capsys, connectome_argv(lake, src), "sub-01_timeseries.npy", "NaN or infinite", lake=lake)


# ---------------------------------------------------------------------------------------- atlases


def atlas_files(tmp_path: Path, labels_text: str, suffix: str, volume_labels=(1, 2)) -> tuple[Path, Path]:
    grid = mni152_grid(2)
    data = np.zeros(grid.shape, np.int16)
    for k, lab in enumerate(volume_labels):
        data[40 + 5 * k : 44 + 5 * k, 50:54, 40:44] = lab
    nii = tmp_path / "tpl-MNI152NLin6Asym_res-02_atlas-X_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, grid.affine), str(nii))
    lab = tmp_path / f"labels{suffix}"
    lab.write_text(labels_text)
    return nii, lab


def atlas_argv(lake, nii, lab) -> list[str]:
    return ["--lake", str(lake), "ingest", "atlas", str(nii), "--labels", str(lab), "--name", "X"]


def test_unknown_label_file_format(tmp_path, lake, capsys):
    nii, lab = atlas_files(tmp_path, "A\nB\n", ".lut")
    assert_rejected(capsys, atlas_argv(lake, nii, lab), "labels.lut", "unknown label-file format", lake=lake)


def test_labels_do_not_match_volume(tmp_path, lake, capsys):
    nii, lab = atlas_files(tmp_path, "A\nB\n", ".txt", volume_labels=(1, 2, 7))
    assert_rejected(capsys, atlas_argv(lake, nii, lab), "labels.txt", "do not match", lake=lake)


def test_label_tsv_without_columns(tmp_path, lake, capsys):
    nii, lab = atlas_files(tmp_path, "foo\tbar\n1\tA\n2\tB\n", ".tsv")
    assert_rejected(capsys, atlas_argv(lake, nii, lab), "labels.tsv", "index column", lake=lake)


def test_unknown_atlas_name_in_run(tmp_path, lake, capsys):
    make_bids(tmp_path / "bids")
    assert main(ingest(lake, tmp_path / "bids")) == 0
    capsys.readouterr()
    code = main(["-q", "--lake", str(lake), "run", "afnm", "--cohort", "c", "--atlas", "Nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown atlas 'Nope'" in err and len(err.splitlines()) == 1


def test_debug_shows_traceback(tmp_path, lake):
    path = make_bids(tmp_path / "bids", np.zeros(mni152_grid(2).shape, np.uint8))
    with pytest.raises(Exception, match="empty"):
        main(["--debug", *ingest(lake, tmp_path / "bids")])
    assert path.exists()
