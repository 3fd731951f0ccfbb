"""``collect``: the outputs answering one group question as one xarray object or one group file.

Rows come from the catalog (published outputs only, deterministic order); data come lazily from
the derivative stores they point to and are concatenated along ``seed`` with participant, session
and label coordinates and the provenance in ``attrs``. What a method's statistics are called, and
which store variable holds each, comes from the method registry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe._version import __version__
from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import bidsout
from lakepipe.io.stores import open_derivative
from lakepipe.lake import Lake
from lakepipe.registry import get_method

if TYPE_CHECKING:
    from lakepipe.catalog import OutputRecord
    from lakepipe.methods.base import Method

log = logging.getLogger(__name__)

Values = str | Sequence[str] | None


def select_rows(
    lake: Lake,
    method: str,
    *,
    atlas: str | None = None,
    label: Values = None,
    statistic: str | None = None,
    session: Values = None,
    participants: Values = None,
    cohort: Values = None,
    connectome: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Catalog rows of one collection, checked to be one consistent set (one parameter set).

    ``atlas`` also decides between FNM voxel maps (no atlas) and their parcel summaries. ``params``
    narrows by parameter values (``{"weighting": "binary"}``). When the same seed was computed on
    other inputs (e.g. before its connectome grew), the newest output wins.
    """
    m = get_method(method)
    stat = m.statistic(statistic)
    rows = lake.catalog.query(
        kind="derivative",
        method=method,
        atlas=atlas,
        label=label,
        statistic=stat.name,
        session=session,
        participant=participants or None,
        cohort=cohort,
        connectome=connectome,
    )
    rows = m.select(rows, atlas)
    for key, value in (params or {}).items():
        rows = rows[[str(p.get(key)) == str(value) for p in rows["params"]]]
    if rows.empty:
        query = {
            "statistic": stat.name,
            "atlas": atlas,
            "label": label,
            "session": session,
            "participants": participants,
            "cohort": cohort,
            "connectome": connectome,
        }
        given = ", ".join(f"{k}={v}" for k, v in query.items() if v)
        raise NotFoundError(f"no {method} outputs match ({given}); see `lakepipe catalog ls`")
    if rows["params_hash"].nunique() > 1 or rows["atlas"].nunique(dropna=False) > 1:
        differing = _differing_params(rows)
        raise InputError(
            f"the matching outputs were made with {rows['params_hash'].nunique()} parameter sets "
            f"(they differ in {differing}); narrow the query, e.g. --param {differing[0]}=VALUE or --atlas"
        )
    if m.per_seed:
        dup = rows.duplicated(["participant", "session", "label", "cohort"], keep="last")
        if dup.any():
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
    label: Values = None,
    statistic: str | None = None,
    session: Values = None,
    participants: Values = None,
    cohort: Values = None,
    connectome: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Published outputs of ``method`` matching the query as one :class:`xarray.DataArray`.

    Per-seed methods give dims ``seed`` x ``region`` or ``voxel`` (lazy for voxel maps) with
    participant, session, label, cohort and catalog id coordinates; ``parcellate`` gives the one
    matching matrix (``source_region`` x ``region``).
    """
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
    da = collect_rows(lake, get_method(method), rows)
    da.attrs["query"] = {"label": label, "session": session, "participants": participants, "cohort": cohort}
    return da


def collect_records(
    lake: Lake, method: Method, records: Iterable[OutputRecord], statistic: str | None = None
) -> xr.DataArray:
    """The published outputs of ``records`` (of one method) for one statistic, as :func:`collect` does."""
    stat = method.statistic(statistic).name
    rows = lake.published(r for r in records if r.statistic == stat)
    if rows.empty:
        raise NotFoundError(f"none of the {method.name} outputs asked for is published")
    groups = list(rows.groupby(rows["atlas"].fillna(""), sort=False))
    if len(groups) > 1:  # FNM maps and their parcel summaries: the maps
        rows = rows[rows["atlas"].isna()]
    return collect_rows(lake, method, rows.reset_index(drop=True))


def collect_rows(lake: Lake, method: Method, rows: pd.DataFrame) -> xr.DataArray:
    """One DataArray from catalog rows of one method, statistic and parameter set."""
    stat = str(rows["statistic"].iloc[0])
    atlas = rows["atlas"].dropna().iloc[0] if rows["atlas"].notna().any() else None
    var = method.variable(stat, atlas)
    if not method.per_seed:
        if len(rows) > 1:
            options = sorted(
                f"--connectome {c} --atlas {a}"
                for c, a in zip(rows["connectome"], rows["atlas"], strict=True)
            )
            raise InputError(f"{len(rows)} {method.name} outputs match; choose one: {options}")
        ds = open_derivative(lake.store_url(rows["store_uri"].iloc[0]))
        da = ds[var].load()
        da.name = stat
        da.attrs = {
            "method": method.name,
            "statistic": stat,
            "atlas": atlas,
            "n_outputs": 1,
            "parameters": rows["params"].iloc[0],
            "sources": [rows["store_uri"].iloc[0]],
            "connectome": rows["connectome"].dropna().unique().tolist(),
            "space": ds.attrs.get("space"),
            "lakepipe_version": __version__,
        }
        return da
    pieces = []
    for uri, grp in rows.groupby("store_uri", sort=False):
        ds = open_derivative(lake.store_url(str(uri)))
        if var not in ds:
            raise InputError(f"store {uri} has no variable {var}")
        idx = grp["store_index"].astype(int).to_numpy()
        pieces.append((grp.index.to_numpy(), ds[var].isel(seed=idx), ds.attrs))
    first = pieces[0][1]
    for _, da, _ in pieces[1:]:
        for other_dim in (d for d in da.dims if d != "seed" and d in da.coords):
            if not np.array_equal(first[other_dim].values, da[other_dim].values):
                raise InputError(
                    f"outputs disagree on their {other_dim} axis (different atlases, masks or subjects)"
                )
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
        "method": method.name,
        "statistic": stat,
        "atlas": atlas,
        "n_outputs": len(rows),
        "parameters": rows["params"].iloc[0],
        "sources": sorted(rows["store_uri"].unique()),
        "connectome": rows["connectome"].dropna().unique().tolist(),
        "space": attrs0.get("space"),
        "lakepipe_version": __version__,
    }
    if "grid" in attrs0:
        combined.attrs["grid"] = attrs0["grid"]
    if "voxel" in combined.dims:  # voxel positions on the grid, as 1-D coordinates a DataArray can carry
        ijk = open_derivative(lake.store_url(rows["store_uri"].iloc[0]))["ijk"].values.astype(np.int32)
        combined = combined.drop_vars("ijk", errors="ignore").assign_coords(
            i=("voxel", ijk[:, 0]), j=("voxel", ijk[:, 1]), k=("voxel", ijk[:, 2])
        )
    return combined


def group_entities(da: xr.DataArray) -> dict[str, str | None]:
    """Entities of a collection's group file name (``space``, ``label``, ``method``, ``atlas``, ``desc``)."""
    q = da.attrs.get("query", {})
    label = q.get("label")
    if isinstance(label, list | tuple):
        label = label[0] if len(label) == 1 else None
    if label is None and "label" in da.coords:
        labels = set(map(str, da["label"].values))
        label = labels.pop() if len(labels) == 1 else None
    return {
        "space": da.attrs.get("space"),
        "label": label,
        "method": da.attrs["method"],
        "atlas": da.attrs.get("atlas"),
        "desc": da.attrs["statistic"],
    }


