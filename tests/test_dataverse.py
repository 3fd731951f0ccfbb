"""The Dataverse client and the tar-archive reader, against the local Dataverse stand-in.

The server (tests/dataverse_server.py) speaks the documented Native / Data Access API over real HTTP
on 127.0.0.1 and injects faults; the client is not mocked in any way.
"""

# ruff: noqa: F811  (the server's fixtures are imported below and used as test arguments)

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import weakref

import nibabel as nib
import numpy as np
import pytest

from lakepipe.errors import InputError
from lakepipe.io.archives import (
    GSP1000_RUN_PATTERN,
    ArchiveError,
    iter_archive_images,
    member_matches,
    subject_of,
)
from lakepipe.io.dataverse import (
    API_KEY_ENV,
    DataverseAuthError,
    DataverseChecksumError,
    DataverseClient,
    DataverseDownloadError,
    DataverseError,
    DataverseNotFoundError,
    DataverseNotJSONError,
    DataverseResponseError,
    byte_progress,
)
from tests.dataverse_server import (  # noqa: F401  (fixtures)
    GSP_AFFINE,
    GSP_MASK,
    GSP_RUN,
    TEST_API_KEY,
    _add,
    _nii_gz,
    dataverse_server,
    gsp1000_server,
    gsp1000_synthetic,
)

#: a key that must never show up in a message or a log record
WRONG_KEY = "f00dfeed-wrong-key-4c0ffee-99887766"


def client_for(server, key=TEST_API_KEY, **kw) -> DataverseClient:
    kw.setdefault("backoff", 0.001)  # retries in tests wait milliseconds, not seconds
    kw.setdefault("timeout", 10.0)
    return DataverseClient(server.url, key, **kw)


def payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def assert_one_line(exc: BaseException, *must: str) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text, text
    for word in must:
        assert word in text, (word, text)
    assert TEST_API_KEY not in text and WRONG_KEY not in text
    return text


# --------------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paginate", [True, False], ids=["paginated", "pre-6.1"])
def test_listing_matches_what_is_published(dataverse_server, paginate):
    srv = dataverse_server
    srv.paginate = paginate
    published = [
        srv.add_file("b.tar", payload(300, 1), directory_label="archives", checksum_type="MD5"),
        srv.add_file("a.tar.gz", payload(200, 2), checksum_type="SHA-256", content_type="application/gzip"),
        srv.add_file("c.txt", b"readme\n", directory_label="docs/sub", checksum_type="SHA-1"),
    ]
    with client_for(srv) as client:
        listed = client.list_files(page_size=2)  # 3 files in pages of 2: the paginated server pages
        version = client.dataset()
    by_name = {f.name: f for f in listed}
    assert len(listed) == 3 and sorted(by_name) == ["a.tar.gz", "b.tar", "c.txt"]
    for want in published:
        got = by_name[want.filename]
        assert got.id == want.id
        assert got.directory == want.directory_label
        assert got.size == len(want.content)
        assert got.checksum_type == want.checksum_type
        assert (
            got.checksum == hashlib.new(want.checksum_type.replace("-", "").lower(), want.content).hexdigest()
        )
        assert got.content_type == want.content_type
    assert by_name["c.txt"].path == "docs/sub/c.txt" and by_name["a.tar.gz"].path == "a.tar.gz"
    assert version.version == "1.0" and version.dataset_id == srv.dataset_id
    assert sorted(version.files, key=lambda f: f.id) == sorted(listed, key=lambda f: f.id)
    listing = [r for r in srv.requests if r.path.endswith("/files")]
    assert len(listing) == (2 if paginate else 1)
    assert all(r.key_ok for r in srv.requests)


def test_listing_reads_the_older_md5_field(dataverse_server):
    """Dataverse before 4.6 published ``md5`` only; the client falls back to it."""
    srv = dataverse_server
    f = srv.add_file("old.tar", payload(100, 3), checksum_type="MD5")
    original = srv.file_metadata

    def without_checksum_object(sf):
        fmd = original(sf)
        del fmd["dataFile"]["checksum"]
        return fmd

    srv.file_metadata = without_checksum_object
    with client_for(srv) as client:
        (listed,) = client.list_files()
    assert (listed.checksum_type, listed.checksum) == ("MD5", hashlib.md5(f.content).hexdigest())


