"""Probabilistic atlases in the lake and ``lakepipe assign`` with siibra's metrics.

A 4D probabilistic atlas (three Gaussian maps on the 2 mm MNI grid, two of them overlapping) is
ingested from the command line; its maximum-probability labels are checked against numpy's argmax,
and ``lakepipe assign`` of a voxel map (a positive blob straddling the two overlapping maps, a
negative one in the third) is checked metric by metric against the definitions, recomputed here with
boolean masks and sums. Bad input: a label table with the wrong number of rows, probabilities outside
[0, 1]: one line, exit status 2, nothing registered.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lakepipe.cli.main import main
from lakepipe.lake import Lake
from lakepipe.space import mni152_grid

GRID = mni152_grid(2)
CENTRES = np.array([[-30.0, -20.0, 50.0], [-14.0, -20.0, 50.0], [30.0, 10.0, 20.0]])  # mm
SIGMA, CUT = 6.0, 0.05
THRESHOLD = 1.0
NAMES = ["left_motor_a", "left_motor_b", "right_insula"]
# float64 sums of ~10^4 terms bounded by 5: relative rounding <= n 2^-53 ~ 1e-12 of the sum of |terms|;
# the TSV holds 6 significant digits (%.6g): 1e-5 relative covers that rounding
RTOL = 1e-5


def _xyz() -> np.ndarray:
    ijk = np.indices(GRID.shape).reshape(3, -1).T.astype(float)
    return (ijk @ GRID.affine[:3, :3].T + GRID.affine[:3, 3]).reshape(*GRID.shape, 3)


def _maps() -> np.ndarray:
    xyz = _xyz()
    out = []
    for c in CENTRES:
        p = 0.9 * np.exp(-np.sum((xyz - c) ** 2, axis=-1) / (2 * SIGMA**2))
        out.append(np.where(p >= CUT, p, 0.0))
    return np.stack(out, axis=-1).astype(np.float32)


def _input() -> np.ndarray:
    """Positive cone between maps 0 and 1 (peak 5), negative cone inside map 2, zeros elsewhere."""
    xyz = _xyz()
    v = np.zeros(GRID.shape)
    d = np.linalg.norm(xyz - [-22.0, -20.0, 50.0], axis=-1)
    v = np.where(d < 10, 5.0 - d / 2.5, v)
    d = np.linalg.norm(xyz - [32.0, 12.0, 20.0], axis=-1)
    return np.where(d < 6, -(3.0 - d / 2.0), v)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("prob")
    atlas = root / "tpl-MNI152NLin6Asym_res-02_atlas-blobs_probseg.nii.gz"
    nib.save(nib.Nifti1Image(_maps(), GRID.affine), atlas)
    table = root / "blobs.tsv"
    pd.DataFrame({"index": [1, 2, 3], "name": NAMES, "network": ["SM", "SM", "Sal"]}).to_csv(
        table, sep="\t", index=False
    )
    values = root / "map.nii.gz"
    nib.save(nib.Nifti1Image(_input().astype(np.float32), GRID.affine), values)
    return {"root": root, "atlas": atlas, "table": table, "map": values}


@pytest.fixture(scope="module")
def lake(files, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("lake") / "lake")
    assert main(["-q", "--lake", url, "ingest", "atlas", str(files["atlas"]), "--labels", str(files["table"]),
                 "--name", "blobs"]) == 0  # fmt: skip
    return Lake(url)


def test_ingested_probabilistic_atlas(lake):
    from lakepipe.io.stores.atlases import atlas_maps

    atlas = lake.read_atlas("blobs")
    maps = _maps()
    assert atlas.kind == "probabilistic" and atlas.table["name"].tolist() == NAMES
    assert np.array_equal(np.asarray(atlas_maps(lake.url, "blobs")[:]), maps)
    # maximum-probability labels: argmax over the maps (the earlier on ties), 0 where all are 0
    ref = np.where(maps.max(axis=-1) > 0, np.argmax(maps, axis=-1) + 1, 0)
    assert np.array_equal(atlas.labels, ref)
    row = lake.catalog.query(kind="atlas", atlas="blobs").iloc[0]
    assert row["statistic"] == "probseg" and row["params"]["n_maps"] == 3


def _reference(v: np.ndarray, p: np.ndarray, sign: int) -> dict[str, float]:
    """siibra's metrics of the ``sign`` cluster against one probability map, from the definitions."""
    lab, _ = ndimage.label(sign * v > THRESHOLD, structure=np.ones((3, 3, 3)))
    peak = np.unravel_index(np.argmax(sign * v), v.shape)
    c = lab == lab[peak]
    s = p > 0
    x = np.where(c, sign * v, 0.0)
    domain = np.isfinite(v) & (v != 0)  # what lakepipe assign takes as the brain for a NIfTI map
    inter = np.sum(c & s)
    return {
        "n_voxels": int(c.sum()),
        "overlap_voxels": int(inter),
        "intersection_over_union": inter / np.sum(c | s),
        "map_containedness": inter / s.sum(),
        "input_containedness": inter / c.sum(),
        "map_weighted_mean": np.sum(p * x) / np.sum(x),
        "input_weighted_mean": np.sum(p * x) / np.sum(p),
        "map_value_at_peak": float(p[peak]),
        "correlation": float(np.corrcoef(p[domain], x[domain])[0, 1]),
    }


