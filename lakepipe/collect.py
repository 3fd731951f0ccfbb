"""``collect``: the outputs answering one group question as one xarray object or one group file.

Rows come from the catalog (published outputs only, deterministic order); data come lazily from
the derivative stores they point to and are concatenated along ``seed`` with participant, session
and label coordinates and the provenance in ``attrs``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import lakepipe
from lakepipe.bids import bids_name
from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import derivatives
from lakepipe.io.storage import join
from lakepipe.lake import Lake

log = logging.getLogger(__name__)

DEFAULT_STATISTIC = {"afnm": "afnmap", "fnm": "zmap", "parcellate": "fcgroupz"}
METHODS = tuple(DEFAULT_STATISTIC)


def select_rows(
    lake: Lake,
    method: str,
    *,
    atlas: str | None = None,
    label=None,
    statistic: str | None = None,
    session=None,
    participants=None,
    cohort: str | None = None,
    connectome: str | None = None,
    params: dict | None = None,
) -> pd.DataFrame:
    """Catalog rows of one collection, checked to be one consistent set (one parameter set)."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    statistic = statistic or DEFAULT_STATISTIC[method]
    rows = lake.catalog.query(
        kind="derivative",
        method=method,
        atlas=atlas,
        label=label,
        statistic=statistic,
        session=session,
        participant=participants or None,
        cohort=cohort,
        connectome=connectome,
    )
    if method == "fnm" and atlas is None:
        rows = rows[rows["atlas"].isna()]  # voxel maps; parcel summaries carry their atlas
    for key, value in (params or {}).items():
        rows = rows[[str(p.get(key)) == str(value) for p in rows["params"]]]
    if rows.empty:
        raise NotFoundError(
            f"no {method} outputs match (statistic={statistic}, atlas={atlas}, label={label}, "
            f"session={session}, participants={participants}); see `lakepipe catalog ls`"
        )
    if rows["params_hash"].nunique() > 1 or rows["atlas"].nunique(dropna=False) > 1:
        differing = _differing_params(rows)
        raise InputError(
            f"the matching outputs were made with {rows['params_hash'].nunique()} parameter sets "
            f"(they differ in {differing}); narrow the query, e.g. --param {differing[0]}=VALUE or --atlas"
        )
    dup = rows.duplicated(["participant", "session", "label", "cohort"], keep="last")
    if dup.any():  # same seed computed on different inputs (e.g. connectome grew): newest wins
        log.warning(
            "collect: %d older output(s) of the same seeds are superseded by newer ones", int(dup.sum())
        )
        rows = rows[~dup]
    return rows.reset_index(drop=True)


def _differing_params(rows: pd.DataFrame) -> list[str]:
    keys = sorted({k for p in rows["params"] for k in p})
    diff = [k for k in keys if len({str(p.get(k)) for p in rows["params"]}) > 1]
    if rows["atlas"].nunique(dropna=False) > 1:
        diff.append("atlas")
    return diff or ["params"]


