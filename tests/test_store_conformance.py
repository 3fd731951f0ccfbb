"""One store test suite, run against every storage the lake supports: a local folder, ``memory://``
and a real S3-protocol server on 127.0.0.1 (moto). lakepipe's own code is not mocked."""

from __future__ import annotations

import numpy as np
import pytest

from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
from lakepipe.io import layout, stores
from lakepipe.io.bidsfind import find_lesion_files
from lakepipe.io.nifti import load_mask
from lakepipe.io.storage import exists, join, listdir, remove
from lakepipe.lake import Lake


@pytest.fixture
def lake(any_lake_url, tmp_path):
    catalog = None if not any_lake_url.startswith("s3://") else f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return Lake(any_lake_url, catalog=catalog)


class TestLakeStorage:
    def test_lesions_round_trip(self, lake, tutorial):
        res = ingest_lesions(lake, tutorial.bids, cohort="c1")
        files = find_lesion_files(tutorial.bids)
        assert sorted(res.written) == sorted(f.key for f in files)
        for f in files:
            src = load_mask(f.path, space=f.space)
            back, attrs = stores.read_lesion(lake.url, "c1", f.key)
            assert np.array_equal(back.indices, src.indices)
            assert np.allclose(back.grid.affine, src.grid.affine) and back.grid.shape == src.grid.shape
            assert attrs["participant"] == f.participant and attrs["label"] == f.label
        again = ingest_lesions(lake, tutorial.bids, cohort="c1")
        assert again.written == [] and len(again.skipped) == len(files)

    def test_connectome_stream_and_read(self, lake, tutorial):
        import h5py

        res = ingest_connectome(lake, tutorial.connectome, name="g")
        ds = lake.open_connectome("g")
        assert ds.sizes["subject"] == len(res.written) > 0
        first = sorted(tutorial.connectome.glob("*.h5"))[0]
        with h5py.File(first) as f:
            raw = f["timeseries"][0]
        rec = ds["timeseries"][0].values * ds["scale"][0].values + ds["mean"][0].values
        np.testing.assert_allclose(rec, raw, rtol=1e-4, atol=1e-3 * np.abs(raw).max())
        assert ingest_connectome(lake, tutorial.connectome, name="g").written == []

    def test_atlas(self, lake, tutorial):
        ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="S")
        atlas = lake.read_atlas("S")
        assert atlas.n_regions == 300 and atlas.labels.max() <= 300
        assert set(atlas.table["network"].dropna()) > {"DefaultMode"} or atlas.table["network"].notna().all()

    def test_listing_and_removal(self, lake, tutorial):
        ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="S")
        url = layout.atlas_store(lake.url, "S")
        assert exists(join(url, "zarr.json"))
        assert "S.zarr" in listdir(join(lake.url, "atlases"))
        remove(url)
        assert not exists(join(url, "zarr.json"))
