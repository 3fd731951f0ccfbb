"""A local Dataverse stand-in speaking the documented API, synthetic GSP1000 archives, and fixtures.

:class:`DataverseTestServer` is a threaded ``http.server`` on 127.0.0.1 (a free port) that serves one
dataset the way the Dataverse Native and Data Access APIs document it
(https://guides.dataverse.org/en/latest/api/native-api.html, .../api/dataaccess.html):

- ``GET /api/datasets/:persistentId/?persistentId=PID``: ``{"status": "OK", "data": {..., "latestVersion":
  {"versionNumber", "versionMinorNumber", "versionState", "files": [FileMetadata, ...]}}}``;
- ``GET /api/datasets/:persistentId/versions/VERSION/files?persistentId=PID[&limit&offset]``:
  ``{"status": "OK", "data": [FileMetadata, ...], "totalCount": N}`` (names A-Z, the default order);
- ``GET /api/access/datafile/ID``: the bytes, with a single ``Range`` honoured (206 + ``Content-Range``,
  416 past the end);

where a FileMetadata is ``{"label", "restricted", "directoryLabel", "version", "datasetVersionId",
"dataFile": {"id", "filename", "contentType", "filesize", "md5" (MD5 only), "checksum": {"type",
"value"}, ...}}``. Every request needs the ``X-Dataverse-key`` header: a wrong key gets HTTP 401
``{"status": "ERROR", "message": "Bad API key"}``, as Dataverse's ``ApiKeyAuthMechanism`` answers.
``/api/v1/...`` works too.

Switches for fault injection (set them on the server object at any time):

``drop_connection(file_id, after_bytes, times=1)``
    the next ``times`` downloads of the file (``None``: all) send ``after_bytes`` bytes of the body and
    cut the connection; rules queue up in the order given.
``wrong_checksum``
    set of file ids whose listed checksum is wrong.
``html_instead_of_json`` / ``html_instead_of_files``
    answer a login page (HTTP 200, ``text/html``) instead of JSON / instead of file bytes.
``redirect_downloads``
    answer downloads with 303 to a second listener on another port (another origin, like an S3
    presigned URL under ``download-redirect``), which serves the bytes without asking for a key.
``ignore_range``
    answer every download with the whole file (200), as a server without range support would.
``paginate``
    ``False`` mimics servers before Dataverse 6.1: no ``totalCount``, ``limit``/``offset`` ignored.
``echo_key_in_errors``
    put the key that was sent into the 401 message (as careless proxies do), to test redaction.

Counters: ``requests`` (one :class:`RequestRecord` each), :meth:`bytes_served`, :meth:`file_requests`.

:func:`make_gsp1000_archives` builds small tar archives laid out like the GSP1000 release: per subject
``sub-XXXX/func/sub-XXXX_bld001_rest_skip4_stc_mc_bp_0.0001_0.08_resid_FS1mm_MNI1mm_MNI2mm_sm7_finalmask.nii.gz``
(a 4D float32 run on a small 2 mm grid with the GSP1000 affine, zero outside the brain mask, two
planted networks), and ``MNI152_T1_2mm_brain_mask.nii.gz`` in the first archive.

Fixtures (import them into a test module or ``conftest.py``): ``dataverse_server`` (a fresh, empty
server per test), ``gsp1000_synthetic`` (session-scoped archives), ``gsp1000_server`` (a fresh server
holding them).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import nibabel as nib
import numpy as np
import pytest

GSP1000_DOI = "doi:10.7910/DVN/ILXIKS"
TEST_API_KEY = "a1b2c3d4-test-key-0000-0123456789ab"
KEY_HEADER = "X-Dataverse-key"

#: the GSP1000 run name (``sub-0001`` style ids, one resting-state run ``bld001`` per subject)
GSP_RUN = (
    "sub-{sub}/func/sub-{sub}_bld001_rest_skip4_stc_mc_bp_0.0001_0.08_resid"
    "_FS1mm_MNI1mm_MNI2mm_sm7_finalmask.nii.gz"
)
GSP_MASK = "MNI152_T1_2mm_brain_mask.nii.gz"
#: FSL/GSP1000 2 mm affine (LAS: x decreases with i)
GSP_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
_HASHLIB = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
_LOGIN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Log In - Harvard Dataverse</title></head>\n"
    b"<body><form action='/loginpage.xhtml'>Please log in</form></body></html>\n"
)


@dataclass
class ServedFile:
    id: int
    filename: str
    content: bytes
    directory_label: str | None = None
    content_type: str = "application/x-tar"
    checksum_type: str = "MD5"
    restricted: bool = False

    @property
    def checksum(self) -> str:
        return hashlib.new(_HASHLIB[self.checksum_type], self.content).hexdigest()

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    listener: str  #: "api" or "storage"
    key_sent: bool  #: an X-Dataverse-key header came with the request
    key_ok: bool  #: ... and it was the right one
    range: str | None
    status: int = 0
    body_bytes: int = 0  #: bytes of file content written
    file_id: int | None = None


@dataclass
class _DropRule:
    after_bytes: int
    times: int | None  #: None: always


class DataverseTestServer:
    """One dataset on a local HTTP server; see the module docstring for the API and the switches."""

    def __init__(
        self,
        api_key: str = TEST_API_KEY,
        persistent_id: str = GSP1000_DOI,
        *,
        dataset_id: int = 4242,
        version: tuple[int, int] = (1, 0),
    ):
        self.api_key = api_key
        self.persistent_id = persistent_id
        self.dataset_id = dataset_id
        self.version = version
        self.version_id = 9001
        self.files: dict[int, ServedFile] = {}
        self.requests: list[RequestRecord] = []
        # fault switches
        self.wrong_checksum: set[int] = set()
        self.html_instead_of_json = False
        self.html_instead_of_files = False
        self.redirect_downloads = False
        self.ignore_range = False
        self.paginate = True
        self.require_key = True
        self.echo_key_in_errors = False
        self._drops: dict[int, list[_DropRule]] = {}
        self._lock = threading.Lock()
        self._next_id = 1000
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.url = ""
        self.storage_url = ""

    # -------------------------------------------------------------- setup

    def add_file(
        self,
        filename: str,
        content: bytes,
        *,
        directory_label: str | None = None,
        checksum_type: str = "MD5",
        content_type: str = "application/x-tar",
        restricted: bool = False,
    ) -> ServedFile:
        with self._lock:
            self._next_id += 7  # ids of a real installation are neither small nor consecutive
            f = ServedFile(
                self._next_id,
                filename,
                bytes(content),
                directory_label,
                content_type,
                checksum_type,
                restricted,
            )
            self.files[f.id] = f
        return f

    def drop_connection(self, file_id: int, after_bytes: int, times: int | None = 1) -> None:
        """Cut the next ``times`` downloads of ``file_id`` (``None``: every one) after ``after_bytes``."""
        with self._lock:
            self._drops.setdefault(file_id, []).append(_DropRule(int(after_bytes), times))

    def clear_faults(self) -> None:
        with self._lock:
            self._drops.clear()
        self.wrong_checksum.clear()
        self.html_instead_of_json = self.html_instead_of_files = False
        self.redirect_downloads = self.ignore_range = False

    # -------------------------------------------------------------- counters

    def file_requests(self, file_id: int | None = None) -> list[RequestRecord]:
        """Requests that asked for file bytes (on either listener), optionally of one file."""
        with self._lock:
            return [r for r in self.requests if r.file_id is not None and file_id in (None, r.file_id)]

    def bytes_served(self, file_id: int | None = None) -> int:
        return sum(r.body_bytes for r in self.file_requests(file_id))

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()

    # -------------------------------------------------------------- lifecycle

    def start(self) -> DataverseTestServer:
        for listener in ("api", "storage"):
            srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            srv.daemon_threads = True
            srv.owner = self  # type: ignore[attr-defined]
            srv.listener = listener  # type: ignore[attr-defined]
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
            t.start()
            self._servers.append(srv)
            self._threads.append(t)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.storage_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> DataverseTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- JSON documents

    def file_metadata(self, f: ServedFile) -> dict:
        checksum = f.checksum
        if f.id in self.wrong_checksum:
            checksum = hashlib.new(_HASHLIB[f.checksum_type], b"not the file" + f.content).hexdigest()
        data_file = {
            "id": f.id,
            "persistentId": "",
            "filename": f.filename,
            "contentType": f.content_type,
            "friendlyType": "TAR Archive" if "tar" in f.content_type else "Unknown",
            "filesize": f.size,
            "description": "",
            "storageIdentifier": f"s3://dvn-cloud:18b{f.id:09x}",
            "rootDataFileId": -1,
            "checksum": {"type": f.checksum_type, "value": checksum},
            "tabularData": False,
            "creationDate": "2023-03-14",
            "publicationDate": "2023-03-15",
            "fileAccessRequest": False,
        }
        if f.checksum_type == "MD5":
            data_file["md5"] = checksum  # the older field, only set for MD5
        out = {
            "description": "",
            "label": f.filename,
            "restricted": f.restricted,
            "version": 1,
            "datasetVersionId": self.version_id,
            "dataFile": data_file,
        }
        if f.directory_label:  # Dataverse omits null fields
            out["directoryLabel"] = f.directory_label
            data_file["directoryLabel"] = f.directory_label
        return out

    def sorted_files(self) -> list[ServedFile]:
        return sorted(self.files.values(), key=lambda f: f.filename)

    def dataset_json(self) -> dict:
        authority, _, identifier = self.persistent_id.removeprefix("doi:").partition("/")
        major, minor = self.version
        return {
            "id": self.dataset_id,
            "identifier": identifier,
            "persistentUrl": f"https://doi.org/{self.persistent_id.removeprefix('doi:')}",
            "protocol": "doi",
            "authority": authority,
            "publisher": "Harvard Dataverse",
            "publicationDate": "2023-03-15",
            "storageIdentifier": f"s3://{self.persistent_id.removeprefix('doi:')}",
            "latestVersion": {
                "id": self.version_id,
                "datasetId": self.dataset_id,
                "datasetPersistentId": self.persistent_id,
                "storageIdentifier": f"s3://{self.persistent_id.removeprefix('doi:')}",
                "versionNumber": major,
                "versionMinorNumber": minor,
                "versionState": "RELEASED",
                "lastUpdateTime": "2023-03-15T12:00:00Z",
                "releaseTime": "2023-03-15T12:00:00Z",
                "createTime": "2023-03-14T12:00:00Z",
                "fileAccessRequest": False,
                "metadataBlocks": {
                    "citation": {
                        "displayName": "Citation Metadata",
                        "fields": [
                            {
                                "typeName": "title",
                                "multiple": False,
                                "typeClass": "primitive",
                                "value": "GSP1000 Preprocessed Connectome (synthetic test copy)",
                            }
                        ],
                    }
                },
                "files": [self.file_metadata(f) for f in self.sorted_files()],
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server; every answer has a Content-Length
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures anyway
        pass

    @property
    def owner(self) -> DataverseTestServer:
        return self.server.owner  # type: ignore[attr-defined]

    # ------------------------------------------------------------ dispatch

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        sent = self.headers.get(KEY_HEADER)
        rec = RequestRecord(
            method="GET",
            path=path,
            query=query,
            listener=self.server.listener,  # type: ignore[attr-defined]
            key_sent=sent is not None,
            key_ok=sent == self.owner.api_key,
            range=self.headers.get("Range"),
        )
        with self.owner._lock:
            self.owner.requests.append(rec)
        try:
            self._route(rec, path, query, sent)
        except (BrokenPipeError, ConnectionResetError):  # the client went away
            self.close_connection = True

    def _route(self, rec: RequestRecord, path: str, query: dict[str, str], sent: str | None) -> None:
        owner = self.owner
        if rec.listener == "storage":
            m = re.fullmatch(r"/storage/(\d+)", path)
            if not m or int(m[1]) not in owner.files or "X-Amz-Signature" not in query:
                return self._xml_error(rec, 403, "AccessDenied")
            return self._send_file(rec, owner.files[int(m[1])])
        path = re.sub(r"^/api/v1/", "/api/", path)
        if owner.require_key and not rec.key_ok:
            if sent is None:
                msg = f"Please provide a key query parameter (?key=XXX) or via the HTTP header {KEY_HEADER}"
            else:
                msg = "Bad API key" + (f" {sent}" if owner.echo_key_in_errors else "")
            return self._json(rec, 401, {"status": "ERROR", "message": msg})
        if path.startswith("/api/access/datafile/"):
            m = re.fullmatch(r"/api/access/datafile/(\d+)", path)
            if not m or int(m[1]) not in owner.files:
                return self._json(rec, 404, {"status": "ERROR", "message": f"File with ID {path} not found."})
            f = owner.files[int(m[1])]
            if owner.redirect_downloads:
                rec.file_id = None
                loc = f"{owner.storage_url}/storage/{f.id}?X-Amz-Expires=3600&X-Amz-Signature=0123abcd"
                return self._send(rec, 303, b"", "text/plain", {"Location": loc})
            return self._send_file(rec, f)
        if owner.html_instead_of_json:
            return self._send(rec, 200, _LOGIN_PAGE, "text/html;charset=UTF-8")
        m = re.fullmatch(r"/api/datasets/:persistentId(?:/(?:versions/([^/]+)/files)?)?/?", path)
        if not m:
            return self._json(
                rec, 404, {"status": "ERROR", "message": "API endpoint does not exist on this server."}
            )
        pid = query.get("persistentId")
        if pid != owner.persistent_id:
            msg = f"Dataset with Persistent ID {pid} not found."
            return self._json(rec, 404, {"status": "ERROR", "message": msg})
        version = m[1]
        if version is None:
            return self._json(rec, 200, {"status": "OK", "data": owner.dataset_json()})
        major, minor = owner.version
        if version not in (
            ":latest",
            ":latest-published",
            f"{major}.{minor}",
            f"{major}" if minor == 0 else "",
        ):
            return self._json(
                rec, 404, {"status": "ERROR", "message": f"Dataset version {version} not found"}
            )
        files = [owner.file_metadata(f) for f in owner.sorted_files()]
        payload: dict = {"status": "OK"}
        if owner.paginate:
            offset = int(query.get("offset") or 0)
            limit = int(query["limit"]) if query.get("limit") else None
            payload["data"] = files[offset : None if limit is None else offset + limit]
            payload["totalCount"] = len(files)
        else:
            payload["data"] = files
        return self._json(rec, 200, payload)

    # ------------------------------------------------------------ answers

    def _send_file(self, rec: RequestRecord, f: ServedFile) -> None:
        owner = self.owner
        rec.file_id = f.id
        if owner.html_instead_of_files:
            return self._send(rec, 200, _LOGIN_PAGE, "text/html;charset=UTF-8")
        size = f.size
        start, end, status = 0, size - 1, 200
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{f.filename}"',
        }
        if rec.range and not owner.ignore_range:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rec.range.strip())
            if not m or (not m[1] and not m[2]):
                return self._json(
                    rec, 400, {"status": "ERROR", "message": "Only a single range is supported"}
                )
            if m[1]:
                start = int(m[1])
                end = min(int(m[2]), size - 1) if m[2] else size - 1
            else:  # bytes=-N: the last N bytes
                start = max(size - int(m[2]), 0)
            if start >= size or start > end:
                headers["Content-Range"] = f"bytes */{size}"
                return self._send(rec, 416, b"", "text/plain", headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = memoryview(f.content)[start : end + 1]
        drop = self._take_drop(f.id)
        self.send_response(status)
        self.send_header("Content-Type", f.content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        limit = len(body) if drop is None else min(drop, len(body))
        rec.status = status
        for i in range(0, limit, 1 << 16):
            chunk = body[i : min(i + (1 << 16), limit)]
            self.wfile.write(chunk)
            rec.body_bytes += len(chunk)
        self.wfile.flush()
        if drop is not None and drop < len(body):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the body stops short of its Content-Length

    def _take_drop(self, file_id: int) -> int | None:
        owner = self.owner
        with owner._lock:
            rules = owner._drops.get(file_id) or []
            if not rules:
                return None
            rule = rules[0]
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    rules.pop(0)
            return rule.after_bytes

    def _json(self, rec: RequestRecord, status: int, payload: dict) -> None:
        self._send(rec, status, json.dumps(payload).encode(), "application/json")

    def _xml_error(self, rec: RequestRecord, status: int, code: str) -> None:
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code></Error>".encode()
        self._send(rec, status, body, "application/xml")

    def _send(
        self, rec: RequestRecord, status: int, body: bytes, ctype: str, headers: dict | None = None
    ) -> None:
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


# ------------------------------------------------------------------------------------------------
# synthetic GSP1000 archives
# ------------------------------------------------------------------------------------------------


@dataclass
class SyntheticGSP1000:
    """What :func:`make_gsp1000_archives` put where, to check downloads and ingestion against."""

    archives: list[tuple[str, bytes]]  #: (file name, bytes) in dataset order
    subjects: dict[str, list[str]]  #: archive name -> subject labels it holds, in archive order
    runs: dict[str, np.ndarray]  #: subject label ("0001") -> (x, y, z, t) float32 run
    mask: np.ndarray  #: (x, y, z) uint8 brain mask
    affine: np.ndarray
    mask_archive: str
    prefix: str  #: folder that every member sits in
    networks: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  #: (x, y, z) labels 0/1/2
    tr: float = 3.0


def _nii_gz(data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> bytes:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header["pixdim"][4] = tr
    img.set_qform(affine, code=4)  # MNI
    img.set_sform(affine, code=4)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1678800000
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def make_gsp1000_archives(
    n_subjects: int = 5,
    per_archive: int = 2,
    *,
    shape: tuple[int, int, int] = (9, 10, 8),
    n_time: int = 24,
    seed: int = 0,
    prefix: str = "GSP1000_v2",
) -> SyntheticGSP1000:
    """Small tar archives laid out like the GSP1000 release.

    Subjects ``0001..`` go ``per_archive`` to an archive; archives alternate between ``.tar.gz`` and
    plain ``.tar``. Each archive also holds members the reader must skip: a README, a T1 image and,
    for its first subject, a second run (``bld002``). Each run is zero outside an ellipsoidal brain
    mask; inside, voxels follow one of two network time courses (per subject) plus noise, so that
    correlations have known structure.
    """
    rng = np.random.default_rng(seed)
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = ((ii**2 + jj**2 + kk**2) <= 0.85).astype(np.uint8)
    networks = np.where(mask == 0, 0, np.where(ii < 0, 1, 2)).astype(np.uint8)
    runs: dict[str, np.ndarray] = {}
    subjects = [f"{i + 1:04d}" for i in range(n_subjects)]
    for sub in subjects:
        t = rng.standard_normal((2, n_time))
        data = rng.standard_normal((*shape, n_time)).astype(np.float32) * 0.5
        for net in (1, 2):
            data[networks == net] += t[net - 1].astype(np.float32)
        data[mask == 0] = 0
        runs[sub] = data
    archives: list[tuple[str, bytes]] = []
    by_archive: dict[str, list[str]] = {}
    groups = [subjects[i : i + per_archive] for i in range(0, n_subjects, per_archive)]
    for k, group in enumerate(groups):
        gz = k % 2 == 0
        name = f"GSP1000_v2_part{k + 1:02d}_sub-{group[0]}-{group[-1]}.tar" + (".gz" if gz else "")
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, f"{prefix}/README.txt", b"GSP1000 preprocessed resting-state runs (synthetic)\n")
            if k == 0:
                _add(tar, f"{prefix}/{GSP_MASK}", _nii_gz(mask, GSP_AFFINE))
            for j, sub in enumerate(group):
                run_name = GSP_RUN.format(sub=sub)
                _add(tar, f"{prefix}/{run_name}", _nii_gz(runs[sub], GSP_AFFINE, tr=3.0))
                anat = f"{prefix}/sub-{sub}/anat/sub-{sub}_norm_MNI152_2mm.nii.gz"
                _add(tar, anat, _nii_gz(rng.random(shape, dtype=np.float32), GSP_AFFINE))
                if j == 0:  # a second run that the bld001 pattern must not pick up
                    other = f"{prefix}/{run_name.replace('bld001', 'bld002')}"
                    _add(tar, other, _nii_gz(runs[sub][..., ::-1].copy(), GSP_AFFINE, tr=3.0))
        archives.append((name, raw.getvalue()))
        by_archive[name] = list(group)
    return SyntheticGSP1000(
        archives, by_archive, runs, mask, GSP_AFFINE.copy(), archives[0][0], prefix, networks
    )


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def dataverse_server() -> Iterator[DataverseTestServer]:
    """A fresh, empty server per test (key :data:`TEST_API_KEY`, dataset :data:`GSP1000_DOI`)."""
    with DataverseTestServer() as server:
        yield server


@pytest.fixture(scope="session")
def gsp1000_synthetic() -> SyntheticGSP1000:
    return make_gsp1000_archives()


@pytest.fixture
def gsp1000_server(dataverse_server: DataverseTestServer, gsp1000_synthetic: SyntheticGSP1000):
    """A fresh server publishing the synthetic archives (MD5 and SHA-256 checksums alternating)."""
    for k, (name, content) in enumerate(gsp1000_synthetic.archives):
        ctype = "application/gzip" if name.endswith(".gz") else "application/x-tar"
        dataverse_server.add_file(
            name,
            content,
            directory_label="archives",
            checksum_type="MD5" if k % 2 == 0 else "SHA-256",
            content_type=ctype,
        )
    return dataverse_server
