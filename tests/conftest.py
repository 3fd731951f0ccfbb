"""Shared fixtures: tutorial data, lakes on local/memory/S3 storage, a real Dask cluster, PostgreSQL.

Expensive things (tutorial data, an ingested lake, the S3 server, the Dask cluster) are made once
per test session; tests that change a lake get their own copy or their own cohort.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres_server import catalog_backend, catalog_url, postgres_url  # noqa: F401

os.environ.setdefault("LAKEPIPE_BLAS_TUNING", "1")
# Library calls that get no client or scheduler run in this process (tests that exercise a cluster pass
# the session's `dask_client`, an address, or set LAKEPIPE_SCHEDULER="" to get a local cluster).
os.environ.setdefault("LAKEPIPE_SCHEDULER", "synchronous")
# Credentials of the loopback S3-protocol server (moto accepts any): set before any worker process
# starts, so workers of every cluster the tests start can read S3 lakes.
for _k, _v in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_k, _v)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ATLASES = SHARED / "atlases"
SHARED_LESIONS = SHARED / "lesions" / "tutorial_bids"

#: small but structured: every numeric test runs on these
TUTORIAL_ARGS = {"participants": 6, "subjects": 8, "timepoints": 40, "batch_size": 3}


def shared_atlas(desc: str, name: str = "Schaefer2018") -> tuple[Path, Path]:
    stem = f"tpl-MNI152NLin6Asym_res-01_atlas-{name}_desc-{desc}_dseg"
    return ATLASES / f"{stem}.nii.gz", ATLASES / f"{stem}.txt"


@pytest.fixture(scope="session")
def tutorial(tmp_path_factory):
    """Tutorial inputs (lesions, HDF5 connectome, atlas, parcel and 4D NIfTI connectomes)."""
    from lakepipe.tutorial import write_tutorial

    return write_tutorial(tmp_path_factory.mktemp("tutorial"), nifti_connectome=True, **TUTORIAL_ARGS)


@pytest.fixture(scope="session")
def dask_client():
    """A real distributed cluster: two single-threaded worker processes."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
    )
    # not the default scheduler: pipelines get it explicitly, while lazy reads in the test process
    # (memory:// lakes live only here) keep using threads
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, tutorial, dask_client):
    """A local lake with the tutorial cohort, connectome and atlas ingested and parcellated."""
    from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
    from lakepipe.lake import Lake

    lake = Lake(str(tmp_path_factory.mktemp("lake") / "lake"))
    ingest_lesions(lake, tutorial.bids, cohort="tutorial")
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    lake.run("parcellate", connectome="tutorial", atlas="Seitzman2018", client=dask_client)
    return lake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto) on 127.0.0.1, with credentials and endpoint in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LAKEPIPE_S3_ENDPOINT": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="lake")
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(params=["local", "memory", "s3"])
def any_lake_url(request, tmp_path):
    """A fresh, empty lake URL on each kind of storage (the store conformance suite runs on all)."""
    import uuid

    if request.param == "local":
        return str(tmp_path / "lake")
    if request.param == "memory":
        return f"memory://lake-{uuid.uuid4().hex[:8]}"
    request.getfixturevalue("s3_server")
    return f"s3://lake/{uuid.uuid4().hex[:8]}"


def run_cli(
    *args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the ``lakepipe`` command line in a subprocess (as users do)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lakepipe.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


#: what a command whose outputs are all in the lake must not import (nor start a cluster for)
NOT_FOR_SKIPPING = ("xarray", "zarr", "dask", "distributed", "scipy", "numba", "nibabel", "h5py")


def answer_from_catalog(argv: list[str]) -> str:
    """Run the command line ``argv`` in a fresh process and check that it answered from the catalog:
    none of :data:`NOT_FOR_SKIPPING` imported, no child process started; its output is returned."""
    code = (
        "import sys, multiprocessing\n"
        "from lakepipe.cli.main import main\n"
        f"code = main({list(map(str, argv))!r})\n"
        f"print('HEAVY', sorted(m for m in {NOT_FOR_SKIPPING!r} if m in sys.modules))\n"
        "print('CHILDREN', len(multiprocessing.active_children()))\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout and "CHILDREN 0" in proc.stdout, proc.stdout[-2000:]
    return proc.stdout


def copy_lake_folder(src: str | Path, dst: str | Path, *, hard_links: bool = False) -> Path:
    """Copy a local lake folder, its SQLite catalog through SQLite's backup API.

    Never with a plain file copy while this process has the catalog open: closing any descriptor
    of the file drops this process's POSIX locks on it, another process then takes itself for the
    last user, checkpoints and deletes the WAL, and this process's connections fail with "disk I/O
    error". ``hard_links`` links the data files instead of copying them (for read-only use)."""
    import sqlite3

    src, dst = Path(src), Path(dst)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(
        src,
        dst,
        copy_function=link if hard_links else shutil.copy2,
        ignore=shutil.ignore_patterns("catalog.sqlite*"),
    )
    if (src / "catalog.sqlite").exists():
        with sqlite3.connect(src / "catalog.sqlite") as s, sqlite3.connect(dst / "catalog.sqlite") as d:
            s.backup(d)
    return dst


@pytest.fixture
def copy_lake(tmp_path):
    """Copy a local lake folder so a test can change it freely."""

    def _copy(lake) -> str:
        return str(copy_lake_folder(lake.url, tmp_path / "lake-copy"))

    return _copy


#: tests that use these fixtures run real services or processes: the integration lane
INTEGRATION_FIXTURES = {
    "dask_client",
    "ingested",
    "s3_server",
    "postgres_url",
    "catalog_backend",
    "any_lake_url",
    "dataverse_server",
    "gsp1000_server",
}


def pytest_collection_modifyitems(config, items):
    """Mark the integration lane: tests on a Dask cluster, S3, PostgreSQL, a browser, subprocesses of the
    command line (marked slow), or the tutorial lake. ``pytest -m "not integration"`` is the fast unit
    lane; ``.ci/run`` runs both."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (
            fixtures & INTEGRATION_FIXTURES
            or item.get_closest_marker("slow")
            or item.get_closest_marker("browser")
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _restore_logging():
    """``lakepipe.cli.main.main`` configures the root logger onto the (captured) stderr of the test
    that calls it; put the previous handlers back so later tests do not log to a closed stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
