"""The lake's Zarr stores: layout, writers and lazy readers.

Layout below the lake root (see README "Store layout")::

    lesions/<cohort>.zarr/<entry>/{voxels,values}   sparse masks on their own grids
    lesions/<cohort>.zarr/_index-<id>/...           the same masks packed (a read cache)
    connectomes/<name>.zarr                          timeseries (subject, time, voxel|region)
    atlases/<name>.zarr                              dseg (i, j, k) + region table
    derivatives/<method>/<run>.zarr                  outputs of parcellate / afnm / fnm
    catalog.sqlite                                   the system of record (local lakes)

Connectome series are stored centred and scaled to unit norm per voxel (correlation becomes a dot
product), with the per-voxel ``scale`` (norm) and ``mean`` so the raw series stay exactly
recoverable: ``raw = timeseries * scale + mean``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from lakepipe.errors import InputError, NotFoundError
from lakepipe.io.derivatives import strings_as_objects
from lakepipe.io.nifti import Mask
from lakepipe.io.sources import VoxelGeometry
from lakepipe.io.storage import exists, join, open_group, remove, zarr_store
from lakepipe.space import Grid

log = logging.getLogger(__name__)

STORAGE_CONVENTION = "centred-unit-norm"
CHUNK_BYTES = 8 * 2**20


def lesion_store_url(lake: str, cohort: str) -> str:
    return join(lake, "lesions", f"{cohort}.zarr")


def connectome_url(lake: str, name: str) -> str:
    return join(lake, "connectomes", f"{name}.zarr")


def atlas_url(lake: str, name: str) -> str:
    return join(lake, "atlases", f"{name}.zarr")


def relative(lake: str, url: str) -> str:
    """Store URI relative to the lake root (what the catalog records)."""
    return url[len(lake) :].lstrip("/\\") if url.startswith(lake) else url


def _grid_attrs(grid: Grid) -> dict:
    return {"shape": list(grid.shape), "affine": np.asarray(grid.affine, float).tolist()}


def grid_from_attrs(attrs: dict) -> Grid:
    return Grid(tuple(int(s) for s in attrs["shape"]), np.asarray(attrs["affine"], float))


# ----------------------------------------------------------------------------------------------- lesions


def write_lesion(lake: str, cohort: str, key: str, mask: Mask, meta: dict) -> None:
    """Write one sparse mask entry (overwriting an unregistered leftover of the same key)."""
    root = open_group(lesion_store_url(lake, cohort), mode="a")
    grp = root.create_group(key, overwrite=True)
    n = max(mask.n_voxels, 1)
    grp.create_array("voxels", shape=(mask.n_voxels,), chunks=(n,), dtype="int64")[:] = mask.indices
    if mask.values is not None:
        grp.create_array("values", shape=(mask.n_voxels,), chunks=(n,), dtype="float32")[:] = mask.values
    grp.attrs.update(
        {
            **meta,
            "space": mask.space,
            "grid": _grid_attrs(mask.grid),
            "n_voxels": mask.n_voxels,
            "weighted": mask.weighted,
        }
    )


def read_lesion(lake: str, cohort: str, key: str) -> tuple[Mask, dict]:
    """One mask and its attributes."""
    grp = open_group(join(lesion_store_url(lake, cohort), key))
    attrs = dict(grp.attrs)
    values = grp["values"][:] if "values" in grp else None
    mask = Mask(grp["voxels"][:], values, grid_from_attrs(attrs["grid"]), attrs.get("space"))
    return mask, attrs


#: Name prefix of a cohort's packed index node (entry keys start with ``sub-``)
LESION_INDEX_PREFIX = "_index-"
_INDEX_CHUNK = 2**20


class LesionIndex:
    """A cohort's masks packed into a few arrays: every mask of a 500-lesion cohort in a handful of
    reads instead of four small Zarr reads per entry.

    A cache of the entries, not a record: each packed mask carries the content hash it was packed
    with, and readers use it only where that hash is the one the catalog registered.
    """

    def __init__(self, group: zarr.Group):
        self.group = group
        self.keys = [str(k) for k in group["key"][:]]
        self.position = {k: i for i, k in enumerate(self.keys)}
        self.sha256 = [str(h) for h in group["sha256"][:]]
        self.space = [str(v) or None for v in group["space"][:]]
        self.grid_of = group["grid"][:]
        self.weighted = group["weighted"][:]
        self.start = group["start"][:]
        self.grids = [grid_from_attrs(g) for g in group.attrs["grids"]]

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
        if want * 4 >= total or (hi - lo) <= 4 * want:  # one read: the whole cohort, or a dense span
            if want * 4 >= total:
                lo, hi = 0, total
            voxels = self.group["voxels"][lo:hi].astype(np.int64)
            values = self.group["values"][lo:hi] if want_values else None
            spans = [(int(x) - lo, int(y) - lo) for x, y in zip(a, b, strict=True)]
        else:  # a few entries: one slice each
            voxels, values, spans, offset = [], [], [], 0
            for x, y in zip(a, b, strict=True):
                voxels.append(self.group["voxels"][int(x) : int(y)].astype(np.int64))
                if want_values:
                    values.append(self.group["values"][int(x) : int(y)])
                spans.append((offset, offset + int(y - x)))
                offset += int(y - x)
            voxels = np.concatenate(voxels) if voxels else np.empty(0, np.int64)
            values = np.concatenate(values) if want_values else None
        out = []
        for i, (x, y) in zip(pos, spans, strict=True):
            vals = values[x:y] if self.weighted[i] else None
            out.append(Mask(voxels[x:y], vals, self.grids[int(self.grid_of[i])], self.space[i]))
        return out


def read_lesion_index(lake: str, cohort: str) -> LesionIndex | None:
    """The cohort's packed index, or None (none written yet, or unreadable: callers read entries)."""
    try:
        root = open_group(lesion_store_url(lake, cohort))
        name = root.attrs.get("index")
        return LesionIndex(root[name]) if name else None
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
        if keep
        else []
    )
    entries += [(k, m, h) for k, (m, h) in masks.items()]
    entries.sort(key=lambda e: e[0])
    grids: dict[str, int] = {}
    grid_attrs = []
    for _, m, _ in entries:
        if m.grid.key() not in grids:
            grids[m.grid.key()] = len(grids)
            grid_attrs.append(_grid_attrs(m.grid))
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
    root = open_group(lesion_store_url(lake, cohort), mode="a")
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
    g.attrs.update({"grids": grid_attrs, "n_entries": len(entries)})
    root.attrs["index"] = name  # the switch: readers see the old index or the new one, both valid
    for member in list(root.group_keys()):
        if member.startswith(LESION_INDEX_PREFIX) and member != name:
            try:
                remove(join(lesion_store_url(lake, cohort), member))
            except Exception as exc:  # noqa: BLE001 - a reader may hold it; gc can take it later
                log.debug("old lesion index %s not removed: %s", member, exc)
    return name