def group_paths(da: xr.DataArray, out_dir: str | Path) -> list[Path]:
    """The files :func:`write_group` writes for ``da``: the table, or the 4D NIfTI and its row table."""
    out = Path(out_dir)
    ent = group_entities(da)
    if "region" in da.dims:
        return [out / ("group_" + bidsout.derivative_path(out, ent, "parcelstats", ".tsv").name)]
    return [
        out / ("group_" + bidsout.derivative_path(out, ent, "statmap", ".nii.gz").name),
        out / ("group_" + bidsout.derivative_path(out, ent, "rows", ".tsv").name),
    ]


def group_is_current(da: xr.DataArray, out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds the group files of exactly the outputs ``da`` collects."""
    import json

    paths = group_paths(da, out_dir)
    try:
        meta = json.loads(bidsout.sidecar_path(paths[-1]).read_text())
    except (OSError, ValueError):
        return False
    return bool(
        meta.get("Sources") == da.attrs["sources"]
        and meta.get("NumberOfRows") == da.sizes["seed"]
        and all(p.exists() for p in paths)
    )


def write_group(da: xr.DataArray, out_dir: str | Path) -> list[Path]:
    """``group_<entities>_parcelstats.tsv`` (+ JSON): participant, session, label, one column per region.

    Voxel collections are written as a 4D NIfTI (one volume per row) plus the same TSV of rows.
    """
    out = Path(out_dir)
    bidsout.dataset_description(out)
    paths = group_paths(da, out)
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
        "Space": da.attrs.get("space"),
        "NumberOfRows": int(da.sizes["seed"]),
        "Sources": da.attrs["sources"],
        "Parameters": da.attrs["parameters"],
        "Connectome": da.attrs.get("connectome"),
        "Query": da.attrs.get("query"),
        "LakepipeVersion": __version__,
    }
    if "region" in da.dims:
        values = pd.DataFrame(np.asarray(da.values), columns=[str(n) for n in da["region_name"].values])
        path = paths[0]
        meta["Regions"] = {
            "index": da["region"].values.tolist(),
            "network": da["region_network"].values.astype(str).tolist(),
        }
        return [bidsout.write_tsv(path, pd.concat([rows, values], axis=1), meta)]
    from lakepipe.io.nifti import write_nifti

    grid = da.attrs["grid"]
    vol = np.full((*grid["shape"], da.sizes["seed"]), np.nan, np.float32)
    if not {"i", "j", "k"} <= set(da.coords):
        raise InputError("voxel collection has no voxel coordinates (i, j, k) to write NIfTI")
    vol[da["i"].values, da["j"].values, da["k"].values, :] = np.asarray(da.values).T
    nii, tsv = paths
    write_nifti(vol, np.asarray(grid["affine"]), nii, da.attrs.get("space"))
    return [nii, bidsout.write_tsv(tsv, rows, {**meta, "Volumes": "one per row, in this order"})]