def test_unknown_dataset_is_not_found(dataverse_server):
    with client_for(dataverse_server) as client, pytest.raises(DataverseNotFoundError) as err:
        client.list_files("doi:10.7910/DVN/NOSUCH")
    assert_one_line(err.value, "doi:10.7910/DVN/NOSUCH", "404", "not found")


# --------------------------------------------------------------------------------------------------
# downloads
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum_type", ["MD5", "SHA-1", "SHA-256", "SHA-512"])
def test_download_verifies_published_checksum(dataverse_server, tmp_path, checksum_type):
    srv = dataverse_server
    content = payload(300_000, 4)
    srv.add_file("run.tar", content, directory_label="archives", checksum_type=checksum_type)
    seen = []
    with client_for(srv, chunk_size=64 << 10) as client:
        (f,) = client.list_files()
        result = client.download(
            f, tmp_path / f.path, progress=lambda done, total: seen.append((done, total))
        )
    assert result.verified and not result.skipped and result.bytes_downloaded == len(content)
    assert (tmp_path / "archives" / "run.tar").read_bytes() == content
    assert not (tmp_path / "archives" / "run.tar.part").exists()
    state = json.loads((tmp_path / "archives" / "run.tar.dataverse.json").read_text())
    assert state["state"] == "verified" and state["checksum"] == f.checksum and state["file_id"] == f.id
    assert seen[-1] == (len(content), len(content))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # progress only goes forward
    (req,) = srv.file_requests()
    assert req.key_ok and req.range is None and req.status == 200


def test_resume_after_dropped_connection(dataverse_server, tmp_path):
    srv = dataverse_server
    content = payload(400_000, 5)
    sf = srv.add_file("big.tar", content, checksum_type="SHA-256")
    srv.drop_connection(sf.id, after_bytes=150_000, times=1)
    with client_for(srv) as client:
        (f,) = client.list_files()
        result = client.download(f, tmp_path / f.path)
    assert (tmp_path / "big.tar").read_bytes() == content and result.verified
    first, second = srv.file_requests(sf.id)
    assert first.range is None and first.body_bytes == 150_000
    assert second.range == f"bytes={first.body_bytes}-" and second.status == 206
    # about one file in all, not two: only the missing tail was sent again
    assert srv.bytes_served(sf.id) == len(content)


def test_interrupted_download_resumes_in_the_next_call(dataverse_server, tmp_path):
    """A download that gives up keeps its .part; the next call sends only the rest and still verifies
    the whole file (the kept prefix is hashed from disk)."""
    srv = dataverse_server
    content = payload(250_000, 6)
    sf = srv.add_file("run.tar.gz", content, checksum_type="MD5")
    srv.drop_connection(sf.id, after_bytes=100_000, times=1)
    srv.drop_connection(sf.id, after_bytes=0, times=None)  # then nothing more, ever
    dest = tmp_path / "run.tar.gz"
    with client_for(srv, retries=2) as client:
        (f,) = client.list_files()
        with pytest.raises(DataverseDownloadError) as err:
            client.download(f, dest)
        assert_one_line(err.value, f"/api/access/datafile/{sf.id}", "3 times", "run again to resume")
        assert len(srv.file_requests(sf.id)) == 1 + 3  # one with progress, then 1 + retries without
        assert not dest.exists() and (tmp_path / "run.tar.gz.part").stat().st_size == 100_000
        srv.clear_faults()
        srv.reset_counters()
        result = client.download(f, dest)
    assert dest.read_bytes() == content and result.verified and result.resumed_from == 100_000
    (req,) = srv.file_requests(sf.id)
    assert req.range == "bytes=100000-" and srv.bytes_served(sf.id) == len(content) - 100_000


