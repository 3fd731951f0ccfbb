"""``lakepipe fetch gsp1000`` against the local Dataverse stand-in (tests/dataverse_server.py).

The archives are laid out like the GSP1000 release (``sub-*/func/*bld001_rest_*_finalmask.nii.gz``
runs, a brain mask in the first archive, members to skip), on a 4 mm grid that covers the MNI152
brain box (so the connectome passes the space check) with a small two-network brain mask: the
fetched connectome is checked voxel for voxel against the runs it was made from, and FNM on it
against the naive reference of tests/reference.py. Nothing of lakepipe is mocked; the server speaks
HTTP on 127.0.0.1 and injects the faults.
"""

# ruff: noqa: F811  (the server's fixtures are imported below and used as test arguments)

from __future__ import annotations

import io
import logging
import sqlite3
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lakepipe.cli.main import main
from lakepipe.errors import InputError
from lakepipe.ingest.fetch import fetch_gsp1000
from lakepipe.io.dataverse import DataverseChecksumError, DataverseClient, DataverseDownloadError
from lakepipe.lake import Lake
from tests import reference, tolerances
from tests.dataverse_server import (  # noqa: F401  (fixtures)
    GSP_MASK,
    GSP_RUN,
    TEST_API_KEY,
    _add,
    _nii_gz,
    dataverse_server,
)

