"""The lake's layout: the only module that knows where things live below the lake root.

::

    <lake>/
      catalog.sqlite                        the system of record (local lakes; see lakepipe.catalog)
      lesions/<cohort>.zarr/<entry>/        one sparse mask per participant/session/label
      lesions/<cohort>.zarr/_index-<id>/    the cohort's masks packed (a read cache)
      connectomes/<name>.zarr               (subject, time, voxel|region)
      atlases/<name>.zarr                   label volume + region table
      derivatives/<method>/<store>.zarr     outputs of the analysis methods

Every function takes the lake URL (a local folder, ``s3://...`` or ``memory://...``) and returns a URL
of the same kind. The catalog records store locations relative to the lake root
(:func:`relative`), so a lake can move.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lakepipe.io.storage import join, listdir

LESIONS = "lesions"
CONNECTOMES = "connectomes"
ATLASES = "atlases"
DERIVATIVES = "derivatives"
#: name prefix of a cohort's packed index node (entry keys start with ``sub-``)
LESION_INDEX_PREFIX = "_index-"


def lesion_store(lake: str, cohort: str) -> str:
    """``lesions/<cohort>.zarr``."""
    return join(lake, LESIONS, f"{cohort}.zarr")


def lesion_entry(lake: str, cohort: str, key: str) -> str:
    """One mask entry of a cohort's store."""
    return join(lesion_store(lake, cohort), key)


def connectome_store(lake: str, name: str) -> str:
    """``connectomes/<name>.zarr``."""
    return join(lake, CONNECTOMES, f"{name}.zarr")


def atlas_store(lake: str, name: str) -> str:
    """``atlases/<name>.zarr``."""
    return join(lake, ATLASES, f"{name}.zarr")


def derivative_store(lake: str, method: str, name: str) -> str:
    """``derivatives/<method>/<name>.zarr``."""
    return join(lake, DERIVATIVES, method, f"{name}.zarr")


def new_store_name(method: str) -> str:
    """A fresh, unique derivative store name for one run of ``method``."""
    return f"{method}-{uuid.uuid4().hex[:12]}"


def relative(lake: str, url: str) -> str:
    """Store URI relative to the lake root (what the catalog records)."""
    return url[len(lake) :].lstrip("/\\") if url.startswith(lake) else url


def resolve(lake: str, uri: str) -> str:
    """The URL of a lake-relative store URI."""
    return join(lake, uri)


@dataclass(frozen=True)
class StoredItem:
    """Something found in the lake's folders: its URL and its lake-relative URI (plus the entry key
    inside a lesion store)."""

    url: str
    uri: str
    entry: str | None = None


def derivative_stores(lake: str) -> list[StoredItem]:
    """Every derivative store in the lake, registered or not."""
    out = []
    for method in listdir(join(lake, DERIVATIVES)):
        for name in listdir(join(lake, DERIVATIVES, method)):
            if name.endswith(".zarr"):
                uri = f"{DERIVATIVES}/{method}/{name}"
                out.append(StoredItem(resolve(lake, uri), uri))
    return out


def lesion_entries(lake: str) -> list[StoredItem]:
    """Every mask entry of every cohort store (the packed index nodes are the stores' own caches)."""
    out = []
    for store in listdir(join(lake, LESIONS)):
        uri = f"{LESIONS}/{store}"
        for key in listdir(join(lake, LESIONS, store)):
            if key != "zarr.json" and not key.startswith("_"):
                out.append(StoredItem(join(lake, LESIONS, store, key), uri, key))
    return out
