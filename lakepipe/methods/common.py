"""Pieces the analysis methods share: connectome identity, atlas labels on a grid, region tables,
subject groups for tasks."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lakepipe.errors import InputError, NotFoundError

if TYPE_CHECKING:  # the stores (Zarr, xarray) are imported where a computation opens them
    import xarray as xr

    from lakepipe.io.stores import Atlas
    from lakepipe.lake import Lake
    from lakepipe.space import Grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectomeId:
    """What identifies a connectome in the outputs made from it: its name and the content hash of
    its registered subjects (read from the catalog alone)."""

    name: str
    identity: str


@dataclass(frozen=True)
class AtlasId:
    """What identifies an atlas in the outputs made from it, read from the catalog alone."""

    name: str
    sha256: str


def connectome_identity(lake: Lake, name: str) -> ConnectomeId:
    """The name and identity of a registered connectome, from the catalog (no store is opened: a
    plan whose outputs all exist needs nothing more).

    Raises
    ------
    NotFoundError
        No connectome ``name`` is registered.
    """
    return _identity(name, _connectome_rows(lake, name))


def atlas_identity(lake: Lake, name: str) -> AtlasId:
    """The name and content hash of a registered atlas, from the catalog (an ingested atlas) or the
    store's attributes (a derived one, whose catalog rows name the connectome it came from).

    Raises
    ------
    NotFoundError
        No atlas ``name`` is registered.
    """
    rows = lake.catalog.query(kind="atlas", atlas=name)
    if rows.empty:
        raise NotFoundError(
            f"unknown atlas '{name}': not in the lake (ingest it with `lakepipe ingest atlas`)"
        )
    digest = rows.iloc[0]["inputs"].get("atlas")
    if not digest:
        from lakepipe.io import layout
        from lakepipe.io.storage import group_attrs

        digest = group_attrs(layout.atlas_store(lake.url, name)).get("sha256", "")
    return AtlasId(name, str(digest))


def _connectome_rows(lake: Lake, name: str) -> pd.DataFrame:
    rows = lake.catalog.query(kind="connectome", connectome=name)
    if rows.empty:
        raise NotFoundError(f"unknown connectome '{name}': not in the lake (ingest it first)")
    return rows


def _identity(name: str, rows: pd.DataFrame) -> ConnectomeId:
    from lakepipe.catalog import content_hash

    return ConnectomeId(
        name, content_hash(sorted(zip(rows["store_index"], rows["inputs_hash"], strict=True)))
    )


@dataclass(frozen=True)
class ConnectomeInfo:
    """A connectome's registered subjects and the hash identifying exactly that set."""

    name: str
    dataset: xr.Dataset
    subjects: list[str]
    identity: str
    kind: str  #: "voxel" or "region"
    store_subjects: list[str]  #: subject ids in store row order (committed rows)
    groups: list[str] | None = None  #: the participant of each registered subject (rows that are runs)

    @property
    def grid(self) -> Grid | None:
        from lakepipe.io.stores import grid_from_attrs

        g = self.dataset.attrs.get("grid")
        return grid_from_attrs(g) if g else None

    @property
    def space(self) -> str | None:
        return self.dataset.attrs.get("space")

    @functools.cached_property
    def ijk(self) -> np.ndarray:
        """(V, 3) voxel coordinates, read once (a lazy array: each ``.values`` is a Dask computation,
        on the cluster when a client is active)."""
        return self.dataset["ijk"].values

    @property
    def positions(self) -> list[int]:
        """Store row of each registered subject (what worker tasks index the Zarr arrays with)."""
        row = {s: i for i, s in enumerate(self.store_subjects)}
        return [row[s] for s in self.subjects]

    @property
    def units(self) -> list[list[int]]:
        """Store rows grouped by participant, in order: one row each, or a participant's runs when
        runs were kept apart (their maps are averaged per participant, the Lead-DBS convention)."""
        if not self.groups:
            return [[p] for p in self.positions]
        out: dict[str, list[int]] = {}
        for g, p in zip(self.groups, self.positions, strict=True):
            out.setdefault(g, []).append(p)
        return list(out.values())

    @property
    def unit_names(self) -> list[str]:
        """The participant (or subject id) of each unit, in the order of :attr:`units`."""
        if not self.groups:
            return list(self.subjects)
        return list(dict.fromkeys(self.groups))

    @property
    def n_units(self) -> int:
        """Independent subjects (participants) the group statistics run over."""
        return len(self.units)


