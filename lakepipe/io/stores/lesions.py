"""Lesion stores: one sparse mask entry per participant/session/label, a packed read cache per
cohort, and the cohort's participants table (``lesions/<cohort>.zarr``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import zarr

from lakepipe.errors import NotFoundError
from lakepipe.io import layout
from lakepipe.io.nifti import Mask
from lakepipe.io.storage import exists, get_array, get_group, join, open_group, read_array, remove
from lakepipe.io.stores.grids import grid_attrs, grid_from_attrs

log = logging.getLogger(__name__)

LESION_INDEX_PREFIX = layout.LESION_INDEX_PREFIX
_INDEX_CHUNK = 2**20


def write_lesion(lake: str, cohort: str, key: str, mask: Mask, meta: dict) -> None:
    """Write one sparse mask entry (overwriting an unregistered leftover of the same key)."""
    root = open_group(layout.lesion_store(lake, cohort), mode="a")
    grp = root.create_group(key, overwrite=True)
    n = max(mask.n_voxels, 1)
    grp.create_array("voxels", shape=(mask.n_voxels,), chunks=(n,), dtype="int64")[:] = mask.indices
    if mask.values is not None:
        grp.create_array("values", shape=(mask.n_voxels,), chunks=(n,), dtype="float32")[:] = mask.values
    grp.attrs.update(
        {
            **meta,
            "space": mask.space,
            "grid": grid_attrs(mask.grid),
            "n_voxels": mask.n_voxels,
            "weighted": mask.weighted,
        }
    )


def read_lesion(lake: str, cohort: str, key: str) -> tuple[Mask, dict]:
    """One mask and its attributes."""
    grp = open_group(join(layout.lesion_store(lake, cohort), key))
    attrs: dict[str, Any] = dict(grp.attrs)
    values = read_array(grp, "values") if "values" in grp else None
    mask = Mask(read_array(grp, "voxels"), values, grid_from_attrs(attrs["grid"]), attrs.get("space"))
    return mask, attrs


class LesionIndex:
    """A cohort's masks packed into a few arrays: every mask of a 500-lesion cohort in a handful of
    reads instead of four small Zarr reads per entry.

    A cache of the entries, not a record: each packed mask carries the content hash it was packed
    with, and readers use it only where that hash is the one the catalog registered.
    """

    def __init__(self, group: zarr.Group):
        self.group = group
        self.keys = [str(k) for k in read_array(group, "key")]
        self.position = {k: i for i, k in enumerate(self.keys)}
        self.sha256 = [str(h) for h in read_array(group, "sha256")]
        self.space = [str(v) or None for v in read_array(group, "space")]
        self.grid_of = read_array(group, "grid")
        self.weighted = read_array(group, "weighted")
        self.start = read_array(group, "start")
        attrs: dict[str, Any] = dict(group.attrs)
        self.grids = [grid_from_attrs(g) for g in attrs["grids"]]

    def has(self, key: str, sha256: str) -> bool:
        i = self.position.get(key)
        return i is not None and self.sha256[i] == sha256

    def masks(self, keys: list[str]) -> list[Mask]:
        """The masks of ``keys`` (all in the index)."""
        pos = [self.position[k] for k in keys]
        a, b = self.start[pos], self.start[np.asarray(pos) + 1]
        total = int(self.start[-1])
        want_values = bool(self.weighted[pos].any())
        want = int((b - a).sum())
        lo, hi = (int(a.min()), int(b.max())) if len(pos) else (0, 0)
        voxel_array = get_array(self.group, "voxels")
        value_array = get_array(self.group, "values") if want_values else None
        values: np.ndarray | None
        if want * 4 >= total or (hi - lo) <= 4 * want:  # one read: the whole cohort, or a dense span
            if want * 4 >= total:
                lo, hi = 0, total
            voxels = np.asarray(voxel_array[lo:hi]).astype(np.int64)
            values = np.asarray(value_array[lo:hi]) if value_array is not None else None
            spans = [(int(x) - lo, int(y) - lo) for x, y in zip(a, b, strict=True)]
        else:  # a few entries: one slice each
            voxel_parts: list[np.ndarray] = []
            value_parts: list[np.ndarray] = []
            spans, offset = [], 0
            for x, y in zip(a, b, strict=True):
                voxel_parts.append(np.asarray(voxel_array[int(x) : int(y)]).astype(np.int64))
                if value_array is not None:
                    value_parts.append(np.asarray(value_array[int(x) : int(y)]))
                spans.append((offset, offset + int(y - x)))
                offset += int(y - x)
            voxels = np.concatenate(voxel_parts) if voxel_parts else np.empty(0, np.int64)
            values = np.concatenate(value_parts) if want_values else None
        out = []
        for i, (x, y) in zip(pos, spans, strict=True):
            vals = None
            if self.weighted[i]:
                assert values is not None  # a weighted entry among pos: want_values
                vals = values[x:y]
            out.append(Mask(voxels[x:y], vals, self.grids[int(self.grid_of[i])], self.space[i]))
        return out


def read_lesion_index(lake: str, cohort: str) -> LesionIndex | None:
    """The cohort's packed index, or None (none written yet, or unreadable: callers read entries)."""
    try:
        root = open_group(layout.lesion_store(lake, cohort))
        name = root.attrs.get("index")
        return LesionIndex(get_group(root, str(name))) if name else None
    except Exception as exc:  # noqa: BLE001 - a cache: any problem means "read the entries"
        log.debug("lesion index of cohort %s not used: %s", cohort, exc)
        return None