def merge_participants(lake: str, cohort: str, rows: list[dict]) -> None:
    """Merge participants.tsv rows (by ``participant_id``) into the cohort store's attributes."""
    root = open_group(lesion_store_url(lake, cohort), mode="a")
    known = {r["participant_id"]: r for r in root.attrs.get("participants", [])}
    known.update({r["participant_id"]: r for r in rows})
    root.attrs["participants"] = [known[k] for k in sorted(known)]


def read_participants(lake: str, cohort: str) -> pd.DataFrame:
    """The cohort's participants table (clinical columns as numbers where they parse)."""
    url = lesion_store_url(lake, cohort)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(f"no lesion cohort named '{cohort}' in the lake")
    table = pd.DataFrame(open_group(url).attrs.get("participants", []))
    for col in table.columns:
        if col != "participant_id":
            converted = pd.to_numeric(table[col].replace({"n/a": None, "": None}), errors="coerce")
            if converted.notna().sum() == (table[col].replace({"n/a": "", None: ""}) != "").sum():
                table[col] = converted
    return table


# -------------------------------------------------------------------------------------------- connectomes


def voxel_block(n_time: int, n_features: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Feature-axis chunk length so that one (time x block) float32 chunk is about ``chunk_bytes``."""
    return int(max(1, min(n_features, chunk_bytes // (4 * max(n_time, 1)))))


class ConnectomeWriter:
    """Streams subjects into ``connectomes/<name>.zarr``, one subject at a time.

    Subjects written but not yet committed are invisible to readers: :meth:`commit` records the
    new subject count last, so a killed ingest leaves the store as it was, and a re-run overwrites
    the leftovers.
    """

    def __init__(
        self,
        lake: str,
        name: str,
        *,
        kind: str,
        n_time: int,
        geometry: VoxelGeometry | None = None,
        regions: pd.DataFrame | None = None,
        space: str = "MNI152NLin6Asym",
        source: str = "",
    ):
        self.url = connectome_url(lake, name)
        feature = "voxel" if kind == "voxel" else "region"
        n_feat = geometry.n_voxels if kind == "voxel" else len(regions)
        if exists(join(self.url, "zarr.json")):
            self.group = open_group(self.url, mode="a")
            a = self.group.attrs
            if a.get("kind") != kind or a.get("n_time") != n_time or a.get("n_features") != n_feat:
                raise InputError(
                    f"connectome '{name}' exists with kind={a.get('kind')}, time={a.get('n_time')}, "
                    f"features={a.get('n_features')}; the source has kind={kind}, time={n_time}, "
                    f"features={n_feat}: ingest it under another --name"
                )
            if kind == "voxel" and not np.array_equal(self.group["ijk"][:], geometry.ijk):
                raise InputError(f"connectome '{name}' exists with a different brain mask")
        else:
            self.group = self._create(kind, feature, n_time, n_feat, geometry, regions, space, source)
        self.n_committed = int(self.group.attrs.get("n_subjects", 0))
        self.pending: list[str] = []

    def _create(self, kind, feature, n_time, n_feat, geometry, regions, space, source) -> zarr.Group:
        g = open_group(self.url, mode="w")
        block = voxel_block(n_time, n_feat)
        g.create_array(
            "timeseries",
            shape=(0, n_time, n_feat),
            chunks=(1, n_time, block),
            dtype="float32",
            compressors=None,
            dimension_names=["subject", "time", feature],
        )
        for var in ("scale", "mean"):
            g.create_array(
                var,
                shape=(0, n_feat),
                chunks=(1, n_feat),
                dtype="float32",
                dimension_names=["subject", feature],
            )
        g.create_array("subject", shape=(0,), chunks=(1024,), dtype=str, dimension_names=["subject"])
        if kind == "voxel":
            g.create_array("ijk", shape=geometry.ijk.shape, dtype="int32", dimension_names=[feature, "axis"])[
                :
            ] = geometry.ijk
            g.create_array("voxel", shape=(n_feat,), dtype="int32", dimension_names=[feature])[:] = np.arange(
                n_feat, dtype=np.int32
            )
            grid_attrs = _grid_attrs(geometry.grid)
        else:
            g.create_array("region", shape=(n_feat,), dtype="int32", dimension_names=[feature])[:] = regions[
                "index"
            ].to_numpy(np.int32)
            for col in ("name", "network", "hemisphere"):
                vals = regions[col].fillna("").astype(str).to_numpy()
                g.create_array(f"region_{col}", shape=(n_feat,), dtype=str, dimension_names=[feature])[:] = (
                    vals
                )
            grid_attrs = None
        g.attrs.update(
            {
                "kind": kind,
                "n_time": n_time,
                "n_features": n_feat,
                "n_subjects": 0,
                "space": space,
                "grid": grid_attrs,
                "storage": STORAGE_CONVENTION,
                "source": source,
                "lakepipe_store": "connectome",
            }
        )
        return g

    def subject_ids(self) -> list[str]:
        """Committed subject ids."""
        return [str(s) for s in self.group["subject"][: self.n_committed]]

    def write(self, subject_id: str, unit: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> None:
        """Write one subject's (time, feature) unit-norm series after the committed ones."""
        i = self.n_committed + len(self.pending)
        for name in ("timeseries", "scale", "mean", "subject"):
            arr = self.group[name]
            if arr.shape[0] < i + 1:
                arr.resize((i + 1, *arr.shape[1:]))
        self.group["timeseries"][i] = unit
        self.group["scale"][i] = scale
        self.group["mean"][i] = mean
        self.group["subject"][i] = subject_id
        self.pending.append(subject_id)

    def commit(self) -> list[str]:
        """Make the pending subjects visible; returns their ids."""
        n = self.n_committed + len(self.pending)
        for name in ("timeseries", "scale", "mean", "subject"):  # drop any leftovers past n
            arr = self.group[name]
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
        self.group.attrs["n_subjects"] = n
        done, self.pending, self.n_committed = self.pending, [], n
        return done


def open_connectome(lake: str, name: str, chunks: dict | str | None = "auto") -> xr.Dataset:
    """The connectome as a lazy :class:`xarray.Dataset` (committed subjects only)."""
    url = connectome_url(lake, name)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(f"no connectome named '{name}' in the lake (see `lakepipe catalog ls`)")
    ds = xr.open_zarr(
        zarr_store(url, read_only=True),
        consolidated=False,
        zarr_format=3,
        chunks={} if chunks == "auto" else chunks,
    )
    n = int(ds.attrs.get("n_subjects", 0))
    return strings_as_objects(ds.isel(subject=slice(0, n)))


# --------------------------------------------------------------------------------------------- atlases


@dataclass(frozen=True)
class Atlas:
    """An atlas read from the lake: label volume, its grid, the region table and the space."""

    name: str
    labels: np.ndarray  #: int32 (i, j, k)
    grid: Grid
    table: pd.DataFrame  #: index, name, network, hemisphere
    space: str | None
    sha256: str

    @property
    def n_regions(self) -> int:
        return len(self.table)

    def dense_index(self) -> np.ndarray:
        """Map from label value to 1..N position in the table (0 = background/unnamed)."""
        lut = np.zeros(int(max(self.table["index"].max(), self.labels.max())) + 1, np.int32)
        lut[self.table["index"].to_numpy()] = np.arange(1, self.n_regions + 1, dtype=np.int32)
        return lut


def write_atlas(
    lake: str, name: str, labels: np.ndarray, grid: Grid, table: pd.DataFrame, space: str | None, meta: dict
) -> str:
    url = atlas_url(lake, name)
    g = open_group(url, mode="w")
    g.create_array(
        "dseg", shape=labels.shape, chunks=(64, 64, 64), dtype="int32", dimension_names=["i", "j", "k"]
    )[:] = labels
    g.create_array("region", shape=(len(table),), dtype="int32", dimension_names=["region"])[:] = table[
        "index"
    ].to_numpy(np.int32)
    for col in ("name", "network", "hemisphere"):
        g.create_array(f"region_{col}", shape=(len(table),), dtype=str, dimension_names=["region"])[:] = (
            table[col].fillna("").astype(str).to_numpy()
        )
    g.attrs.update(
        {
            **meta,
            "space": space,
            "grid": _grid_attrs(grid),
            "n_regions": len(table),
            "lakepipe_store": "atlas",
        }
    )
    return url


def read_atlas(lake: str, name: str) -> Atlas:
    url = atlas_url(lake, name)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(
            f"unknown atlas '{name}': not in the lake (ingest it with `lakepipe ingest atlas`)"
        )
    g = open_group(url)
    table = pd.DataFrame(
        {
            "index": g["region"][:].astype(int),
            **{
                col: [str(v) or None for v in g[f"region_{col}"][:]]
                for col in ("name", "network", "hemisphere")
            },
        }
    )
    table = table.replace({"": None})
    return Atlas(
        name,
        g["dseg"][:],
        grid_from_attrs(g.attrs["grid"]),
        table,
        g.attrs.get("space"),
        g.attrs.get("sha256", ""),
    )


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
