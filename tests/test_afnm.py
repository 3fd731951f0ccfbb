"""AFNM end to end from the lake: scores equal an independent per-lesion computation (nilearn
resampling, numpy weights, m @ C), for the tutorial atlas and the real Schaefer/Tian atlases."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lakepipe.errors import InputError
from lakepipe.ingest import ingest_atlas, ingest_lesions
from lakepipe.io.bidsfind import find_lesion_files
from lakepipe.io.stores import open_derivative
from lakepipe.lake import Lake
from tests import reference
from tests.conftest import SHARED_LESIONS, answer_from_catalog, shared_atlas


def fc_matrix(lake: Lake, atlas: str) -> tuple[np.ndarray, list[int]]:
    ds = lake.run("parcellate", connectome="tutorial", atlas=atlas, scheduler="synchronous").outputs
    return ds["fcgroupz"].values.astype(np.float64), ds["region"].values.tolist()


def run_afnm(lake: Lake, cohort: str, atlas: str, **params):
    return lake.run("afnm", cohort=cohort, atlas=atlas, **params)


def computed(res):
    """The store this run wrote (scores, n_touched, lesion_voxels of the lesions it computed)."""
    return open_derivative(res.store).load()


@pytest.mark.parametrize("weighting", ["fractional", "binary", "voxel_count"])
def test_afnm_matches_reference(ingested, tutorial, dask_client, weighting):
    res = run_afnm(  # recomputed: another test may have mapped the cohort on the session lake already
        ingested,
        "tutorial",
        "Seitzman2018",
        connectome="tutorial",
        weighting=weighting,
        client=dask_client,
        recompute=True,
    )
    C, labels = fc_matrix(ingested, "Seitzman2018")
    files = {f.key: f.path for f in find_lesion_files(tutorial.bids)}
    ds = computed(res)
    assert ds.sizes["seed"] == len(files)
    assert ds["region"].values.tolist() == labels
    for i, key in enumerate(ds["seed"].values):
        expected = reference.afnm_fractional(files[key], tutorial.atlas_nifti, labels, C, weighting)
        np.testing.assert_allclose(ds["score"].values[i], expected, atol=1e-5, err_msg=key)


def test_rerun_skips_and_params_matter(ingested, dask_client):
    first = run_afnm(
        ingested, "tutorial", "Seitzman2018", connectome="tutorial", weighting="coverage", client=dask_client
    )
    assert first.computed and not first.skipped
    again = run_afnm(
        ingested, "tutorial", "Seitzman2018", connectome="tutorial", weighting="coverage", client=dask_client
    )
    assert again.computed == [] and len(again.skipped) == len(first.computed)
    subset = run_afnm(
        ingested,
        "tutorial",
        "Seitzman2018",
        connectome="tutorial",
        weighting="coverage",
        participants=["01"],
        client=dask_client,
    )
    assert subset.computed == [] and all(k.startswith("sub-01") for k in subset.skipped)


def test_cli_rerun_reads_only_the_catalog(ingested, dask_client):
    """`run afnm` and `parcellate` whose outputs are all in the lake answer from the catalog: no store
    opened, no cluster started, none of the data stack imported."""
    run_afnm(ingested, "tutorial", "Seitzman2018", connectome="tutorial", client=dask_client)
    n = ingested.run("parcellate", connectome="tutorial", atlas="Seitzman2018").outputs.attrs["n_subjects"]
    lake = ["-q", "--lake", ingested.url]
    out = answer_from_catalog(
        [*lake, "run", "afnm", "--cohort", "tutorial", "--atlas", "Seitzman2018", "--connectome", "tutorial"]
    )
    assert "AFNM: 0 lesion(s) mapped" in out, out[-2000:]
    out = answer_from_catalog([*lake, "parcellate", "--connectome", "tutorial", "--atlas", "Seitzman2018"])
    assert f"over {n} subjects already in the lake" in out, out[-2000:]


def test_afnm_real_atlases_on_shared_masks(ingested, dask_client, tmp_path):
    """Schaefer 400 and the Schaefer 1000 + Tian S3 combination on the three shared example masks."""
    ingest_lesions(ingested, SHARED_LESIONS, cohort="shared")
    s1000, s1000_txt = shared_atlas("1000Parcels7Networks")
    tian, tian_txt = shared_atlas("3TS3", "TianSubcortex")
    cortex = np.asarray(nib.load(str(s1000)).dataobj).astype(np.int32)
    # Tian's file is on its own 2 mm grid: bring it onto Schaefer's 1 mm grid first
    sub = reference.atlas_on_connectome(tian, nib.load(str(s1000)).affine, cortex.shape)
    combined = np.where((cortex == 0) & (sub > 0), sub + 1000, cortex).astype(np.int16)
    path = tmp_path / "tpl-MNI152NLin6Asym_res-01_atlas-SchaeferTian_dseg.nii.gz"
    nib.save(nib.Nifti1Image(combined, nib.load(str(s1000)).affine), str(path))
    names = s1000_txt.read_text().split() + tian_txt.read_text().split()
    table = pd.DataFrame({"index": list(range(1, 1001)) + list(range(1001, 1051)), "name": names})
    table.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    ingest_atlas(ingested, path, labels=tmp_path / "labels.tsv", name="SchaeferTian")
    for atlas, atlas_path in (
        ("Schaefer400", shared_atlas("400Parcels7Networks")[0]),
        ("SchaeferTian", path),
    ):
        if atlas == "Schaefer400":
            ingest_atlas(ingested, atlas_path, labels=shared_atlas("400Parcels7Networks")[1], name=atlas)
        res = run_afnm(ingested, "shared", atlas, connectome="tutorial", client=dask_client)
        C, labels = fc_matrix(ingested, atlas)
        files = {f.key: f.path for f in find_lesion_files(SHARED_LESIONS)}
        assert len(res.computed) == 3
        ds = computed(res)
        for i, key in enumerate(ds["seed"].values):
            expected = reference.afnm_fractional(files[key], atlas_path, labels, C)
            np.testing.assert_allclose(ds["score"].values[i], expected, atol=1e-5, err_msg=key)
        touched = dict(zip(ds["seed"].values, ds["n_touched"].values, strict=True))
        # sub-02's infarct is cerebellar (around -43, -60, -41 mm): neither atlas covers it
        assert touched.pop("sub-02_ses-01_label-acuteinfarct") == 0 and all(v > 0 for v in touched.values())
        assert res.details["empty"] == ["sub-02_ses-01_label-acuteinfarct"]
    nets = set(ds["region_network"].values)
    assert "Subcortex" in nets and "Default" in nets


def test_matrix_file_with_reorder(ingested, tmp_path, dask_client, tutorial):
    """A .npy matrix listed in another region order is mapped onto the atlas order.

    Run on a cohort of its own: the shared lake's "tutorial" cohort keeps one parameter set per
    weighting, which other tests collect."""
    ingest_lesions(ingested, tutorial.bids, cohort="matrixfile")
    C, labels = fc_matrix(ingested, "Seitzman2018")
    ds = ingested.run(
        "parcellate", connectome="tutorial", atlas="Seitzman2018", scheduler="synchronous"
    ).outputs
    names = ds["region_name"].values.tolist()
    perm = np.random.default_rng(1).permutation(len(names))
    np.save(tmp_path / "m.npy", C[np.ix_(perm, perm)])
    (tmp_path / "order.txt").write_text("\n".join(names[i] for i in perm))
    from_file = run_afnm(
        ingested,
        "matrixfile",
        "Seitzman2018",
        matrix=str(tmp_path / "m.npy"),
        matrix_labels=str(tmp_path / "order.txt"),
        client=dask_client,
    )
    from_lake = run_afnm(ingested, "matrixfile", "Seitzman2018", connectome="tutorial", client=dask_client)
    a, b = computed(from_file), computed(from_lake)
    assert list(a["seed"].values) == list(b["seed"].values)
    np.testing.assert_allclose(a["score"].values, b["score"].values, atol=1e-5)


def test_on_empty_and_space_checks(tmp_path, ingested, dask_client):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(SHARED_LESIONS, bids)
    grid_img = nib.load(str(next(bids.rglob("*.nii.gz"))))
    data = np.zeros(grid_img.shape, np.uint8)
    data[90:93, 100:103, 20:23] = 1  # inside the brain mask, in white matter below every Seitzman sphere
    anat = bids / "sub-09" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(data, grid_img.affine),
        str(anat / "sub-09_ses-01_space-MNI152NLin6Asym_label-acuteinfarct_mask.nii.gz"),
    )
    ingest_lesions(ingested, bids, cohort="withempty")
    with pytest.raises(InputError, match="touch no region"):
        run_afnm(
            ingested, "withempty", "Seitzman2018", connectome="tutorial", on_empty="error", client=dask_client
        )
    res = run_afnm(ingested, "withempty", "Seitzman2018", connectome="tutorial", client=dask_client)
    assert res.details["empty"] == ["sub-09_ses-01_label-acuteinfarct"]
    ds = computed(res)
    i = list(ds["seed"].values).index(res.details["empty"][0])
    assert not ds["score"].values[i].any()


def test_bids_parcelstats(ingested, tmp_path, dask_client, tutorial):
    ingest_lesions(ingested, tutorial.bids, cohort="bidsout")  # a cohort of its own (odd parameters)
    res = run_afnm(
        ingested,
        "bidsout",
        "Seitzman2018",
        connectome="tutorial",
        weighting="binary",
        participants=["02"],
        bids_out=tmp_path / "bids",
        with_weights=True,
        client=dask_client,
        matrix="fcgroupr",
    )
    assert res.files, res.summary()
    for f in res.files:
        assert (
            f.name.endswith(
                "_space-MNI152NLin6Asym_label-acuteinfarct_method-afnm_atlas-Seitzman2018_"
                "desc-afnmap_parcelstats.tsv"
            )
            or "label-chronic" in f.name
        )
        assert f.parent.name == "anat" and f.parent.parent.name in ("ses-01", "ses-02")
        table = pd.read_csv(f, sep="\t")
        assert list(table.columns[:4]) == ["index", "name", "network", "hemisphere"]
        assert {"score", "weight"} <= set(table.columns)
        meta = json.loads(f.with_suffix(".json").read_text())
        assert meta["Parameters"]["weighting"] == "binary" and meta["TouchedRegions"] >= 1
    assert (tmp_path / "bids" / "dataset_description.json").exists()