def test_server_that_ignores_range_restarts_from_zero(dataverse_server, tmp_path):
    srv = dataverse_server
    content = payload(120_000, 7)
    sf = srv.add_file("x.tar", content, checksum_type="SHA-1")
    srv.ignore_range = True
    srv.drop_connection(sf.id, after_bytes=50_000)
    with client_for(srv) as client:
        (f,) = client.list_files()
        result = client.download(f, tmp_path / "x.tar")
    assert (tmp_path / "x.tar").read_bytes() == content and result.verified
    assert [r.status for r in srv.file_requests(sf.id)] == [200, 200]


def test_checksum_mismatch_is_one_line_and_leaves_no_file(dataverse_server, tmp_path):
    srv = dataverse_server
    sf = srv.add_file("bad.tar", payload(90_000, 8), checksum_type="SHA-256")
    srv.wrong_checksum.add(sf.id)
    dest = tmp_path / "bad.tar"
    with client_for(srv) as client:
        (f,) = client.list_files()
        with pytest.raises(DataverseChecksumError) as err:
            client.download(f, dest)
    assert_one_line(err.value, "bad.tar", "SHA-256", f.checksum, f"/api/access/datafile/{sf.id}")
    assert sorted(os.listdir(tmp_path)) == []  # no file, no .part, no sidecar


def test_skip_checksum_accepts_unverifiable_bytes(dataverse_server, tmp_path):
    srv = dataverse_server
    content = payload(10_000, 9)
    sf = srv.add_file("y.tar", content)
    srv.wrong_checksum.add(sf.id)
    with client_for(srv) as client:
        (f,) = client.list_files()
        result = client.download(f, tmp_path / "y.tar", skip_checksum=True)
        again = client.download(f, tmp_path / "y.tar", skip_checksum=True)
    assert (tmp_path / "y.tar").read_bytes() == content and not result.verified
    assert again.skipped and srv.bytes_served() == len(content)


def test_second_download_downloads_nothing(gsp1000_server, tmp_path, caplog):
    srv = gsp1000_server
    caplog.set_level(logging.INFO, logger="lakepipe.io.dataverse")

    def rehashed() -> int:
        return sum("checking the" in r.getMessage() for r in caplog.records)

    with client_for(srv) as client:
        files = client.list_files()
        first = [client.download(f, tmp_path / f.path) for f in files]
        served = srv.bytes_served()
        n_requests = len(srv.file_requests())
        second = [client.download(f, tmp_path / f.path) for f in files]
        assert srv.bytes_served() == served and len(srv.file_requests()) == n_requests
        assert all(r.skipped and r.verified and r.bytes_downloaded == 0 for r in second)
        assert served == sum(f.size for f in files) and not any(r.skipped for r in first)
        assert rehashed() == 0  # the sidecar vouched for the files: not even read again

        # without its sidecar (a file put there by hand) the file is re-hashed, not fetched
        (tmp_path / (files[0].path + ".dataverse.json")).unlink()
        assert client.download(files[0], tmp_path / files[0].path).skipped
        assert srv.bytes_served() == served and rehashed() == 1

        # a file changed on disk (same size) no longer matches: it is fetched again
        path = tmp_path / files[1].path
        blob = bytearray(path.read_bytes())
        blob[100] ^= 0xFF
        path.write_bytes(bytes(blob))
        again = client.download(files[1], path)
    assert not again.skipped and again.verified and srv.bytes_served() == served + files[1].size


def test_progress_lines_without_a_terminal(dataverse_server, tmp_path, caplog):
    """Off a terminal (CI, cron) the progress callback logs size and rate instead of drawing a bar."""
    srv = dataverse_server
    srv.add_file("p.tar", payload(3_000_000, 15), checksum_type="SHA-256")
    caplog.set_level(logging.INFO, logger="lakepipe.io.dataverse")
    with client_for(srv, chunk_size=1 << 20) as client:
        (f,) = client.list_files()
        with byte_progress("p.tar", every_s=0.0) as report:
            client.download(f, tmp_path / "p.tar", progress=report)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("p.tar: ")]
    assert lines and lines[-1].startswith("p.tar: 3.0 of 3.0 MB (") and lines[-1].endswith(" MB/s)")