def test_assign_reports_siibras_metrics(lake, files, tmp_path, capsys):
    out = tmp_path / "assign.tsv"

    def assign(atlas: str, *extra: str) -> list[str]:
        return ["--lake", lake.url, "assign", "--map", str(files["map"]), "--atlas", atlas, "--threshold",
                str(THRESHOLD), *extra]  # fmt: skip

    argv = assign("blobs", "--out", str(out))
    assert main(["-q", *argv]) == 0
    printed = capsys.readouterr().out
    assert "2 cluster(s) above 1 (signed) on probabilistic atlas blobs" in printed, printed
    assert "intersection_over_union" in printed and "input_containedness" in printed
    table = pd.read_csv(out, sep="\t")
    v, maps = _input(), _maps()
    seen = set()
    for _, row in table.iterrows():
        j = NAMES.index(row["region_name"])
        ref = _reference(v, maps[..., j].astype(np.float64), int(row["sign"]))
        for key, want in ref.items():
            assert row[key] == pytest.approx(want, rel=RTOL, abs=1e-7), (row["region_name"], key)
        seen.add((int(row["sign"]), row["region_name"]))
    # the positive cluster meets both left maps, the negative one the right map only
    assert seen == {(1, "left_motor_a"), (1, "left_motor_b"), (-1, "right_insula")}

    # a label atlas (the maximum-probability labels) with --metrics siibra: regions as indicator maps
    from lakepipe.io.stores.atlases import read_atlas

    labels = read_atlas(lake.url, "blobs").labels
    label_nii = tmp_path / "tpl-MNI152NLin6Asym_res-02_atlas-blobsdseg_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels.astype(np.int16), GRID.affine), label_nii)
    assert main(["-q", "--lake", lake.url, "ingest", "atlas", str(label_nii), "--labels", str(files["table"]),
                 "--name", "blobsdseg"]) == 0  # fmt: skip
    out2 = tmp_path / "assign_labels.tsv"
    assert main(["-q", *assign("blobsdseg", "--out", str(out2), "--metrics", "siibra")]) == 0
    capsys.readouterr()
    t2 = pd.read_csv(out2, sep="\t")
    for _, row in t2.iterrows():
        indicator = (labels == NAMES.index(row["region_name"]) + 1).astype(np.float64)
        ref = _reference(v, indicator, int(row["sign"]))
        assert row["intersection_over_union"] == pytest.approx(ref["intersection_over_union"], rel=RTOL)
        assert row["map_weighted_mean"] == pytest.approx(ref["map_weighted_mean"], rel=RTOL)
    # the overlap report of a label atlas is still the default
    assert main(["-q", *assign("blobsdseg")]) == 0
    assert "overlap_fraction" in capsys.readouterr().out


def _rejected(capsys, argv: list[str], *needles: str) -> None:
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_probabilistic_atlases(files, tmp_path, capsys):
    lake = tmp_path / "lake"
    short = tmp_path / "short.tsv"
    pd.DataFrame({"index": [1, 2], "name": NAMES[:2]}).to_csv(short, sep="\t", index=False)
    ingest = ["--lake", str(lake), "ingest", "atlas", str(files["atlas"]), "--name", "bad", "--labels"]
    _rejected(capsys, [*ingest, str(short)], "short.tsv", "the label table has 2 rows", "has 3 maps")
    over = tmp_path / "tpl-MNI152NLin6Asym_res-02_atlas-over_probseg.nii.gz"
    nib.save(nib.Nifti1Image(_maps() * 2, GRID.affine), over)
    _rejected(
        capsys,
        [*ingest[:4], str(over), *ingest[5:], str(files["table"])],
        over.name,
        "probabilities lie in [0, 1]",
    )
    assert not list(lake.rglob("*.zarr")) if lake.exists() else True
    if (lake / "catalog.sqlite").exists():
        assert Lake(str(lake)).catalog.query().empty


def test_probabilistic_atlas_needs_siibra_metrics(lake, files, capsys):
    argv = ["--lake", lake.url, "assign", "--map", str(files["map"]), "--atlas", "blobs", "--threshold", "1",
            "--metrics", "overlap"]  # fmt: skip
    _rejected(capsys, argv, "atlas 'blobs' is probabilistic", "--metrics siibra")
