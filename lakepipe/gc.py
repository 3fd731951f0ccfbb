"""Garbage collection: remove data in the lake that no catalog row registers.

Data are written before they are registered, so a killed run leaves unregistered stores (or lesion
entries) behind; they are invisible and safe to delete. Stores younger than a grace period are
kept, since a running job may be about to register them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from lakepipe.io import layout
from lakepipe.io.storage import filesystem, remove
from lakepipe.lake import Lake

log = logging.getLogger(__name__)


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)
    kept_young: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        verb = "would remove" if dry_run else "removed"
        return f"gc: {verb} {len(self.removed)} unregistered item(s)" + (
            f"; kept {len(self.kept_young)} newer than the grace period" if self.kept_young else ""
        )


def _age_s(url: str) -> float:
    fs, path = filesystem(url)
    try:
        info = fs.info(path.rstrip("/") + "/zarr.json")
    except (FileNotFoundError, OSError):
        return float("inf")
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if stamp is None:
        return float("inf")
    if isinstance(stamp, dt.datetime):
        return (dt.datetime.now(dt.UTC) - stamp.astimezone(dt.UTC)).total_seconds()
    return dt.datetime.now().timestamp() - float(stamp)


def unregistered(lake: Lake) -> list[str]:
    """URLs of derivative stores and lesion entries that no published catalog row references."""
    uris = lake.catalog.store_uris()
    found = [item.url for item in layout.derivative_stores(lake.url) if item.uri not in uris]
    lesions = lake.catalog.query(kind="lesion")
    keys = {(r.store_uri, r.store_index) for r in lesions.itertuples()}
    found += [item.url for item in layout.lesion_entries(lake.url) if (item.uri, item.entry) not in keys]
    return found


def collect_garbage(lake: Lake, *, dry_run: bool = False, grace_s: float = 3600.0) -> GcResult:
    result = GcResult()
    for url in unregistered(lake):
        if _age_s(url) < grace_s:
            result.kept_young.append(url)
            continue
        result.removed.append(url)
        if not dry_run:
            remove(url)
            log.info("gc: removed %s", url)
    return result