def test_redirected_download_keeps_the_key_at_home(dataverse_server, tmp_path):
    """Dataverse on S3 redirects downloads to presigned URLs: the key must not follow."""
    srv = dataverse_server
    content = payload(70_000, 10)
    sf = srv.add_file("s3.tar", content, checksum_type="SHA-512")
    srv.redirect_downloads = True
    srv.drop_connection(sf.id, after_bytes=30_000)
    with client_for(srv) as client:
        (f,) = client.list_files()
        result = client.download(f, tmp_path / "s3.tar")
    assert (tmp_path / "s3.tar").read_bytes() == content and result.verified
    api = [r for r in srv.requests if r.path.startswith("/api/access/")]
    storage = [r for r in srv.requests if r.listener == "storage"]
    assert len(api) == 2 and all(r.key_ok and r.status == 303 for r in api)  # asked afresh each time
    assert len(storage) == 2 and not any(r.key_sent for r in storage)
    assert storage[1].range == "bytes=30000-"


# --------------------------------------------------------------------------------------------------
# errors: wrong key, HTML answers
# --------------------------------------------------------------------------------------------------


def test_wrong_key_is_one_line_without_the_key(dataverse_server, tmp_path, caplog):
    srv = dataverse_server
    srv.echo_key_in_errors = True  # a server that repeats the key it got: the client must redact it
    sf = srv.add_file("z.tar", payload(1000, 11))
    caplog.set_level(logging.DEBUG)  # everything, urllib3 included
    client = client_for(srv, WRONG_KEY)
    with pytest.raises(DataverseAuthError) as err:
        client.list_files()
    text = assert_one_line(err.value, "401", "Bad API key", "***", srv.url, "--api-key")
    assert err.value.exit_code == 2
    with client_for(srv) as good:
        (f,) = good.list_files()
    with pytest.raises(DataverseAuthError) as err:
        client.download(f, tmp_path / "z.tar")
    assert_one_line(err.value, "401", f"/api/access/datafile/{sf.id}")
    assert os.listdir(tmp_path) == []
    assert WRONG_KEY not in repr(client) and WRONG_KEY not in text
    assert not any(WRONG_KEY in r.getMessage() for r in caplog.records)
    client.close()


def test_missing_key_and_key_from_environment(dataverse_server, monkeypatch):
    srv = dataverse_server
    srv.add_file("z.tar", payload(10, 12))
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with client_for(srv, None) as client, pytest.raises(DataverseAuthError) as err:
        client.list_files()
    assert_one_line(err.value, "401", "X-Dataverse-key")
    monkeypatch.setenv(API_KEY_ENV, TEST_API_KEY)
    with client_for(srv, None) as client:
        assert len(client.list_files()) == 1
    assert srv.requests[-1].key_ok


def test_key_with_control_characters_is_refused_without_echo():
    with pytest.raises(DataverseAuthError) as err:
        DataverseClient("http://127.0.0.1:9", "bad\nkey-" + WRONG_KEY)
    assert_one_line(err.value, "API key")


def test_html_instead_of_json_is_a_clear_error(dataverse_server, tmp_path):
    srv = dataverse_server
    sf = srv.add_file("h.tar", payload(5000, 13))
    srv.html_instead_of_json = True
    with client_for(srv) as client:
        with pytest.raises(DataverseNotJSONError) as err:
            client.list_files()
        assert_one_line(err.value, "expected JSON", "text/html", "Log In - Harvard Dataverse", srv.url)
        with pytest.raises(DataverseNotJSONError):
            client.dataset()
        srv.html_instead_of_json = False
        (f,) = client.list_files()
        srv.html_instead_of_files = True
        with pytest.raises(DataverseResponseError) as err:
            client.download(f, tmp_path / "h.tar")
    assert_one_line(err.value, "HTML page", "h.tar", f"/api/access/datafile/{sf.id}")
    assert os.listdir(tmp_path) == []


