"""parcellate equals an independent computation (numpy parcel means, nilearn ConnectivityMeasure,
Fisher z, mean) and does not depend on the number of Dask workers or on chunking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lakepipe.ingest import ingest_atlas, ingest_connectome
from lakepipe.io.stores import open_derivative
from lakepipe.lake import Lake
from tests import reference
from tests.conftest import shared_atlas


@pytest.fixture(scope="module")
def raw(tutorial):
    return reference.load_h5_connectome(tutorial.connectome)


def expected_fc(raw, atlas_path, labels):
    series, ijk, affine, shape = raw
    vol = reference.atlas_on_connectome(atlas_path, affine, shape)
    vox_labels = vol[tuple(ijk.T)]
    present = [lab for lab in labels if np.any(vox_labels == lab)]
    return reference.group_fc_z(series, vox_labels, present), present


def test_parcellate_matches_nilearn(ingested, tutorial, raw, dask_client):
    res = ingested.run("parcellate", connectome="tutorial", atlas="Seitzman2018", client=dask_client)
    assert res.skipped and not res.computed  # the session fixture computed it already: reused
    ds = res.outputs
    table = pd.read_csv(tutorial.atlas_labels, sep="\t")
    z_ref, present = expected_fc(raw, tutorial.atlas_nifti, table["index"].tolist())
    assert ds["region"].values.tolist() == present
    np.testing.assert_allclose(ds["fcgroupz"].values, z_ref, atol=1e-5)
    r = ds["fcgroupr"].values
    np.testing.assert_allclose(np.diag(r), 1.0)
    np.testing.assert_allclose(
        r[~np.eye(len(r), dtype=bool)], np.tanh(z_ref[~np.eye(len(r), dtype=bool)]), atol=1e-5
    )
    dropped = set(table["index"]) - set(present)
    assert len(ds.attrs["dropped_regions"]) == len(dropped)
    assert ds.attrs["n_subjects"] == raw[0].shape[0]
    # network structure is real: within-network FC exceeds between-network FC
    net = ds["region_network"].values
    same = net[:, None] == net[None, :]
    off = ~np.eye(len(net), dtype=bool)
    assert ds["fcgroupz"].values[same & off].mean() > ds["fcgroupz"].values[~same].mean() + 0.1


def test_real_schaefer_atlas_resampled_to_connectome(ingested, raw, dask_client, tmp_path):
    nii, txt = shared_atlas("400Parcels7Networks")
    ingest_atlas(ingested, nii, labels=txt, name="Schaefer400")
    ds = ingested.run("parcellate", connectome="tutorial", atlas="Schaefer400", client=dask_client).outputs
    z_ref, present = expected_fc(raw, nii, list(range(1, 401)))
    assert ds["region"].values.tolist() == present
    np.testing.assert_allclose(ds["fcgroupz"].values, z_ref, atol=1e-5)
    assert set(ds["region_network"].values) == {
        "Vis",
        "SomMot",
        "DorsAttn",
        "SalVentAttn",
        "Limbic",
        "Cont",
        "Default",
    }


def test_independent_of_workers_and_chunking(tmp_path, tutorial, dask_client, ingested):
    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    single = lake.run(
        "parcellate", connectome="tutorial", atlas="Seitzman2018", scheduler="synchronous"
    ).outputs
    clustered = ingested.run(
        "parcellate", connectome="tutorial", atlas="Seitzman2018", client=dask_client
    ).outputs
    np.testing.assert_allclose(single["fcgroupz"].values, clustered["fcgroupz"].values, atol=1e-6)


def test_streamed_blocks_equal_whole_rows(ingested):
    """A worker's sum over a local store, each subject streamed a chunk at a time (the next read in a
    thread), is exactly the sum over whole rows read and averaged one after another."""
    from lakepipe.compute.groupfc import ParcelAverager, subject_fc_z
    from lakepipe.io import layout
    from lakepipe.io.storage import StoreRef
    from lakepipe.io.stores.rows import open_rows
    from lakepipe.methods.common import connectome_info, voxel_parcels
    from lakepipe.methods.parcellate_tasks import voxel_group_sum

    con = connectome_info(ingested, "tutorial")
    labels, table, _ = voxel_parcels(con, ingested.read_atlas("Seitzman2018"))
    ref = StoreRef.here(layout.connectome_store(ingested.url, "tutorial"))
    src = open_rows(ref)
    assert src.block_getter() is not None and src.shape[2] > src.block  # several blocks a subject
    units = [[0], [1, 2], [3]]  # a unit of two rows: one participant's runs, averaged
    got = voxel_group_sum(ref, units, labels, len(table))
    averager = ParcelAverager(labels, len(table), block=src.block)
    want = np.zeros_like(got)
    for unit in units:
        z = np.zeros_like(got)
        for row in unit:
            unit_series = src.read_into(row, np.empty(src.shape[1:], np.float32))
            series = averager(unit_series, src.scale(row), src.mean(row))
            z += subject_fc_z(series[: int(src.n_valid[row]) if src.n_valid is not None else None])
        want += z / len(unit)
    np.testing.assert_array_equal(got, want)


def test_parcel_level_connectome(tmp_path, tutorial):
    lake = Lake(str(tmp_path / "lake"))
    ingest_connectome(lake, tutorial.parcel_timeseries, name="parcels")
    ds = lake.run("parcellate", connectome="parcels", scheduler="synchronous").outputs
    regions = pd.read_csv(tutorial.parcel_timeseries / "regions.tsv", sep="\t")
    files = sorted(p for p in tutorial.parcel_timeseries.iterdir() if p.name != "regions.tsv")
    series = [
        np.load(p).T if p.suffix == ".npy" else pd.read_csv(p, sep="\t", header=None).to_numpy().T
        for p in files
    ]
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    r = ConnectivityMeasure(
        kind="correlation", cov_estimator=EmpiricalCovariance(), standardize=False
    ).fit_transform(series)
    z = np.arctanh(np.clip(r, -reference.CLIP, reference.CLIP))
    for zi in z:
        np.fill_diagonal(zi, 0)
    np.testing.assert_allclose(ds["fcgroupz"].values, z.mean(0), atol=1e-5)
    assert ds["region_name"].values.tolist() == regions["name"].tolist()
    assert ds["region_network"].values.tolist() == regions["network"].tolist()


def test_bids_connmatrix_files(ingested, tmp_path, dask_client):
    res = ingested.run(
        "parcellate",
        connectome="tutorial",
        atlas="Seitzman2018",
        bids_out=tmp_path / "out",
        client=dask_client,
    )
    names = sorted(p.name for p in res.files)
    assert names == [  # written although nothing was computed: every output the options cover
        "space-MNI152NLin6Asym_method-parcellate_atlas-Seitzman2018_desc-fcgroupr_connmatrix.tsv",
        "space-MNI152NLin6Asym_method-parcellate_atlas-Seitzman2018_desc-fcgroupz_connmatrix.tsv",
    ]
    tsv = pd.read_csv(res.files[0], sep="\t", index_col=0)
    assert list(tsv.index) == list(tsv.columns) == res.outputs["region_name"].values.tolist()
    import json

    meta = json.loads(res.files[0].with_suffix(".json").read_text())
    assert meta["NumberOfSubjects"] == res.outputs.attrs["n_subjects"]
    assert "DroppedRegions" in meta and meta["LakepipeVersion"]
    # also readable back from the lake as a Zarr derivative
    rows = ingested.catalog.query(method="parcellate", atlas="Seitzman2018", statistic="fcgroupz")
    back = open_derivative(ingested.store_url(rows["store_uri"].iloc[0]))
    assert back["fcgroupz"].shape == res.outputs["fcgroupz"].shape
