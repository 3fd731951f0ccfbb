"""``run afnm``: accelerated functional network mapping, ``scores = M @ C`` for a whole cohort.

The atlas is resampled once per distinct lesion grid; lesion-to-parcel counts are computed in
Dask tasks over chunks of lesions; the weight matrix M (lesions x regions) multiplies the group FC
matrix C in one product. Lesions already mapped with the same inputs and parameters are skipped.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

import lakepipe
from lakepipe.bids import bids_name, subject_dir
from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.cluster import compute, dask_client
from lakepipe.compute.weights import WEIGHTINGS, parcel_counts, parcel_sizes, weight_matrix
from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import derivatives, stores
from lakepipe.io.matrices import align_to_atlas, load_matrix
from lakepipe.lake import Lake
from lakepipe.pipelines.common import atlas_labels_on_grid, region_coords, region_table, require_same_space
from lakepipe.pipelines.seeds import Seed, cohort_seeds, read_masks

log = logging.getLogger(__name__)
METHOD = "afnm"
STATISTIC = "afnmap"
ON_EMPTY = ("warn", "error", "skip")


@dataclass(frozen=True)
class GroupMatrix:
    """The matrix C aligned to the atlas: values, region table, identity hash, description."""

    values: np.ndarray
    table: pd.DataFrame
    identity: str
    description: dict


@dataclass
class AfnmResult:
    scores: xr.Dataset | None
    store: str | None
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"AFNM: {len(self.computed)} lesion(s) mapped, {len(self.skipped)} already in the lake"
            + (f", {len(self.empty)} touching no parcel" if self.empty else "")
            + (f" -> {self.store}" if self.store else "")
        )


# ------------------------------------------------------------------------------------------ matrix


def resolve_matrix(
    lake: Lake,
    atlas: stores.Atlas,
    matrix: str | None,
    connectome: str | None,
    *,
    variable: str | None = None,
    labels: str | None = None,
    order: str | None = None,
    scheduler: str | None = None,
) -> GroupMatrix:
    """Find C: a file, a parcellate statistic (``fcgroupz`` default, ``fcgroupr``), or a run name."""
    if matrix and Path(matrix).suffix.lower() in (".mat", ".npy", ".tsv", ".csv"):
        lm = load_matrix(matrix, variable=variable, labels=labels)
        order_list = None
        if order:
            order_list = [ln.strip() for ln in Path(order).read_text().splitlines() if ln.strip()]
        values, table = align_to_atlas(lm, atlas.table, order_list)
        missing = len(atlas.table) - len(table)
        if missing:
            log.warning(
                "matrix covers %d of %d atlas regions; the others are left out", len(table), len(atlas.table)
            )
        ident = content_hash(
            {"values": content_hash(values.round(7).tolist()), "regions": table["name"].tolist()}
        )
        return GroupMatrix(values, table, ident, {"source": Path(matrix).name, "kind": "file"})
    stat = matrix or "fcgroupz"
    if stat not in ("fcgroupz", "fcgroupr"):
        raise InputError(f"--matrix {stat!r} is neither a matrix file (.mat/.npy/.tsv) nor fcgroupz/fcgroupr")
    rows = lake.catalog.query(method="parcellate", atlas=atlas.name, connectome=connectome, statistic=stat)
    if rows.empty and connectome:
        from lakepipe.pipelines.parcellate import parcellate

        log.info("no group FC for %s x %s yet: running parcellate first", connectome, atlas.name)
        parcellate(lake, connectome, atlas.name, scheduler=scheduler)
        rows = lake.catalog.query(
            method="parcellate", atlas=atlas.name, connectome=connectome, statistic=stat
        )
    if rows.empty:
        raise NotFoundError(
            f"no group FC matrix for atlas '{atlas.name}': run `lakepipe parcellate` "
            "or pass --connectome or --matrix FILE"
        )
    if rows["connectome"].nunique() > 1:
        raise InputError(
            f"group FC for atlas '{atlas.name}' exists for several connectomes "
            f"({sorted(rows['connectome'].unique())}): choose one with --connectome"
        )
    row = rows.sort_values("created").iloc[-1]
    ds = derivatives.open_derivative(stores.join(lake.url, row["store_uri"]))
    table = region_table(ds)
    return GroupMatrix(
        ds[stat].values.astype(np.float64),
        table,
        row["inputs_hash"] + ":" + stat,
        {"kind": "parcellate", "statistic": stat, "connectome": row["connectome"], "store": row["store_uri"]},
    )


# ------------------------------------------------------------------------------------------ counts


def _counts_task(masks: list, labels_flat: np.ndarray, n_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-parcel lesion counts (k, N+1) and lesion sizes (k,) for masks sharing one grid."""
    counts = np.stack([parcel_counts(labels_flat, m.indices, n_regions, m.values) for m in masks])
    sizes = np.array([m.n_voxels for m in masks], np.float64)
    return counts, sizes


