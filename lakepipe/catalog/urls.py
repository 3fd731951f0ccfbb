"""URL handling for the catalog: redaction, store-URI checks, and where a lake's catalog lives.

Credentials never leave this module in clear: everything that is shown or logged goes through
:func:`redact_url` or :func:`redact_text`, and store URIs (which are written to the catalog)
must be lake-relative paths without any credentials.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lakepipe.errors import InputError

__all__ = [
    "CATALOG_ENV",
    "SQLITE_NAME",
    "catalog_url_for_lake",
    "check_store_uri",
    "contains_credentials",
    "normalize_catalog_url",
    "redact_text",
    "redact_url",
]

#: Environment variable naming the catalog database (a SQLAlchemy URL).
CATALOG_ENV = "LAKEPIPE_CATALOG"
#: File name of the default SQLite catalog inside a local lake.
SQLITE_NAME = "catalog.sqlite"

_MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# scheme://user:password@host : the password may itself hold '/' or '@' (AWS secrets do), so it
# runs up to the last '@' that is followed by a host (no further '@' before the path).
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>\S*?)(?P<at>@)(?=[^\s/@]*(?:[/?#\s]|$))"
)
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:[^=&\s]*(?:pass|secret|token|signature|credential|api[-_]?key|access[-_]?key)"
    r"[^=&\s]*)=)(?P<value>[^&\s#]*)",
    re.I,
)
_STORE_URI = re.compile(r"^[A-Za-z0-9._\-+=]+(?:/[A-Za-z0-9._\-+=]+)*/?$")


def redact_url(url: str | os.PathLike[str] | None) -> str:
    """Return ``url`` with its password and secret-looking query values replaced by ``***``.

    Works for SQLAlchemy URLs (``postgresql+psycopg://user:pw@host/db``) and fsspec URLs
    (``s3://key:secret@bucket/lake``); plain paths come back unchanged.

    Examples
    --------
    >>> redact_url("postgresql+psycopg://me:hunter2@db:5432/lake")
    'postgresql+psycopg://me:***@db:5432/lake'
    """
    if url is None:
        return ""
    return redact_text(os.fspath(url))


def redact_text(text: str) -> str:
    """Redact every URL password and secret query value found anywhere in ``text``.

    Used for free text that may embed URLs, such as a recorded command line.
    """
    text = _USERINFO.sub(lambda m: f"{m['head']}{_MASK}{m['at']}", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{_MASK}", text)


def contains_credentials(text: str) -> bool:
    """Whether ``text`` embeds a URL password (``scheme://user:pw@``) or a secret query value."""
    if "@" not in text and "=" not in text:  # fast path: both patterns need one of them
        return False
    return redact_text(text) != text


def check_store_uri(uri: str) -> str:
    """Validate a store URI for the catalog and return it.

    A store URI is a path relative to the lake root (``derivatives/afnm/atlas-x.zarr``): no
    scheme, no leading ``/``, no ``..`` segments, no credentials, no query string.

    Raises
    ------
    InputError
        For anything else; the message never repeats a credential.
    """
    if not isinstance(uri, str) or not uri:
        raise InputError("store URI must be a non-empty lake-relative path", repr(uri))
    if contains_credentials(uri):
        raise InputError(
            "store URI contains credentials; store URIs are lake-relative paths", redact_url(uri)
        )
    shown = redact_url(uri)
    if _SCHEME.match(uri) or uri.startswith(("/", "\\", "~")):
        raise InputError("store URI must be relative to the lake root, not absolute", shown)
    if not _STORE_URI.match(uri):
        raise InputError("store URI may only hold letters, digits and . _ - + = separated by '/'", shown)
    if any(seg in (".", "..") for seg in uri.rstrip("/").split("/")):
        raise InputError("store URI must not contain '.' or '..' segments", shown)
    return uri


def normalize_catalog_url(url: str | os.PathLike[str]) -> str:
    """Turn a user-given catalog location into a SQLAlchemy URL string.

    A plain path becomes a SQLite file URL; ``postgresql://`` and ``postgres://`` select the
    psycopg 3 driver (the one lakepipe installs).
    """
    text = os.fspath(url).strip()
    if not text:
        raise InputError("empty catalog URL")
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    scheme, rest = text.split("://", 1)
    if scheme.lower() in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme.lower() == "file":
        return f"sqlite:///{Path(unquote(urlsplit(text).path)).expanduser().resolve()}"
    return text


def memory_catalog_url(lake_url: str) -> str:
    """SQLAlchemy URL of the in-process SQLite catalog of a ``memory://`` lake (one per lake URL)."""
    key = lake_url.split("://", 1)[1].strip("/")
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"sqlite:///file:lakepipe-memory-{digest}?mode=memory&uri=true"


def catalog_url_for_lake(lake_url: str | os.PathLike[str], catalog_url: str | None = None) -> str:
    """The SQLAlchemy URL of the catalog of the lake at ``lake_url``.

    Order: ``catalog_url``, then ``$LAKEPIPE_CATALOG``, then ``<lake>/catalog.sqlite`` for a local
    lake (plain path or ``file://``), an in-process SQLite database for a ``memory://`` lake.
    Remote lakes (``s3://`` and others) need an explicit catalog URL, normally PostgreSQL.
    """
    explicit = catalog_url or os.environ.get(CATALOG_ENV, "").strip() or None
    if explicit:
        return normalize_catalog_url(explicit)
    text = os.fspath(lake_url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("", "file", "local"):
        path = Path(unquote(urlsplit(text).path) if scheme else text).expanduser().resolve()
        return f"sqlite:///{path / SQLITE_NAME}"
    if scheme == "memory":
        return memory_catalog_url(text)
    raise InputError(
        f"a {scheme}:// lake needs a shared catalog database: pass --catalog URL or set "
        f"{CATALOG_ENV} (for example postgresql+psycopg://user@host/lakepipe)",
        redact_url(text),
    )
