"""Where the lake lives: fsspec URLs (local folder, ``s3://``, ``memory://``) and Zarr stores on them.

Every store lakepipe opens goes through :func:`zarr_store`, and every URL is resolved with
:func:`lake_url`, so one code path serves a local folder, object storage and tests in memory.

S3 settings come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``) plus an endpoint URL for non-AWS servers (MinIO, Ceph, a loopback test
server): ``LAKEPIPE_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL``, or ``--s3-endpoint`` on the command line.
Credentials are never written into the lake or the catalog.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import fsspec
import numpy as np

from lakepipe.errors import InputError

if TYPE_CHECKING:  # zarr is imported on first use: catalog commands start without it
    import zarr
    from zarr.storage import FsspecStore, LocalStore

DEFAULT_LAKE = "./lake"
#: the modes :func:`zarr.open_group` accepts
GroupMode = Literal["r", "r+", "a", "w", "w-"]
_REMOTE = ("s3", "gs", "gcs", "az", "abfs", "http", "https")


def lake_url(url: str | os.PathLike | None = None) -> str:
    """Normalise a lake location: ``None`` -> ``$LAKEPIPE_LAKE`` or ``./lake``; paths -> absolute."""
    url = str(url or os.environ.get("LAKEPIPE_LAKE") or DEFAULT_LAKE)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return str(Path(url).expanduser().resolve())
    return url.rstrip("/")


def protocol(url: str) -> str:
    """``file`` for local paths, else the URL scheme."""
    return url.split("://", 1)[0] if "://" in url else "file"


def is_local(url: str) -> bool:
    return protocol(url) == "file"


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL or local path (always ``/``-separated below the root)."""
    if is_local(url):
        return str(Path(url, *parts))
    return posixpath.join(url, *parts)


def storage_options(url: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: the S3 endpoint from the argument or the environment."""
    if protocol(url) != "s3":
        return {}
    endpoint = endpoint_url or os.environ.get("LAKEPIPE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    opts: dict[str, Any] = {}
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
        opts["endpoint_url"] = endpoint
    return opts


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the path inside it for ``url``."""
    opts = storage_options(url)
    opts.pop("endpoint_url", None)
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def group_attrs(url: str) -> dict[str, Any]:
    """The attributes of the Zarr v3 group at ``url``, read from its ``zarr.json`` alone (without
    importing zarr: for answers that need one attribute, such as a content hash)."""
    import json

    fs, path = filesystem(join(url, "zarr.json"))
    try:
        meta = json.loads(fs.cat_file(path))
    except FileNotFoundError as exc:
        raise InputError("no such store", url) from exc
    attrs: dict[str, Any] = meta.get("attributes", {})
    return attrs


def remove(url: str) -> None:
    """Delete a store or file; missing is fine."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def listdir(url: str) -> list[str]:
    """Names directly below ``url`` (empty when it does not exist)."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def _zarr() -> Any:
    """zarr, imported on first use (with its string data type warning silenced)."""
    import zarr

    # lakepipe stores text coordinates (region names, subject ids) as Zarr v3 strings; the data type
    # is not yet frozen in the spec, which zarr-python announces on every write
    warnings.filterwarnings("ignore", category=zarr.errors.UnstableSpecificationWarning)
    return zarr


def zarr_store(
    url: str, *, read_only: bool = False, endpoint_url: str | None = None
) -> LocalStore | FsspecStore:
    """A Zarr v3 store for ``url``: :class:`LocalStore` for paths, :class:`FsspecStore` otherwise."""
    _zarr()
    from zarr.storage import FsspecStore, LocalStore

    if is_local(url):
        if read_only and not Path(url).exists():
            raise InputError("no such store", url)
        return LocalStore(url, read_only=read_only)
    opts = storage_options(url, endpoint_url)
    opts.pop("endpoint_url", None)
    return FsspecStore.from_url(url, storage_options=opts or None, read_only=read_only)


def open_group(url: str, mode: GroupMode = "r") -> zarr.Group:
    """Open a Zarr group; a missing group in read mode is an :class:`InputError`."""
    try:
        group: zarr.Group = _zarr().open_group(
            zarr_store(url, read_only=mode == "r"), mode=mode, zarr_format=3
        )
        return group
    except FileNotFoundError as exc:
        raise InputError("no such Zarr store in the lake", url) from exc


def get_array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array ``name`` of ``group`` (``KeyError`` when missing, ``TypeError`` when it is a group)."""
    node = group[name]
    if not isinstance(node, _zarr().Array):
        raise TypeError(f"'{name}' in Zarr group '{group.path or '/'}' is a group, not an array")
    return node


def get_group(group: zarr.Group, name: str) -> zarr.Group:
    """The group ``name`` of ``group`` (``KeyError`` when missing, ``TypeError`` when it is an array)."""
    node = group[name]
    if not isinstance(node, _zarr().Group):
        raise TypeError(f"'{name}' in Zarr group '{group.path or '/'}' is an array, not a group")
    return node


def read_array(group: zarr.Group, name: str) -> np.ndarray:
    """All of the array ``name`` of ``group`` (``[:]``) as a numpy array."""
    return np.asarray(get_array(group, name)[:])


def public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, safe to log or store."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


@dataclass(frozen=True)
class StoreRef:
    """A picklable pointer to a Zarr group, carrying the S3 endpoint to Dask workers.

    Workers of a remote cluster may not share the client's environment, so tasks receive the
    endpoint explicitly; credentials still come from each worker's own environment.
    """

    url: str
    endpoint_url: str | None = None

    @classmethod
    def here(cls, url: str) -> StoreRef:
        return cls(url, storage_options(url).get("endpoint_url"))

    def group(self, mode: GroupMode = "r") -> zarr.Group:
        store = zarr_store(self.url, read_only=mode == "r", endpoint_url=self.endpoint_url)
        group: zarr.Group = _zarr().open_group(store, mode=mode, zarr_format=3)
        return group