def update_lesion_index(lake: str, cohort: str, masks: dict[str, tuple[Mask, str]]) -> str:
    """Pack ``masks`` (key -> (mask, content hash)) with the entries already in the index into a
    new index node, point the cohort at it, and remove the older nodes. Returns the node's name."""
    import uuid

    old = read_lesion_index(lake, cohort)
    keep = [k for k in (old.keys if old else []) if k not in masks]
    entries = (
        list(zip(keep, old.masks(keep), [old.sha256[old.position[k]] for k in keep], strict=True))
        if keep and old is not None  # keep lists entries of old
        else []
    )
    entries += [(k, m, h) for k, (m, h) in masks.items()]
    entries.sort(key=lambda e: e[0])
    grids: dict[str, int] = {}
    grid_list = []
    for _, m, _ in entries:
        if m.grid.key() not in grids:
            grids[m.grid.key()] = len(grids)
            grid_list.append(grid_attrs(m.grid))
    n = [m.n_voxels for _, m, _ in entries]
    start = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    big = max((int(np.prod(m.grid.shape)) for _, m, _ in entries), default=0)
    vdtype = np.int32 if big < 2**31 else np.int64
    voxels = (
        np.concatenate([m.indices for _, m, _ in entries]).astype(vdtype) if entries else np.empty(0, vdtype)
    )
    values = (
        np.concatenate(
            [m.values if m.weighted else np.ones(m.n_voxels, np.float32) for _, m, _ in entries]
        ).astype(np.float32)
        if entries
        else np.empty(0, np.float32)
    )
    root = open_group(layout.lesion_store(lake, cohort), mode="a")
    name = f"{LESION_INDEX_PREFIX}{uuid.uuid4().hex[:12]}"
    g = root.create_group(name)
    e = max(len(entries), 1)
    for arr_name, data, chunks in (
        ("key", np.array([k for k, _, _ in entries], dtype=str), e),
        ("sha256", np.array([h for _, _, h in entries], dtype=str), e),
        ("space", np.array([m.space or "" for _, m, _ in entries], dtype=str), e),
        ("grid", np.array([grids[m.grid.key()] for _, m, _ in entries], np.int32), e),
        ("weighted", np.array([m.weighted for _, m, _ in entries], bool), e),
        ("start", start, start.size),
        ("voxels", voxels, max(1, min(voxels.size, _INDEX_CHUNK))),
        ("values", values, max(1, min(values.size, _INDEX_CHUNK))),
    ):
        g.create_array(arr_name, shape=data.shape, chunks=(chunks,), dtype=data.dtype)[:] = data
    g.attrs.update({"grids": grid_list, "n_entries": len(entries)})
    root.attrs["index"] = name  # the switch: readers see the old index or the new one, both valid
    for member in list(root.group_keys()):
        if member.startswith(LESION_INDEX_PREFIX) and member != name:
            try:
                remove(join(layout.lesion_store(lake, cohort), member))
            except Exception as exc:  # noqa: BLE001 - a reader may hold it; gc can take it later
                log.debug("old lesion index %s not removed: %s", member, exc)
    return name


def merge_participants(lake: str, cohort: str, rows: list[dict]) -> None:
    """Merge participants.tsv rows (by ``participant_id``) into the cohort store's attributes."""
    root = open_group(layout.lesion_store(lake, cohort), mode="a")
    attrs: dict[str, Any] = dict(root.attrs)
    known = {r["participant_id"]: r for r in attrs.get("participants", [])}
    known.update({r["participant_id"]: r for r in rows})
    root.attrs["participants"] = [known[k] for k in sorted(known)]


def read_participants(lake: str, cohort: str) -> pd.DataFrame:
    """The cohort's participants table (clinical columns as numbers where they parse)."""
    url = layout.lesion_store(lake, cohort)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(f"no lesion cohort named '{cohort}' in the lake")
    table = pd.DataFrame(open_group(url).attrs.get("participants", []))
    for col in table.columns:
        if col != "participant_id":
            converted = pd.to_numeric(table[col].replace({"n/a": None, "": None}), errors="coerce")
            if converted.notna().sum() == (table[col].replace({"n/a": "", None: ""}) != "").sum():
                table[col] = converted
    return table