WRONG_KEY = "f00dfeed-wrong-key-4c0ffee-99887766"
#: a 4 mm grid in the GSP1000 (FSL, LAS) orientation covering the MNI152 brain box
AFFINE = np.array([[-4.0, 0, 0, 90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
SHAPE = (46, 55, 46)
N_TIME = 16
PREFIX = "GSP1000_v2"


@dataclass
class Dataset:
    archives: list[tuple[str, bytes]]
    subjects: dict[str, list[str]]  #: archive -> subject labels, in order
    runs: dict[str, np.ndarray]  #: subject -> (x, y, z, t) float32
    mask: np.ndarray
    networks: np.ndarray


def brain(shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small brain mask of two 6 x 6 x 6 blocks side by side (networks 1 and 2)."""
    nets = np.zeros(SHAPE, np.uint8)
    nets[18 + shift : 24 + shift, 25:31, 20:26] = 1
    nets[24 + shift : 30 + shift, 25:31, 20:26] = 2
    return (nets > 0).astype(np.uint8), nets


def make_dataset(
    n_subjects: int = 5,
    per_archive: int = 2,
    *,
    seed: int = 0,
    masks: dict[int, np.ndarray] | None = None,
    no_runs: bool = False,
) -> Dataset:
    """Tar archives like the GSP1000 release. Each run: two network time courses plus noise inside
    the mask, on a raw offset of 100 (ingest must centre), zero outside. ``masks``: archive index ->
    a brain mask member to put in it (default: the real mask in the first archive only)."""
    rng = np.random.default_rng(seed)
    mask, nets = brain()
    masks = {0: mask} if masks is None else masks
    subjects = [f"{i + 1:04d}" for i in range(n_subjects)]
    runs = {}
    for sub in subjects:
        t = rng.standard_normal((2, N_TIME))
        data = np.zeros((*SHAPE, N_TIME), np.float32)
        inside = mask > 0
        data[inside] = 100 + 0.7 * rng.standard_normal((int(inside.sum()), N_TIME))
        for k in (1, 2):
            data[nets == k] += t[k - 1].astype(np.float32) * rng.uniform(
                0.5, 1.5, (int((nets == k).sum()), 1)
            )
        runs[sub] = data.astype(np.float32)
    archives, by_archive = [], {}
    for k, a in enumerate(range(0, n_subjects, per_archive)):
        group = subjects[a : a + per_archive]
        gz = k % 2 == 0
        name = f"GSP1000_v2_part{k + 1:02d}.tar" + (".gz" if gz else "")
        raw = io.BytesIO()
        with tarfile.open(
            fileobj=raw, mode="w:gz" if gz else "w", **({"compresslevel": 1} if gz else {})
        ) as tar:
            _add(tar, f"{PREFIX}/README.txt", b"GSP1000 preprocessed resting-state runs (synthetic)\n")
            if k in masks:
                _add(tar, f"{PREFIX}/{GSP_MASK}", _nii_gz(masks[k], AFFINE))
            for j, sub in enumerate([] if no_runs else group):
                run_name = GSP_RUN.format(sub=sub)
                _add(tar, f"{PREFIX}/{run_name}", _nii_gz(runs[sub], AFFINE, tr=3.0))
                if j == 0:  # a second run the bld001 pattern must skip
                    _add(
                        tar,
                        f"{PREFIX}/{run_name.replace('bld001', 'bld002')}",
                        _nii_gz(runs[sub][..., ::-1], AFFINE),
                    )
        archives.append((name, raw.getvalue()))
        by_archive[name] = [] if no_runs else group
    return Dataset(archives, by_archive, runs, mask, nets)


def publish(server, ds: Dataset) -> list:
    return [
        server.add_file(
            name,
            blob,
            directory_label="archives",
            checksum_type="MD5" if k % 2 == 0 else "SHA-256",
            content_type="application/gzip" if name.endswith(".gz") else "application/x-tar",
        )
        for k, (name, blob) in enumerate(ds.archives)
    ]


@pytest.fixture(scope="module")
def gsp() -> Dataset:
    return make_dataset()


@pytest.fixture
def server(dataverse_server, gsp):
    dataverse_server.served = publish(dataverse_server, gsp)
    return dataverse_server


def client_for(server, key=TEST_API_KEY, **kw) -> DataverseClient:
    kw.setdefault("backoff", 0.001)  # retries wait milliseconds
    kw.setdefault("timeout", 10.0)
    return DataverseClient(server.url, key, **kw)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *must: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("lakepipe: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in must:
        assert word in lines[0], (word, lines[0])
    assert TEST_API_KEY not in err and WRONG_KEY not in err
    return lines[0]


def subjects_in(lake: Lake, name: str = "gsp1000") -> list[str]:
    return sorted(lake.catalog.query(kind="connectome", connectome=name)["store_index"])


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ------------------------------------------------------------------------------- the main path


def test_test_mode_lands_a_connectome_fnm_runs_on(server, gsp, tmp_path, capsys, caplog):
    lake_dir = tmp_path / "lake"
    caplog.set_level(logging.DEBUG)
    code, out, err = cli(
        capsys, "fetch", "gsp1000", "--api-key", TEST_API_KEY, "--test-mode", "--server", server.url,
        "--lake", str(lake_dir),
    )  # fmt: skip
    assert code == 0, err
    first = gsp.archives[0][0]
    assert "2 new subject(s)" in out and "1 archive(s) ingested" in out
    lake = Lake(str(lake_dir))
    assert subjects_in(lake) == gsp.subjects[first] == ["0001", "0002"]
    # one batch only: the other archives were not even asked for
    assert {r.file_id for r in server.file_requests()} == {server.served[0].id}
    # the archive is gone once ingested (the default); nothing else was left in the lake's downloads
    assert files_under(lake_dir / "downloads") == []

    # the stored series are the runs' in-mask voxels (C order of the mask), centred and unit-norm
    ds = lake.open_connectome("gsp1000")
    ijk = np.argwhere(gsp.mask > 0)
    np.testing.assert_array_equal(ds["ijk"].values, ijk)
    assert ds.attrs["grid"]["shape"] == list(SHAPE) and np.allclose(ds.attrs["grid"]["affine"], AFFINE)
    unit, scale, mean = (ds[v].values.astype(np.float64) for v in ("timeseries", "scale", "mean"))
    for s, sub in enumerate(ds["subject"].values):
        raw = gsp.runs[str(sub)][tuple(ijk.T)].T.astype(np.float64)  # (time, voxel)
        back = unit[s] * scale[s] + mean[s]
        # float32 rounding of unit (|unit| <= 1), scale and mean: |error| <= 2 u scale + u |mean|, and
        # each stored value was rounded from float64 once; 4 u (scale + |mean|) leaves room for both
        bound = 4 * tolerances.U32 * (scale[s] + np.abs(mean[s]))
        assert np.all(np.abs(back - raw) <= bound), sub
        np.testing.assert_allclose((unit[s] ** 2).sum(axis=0), 1.0, rtol=N_TIME * 4 * tolerances.U32)

    # FNM runs on it, and equals the naive reference on the runs themselves
    centre = AFFINE[:3, :3] @ np.array([20.5, 27.5, 22.5]) + AFFINE[:3, 3]  # inside network 1
    res = lake.run("fnm", connectome="gsp1000", sphere=[",".join(f"{c:g}" for c in centre)], radius=6.0)
    assert res.computed and res.outputs is not None
    maps = lake.collect("fnm", statistic="zmap")
    series = np.stack([gsp.runs[str(s)][tuple(ijk.T)].T for s in ds["subject"].values]).astype(np.float64)
    cols, _ = reference.sphere_voxels_nilearn(centre, 6.0, ijk, AFFINE, SHAPE)
    assert cols.size >= 4
    (ref,), (dr,) = tolerances.reference_maps(series, [(cols, None)], N_TIME)
    bound = tolerances.fnm_bounds(ref, dr, N_TIME, 2)["zmap"]
    got = np.asarray(maps.values).reshape(-1)
    assert np.all(np.abs(got - ref["zmap"]) <= bound)
    # the planted structure: the seed's network correlates, the other one much less
    net = gsp.networks[tuple(ijk.T)]
    assert got[net == 1].mean() > 0.5 and got[net == 1].mean() > got[net == 2].mean() + 0.3

    # the key is in no message, log record, catalog row or store file
    assert TEST_API_KEY not in out + err and all(TEST_API_KEY not in r.getMessage() for r in caplog.records)
    with sqlite3.connect(lake_dir / "catalog.sqlite") as db:
        runs = db.execute("SELECT command, params FROM runs").fetchall()
    assert runs and all(TEST_API_KEY not in str(r) for r in runs)
    assert any("--api-key ***" in str(r) for r in runs)
    for f in files_under(lake_dir):
        assert TEST_API_KEY.encode() not in f.read_bytes(), f


def test_second_fetch_downloads_nothing(server, gsp, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with client_for(server) as client:
        first = fetch_gsp1000(lake, client=client)
        assert first.written == [s for subs in gsp.subjects.values() for s in subs]
        assert len(first.archives_done) == 3
        server.reset_counters()
        again = fetch_gsp1000(lake, client=client)
    assert server.file_requests() == [] and again.bytes_downloaded == 0
    assert again.written == [] and sorted(again.skipped) == subjects_in(lake) == list(gsp.runs)
    assert len(again.archives_skipped) == 3


def test_subjects_limit_then_the_rest(server, gsp, tmp_path):
    """``--subjects 3`` stops inside the second archive (kept, to be read again); the next fetch
    ingests the rest without downloading the first two archives again."""
    lake = Lake(str(tmp_path / "lake"))
    dl = tmp_path / "dl"
    with client_for(server) as client:
        part = fetch_gsp1000(lake, client=client, subjects=3, download_dir=dl)
        assert part.written == ["0001", "0002", "0003"] and subjects_in(lake) == part.written
        assert [p.name for p in files_under(dl) if not p.name.endswith(".json")] == [gsp.archives[1][0]]
        server.reset_counters()
        rest = fetch_gsp1000(lake, client=client, download_dir=dl)
    assert rest.written == ["0004", "0005"] and subjects_in(lake) == list(gsp.runs)
    assert {r.file_id for r in server.file_requests()} == {server.served[2].id}
    assert files_under(dl) == []


# ------------------------------------------------------------------------------- faults


def test_resume_after_a_dropped_connection(server, gsp, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    second = server.served[1]
    server.drop_connection(second.id, after_bytes=second.size // 2, times=1)
    with client_for(server) as client:
        res = fetch_gsp1000(lake, client=client)
    assert subjects_in(lake) == list(gsp.runs) and len(res.archives_done) == 3
    first_try, resumed = server.file_requests(second.id)
    assert first_try.body_bytes == second.size // 2
    assert resumed.range == f"bytes={second.size // 2}-" and resumed.status == 206
    assert server.bytes_served(second.id) == second.size  # only the missing part was sent again


def test_stopped_fetch_leaves_a_registered_connectome_and_continues(server, gsp, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    dl = tmp_path / "dl"
    second = server.served[1]
    kept = second.size // 3
    server.drop_connection(second.id, after_bytes=kept, times=1)
    server.drop_connection(second.id, after_bytes=0, times=None)  # then the connection never recovers
    with client_for(server, retries=1) as client, pytest.raises(DataverseDownloadError) as err:
        fetch_gsp1000(lake, client=client, download_dir=dl)
    assert "\n" not in str(err.value) and "run again to resume" in str(err.value)
    # the first batch is registered and usable; the second one's bytes so far are kept
    assert subjects_in(lake) == gsp.subjects[gsp.archives[0][0]]
    assert lake.open_connectome("gsp1000").sizes["subject"] == 2
    assert (dl / "archives" / f"{gsp.archives[1][0]}.part").stat().st_size == kept
    server.clear_faults()
    server.reset_counters()
    with client_for(server) as client:
        res = fetch_gsp1000(lake, client=client, download_dir=dl)
    assert res.written == ["0003", "0004", "0005"] and subjects_in(lake) == list(gsp.runs)
    assert server.file_requests(server.served[0].id) == []  # the first batch: nothing downloaded again
    (resumed,) = server.file_requests(second.id)
    assert resumed.range == f"bytes={kept}-" and server.bytes_served(second.id) == second.size - kept


def test_checksum_mismatch(server, gsp, tmp_path, capsys, monkeypatch):
    server.wrong_checksum = {server.served[1].id}
    lake_dir, dl = tmp_path / "lake", tmp_path / "dl"
    monkeypatch.setenv("DATAVERSE_API_KEY", TEST_API_KEY)
    code, _, err = cli(
        capsys, "fetch", "gsp1000", "--server", server.url, "--lake", str(lake_dir), "--download-dir", str(dl)
    )
    assert code == 1
    one_line_error(err, gsp.archives[1][0], "the bad download was deleted")
    lake = Lake(str(lake_dir))
    assert subjects_in(lake) == ["0001", "0002"]  # the batch before it is in; the bad one is not
    assert lake.open_connectome("gsp1000").sizes["subject"] == 2
    assert not [p for p in files_under(dl) if gsp.archives[1][0] in p.name]
    with client_for(server) as client, pytest.raises(DataverseChecksumError):
        fetch_gsp1000(lake, client=client, download_dir=dl)  # the library raises the typed error


def test_wrong_key(server, tmp_path, capsys, caplog):
    lake_dir = tmp_path / "lake"
    caplog.set_level(logging.DEBUG)
    code, out, err = cli(
        capsys, "fetch", "gsp1000", "--api-key", WRONG_KEY, "--server", server.url, "--lake", str(lake_dir)
    )
    assert code == 2
    one_line_error(err, "401", "API key")
    assert WRONG_KEY not in out and all(WRONG_KEY not in r.getMessage() for r in caplog.records)
    assert subjects_in(Lake(str(lake_dir))) == [] and not (lake_dir / "connectomes").exists()
    for f in files_under(lake_dir):
        assert WRONG_KEY.encode() not in f.read_bytes(), f
    # no key at all: said so, before any request
    code, _, err = cli(capsys, "fetch", "gsp1000", "--server", server.url, "--lake", str(lake_dir))
    assert code == 2
    one_line_error(err, "API key is needed")


def test_html_instead_of_json(server, tmp_path, capsys):
    server.html_instead_of_json = True
    lake_dir = tmp_path / "lake"
    code, _, err = cli(
        capsys, "fetch", "gsp1000", "--api-key", TEST_API_KEY, "--server", server.url, "--lake", str(lake_dir)
    )
    assert code == 2
    one_line_error(err, "expected JSON", "text/html", "Log In - Harvard Dataverse")
    assert subjects_in(Lake(str(lake_dir))) == [] and not (lake_dir / "connectomes").exists()
    assert server.file_requests() == []


def test_archive_without_runs(dataverse_server, tmp_path, capsys):
    empty = make_dataset(2, 2, no_runs=True)
    publish(dataverse_server, empty)
    lake_dir = tmp_path / "lake"
    code, _, err = cli(
        capsys, "fetch", "gsp1000", "--api-key", TEST_API_KEY, "--server", dataverse_server.url,
        "--lake", str(lake_dir),
    )  # fmt: skip
    assert code == 2
    one_line_error(err, empty.archives[0][0], "no run matching")
    assert subjects_in(Lake(str(lake_dir))) == [] and not (lake_dir / "connectomes" / "gsp1000.zarr").exists()


def test_batch_with_another_mask(dataverse_server, tmp_path, capsys):
    """The second archive ships a brain mask shifted by one voxel: refused, its subjects not ingested,
    the first batch's left registered."""
    mask, _ = brain()
    shifted, _ = brain(shift=1)
    ds = make_dataset(4, 2, masks={0: mask, 1: shifted})
    publish(dataverse_server, ds)
    lake_dir = tmp_path / "lake"
    code, _, err = cli(
        capsys, "fetch", "gsp1000", "--api-key", TEST_API_KEY, "--server", dataverse_server.url,
        "--lake", str(lake_dir),
    )  # fmt: skip
    assert code == 2
    one_line_error(err, ds.archives[1][0], "differs from the earlier batches' mask")
    lake = Lake(str(lake_dir))
    assert subjects_in(lake) == ["0001", "0002"] and lake.open_connectome("gsp1000").sizes["subject"] == 2
    with client_for(dataverse_server) as client, pytest.raises(InputError, match="earlier batches' mask"):
        fetch_gsp1000(lake, client=client)
    assert subjects_in(lake) == ["0001", "0002"]
