"""Atomic publish, kill-and-rerun, garbage collection, and the catalog/collect command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
from lakepipe.io import layout, stores
from lakepipe.io.storage import exists, join
from lakepipe.io.stores import open_derivative, write_derivative
from lakepipe.lake import Lake
from lakepipe.methods.fnm import MAPS as FNM_MAPS
from tests.conftest import run_cli


def run_afnm(lake, cohort, atlas, **params):
    return lake.run("afnm", cohort=cohort, atlas=atlas, **params)


@pytest.fixture
def fresh(tmp_path, tutorial) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    ingest_lesions(lake, tutorial.bids, cohort="tutorial")
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    return lake


@pytest.mark.integration
def test_killed_fnm_run_publishes_only_complete_batches_and_rerun_resumes(fresh):
    n_seeds = len(fresh.catalog.query(kind="lesion"))
    argv = [
        sys.executable,
        "-m",
        "lakepipe.cli.main",
        "-v",  # the progress log lines say which pass is running
        "--lake",
        fresh.url,
        "run",
        "fnm",
        "--cohort",
        "tutorial",
        "--connectome",
        "tutorial",
        "--batch-size",
        "2",
        "--scheduler",
        "synchronous",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "pass 2/" in line:
            os.killpg(proc.pid, signal.SIGKILL)  # killed mid-run, during pass 3
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]

    rows = fresh.catalog.query(method="fnm")
    assert len(rows) == 2 * 2 * len(FNM_MAPS)  # 2 passes x 2 seeds x every map: nothing partial
    store = rows["store_uri"].unique()
    assert len(store) == 1
    ds = open_derivative(fresh.store_url(store[0]))
    published = sorted(set(rows["store_index"].astype(int)))
    assert published == [0, 1, 2, 3]
    assert np.isfinite(ds["zmap"].values[published]).all()  # every registered map is whole
    assert np.isnan(ds["zmap"].values[n_seeds - 1]).all()  # the unfinished pass is in the store, unregistered

    again = run_cli(
        "--lake",
        fresh.url,
        "run",
        "fnm",
        "--cohort",
        "tutorial",
        "--connectome",
        "tutorial",
        "--scheduler",
        "synchronous",
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{n_seeds - 4} seed(s) mapped" in again.stdout and "4 already in the lake" in again.stdout
    rows = fresh.catalog.query(method="fnm")
    assert len(rows) == len(FNM_MAPS) * n_seeds
    assert not rows.duplicated(["participant", "session", "label", "statistic"]).any()
    maps = fresh.collect(method="fnm", statistic="zmap")
    assert maps.sizes["seed"] == n_seeds and np.isfinite(np.asarray(maps.values)).all()


@pytest.mark.integration
def test_gc_removes_only_unregistered_data(fresh, tutorial):
    ingest_atlas(fresh, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    res = run_afnm(fresh, "tutorial", "Seitzman2018", connectome="tutorial", scheduler="synchronous")
    # leftovers of killed runs: a derivative store and a lesion entry nobody registered
    orphan = write_derivative(
        layout.derivative_store(fresh.url, "afnm", "afnm-orphan"), xr.Dataset({"score": ("seed", [1.0])})
    )
    mask, _ = stores.read_lesion(fresh.url, "tutorial", res.computed[0])
    stores.write_lesion(fresh.url, "tutorial", "sub-99_label-orphan", mask, {})
    dry = run_cli("--lake", fresh.url, "catalog", "gc", "--grace", "0", "--dry-run")
    assert dry.returncode == 0 and "would remove 2" in dry.stdout and "afnm-orphan.zarr" in dry.stdout
    assert exists(join(orphan, "zarr.json"))
    young = run_cli("--lake", fresh.url, "catalog", "gc")  # default grace: a running job may still publish
    assert "removed 0" in young.stdout and "kept 2" in young.stdout
    done = run_cli("--lake", fresh.url, "catalog", "gc", "--grace", "0")
    assert done.returncode == 0 and "removed 2" in done.stdout
    assert not exists(join(orphan, "zarr.json"))
    assert not exists(join(layout.lesion_store(fresh.url, "tutorial"), "sub-99_label-orphan", "zarr.json"))
    # everything registered is still there and readable
    assert fresh.collect(method="afnm", atlas="Seitzman2018").sizes["seed"] == len(res.computed)
    assert len(fresh.lesions("tutorial")) == len(fresh.catalog.query(kind="lesion"))


def test_collect_cli_is_deterministic_and_writes_group_files(ingested, dask_client, tmp_path):
    run_afnm(ingested, "tutorial", "Seitzman2018", connectome="tutorial", client=dask_client)
    argv = [
        "--lake",
        ingested.url,
        "collect",
        "--method",
        "afnm",
        "--atlas",
        "Seitzman2018",
        "--cohort",
        "tutorial",
        "--param",
        "weighting=fractional",
    ]
    first, second = run_cli(*argv), run_cli(*argv)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout == second.stdout
    table = pd.read_csv(pd.io.common.StringIO(first.stdout), sep="\t")
    assert list(table.columns[:3]) == ["participant_id", "session_id", "label"]
    assert table["participant_id"].is_monotonic_increasing
    out = run_cli(*argv, "--label", "acuteinfarct", "--out", tmp_path / "group")
    assert out.returncode == 0, out.stderr[-2000:]
    name = "group_space-MNI152NLin6Asym_label-acuteinfarct_method-afnm_atlas-Seitzman2018_desc-afnmap"
    tsv = tmp_path / "group" / f"{name}_parcelstats.tsv"
    assert tsv.exists(), out.stdout
    group = pd.read_csv(tsv, sep="\t")
    meta = json.loads(tsv.with_suffix(".json").read_text())
    assert meta["NumberOfRows"] == len(group) == (table["label"] == "acuteinfarct").sum()
    assert meta["Sources"] and meta["Parameters"]["weighting"] == "fractional"
    bad = run_cli("--lake", ingested.url, "collect", "--method", "afnm", "--atlas", "Nope")
    assert bad.returncode == 2 and "no afnm outputs match" in bad.stderr


def test_catalog_ls_and_show(ingested):
    ls = run_cli("--lake", ingested.url, "catalog", "ls")
    assert ls.returncode == 0 and "lesion" in ls.stdout and "parcellate" in ls.stdout
    rows = ingested.catalog.query(kind="atlas")
    show = run_cli("--lake", ingested.url, "catalog", "show", str(int(rows["id"].iloc[0])))
    rec = json.loads(show.stdout)
    assert rec["kind"] == "atlas" and rec["inputs_hash"] and rec["lakepipe_version"]
    assert "://" not in rec["store_uri"]


def test_collect_voxel_maps_to_4d_nifti(ingested, dask_client, tmp_path):
    import nibabel as nib

    from lakepipe.collect import write_group

    ingested.run("fnm", connectome="tutorial", cohort="tutorial", client=dask_client)
    da = ingested.collect(method="fnm", statistic="zmap", cohort="tutorial")
    assert {"i", "j", "k"} <= set(da.coords) and da.attrs["atlas"] is None
    nii, rows = write_group(da, tmp_path)
    assert nii.name == "group_space-MNI152NLin6Asym_method-fnm_desc-zmap_statmap.nii.gz"
    img = nib.load(str(nii))
    assert img.shape == (91, 109, 91, da.sizes["seed"])
    k = 2
    vol = np.asarray(img.dataobj)[..., k]
    np.testing.assert_allclose(vol[da["i"].values, da["j"].values, da["k"].values], da.values[k], rtol=1e-6)
    assert len(pd.read_csv(rows, sep="\t")) == da.sizes["seed"]
