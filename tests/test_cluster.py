"""lakepipe on an existing Dask cluster of separate processes (``dask scheduler`` + two ``dask worker``
started from the command line), against a lake on the loopback S3 server; and a worker killed
in the middle of an FNM run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lakepipe.io.bidsfind import find_lesion_files
from lakepipe.lake import Lake
from lakepipe.methods.fnm import MAPS as FNM_MAPS
from tests import reference, tolerances
from tests.cluster_processes import CliCluster
from tests.conftest import TUTORIAL_ARGS, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    # workers get the S3 credentials and endpoint the way an operator would set them: environment
    c = CliCluster(tmp_path_factory.mktemp("cluster"), n_workers=2)
    yield c
    c.close()


def test_end_to_end_on_cluster_and_s3_equals_local(cluster, tutorial, ingested, dask_client, tmp_path):
    lake_url = "s3://lake/cluster-e2e"
    common = [
        "--lake",
        lake_url,
        "--catalog",
        f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        "--scheduler",
        cluster.address,
        "-q",
    ]
    steps = [
        ["ingest", "lesions", tutorial.bids, "--cohort", "tutorial"],
        ["ingest", "connectome", tutorial.connectome, "--name", "tutorial"],
        [
            "ingest",
            "atlas",
            tutorial.atlas_nifti,
            "--labels",
            tutorial.atlas_labels,
            "--name",
            "Seitzman2018",
        ],
        ["parcellate", "--connectome", "tutorial", "--atlas", "Seitzman2018"],
        ["run", "afnm", "--cohort", "tutorial", "--atlas", "Seitzman2018", "--connectome", "tutorial"],
        ["run", "fnm", "--cohort", "tutorial", "--connectome", "tutorial", "--atlas", "Seitzman2018"],
        ["collect", "--method", "afnm", "--atlas", "Seitzman2018", "--out", tmp_path / "group"],
    ]
    for step in steps:
        proc = run_cli(*common, *step)
        assert proc.returncode == 0, (step, proc.stderr[-3000:])
    group = "group_space-MNI152NLin6Asym_method-afnm_atlas-Seitzman2018_desc-afnmap_parcelstats.tsv"
    assert (tmp_path / "group" / group).exists()

    # the same analyses on the local lake, run through a local cluster
    ingested.run("afnm", cohort="tutorial", atlas="Seitzman2018", connectome="tutorial", client=dask_client)
    ingested.run("fnm", connectome="tutorial", cohort="tutorial", atlas="Seitzman2018", client=dask_client)
    remote = Lake(lake_url, catalog=f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    for method, kw in (
        ("afnm", {"atlas": "Seitzman2018", "params": {"weighting": "fractional"}}),
        ("fnm", {"atlas": "Seitzman2018"}),
        ("fnm", {}),
    ):
        # read in this process (the session's LocalCluster workers may predate the S3 credentials)
        a = remote.collect(method=method, cohort="tutorial", connectome="tutorial", **kw).compute(
            scheduler="threads"
        )
        b = ingested.collect(method=method, cohort="tutorial", connectome="tutorial", **kw).compute(
            scheduler="threads"
        )
        assert list(a["seed"].values) == list(b["seed"].values)
        np.testing.assert_allclose(np.asarray(a.values), np.asarray(b.values), atol=1e-5)


def fresh_lake(path, tutorial) -> Lake:
    from lakepipe.ingest import ingest_connectome, ingest_lesions

    lake = Lake(str(path))
    ingest_lesions(lake, tutorial.bids, cohort="tutorial")
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    return lake


def test_worker_killed_mid_fnm(cluster, tutorial, tmp_path):
    """Kill one of the two worker processes during an FNM run: the run completes on the survivor,
    the maps are right, and the catalog holds each output exactly once."""
    lake = fresh_lake(tmp_path / "lake", tutorial)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lakepipe.cli.main",
            "-v",  # progress log lines: when to kill the worker
            "--lake",
            lake.url,
            "--scheduler",
            cluster.address,
            "run",
            "fnm",
            "--cohort",
            "tutorial",
            "--connectome",
            "tutorial",
            "--batch-size",
            "2",
            "--sphere",
            "-40,-20,50",
            "--radius",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, killed = [], False
    for line in proc.stdout:  # wait until the first pass is published, then kill a worker
        lines.append(line)
        if "pass 1/" in line:
            cluster.kill_worker(0)
            killed = True
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=600) == 0, out[-3000:]
    assert killed, out[-3000:]
    rows = lake.catalog.query(method="fnm")
    keys = rows[["participant", "session", "label", "statistic", "params_hash", "inputs_hash"]]
    assert not keys.duplicated().any()
    n_seeds = len(lake.catalog.query(kind="lesion")) + 1
    assert len(rows) == len(FNM_MAPS) * n_seeds  # every map of every seed, each exactly once

    # the maps equal the straightforward reference within the bounds of the float32 arithmetic (any
    # summation order: the surviving worker's, another BLAS kernel): a lost or repeated subject is not
    series, ijk, affine, shape = reference.load_h5_connectome(tutorial.connectome, dtype=np.float32)
    files = {f.key: f.path for f in find_lesion_files(tutorial.bids)}
    seeds = {k: reference.seed_voxels_on_grid(p, ijk, affine, shape)[:2] for k, p in files.items()}
    seeds["sphere-spherem40xm20y50z6r"] = (
        reference.sphere_voxels_nilearn((-40, -20, 50), 6, ijk, affine, shape)[0],
        None,
    )
    keys = list(seeds)
    maps, dr = tolerances.reference_maps(series, [seeds[k] for k in keys], TUTORIAL_ARGS["timepoints"])
    n_sub = TUTORIAL_ARGS["subjects"]
    for stat in ("zmap", "tmap"):
        a = lake.collect(method="fnm", statistic=stat).compute(scheduler="threads")
        got = {str(k): np.asarray(v, np.float64) for k, v in zip(a["seed"].values, a.values, strict=True)}
        assert sorted(got) == sorted(keys)
        for j, key in enumerate(keys):
            bound = tolerances.fnm_bounds(maps[j], dr[j], TUTORIAL_ARGS["timepoints"], n_sub)[stat]
            ok = np.isfinite(bound)
            diff = np.abs(got[key] - maps[j][stat])
            assert np.all(diff[ok] <= bound[ok]), (stat, key, float(diff[ok].max()))
    # the cluster goes on with one worker; give it its second worker back for later tests
    cluster.workers[0] = cluster.start_worker(0)
    cluster.wait_for_workers(2)