def test_unreachable_server_fails_after_retries(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = DataverseClient(f"http://127.0.0.1:{port}", WRONG_KEY, retries=1, backoff=0.001, timeout=2)
    with pytest.raises(DataverseError) as err:
        client.list_files()
    assert_one_line(err.value, f"127.0.0.1:{port}", "failed 2 times")


# --------------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------------


def test_member_patterns_and_subjects():
    run = GSP_RUN.format(sub="0042")
    assert member_matches(run, GSP1000_RUN_PATTERN)
    assert member_matches("GSP1000_v2/" + run, GSP1000_RUN_PATTERN)
    assert not member_matches(run.replace("bld001", "bld002"), GSP1000_RUN_PATTERN)
    assert not member_matches("sub-0042/extra/func/" + run.rsplit("/", 1)[1], GSP1000_RUN_PATTERN)
    assert subject_of("x/sub-0042/func/sub-0042_bld001.nii.gz") == "0042"
    assert subject_of("sub-0042_bld001.nii.gz") == "0042" and subject_of("mask.nii.gz") is None
    with pytest.raises(ValueError, match="sub-0042.*sub-0043"):
        subject_of("sub-0042/func/sub-0043_bld001.nii.gz")


def test_archives_yield_each_run_once_from_memory(gsp1000_server, gsp1000_synthetic, tmp_path, monkeypatch):
    """Download the synthetic release, then read every archive: each subject's run exactly once, with its
    data, the mask from the first archive, nothing else, and nothing written to disk on the way."""
    gsp = gsp1000_synthetic
    downloads = tmp_path / "downloads"
    with client_for(gsp1000_server) as client:
        paths = {f.name: client.download(f, downloads / f.path).path for f in client.list_files()}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where anything spilled to disk would go
    monkeypatch.chdir(scratch)
    before = sorted(p.name for p in downloads.rglob("*"))
    seen_runs: dict[str, str] = {}
    masks = []
    for name, subjects in gsp.subjects.items():
        got = []
        for item in iter_archive_images(paths[name]):
            assert item.archive == str(paths[name])
            assert item.image.shape[:3] == gsp.mask.shape
            np.testing.assert_array_equal(item.image.affine, gsp.affine)
            if item.kind == "mask":
                masks.append((name, np.asanyarray(item.image.dataobj)))
                continue
            assert item.name == f"{gsp.prefix}/{GSP_RUN.format(sub=item.subject)}"
            data = np.asanyarray(item.image.dataobj)
            assert data.dtype == np.float32 and item.image.header.get_zooms()[3] == gsp.tr
            np.testing.assert_array_equal(data, gsp.runs[item.subject])  # bytes in, same bytes out
            assert item.subject not in seen_runs
            seen_runs[item.subject] = name
            got.append(item.subject)
        assert got == subjects
    assert sorted(seen_runs) == sorted(gsp.runs)
    assert [n for n, _ in masks] == [gsp.mask_archive]
    np.testing.assert_array_equal(masks[0][1], gsp.mask)
    assert os.listdir(scratch) == [] and sorted(p.name for p in downloads.rglob("*")) == before


def test_archive_reads_from_a_stream_and_holds_one_image(gsp1000_synthetic):
    name, blob = gsp1000_synthetic.archives[0]
    stream = io.BytesIO(blob)
    stream.name = name
    it = iter_archive_images(stream, mask_pattern=None)
    first = next(it)
    assert first.kind == "run" and first.archive == name
    ref = weakref.ref(first.image)
    del first
    second = next(it)
    assert ref() is None  # the reader kept no reference to the run it had handed out
    assert second.subject == gsp1000_synthetic.subjects[name][1]
    assert list(it) == []


def _tar(tmp_path, name, members, mode="w:gz"):
    path = tmp_path / name
    with tarfile.open(path, mode) as tar:
        for member, data in members:
            _add(tar, member, data)
    return path


def test_archive_without_runs_is_an_error(tmp_path):
    mask = _nii_gz(np.ones((3, 3, 3), np.uint8), GSP_AFFINE)
    path = _tar(tmp_path, "empty.tar.gz", [("GSP/README.txt", b"hello"), (f"GSP/{GSP_MASK}", mask)])
    items = []
    with pytest.raises(ArchiveError) as err:
        items.extend(iter_archive_images(path))
    assert_one_line(err.value, str(path), "no run matching")
    assert isinstance(err.value, InputError) and [i.kind for i in items] == ["mask"]
    assert [i.kind for i in iter_archive_images(path, require_runs=False)] == ["mask"]


def test_damaged_archives_are_clear_errors(tmp_path, gsp1000_synthetic):
    name, blob = gsp1000_synthetic.archives[0]
    truncated = tmp_path / name
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArchiveError) as err:
        list(iter_archive_images(truncated))
    assert_one_line(err.value, str(truncated))
    notatar = tmp_path / "notatar.tar"
    notatar.write_bytes(b"<html>Log In</html>" * 50)
    with pytest.raises(ArchiveError) as err:
        list(iter_archive_images(notatar))
    assert_one_line(err.value, str(notatar), "not a readable tar archive")

    run = GSP_RUN.format(sub="0007")
    good = _nii_gz(np.zeros((2, 2, 2, 3), np.float32), GSP_AFFINE)
    for members, words in [
        ([(run, gzip.compress(b"not a nifti" * 40))], ["not a NIfTI"]),
        ([(run, good[: len(good) - 20])], ["cannot read the member"]),  # gzip stream cut short
        ([(run, gzip.compress(gzip.decompress(good)[:-16]))], ["truncated", "needs 448"]),  # 352 + 96
        ([(run, good), ("x/" + run, good)], ["0007", "two runs"]),
        ([(run.replace("func/sub-0007_", "func/sub-0008_"), good)], ["sub-0007", "sub-0008"]),
    ]:
        path = _tar(tmp_path, "bad.tar", members, mode="w")
        with pytest.raises(ArchiveError) as err:
            list(iter_archive_images(path))
        assert_one_line(err.value, str(path), *words)


