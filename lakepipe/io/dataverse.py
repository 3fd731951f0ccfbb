"""A Dataverse client for the downloads lakepipe needs: list a dataset's files, fetch one file.

Endpoints (Dataverse Native API and Data Access API, https://guides.dataverse.org/en/latest/api/):

- ``GET /api/datasets/:persistentId/?persistentId=PID``: the dataset with its latest accessible version
  (``data.latestVersion``: ``versionNumber``, ``versionMinorNumber``, ``files``);
- ``GET /api/datasets/:persistentId/versions/VERSION/files?persistentId=PID``: the file metadata of one
  version (``:latest``, ``:latest-published``, ``x.y``), paginated with ``limit``/``offset`` and a
  ``totalCount`` since Dataverse 6.1 (older servers return everything at once and no ``totalCount``);
- ``GET /api/access/datafile/ID``: the file's bytes. A single ``Range`` (``bytes=N-``) is supported,
  ``If-Range`` is not; installations that store files on S3 may answer with a redirect to a presigned
  URL (``download-redirect``), valid for about an hour, so every attempt asks Dataverse afresh.

Each file entry is a FileMetadata (``label``, ``directoryLabel``, ``restricted``) holding a ``dataFile``
(``id``, ``filename``, ``contentType``, ``filesize``, ``checksum: {type, value}`` with type ``MD5``,
``SHA-1``, ``SHA-256`` or ``SHA-512``, and the older ``md5`` field, set only for MD5). Errors come back
as ``{"status": "ERROR", "message": ...}``, e.g. HTTP 401 ``Bad API key``.

The API key travels only in the ``X-Dataverse-key`` header (the documented preferred way: a ``key``
query parameter ends up in server logs), is never logged, is not sent on to another origin when a
download is redirected, and is replaced by ``***`` in every error message.

Downloads go to ``<dest>.part`` and are resumed from its size with ``Range: bytes=N-``; the published
checksum is computed while the bytes arrive (the kept prefix is hashed from disk first), and only a
verified file is renamed to ``dest``. A sidecar ``<dest>.dataverse.json`` records which Dataverse file
(id, size, checksum) the ``.part`` or the finished file holds, and, once verified, the finished file's
size and modification time: a second download of the same file returns at once without reading or
fetching anything. A ``dest`` without a matching sidecar (copied in by hand, or touched since) is
re-hashed, and downloaded again only if it differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3

from lakepipe.errors import LakepipeError

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://dataverse.harvard.edu"
GSP1000_DOI = "doi:10.7910/DVN/ILXIKS"  #: GSP1000 preprocessed connectome on Harvard Dataverse
API_KEY_ENV = "DATAVERSE_API_KEY"
API_KEY_HEADER = "X-Dataverse-key"

#: Dataverse checksum types (``DataFile.ChecksumType``) -> hashlib names
_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
#: errors of a dropped or stalled connection: retried (disk errors are not: they are plain OSError)
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)
SIDECAR_SUFFIX = ".dataverse.json"
PART_SUFFIX = ".part"

ProgressCallback = Callable[[int, "int | None"], None]


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


class DataverseError(LakepipeError):
    """A Dataverse request failed; the message is one line naming the URL or file, never the key."""


class DataverseAuthError(DataverseError):
    """The server refused the API key (HTTP 401) or the access (HTTP 403)."""

    exit_code = 2


class DataverseNotFoundError(DataverseError):
    """No such dataset, version or file (HTTP 404)."""

    exit_code = 2


class DataverseResponseError(DataverseError):
    """The server answered something other than the documented response."""


class DataverseNotJSONError(DataverseResponseError):
    """An API endpoint answered something that is not JSON (a login page, a proxy error page)."""


class DataverseChecksumError(DataverseError):
    """The downloaded bytes do not have the published checksum (the bad file has been deleted)."""


class DataverseDownloadError(DataverseError):
    """A download could not be completed (connection dropped too often, wrong size)."""


# --------------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataverseFile:
    """One file of a dataset version, as the Native API lists it."""

    id: int  #: database id: what ``/api/access/datafile/{id}`` takes; a replaced file gets a new id
    name: str  #: file name (``dataFile.filename``; the FileMetadata ``label``)
    directory: str | None  #: ``directoryLabel`` (folder inside the dataset), if any
    size: int | None  #: bytes (``filesize``)
    checksum_type: str | None  #: ``MD5``, ``SHA-1``, ``SHA-256`` or ``SHA-512``
    checksum: str | None  #: hex digest, lower case
    content_type: str | None
    restricted: bool = False

    @property
    def path(self) -> str:
        """``directory/name`` (POSIX), checked to stay inside the dataset: safe to join to a folder."""
        return f"{self.directory}/{self.name}" if self.directory else self.name


@dataclass(frozen=True)
class DatasetVersion:
    """A dataset's latest accessible version and its files."""

    persistent_id: str
    dataset_id: int | None
    version: str | None  #: ``"1.0"``; ``"DRAFT"`` for a draft
    files: tuple[DataverseFile, ...]


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    file: DataverseFile
    bytes_downloaded: int  #: bytes received over the network by this call
    resumed_from: int  #: bytes of an earlier ``.part`` that were kept
    verified: bool  #: the published checksum was checked (False with ``skip_checksum``)
    skipped: bool  #: the file was already complete: nothing was downloaded


