"""The lake outputs that plots and reports show, found through the catalog.

Selections reuse :func:`lakepipe.collect.select_rows` (published outputs only, one
parameter set): a group FC matrix by connectome and atlas, one seed's output by participant /
session / label (or seed key), a run's derivative store by its URI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe.collect import select_rows
from lakepipe.errors import InputError
from lakepipe.io.stores import open_derivative
from lakepipe.lake import Lake
from lakepipe.registry import get_method


@dataclass
class SeedSelection:
    """One seed's output: its derivative store, its row there and its catalog row."""

    dataset: xr.Dataset
    index: int
    row: pd.Series

    @property
    def key(self) -> str:
        return str(self.dataset["seed"].values[self.index])

    @property
    def statistic(self) -> str:
        return str(self.row["statistic"])


def open_store(lake: Lake, uri: str) -> xr.Dataset:
    return open_derivative(lake.store_url(uri))


def fc_dataset(
    lake: Lake, connectome: str | None = None, atlas: str | None = None
) -> tuple[xr.Dataset, pd.Series]:
    """The group FC derivative of ``connectome`` x ``atlas`` (loaded) and its catalog row."""
    rows = select_rows(lake, "parcellate", atlas=atlas, connectome=connectome, statistic="fcgroupz")
    if rows["store_uri"].nunique() > 1:
        options = sorted(
            {f"--connectome {c} --atlas {a}" for c, a in zip(rows["connectome"], rows["atlas"], strict=True)}
        )
        raise InputError(f"{rows['store_uri'].nunique()} group FC matrices match; choose one: {options}")
    row = rows.iloc[0]
    return open_store(lake, row["store_uri"]).load(), row


def select_seed(
    lake: Lake,
    method: str,
    *,
    participant: str | None = None,
    session: str | None = None,
    label: str | None = None,
    seed: str | None = None,
    statistic: str | None = None,
    atlas: str | None = None,
    cohort: str | None = None,
    connectome: str | None = None,
    params: dict | None = None,
) -> SeedSelection:
    """Exactly one seed's output of ``method`` (``afnm`` or ``fnm``); an error lists the candidates."""
    rows = select_rows(
        lake,
        method,
        atlas=atlas,
        label=label,
        statistic=statistic,
        session=session,
        participants=[participant] if participant else None,
        cohort=cohort,
        connectome=connectome,
        params=params,
    )
    if seed is not None:
        keys = [_seed_key(r) for _, r in rows.iterrows()]
        rows = rows[[k == seed or seed in k for k in keys]]
        if rows.empty:
            raise InputError(f"no {method} output of seed {seed!r}")
    if len(rows) > 1:
        seeds = [_seed_key(r) for _, r in rows.iterrows()]
        raise InputError(
            f"{len(rows)} {method} outputs match; narrow with --participant/--session/--label: "
            f"{seeds[:8]}{' ...' if len(seeds) > 8 else ''}"
        )
    row = rows.iloc[0]
    return SeedSelection(open_store(lake, row["store_uri"]), int(row["store_index"]), row)


def _seed_key(row: pd.Series) -> str:
    parts = []
    for ent, col in (("sub", "participant"), ("ses", "session"), ("label", "label")):
        v = row.get(col)
        if isinstance(v, str) and v:
            parts.append(f"{ent}-{v}")
    return "_".join(parts)


def voxel_ijk(lake: Lake, da: xr.DataArray) -> np.ndarray | None:
    """Voxel indices of a voxel-level collection (from its ``ijk`` coordinate or its source store)."""
    if "voxel" not in da.dims:
        return None
    if "ijk" in da.coords:
        return np.asarray(da["ijk"].values)
    sources = da.attrs.get("sources") or []
    if not sources:
        raise InputError("voxel collection without voxel coordinates or source stores")
    return np.asarray(open_store(lake, sources[0])["ijk"].values)


def default_statistic(method: str, statistic: str | None) -> str:
    return get_method(method).statistic(statistic).name