def collect(
    lake: Lake,
    method: str,
    *,
    atlas: str | None = None,
    label=None,
    statistic: str | None = None,
    session=None,
    participants=None,
    cohort: str | None = None,
    connectome: str | None = None,
    params: dict | None = None,
) -> xr.DataArray:
    """One :class:`xarray.DataArray` (dims ``seed`` x ``region`` or ``voxel``; lazy for voxel maps)."""
    rows = select_rows(
        lake,
        method,
        atlas=atlas,
        label=label,
        statistic=statistic,
        session=session,
        participants=participants,
        cohort=cohort,
        connectome=connectome,
        params=params,
    )
    stat = rows["statistic"].iloc[0]
    var = stat if method != "fnm" or atlas is None else f"parcel_{stat}"
    if method == "afnm":
        var = "score"
    pieces = []
    for uri, grp in rows.groupby("store_uri", sort=False):
        ds = derivatives.open_derivative(join(lake.url, uri))
        if var not in ds:
            raise InputError(f"store {uri} has no variable {var}")
        idx = grp["store_index"].astype(int).to_numpy()
        da = ds[var].isel(seed=idx)
        pieces.append((grp.index.to_numpy(), da, ds.attrs))
    first = pieces[0][1]
    for _, da, _ in pieces[1:]:
        other_dim = [d for d in da.dims if d != "seed"][0]
        if not np.array_equal(first[other_dim].values, da[other_dim].values):
            raise InputError(f"outputs disagree on their {other_dim} axis (different atlases or masks)")
    order = np.argsort(np.concatenate([p[0] for p in pieces]), kind="stable")
    combined = xr.concat(
        [p[1] for p in pieces], dim="seed", coords="minimal", compat="override", join="override"
    ).isel(seed=order)
    combined = combined.assign_coords(
        participant=("seed", rows["participant"].fillna("").to_numpy(object)),
        session=("seed", rows["session"].fillna("").to_numpy(object)),
        label=("seed", rows["label"].fillna("").to_numpy(object)),
        cohort=("seed", rows["cohort"].fillna("").to_numpy(object)),
        catalog_id=("seed", rows["id"].to_numpy()),
    )
    combined.name = stat
    attrs0 = pieces[0][2]
    combined.attrs = {
        "method": method,
        "statistic": stat,
        "atlas": atlas if method == "fnm" else (atlas or attrs0.get("atlas")),  # fnm voxel maps: no atlas
        "n_outputs": len(rows),
        "parameters": rows["params"].iloc[0],
        "sources": sorted(rows["store_uri"].unique()),
        "connectome": rows["connectome"].dropna().unique().tolist(),
        "lakepipe_version": lakepipe.__version__,
        "query": {"label": label, "session": session, "participants": participants, "cohort": cohort},
    }
    if "grid" in attrs0:
        combined.attrs["grid"] = attrs0["grid"]
        combined.attrs["space"] = attrs0.get("space")
    if "voxel" in combined.dims:  # voxel positions on the grid, as 1-D coordinates a DataArray can carry
        ijk = derivatives.open_derivative(join(lake.url, rows["store_uri"].iloc[0]))["ijk"].values.astype(
            np.int32
        )
        combined = combined.drop_vars("ijk", errors="ignore").assign_coords(
            i=("voxel", ijk[:, 0]), j=("voxel", ijk[:, 1]), k=("voxel", ijk[:, 2])
        )
    return combined


def group_entities(da: xr.DataArray) -> dict:
    q = da.attrs.get("query", {})
    label = q.get("label")
    if isinstance(label, list | tuple):
        label = label[0] if len(label) == 1 else None
    return {
        "label": label,
        "method": da.attrs["method"],
        "atlas": da.attrs.get("atlas"),
        "desc": da.attrs["statistic"],
    }


def write_group(da: xr.DataArray, out_dir: str | Path) -> list[Path]:
    """``group_<entities>_parcelstats.tsv`` (+ JSON): participant, session, label, one column per region.

    Voxel collections are written as a 4D NIfTI (one volume per row) plus the same TSV of rows.
    """
    out = Path(out_dir)
    derivatives.dataset_description(out)
    ent = group_entities(da)
    rows = pd.DataFrame(
        {
            "participant_id": [f"sub-{p}" if p else "n/a" for p in da["participant"].values],
            "session_id": [f"ses-{s}" if s else "n/a" for s in da["session"].values],
            "label": da["label"].values,
        }
    )
    meta = {
        "Method": da.attrs["method"],
        "Statistic": da.attrs["statistic"],
        "Atlas": da.attrs.get("atlas"),
        "NumberOfRows": int(da.sizes["seed"]),
        "Sources": da.attrs["sources"],
        "Parameters": da.attrs["parameters"],
        "Connectome": da.attrs.get("connectome"),
        "Query": da.attrs.get("query"),
        "LakepipeVersion": lakepipe.__version__,
    }
    if "region" in da.dims:
        values = pd.DataFrame(np.asarray(da.values), columns=[str(n) for n in da["region_name"].values])
        path = out / ("group_" + bids_name(ent, "parcelstats", ".tsv"))
        meta["Regions"] = {
            "index": da["region"].values.tolist(),
            "network": da["region_network"].values.astype(str).tolist(),
        }
        return [derivatives.write_tsv(path, pd.concat([rows, values], axis=1), meta)]
    from lakepipe.io.nifti import write_nifti

    grid = da.attrs["grid"]
    vol = np.full((*grid["shape"], da.sizes["seed"]), np.nan, np.float32)
    if not {"i", "j", "k"} <= set(da.coords):
        raise InputError("voxel collection has no voxel coordinates (i, j, k) to write NIfTI")
    vol[da["i"].values, da["j"].values, da["k"].values, :] = np.asarray(da.values).T
    nii = out / ("group_" + bids_name(ent, "statmap", ".nii.gz"))
    write_nifti(vol, np.asarray(grid["affine"]), nii, da.attrs.get("space"))
    tsv = out / ("group_" + bids_name(ent, "rows", ".tsv"))
    return [nii, derivatives.write_tsv(tsv, rows, {**meta, "Volumes": "one per row, in this order"})]