def test_uncompressed_and_multi_member_gzip_runs(tmp_path):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    raw = nib.Nifti1Image(data, GSP_AFFINE).to_bytes()
    half = len(raw) // 2
    concatenated = gzip.compress(raw[:half]) + gzip.compress(raw[half:])  # ``cat a.gz b.gz``
    members = [
        (GSP_RUN.format(sub="0001"), concatenated),
        (GSP_RUN.format(sub="0002"), raw),  # stored without compression under a .nii.gz name
    ]
    path = _tar(tmp_path, "mixed.tar", members, mode="w")
    got = {i.subject: np.asanyarray(i.image.dataobj) for i in iter_archive_images(path)}
    assert sorted(got) == ["0001", "0002"]
    for arr in got.values():
        np.testing.assert_array_equal(arr, data)


def test_data_is_a_view_unless_the_header_scales(tmp_path):
    """``ArchiveImage.data`` equals nibabel's reading of the member: a view of the member's bytes for
    plain data, nibabel's scaled array when the header has ``scl_slope``/``scl_inter``."""
    rng = np.random.default_rng(14)
    plain = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    scaled = nib.Nifti1Image(rng.integers(-100, 100, (3, 4, 5, 6)).astype(np.int16), GSP_AFFINE)
    scaled.header.set_slope_inter(0.5, 10.0)
    big_endian = nib.Nifti1Image(plain.astype(">f4"), GSP_AFFINE)
    members = [
        (GSP_RUN.format(sub="0001"), _nii_gz(plain, GSP_AFFINE)),
        (GSP_RUN.format(sub="0002"), gzip.compress(scaled.to_bytes())),
        (GSP_RUN.format(sub="0003"), gzip.compress(big_endian.to_bytes())),
    ]
    path = _tar(tmp_path, "scaled.tar", members, mode="w")
    got = {}
    for item in iter_archive_images(path):
        arr = item.data()
        ref = nib.Nifti1Image.from_bytes(gzip.decompress(dict(members)[item.name])).dataobj
        np.testing.assert_array_equal(arr, np.asanyarray(ref))  # same values, same dtype
        assert arr.dtype == np.asanyarray(ref).dtype
        got[item.subject] = arr.flags.writeable
    assert got == {"0001": False, "0002": True, "0003": False}  # views are read-only