def lesion_counts(
    seeds: list[Seed], atlas: stores.Atlas, table: pd.DataFrame, client=None, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (L, N+1), lesion sizes (L,), parcel sizes per lesion (L, N+1) in matrix region order.

    The atlas is resampled once per distinct lesion grid.
    """
    restricted = atlas.table["index"].isin(table["index"]).to_numpy()
    by_grid: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(seeds):
        by_grid[s.mask.grid.key()].append(i)
    # dense positions of the atlas table -> positions in the matrix table (0 = not in C)
    pos_in_c = np.zeros(len(atlas.table) + 1, np.int32)
    order = {int(ix): k + 1 for k, ix in enumerate(table["index"])}
    for k, ix in enumerate(atlas.table["index"]):
        if restricted[k]:
            pos_in_c[k + 1] = order[int(ix)]
    n = len(table)
    counts = np.zeros((len(seeds), n + 1))
    lsize = np.zeros(len(seeds))
    psize = np.zeros((len(seeds), n + 1))
    parts, where = [], []
    for idxs in by_grid.values():
        grid = seeds[idxs[0]].mask.grid
        labels = pos_in_c[atlas_labels_on_grid(atlas, grid)]
        sizes = parcel_sizes(labels, n)
        psize[idxs] = sizes
        # one copy of the (up to 1 mm, 29 MB) label volume per worker, not one per task in the graph
        labels_d = client.scatter(labels) if client is not None else labels  # no broadcast: see fnm
        for a in range(0, len(idxs), chunk):
            sel = idxs[a : a + chunk]
            # sent as one object per task, straight to the workers (not hashed, walked, or put in the graph)
            batch = [seeds[i].mask for i in sel]
            masks = (
                client.scatter([batch], hash=False)[0]
                if client is not None
                else dask.delayed(batch, traverse=False, name=f"afnm-masks-{uuid.uuid4().hex}")
            )
            parts.append(dask.delayed(_counts_task, pure=False)(masks, labels_d, n))
            where.append(sel)
    results = compute(*parts, client=client) if parts else []
    for sel, (c, s) in zip(where, results, strict=True):
        counts[sel] = c
        lsize[sel] = s
    return counts, lsize, psize


def afnm_params(weighting: str, gm: GroupMatrix, coverage_small: int, coverage_fraction: float) -> dict:
    p = {"weighting": weighting, "matrix": gm.description, "resampling": "nearest (atlas to lesion grid)"}
    if weighting == "coverage":
        p.update(coverage_small=coverage_small, coverage_fraction=coverage_fraction)
    return p


# ---------------------------------------------------------------------------------------- pipeline


def run_afnm(
    lake: Lake,
    cohort: str,
    atlas: str,
    *,
    matrix: str | None = None,
    connectome: str | None = None,
    weighting: str = "fractional",
    participants: list[str] | None = None,
    on_empty: str = "warn",
    bids_out: str | Path | None = None,
    with_weights: bool = False,
    matrix_variable: str | None = None,
    matrix_labels: str | None = None,
    matrix_order: str | None = None,
    coverage_small: int = 1000,
    coverage_fraction: float = 0.5,
    scheduler: str | None = None,
    client=None,
) -> AfnmResult:
    """Map every lesion of ``cohort`` (or ``participants``) onto ``atlas`` regions: ``m @ C``."""
    if weighting not in WEIGHTINGS:
        raise InputError(f"unknown --lesion-weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if on_empty not in ON_EMPTY:
        raise InputError(f"--on-empty must be one of {', '.join(ON_EMPTY)}")
    atl = lake.read_atlas(atlas)
    gm = resolve_matrix(
        lake,
        atl,
        matrix,
        connectome,
        variable=matrix_variable,
        labels=matrix_labels,
        order=matrix_order,
        scheduler=scheduler,
    )
    params = afnm_params(weighting, gm, coverage_small, coverage_fraction)
    seeds = cohort_seeds(lake, cohort, participants, with_masks=False)
    records = {s.key: _record(cohort, atlas, gm, s, params, atl.sha256, "x", 0) for s in seeds}
    done = lake.catalog.existing_keys(
        METHOD, [(STATISTIC, r.inputs_hash, r.params_hash) for r in records.values()]
    )
    todo = [
        s for s in seeds if (STATISTIC, records[s.key].inputs_hash, records[s.key].params_hash) not in done
    ]
    todo_keys = {s.key for s in todo}  # (a list's `in` compared whole Seed dataclasses: O(n^2))
    result = AfnmResult(None, None, skipped=[s.key for s in seeds if s.key not in todo_keys])
    if result.skipped:
        log.info(
            "afnm: %d of %d lesions already mapped with these inputs, skipped",
            len(result.skipped),
            len(seeds),
        )
    if not todo:
        return result
    todo = read_masks(lake, cohort, todo)
    for s in todo:
        require_same_space(s.mask.space, atl.space, f"lesion {s.key}", f"atlas '{atlas}'")

    with dask_client(scheduler, lake_url=lake.url, client=client) as cl:
        counts, lsize, psize = lesion_counts(todo, atl, gm.table, cl)
    m = np.zeros((len(todo), len(gm.table)))
    for key in np.unique(psize, axis=0):  # one weight_matrix call per distinct grid
        rows = np.all(psize == key, axis=1)
        m[rows] = weight_matrix(counts[rows], key, lsize[rows], weighting, coverage_small, coverage_fraction)
    n_touched = (counts[:, 1:] > 0).sum(axis=1)
    empty = np.flatnonzero(~m.any(axis=1))
    if empty.size:
        names = [todo[i].key for i in empty]
        result.empty = names
        if on_empty == "error":
            raise InputError(f"{len(names)} lesion(s) touch no region of atlas '{atlas}': {names[:5]}")
        log.warning(
            "afnm: %d lesion(s) touch no region of atlas '%s'%s: %s",
            len(names),
            atlas,
            " (skipped)" if on_empty == "skip" else " (scores are zero)",
            names[:5],
        )
        if on_empty == "skip":
            keep = np.setdiff1d(np.arange(len(todo)), empty)
            todo, m, n_touched, lsize = [todo[i] for i in keep], m[keep], n_touched[keep], lsize[keep]
            if not todo:
                return result
    scores = m @ gm.values  # one product for the whole cohort
    ds = _dataset(todo, scores, m if with_weights else None, n_touched, lsize, gm, params, atlas, cohort)
    run_name = derivatives.new_run_id(METHOD)
    url = derivatives.derivative_url(lake.url, METHOD, run_name)
    derivatives.write_derivative(lake.url, METHOD, run_name, ds)
    uri = stores.relative(lake.url, url)
    lake.publish(
        [_record(cohort, atlas, gm, s, params, atl.sha256, uri, i, len(gm.table)) for i, s in enumerate(todo)]
    )
    result.scores, result.store, result.computed = ds, url, [s.key for s in todo]
    if bids_out:
        result.files = write_bids(ds, bids_out)
    log.info(result.summary())
    return result


def _record(
    cohort, atlas, gm: GroupMatrix, seed: Seed, params, atlas_hash, uri, index, n=None
) -> OutputRecord:
    return OutputRecord(
        kind="derivative",
        method=METHOD,
        statistic=STATISTIC,
        cohort=cohort,
        participant=seed.participant,
        session=seed.session,
        label=seed.label,
        atlas=atlas,
        connectome=gm.description.get("connectome"),
        params=params,
        inputs={"lesion": seed.content_hash, "atlas": atlas_hash, "matrix": gm.identity},
        store_uri=uri,
        store_index=str(index),
        shape=(n,) if n else None,
    )


def _dataset(seeds, scores, m, n_touched, lsize, gm: GroupMatrix, params, atlas, cohort) -> xr.Dataset:
    coords = {
        "seed": ("seed", [s.key for s in seeds]),
        "participant": ("seed", [s.participant or "" for s in seeds]),
        "session": ("seed", [s.session or "" for s in seeds]),
        "label": ("seed", [s.label for s in seeds]),
        **region_coords(gm.table, "region"),
    }
    data = {
        "score": (("seed", "region"), scores.astype(np.float32)),
        "n_touched": ("seed", n_touched.astype(np.int32)),
        "lesion_voxels": ("seed", lsize.astype(np.int64)),
    }
    if m is not None:
        data["weight"] = (("seed", "region"), m.astype(np.float32))
    return xr.Dataset(
        data,
        coords=coords,
        attrs={
            "method": METHOD,
            "atlas": atlas,
            "cohort": cohort,
            "parameters": params,
            "lakepipe_version": lakepipe.__version__,
            "description": "AFNM score = m @ C: lesion-to-parcel weights times the group FC matrix",
        },
    )


def parcel_table(ds: xr.Dataset, i: int, value_vars=("score", "weight")) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "index": ds["region"].values,
            "name": ds["region_name"].values,
            "network": ds["region_network"].values,
            "hemisphere": ds["region_hemisphere"].values,
        }
    )
    for var in value_vars:
        if var in ds:
            table[var] = ds[var].values[i]
    return table


def write_bids(ds: xr.Dataset, out_dir: str | Path) -> list[Path]:
    """Per lesion ``sub-<p>[_ses-<s>]_label-<l>_method-afnm_atlas-<a>_desc-afnmap_parcelstats.{tsv,json}``."""
    out = Path(out_dir)
    derivatives.dataset_description(out)
    files = []
    for i in range(ds.sizes["seed"]):
        p, s, lab = (str(ds[c].values[i]) or None for c in ("participant", "session", "label"))
        name = bids_name(
            {
                "sub": p,
                "ses": s,
                "label": lab,
                "method": METHOD,
                "atlas": ds.attrs["atlas"],
                "desc": STATISTIC,
            },
            "parcelstats",
            ".tsv",
        )
        folder = out / subject_dir(p, s) if p else out
        meta = {
            "Description": ds.attrs["description"],
            "Method": METHOD,
            "Atlas": ds.attrs["atlas"],
            "Cohort": ds.attrs["cohort"],
            "Parameters": ds.attrs["parameters"],
            "TouchedRegions": int(ds["n_touched"].values[i]),
            "LesionVoxels": int(ds["lesion_voxels"].values[i]),
            "LakepipeVersion": ds.attrs["lakepipe_version"],
        }
        files.append(derivatives.write_tsv(folder / name, parcel_table(ds, i), meta))
    return files