def connectome_info(lake: Lake, name: str) -> ConnectomeInfo:
    """Open a connectome and identify it by the content hashes of its registered subjects."""
    rows = _connectome_rows(lake, name)
    ds = lake.open_connectome(name)
    registered = set(rows["store_index"])
    stored = [str(s) for s in ds["subject"].values]
    keep = [i for i, s in enumerate(stored) if s in registered]
    if len(keep) != len(stored):
        ds = ds.isel(subject=keep)
    subjects = [stored[i] for i in keep]
    ident = _identity(name, rows).identity
    kind = "voxel" if "voxel" in ds.dims else "region"
    groups = None
    if "group" in ds:  # rows that are runs of a participant carry its id
        all_groups = [str(g) for g in ds["group"].values]
        if any(g != s for g, s in zip(all_groups, subjects, strict=True)):
            groups = all_groups
    return ConnectomeInfo(name, ds, subjects, ident, kind, stored, groups)


def require_same_space(a: str | None, b: str | None, what_a: str, what_b: str) -> None:
    """Refuse to combine data in different template spaces (an affine alone cannot map them)."""
    if a and b and a != b:
        raise InputError(
            f"{what_a} is in space {a} but {what_b} is in space {b}; resampling by affine "
            "alone would silently misplace regions: bring both into one space first"
        )


def atlas_labels_on_grid(atlas: Atlas, grid: Grid) -> np.ndarray:
    """Atlas labels resampled (nearest) to ``grid`` and mapped to dense positions 1..N (flat, C order)."""
    if atlas.grid.same_as(grid):
        vol = atlas.labels
    else:
        from lakepipe.compute.resample import resample_nearest

        vol = resample_nearest(atlas.labels, atlas.grid.affine, grid.shape, grid.affine, fill=0)
    lut = atlas.dense_index()
    vol = np.clip(vol, 0, lut.size - 1)
    return lut[vol].reshape(-1)


def voxel_parcels(con: ConnectomeInfo, atlas: Atlas) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """Each in-mask connectome voxel's region (1..N over the regions that have voxels, 0 = none),
    the table of those N regions, and the names of the regions dropped for having no voxel."""
    grid = con.grid
    assert grid is not None  # a voxel connectome's store records its grid
    flat = atlas_labels_on_grid(atlas, grid)
    vox = np.ravel_multi_index(tuple(con.ijk.T), grid.shape)
    dense = flat[vox]
    counts = np.bincount(dense, minlength=atlas.n_regions + 1)[1:]
    keep = np.flatnonzero(counts > 0)
    dropped = atlas.table["name"].iloc[np.flatnonzero(counts == 0)].tolist()
    remap = np.zeros(atlas.n_regions + 1, np.int32)
    remap[keep + 1] = np.arange(1, keep.size + 1, dtype=np.int32)
    return remap[dense], atlas.table.iloc[keep].reset_index(drop=True), dropped


def region_table(ds: xr.Dataset, dim: str = "region") -> pd.DataFrame:
    """The region table (index, name, network, hemisphere) carried by a store's region coordinates."""

    def col(name: str) -> list:
        return [str(v) or None for v in ds[f"{dim}_{name}"].values]

    return pd.DataFrame(
        {
            "index": ds[dim].values.astype(int),
            "name": [str(v) for v in ds[f"{dim}_name"].values],
            "network": col("network"),
            "hemisphere": col("hemisphere"),
        }
    )


def region_coords(table: pd.DataFrame, dim: str = "region") -> dict:
    """xarray coordinates describing regions: label index, name, network, hemisphere."""
    return {
        dim: (dim, table["index"].to_numpy(np.int32)),
        f"{dim}_name": (dim, table["name"].astype(str).to_numpy(object)),
        f"{dim}_network": (dim, table["network"].fillna("").astype(str).to_numpy(object)),
        f"{dim}_hemisphere": (dim, table["hemisphere"].fillna("").astype(str).to_numpy(object)),
    }


def subject_groups(n_subjects: int, n_tasks: int) -> list[range]:
    """Split subject positions into ``n_tasks`` contiguous groups (large tasks, few transfers)."""
    n_tasks = max(1, min(n_tasks, n_subjects))
    bounds = np.linspace(0, n_subjects, n_tasks + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def tasks_for(n_workers: int, n_subjects: int, per_worker: int = 2) -> int:
    """How many subject groups to make: a couple per worker, never fewer subjects than groups."""
    return max(1, min(n_subjects, n_workers * per_worker))