def resolve_api_key(api_key: str | None = None) -> str | None:
    """``api_key`` if given, else ``$DATAVERSE_API_KEY``, else ``None`` (public endpoints only)."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    key = (key or "").strip()
    return key or None


# --------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------


class DataverseClient:
    """Talk to one Dataverse installation.

    Parameters
    ----------
    server_url
        Base URL of the installation (``https://dataverse.harvard.edu``); a trailing ``/api`` is
        accepted.
    api_key
        API token; ``None`` reads ``$DATAVERSE_API_KEY``. Sent only as the ``X-Dataverse-key`` header.
    timeout
        Seconds to wait for a connection or for the next bytes of an answer.
    retries
        How many times in a row a dropped connection (or HTTP 429/5xx) is retried without any progress
        before the request fails; an attempt that brought new bytes resets the count.
    backoff
        First wait between retries in seconds, doubled each time (capped at 60 s).
    chunk_size
        Bytes read, hashed and written at a time.
    """

    def __init__(
        self,
        server_url: str = DEFAULT_SERVER,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        chunk_size: int = 1 << 20,
        session: requests.Session | None = None,
    ):
        url = (server_url or DEFAULT_SERVER).strip().rstrip("/")
        if url.endswith("/api"):
            url = url[: -len("/api")]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DataverseError(f"{url}: not an http(s) URL of a Dataverse installation")
        if parts.username or parts.password or parts.query:
            raise DataverseError(
                f"{parts.scheme}://{parts.hostname}: give the server URL without credentials"
            )
        self.server_url = url
        self._api_key = resolve_api_key(api_key)
        if self._api_key is not None and not re.fullmatch(r"[\x21-\x7e]+", self._api_key):
            self._api_key = None  # never echo it: requests' InvalidHeader message would quote it
            raise DataverseAuthError("the API key contains spaces or control characters")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.chunk_size = int(chunk_size)
        self._session = session or requests.Session()
        self._own_session = session is None

    def __repr__(self) -> str:  # no key, ever
        return f"DataverseClient({self.server_url!r}, api_key={'set' if self._api_key else 'none'})"

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> DataverseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- listing

    def dataset(self, persistent_id: str = GSP1000_DOI) -> DatasetVersion:
        """The dataset's latest accessible version with its files (one request, no pagination)."""
        url = f"{self.server_url}/api/datasets/:persistentId/"
        data = self._get_json(url, {"persistentId": persistent_id})
        if not isinstance(data, dict):
            raise DataverseResponseError(f"{self._shown(url, persistent_id)}: 'data' is not an object")
        latest = data.get("latestVersion")
        if not isinstance(latest, dict):
            raise DataverseResponseError(
                f"{self._shown(url, persistent_id)}: no latestVersion (no accessible version)"
            )
        state = latest.get("versionState")
        major, minor = latest.get("versionNumber"), latest.get("versionMinorNumber")
        version = f"{major}.{minor or 0}" if major is not None else (str(state) if state else None)
        shown = self._shown(url, persistent_id)
        files = tuple(_parse_file(e, shown) for e in latest.get("files") or [])
        did = data.get("id")
        return DatasetVersion(persistent_id, int(did) if isinstance(did, int) else None, version, files)

    def list_files(
        self, persistent_id: str = GSP1000_DOI, version: str = ":latest", *, page_size: int = 500
    ) -> list[DataverseFile]:
        """Files of one version of a dataset (``:latest``, ``:latest-published`` or ``x.y``).

        Pages through ``limit``/``offset`` when the server reports ``totalCount``.
        """
        url = f"{self.server_url}/api/datasets/:persistentId/versions/{quote(version, safe=':.')}/files"
        shown = self._shown(url, persistent_id)
        files: list[DataverseFile] = []
        seen: set[int] = set()
        offset = 0
        while True:
            params = {"persistentId": persistent_id, "limit": page_size, "offset": offset}
            payload = self._get_json(url, params, whole=True)
            page = payload.get("data")
            if not isinstance(page, list):
                raise DataverseResponseError(f"{shown}: 'data' is not a list of files")
            for entry in page:
                f = _parse_file(entry, shown)
                if f.id not in seen:
                    seen.add(f.id)
                    files.append(f)
            total = payload.get("totalCount")
            if not isinstance(total, int) or not page or len(files) >= total:
                return files  # a server without pagination answers everything at once
            offset += len(page)

    # ---------------------------------------------------------------- downloading

    def file_url(self, file_id: int) -> str:
        return f"{self.server_url}/api/access/datafile/{int(file_id)}"

    def download(
        self,
        file: DataverseFile,
        dest: str | os.PathLike,
        *,
        skip_checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Download ``file`` to ``dest``, resuming an interrupted download and verifying the checksum.

        Parameters
        ----------
        file
            An entry of :meth:`list_files` / :meth:`dataset`.
        dest
            Destination path; the parent folder is created. Bytes arrive in ``dest + ".part"``.
        skip_checksum
            Do not verify the published checksum (only the size); the caller should warn.
        progress
            Called as ``progress(bytes_done, total_bytes_or_None)`` at the start and after each chunk.

        Raises
        ------
        DataverseChecksumError
            The bytes do not match the published checksum; the bad file is deleted.
        DataverseDownloadError
            The connection dropped ``retries`` times in a row without progress; the ``.part`` is kept
            for the next call to resume.
        DataverseAuthError, DataverseNotFoundError, DataverseResponseError
            As their names say.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        sidecar = dest.with_name(dest.name + SIDECAR_SUFFIX)
        url = self.file_url(file.id)
        algo = None if skip_checksum else _hash_name(file, url)
        if self._already_complete(file, dest, sidecar, algo, progress):
            log.info("%s: already downloaded and %s", dest, "verified" if algo else "complete")
            return DownloadResult(dest, file, 0, 0, algo is not None, True)

        # keep a .part only if the sidecar says it holds this very file
        state = _read_json(sidecar)
        offset = part.stat().st_size if part.exists() else 0
        if offset and not (_same_file(state, file) and (file.size is None or offset <= file.size)):
            log.info("%s: discarding a partial download of another file version", part)
            offset = 0
        if not offset:
            part.unlink(missing_ok=True)
        xfer = _Transfer(offset=offset, hasher=_new_hasher(algo), sidecar=sidecar)
        if xfer.hasher is not None and offset:
            _hash_file(part, xfer.hasher, self.chunk_size)  # the kept prefix counts towards the checksum
        if progress:
            progress(offset, file.size)
        log.info("downloading %s (%s bytes) from %s%s", file.path, file.size, url,
                 f", resuming at byte {offset}" if offset else "")  # fmt: skip
        failures = 0
        while not xfer.done:
            if file.size is not None and xfer.offset == file.size and part.exists():
                break  # every byte is in the .part (a run stopped between download and rename)
            before = xfer.offset
            try:
                self._fetch_into(file, url, part, xfer, algo, progress)
                reason = "the answer ended early"
            except _TRANSIENT as exc:
                reason = _one_line(exc)
            except _RetryableStatus as exc:
                reason = str(exc)
            if xfer.done:
                break
            failures = 0 if xfer.offset > before else failures + 1
            if failures > self.retries:
                raise DataverseDownloadError(
                    self._redact(
                        f"{url}: download of {file.path} failed {failures} times in a row ({reason}); "
                        f"{xfer.offset} of {file.size if file.size is not None else '?'} bytes are kept "
                        f"in {part}: run again to resume"
                    )
                )
            wait = min(self.backoff * 2 ** max(failures - 1, 0), 60.0)
            log.warning(
                "%s: %s; retrying from byte %d in %.1f s", file.path, self._redact(reason), xfer.offset, wait
            )
            time.sleep(wait)

        size = part.stat().st_size
        if file.size is not None and size != file.size:
            raise DataverseDownloadError(f"{url}: {part} has {size} bytes, the dataset lists {file.size}")
        with open(part, "rb+") as fh:  # on disk before the sidecar vouches for it
            os.fsync(fh.fileno())
        verified = False
        if xfer.hasher is not None:
            got = xfer.hasher.hexdigest()
            if got != file.checksum:
                # neither the bad bytes nor an older file at dest (it did not match either) may be taken
                # for the published file
                for bad in (part, dest, sidecar):
                    bad.unlink(missing_ok=True)
                raise DataverseChecksumError(
                    f"{url}: {file.path} has {file.checksum_type} {got}, the dataset publishes "
                    f"{file.checksum}; the bad download was deleted"
                )
            verified = True
        os.replace(part, dest)
        _write_json(sidecar, _file_state(file, "verified" if verified else "unverified", dest))
        return DownloadResult(dest, file, xfer.received, offset, verified, False)

    # ---------------------------------------------------------------- internals

    def _fetch_into(
        self,
        file: DataverseFile,
        url: str,
        part: Path,
        xfer: _Transfer,
        algo: str | None,
        progress: ProgressCallback | None,
    ) -> None:
        """One GET from ``xfer.offset``, appended to ``part``; ``xfer`` is updated chunk by chunk, so
        it stays true to the ``.part`` when the connection drops mid-way."""
        resp = self._open_download(url, xfer.offset)
        try:
            status = resp.status_code
            if status == 416 and file.size is not None and xfer.offset == file.size:
                xfer.done = True  # the .part already holds every byte
                return
            if status == 416:  # the server's file is shorter than the .part: that .part is no use
                part.unlink(missing_ok=True)
                raise DataverseDownloadError(
                    f"{url}: the server cannot send bytes from {xfer.offset} on (HTTP 416); the partial "
                    "download was discarded: run again to start over"
                )
            if status == 206:
                start, _end, total = _content_range(resp.headers.get("Content-Range", ""))
                if start != xfer.offset:
                    raise DataverseDownloadError(
                        f"{url}: asked for bytes from {xfer.offset}, the server sent from {start}"
                    )
                if file.size is not None and total is not None and total != file.size:
                    raise DataverseDownloadError(
                        f"{url}: the server has {total} bytes, the dataset lists {file.size}"
                    )
                mode = "ab"
            elif status == 200:
                if xfer.offset:
                    log.warning("%s: the server ignored the Range request; starting again from 0", url)
                    xfer.offset, xfer.hasher = 0, _new_hasher(algo)
                mode = "wb"
            else:
                self._raise_for_status(resp, url)
                raise DataverseResponseError(f"{url}: unexpected HTTP {status} for a file download")
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype == "text/html" and (file.content_type or "").lower() != "text/html":
                title = _html_title(resp.raw.read(8192, decode_content=True), self._redact)
                raise DataverseResponseError(
                    f"{url}: the server answered an HTML page{title} instead of {file.path} "
                    "(a login or terms-of-use page?)"
                )
            length = resp.headers.get("Content-Length")
            if (
                status == 200
                and file.size is not None
                and length
                and length.isdigit()
                and int(length) != file.size
            ):
                raise DataverseDownloadError(
                    f"{url}: the server sends {length} bytes, the dataset lists {file.size}"
                )
            if progress:
                progress(xfer.offset, file.size)
            if not xfer.sidecar_written:  # from now on the .part holds bytes of this file
                _write_json(xfer.sidecar, _file_state(file, "partial"))
                xfer.sidecar_written = True
            with open(part, mode) as out:
                for chunk in resp.raw.stream(self.chunk_size, decode_content=False):
                    out.write(chunk)
                    if xfer.hasher is not None:
                        xfer.hasher.update(chunk)
                    xfer.offset += len(chunk)
                    xfer.received += len(chunk)
                    if progress:
                        progress(xfer.offset, file.size)
            # urllib3 raises on a body shorter than its Content-Length; an answer without one that
            # ends early leaves done False and is retried from where it stopped
            xfer.done = file.size is None or xfer.offset >= file.size
        finally:
            resp.close()

    def _open_download(self, url: str, offset: int) -> requests.Response:
        """GET the file from ``offset``, following redirects by hand so the key never leaves the origin."""
        headers = {"Accept-Encoding": "identity"}  # byte offsets must refer to the file, not an encoding
        if self._api_key:
            headers[API_KEY_HEADER] = self._api_key
        if offset:
            headers["Range"] = f"bytes={offset}-"
        origin = _origin(self.server_url)
        target = url
        for _ in range(6):
            try:
                resp = self._session.get(
                    target, headers=headers, stream=True, allow_redirects=False, timeout=self.timeout
                )
            except _TRANSIENT:
                raise
            except requests.RequestException as exc:
                raise DataverseResponseError(self._redact(f"{url}: {_one_line(exc)}")) from None
            if resp.status_code in _REDIRECT_STATUS and resp.headers.get("Location"):
                target = urljoin(target, resp.headers["Location"])
                resp.close()
                if _origin(target) != origin:
                    headers.pop(API_KEY_HEADER, None)
                continue
            if resp.status_code in _RETRY_STATUS:
                resp.close()
                raise _RetryableStatus(f"HTTP {resp.status_code}")
            return resp
        raise DataverseResponseError(f"{url}: too many redirects")

    def _get_json(self, url: str, params: dict[str, Any], *, whole: bool = False) -> Any:
        """GET an API endpoint and return its ``data`` (or the whole payload), raising typed errors."""
        shown = self._shown(url, params.get("persistentId"))
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers[API_KEY_HEADER] = self._api_key
        failures = 0
        while True:
            try:
                resp = self._session.get(
                    url, params=params, headers=headers, allow_redirects=False, timeout=self.timeout
                )
                if resp.status_code not in _RETRY_STATUS:
                    break
                reason = f"HTTP {resp.status_code}"
            except _TRANSIENT as exc:
                reason = _one_line(exc)
            except requests.RequestException as exc:
                raise DataverseResponseError(self._redact(f"{shown}: {_one_line(exc)}")) from None
            failures += 1
            if failures > self.retries:
                raise DataverseError(self._redact(f"{shown}: failed {failures} times ({reason})"))
            wait = min(self.backoff * 2 ** (failures - 1), 60.0)
            log.warning("%s: %s; retrying in %.1f s", shown, self._redact(reason), wait)
            time.sleep(wait)
        if resp.status_code in _REDIRECT_STATUS:
            where = urlsplit(urljoin(url, resp.headers.get("Location", "")))
            raise DataverseNotJSONError(
                self._redact(
                    f"{shown}: the API redirected to {where.scheme}://{where.netloc}{where.path} instead of "
                    "answering JSON (a login page? is the server URL right?)"
                )
            )
        try:
            payload = resp.json()
        except ValueError:
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
            raise DataverseNotJSONError(
                f"{shown}: expected JSON from the Dataverse API, got {ctype} (HTTP {resp.status_code})"
                f"{_html_title(resp.text, self._redact)}; is the server URL that of a Dataverse installation?"
            ) from None
        if resp.status_code >= 400 or not isinstance(payload, dict) or payload.get("status") != "OK":
            self._raise_for_status(resp, shown, payload)
            message = payload.get("message") if isinstance(payload, dict) else None
            detail = f": {_flatten(str(message))}" if message else ""
            raise DataverseResponseError(self._redact(f"{shown}: answer without status OK{detail}"))
        if "data" not in payload:
            raise DataverseResponseError(f"{shown}: answer without 'data'")
        return payload if whole else payload["data"]

    def _raise_for_status(self, resp: requests.Response, shown: str, payload: Any = None) -> None:
        status = resp.status_code
        if status < 400 and payload is None:
            return
        if payload is None:
            try:
                payload = resp.json()
            except ValueError:
                payload = None
        message = payload.get("message") if isinstance(payload, dict) else None
        text = f"{shown}: HTTP {status}" + (f": {_flatten(str(message))}" if message else "")
        text = self._redact(text)
        if status == 401:
            raise DataverseAuthError(f"{text} (check the API key: --api-key or ${API_KEY_ENV})")
        if status == 403:
            raise DataverseAuthError(f"{text} (this key has no access: request access or accept the terms)")
        if status == 404:
            raise DataverseNotFoundError(text)
        if status >= 400:
            raise DataverseResponseError(text)

    def _already_complete(
        self,
        file: DataverseFile,
        dest: Path,
        sidecar: Path,
        algo: str | None,
        progress: ProgressCallback | None,
    ) -> bool:
        if not dest.is_file():
            return False
        st = dest.stat()
        if file.size is not None and st.st_size != file.size:
            return False
        state = _read_json(sidecar)
        recorded = _same_file(state, file) and state.get("size") == st.st_size
        recorded = recorded and state.get("mtime_ns") == st.st_mtime_ns
        if recorded and (state.get("state") == "verified" or algo is None):
            if progress:
                progress(st.st_size, file.size)
            return True
        if algo is None:
            if state.get("file_id") not in (None, file.id):
                return False  # the sidecar says dest holds another file
            # no checksum wanted and the size matches: accept the file as it is (unverified)
            _write_json(sidecar, _file_state(file, "unverified", dest))
            return True
        log.info("%s: checking the %s of the existing file", dest, file.checksum_type)
        hasher = _new_hasher(algo)
        _hash_file(dest, hasher, self.chunk_size)
        if hasher.hexdigest() != file.checksum:
            log.warning("%s differs from the published file; downloading it again", dest)
            return False
        _write_json(sidecar, _file_state(file, "verified", dest))
        if progress:
            progress(st.st_size, file.size)
        return True

    def _shown(self, url: str, persistent_id: Any = None) -> str:
        return f"{url}?persistentId={persistent_id}" if persistent_id else url

    def _redact(self, text: str) -> str:
        key = self._api_key
        if key:
            for form in {key, quote(key, safe=""), quote(key)}:
                text = text.replace(form, "***")
        return text


class _RetryableStatus(Exception):
    """HTTP 429/5xx on a download: retried like a dropped connection."""


@dataclass
class _Transfer:
    """Where a download stands: bytes in the ``.part``, their running hash, bytes received."""

    offset: int
    hasher: Any
    sidecar: Path
    received: int = 0
    done: bool = False
    sidecar_written: bool = False


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _parse_file(entry: Any, shown: str) -> DataverseFile:
    """A FileMetadata JSON object -> :class:`DataverseFile`, validating what a path is built from."""
    df = entry.get("dataFile") if isinstance(entry, dict) else None
    if not isinstance(df, dict) or not isinstance(df.get("id"), int):
        raise DataverseResponseError(f"{shown}: a file entry has no dataFile.id")
    fid = int(df["id"])
    name = df.get("filename") or entry.get("label")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DataverseResponseError(f"{shown}: file {fid} has an unusable name {name!r}")
    directory = entry.get("directoryLabel") or df.get("directoryLabel") or None
    if directory is not None:
        directory = str(directory).strip("/")
        segs = PurePosixPath(directory).parts
        if "\\" in directory or any(s in ("", ".", "..") for s in segs):
            raise DataverseResponseError(f"{shown}: file {fid} has an unsafe directoryLabel {directory!r}")
        directory = directory or None
    ctype, cvalue = None, None
    checksum = df.get("checksum")
    if isinstance(checksum, dict) and checksum.get("type") and checksum.get("value"):
        ctype, cvalue = _canonical_hash(str(checksum["type"])), str(checksum["value"]).strip().lower()
    elif df.get("md5"):  # Dataverse before 4.6 listed only an MD5
        ctype, cvalue = "MD5", str(df["md5"]).strip().lower()
    size = df.get("filesize")
    return DataverseFile(
        id=fid,
        name=name,
        directory=directory,
        size=int(size) if isinstance(size, int) else None,
        checksum_type=ctype,
        checksum=cvalue,
        content_type=df.get("contentType"),
        restricted=bool(entry.get("restricted", False)),
    )


def _canonical_hash(kind: str) -> str:
    k = kind.strip().upper().replace("_", "-")
    return {"SHA1": "SHA-1", "SHA256": "SHA-256", "SHA512": "SHA-512"}.get(k, k)


def _hash_name(file: DataverseFile, url: str) -> str:
    if not file.checksum or not file.checksum_type:
        raise DataverseChecksumError(
            f"{url}: {file.path} has no published checksum; download it with checksum checking skipped"
        )
    name = _HASHES.get(file.checksum_type)
    if name is None:
        raise DataverseChecksumError(
            f"{url}: {file.path} has a checksum of unknown type {file.checksum_type!r}"
        )
    return name


def _new_hasher(algo: str | None) -> Any:
    if algo is None:
        return None
    return hashlib.new(algo, usedforsecurity=False)  # integrity, not security (FIPS systems refuse MD5)


def _hash_file(path: Path, hasher: Any, chunk: int) -> None:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            hasher.update(block)


def _content_range(value: str) -> tuple[int, int, int | None]:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not m:
        raise DataverseResponseError(f"HTTP 206 with an unusable Content-Range {value!r}")
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    port = p.port or {"http": 80, "https": 443}.get(p.scheme)
    return p.scheme, (p.hostname or "").lower(), port


def _same_file(state: dict[str, Any], file: DataverseFile) -> bool:
    return (
        state.get("file_id") == file.id
        and state.get("checksum") == file.checksum
        and state.get("checksum_type") == file.checksum_type
    )


def _file_state(file: DataverseFile, state: str, dest: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "state": state,
        "file_id": file.id,
        "name": file.path,
        "checksum_type": file.checksum_type,
        "checksum": file.checksum,
        "listed_size": file.size,
    }
    if dest is not None:
        st = dest.stat()
        out.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _flatten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    return _flatten(f"{type(exc).__name__}: {exc}")


def _html_title(body: bytes | str | None, redact: Callable[[str], str]) -> str:
    """`` ("Title")`` of an HTML answer, for messages; empty when there is none."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    m = re.search(r"<title[^>]*>(.*?)</title>", text[:8192], re.I | re.S)
    return f' ("{redact(_flatten(m[1], 80))}")' if m and m[1].strip() else ""


# --------------------------------------------------------------------------------------------------
# progress display for the command line
# --------------------------------------------------------------------------------------------------


@contextmanager
def byte_progress(desc: str, *, every_s: float = 10.0) -> Iterator[ProgressCallback]:
    """A progress callback for :meth:`DataverseClient.download`: a tqdm bar (bytes, rate) on a
    terminal, a log line with MB and MB/s every ``every_s`` seconds otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)

        def update(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            bar.close()
        return

    start = last = time.monotonic()
    first: list[int] = []

    def report(done: int, total: int | None) -> None:
        nonlocal last
        if not first:
            first.append(done)
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            rate = (done - first[0]) / max(now - start, 1e-9) / 1e6
            of = f" of {total / 1e6:.1f}" if total else ""
            log.info("%s: %.1f%s MB (%.1f MB/s)", desc, done / 1e6, of, rate)

    yield report
