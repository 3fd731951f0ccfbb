"""``run fnm``: classic functional network mapping of many seeds in one pass over the connectome.

Seeds (lesions of a cohort, spheres) become one sparse voxel x seed weight matrix per batch. Each
Dask task streams a group of connectome subjects and returns float64 running sums of z and z^2
for the whole batch; the sums are merged and finalised into maps on a worker, which writes its
seed rows of the derivative store directly, so only small summaries travel back. The connectome
is read once per seed batch; the batch size follows the memory available.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr
import zarr

import lakepipe
from lakepipe.bids import bids_name, subject_dir
from lakepipe.catalog import OutputRecord
from lakepipe.cluster import compute, dask_client
from lakepipe.compute.correlation import unit_columns
from lakepipe.compute.fnm import FNM_CONVENTIONS, FnmSums, finalize_fnm, prepare_seeds, seed_series
from lakepipe.compute.groupfc import parcel_averaging_matrix
from lakepipe.compute.resample import lesion_to_grid, sphere_voxels
from lakepipe.errors import InputError
from lakepipe.io import derivatives, stores
from lakepipe.io.nifti import write_nifti
from lakepipe.io.storage import StoreRef, zarr_store
from lakepipe.lake import Lake
from lakepipe.pipelines.common import (
    ConnectomeInfo,
    connectome_info,
    region_coords,
    require_same_space,
    subject_groups,
    tasks_for,
    voxel_parcels,
)
from lakepipe.pipelines.seeds import Seed, cohort_seeds, read_masks

log = logging.getLogger(__name__)
METHOD = "fnm"
MAPS = ("zmap", "rmap", "tmap", "pmap")


@dataclass
class FnmResult:
    store: str | None = None
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped_voxels: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    n_batches: int = 0

    def summary(self) -> str:
        return (
            f"FNM: {len(self.computed)} seed(s) mapped in {self.n_batches} pass(es) over the connectome, "
            f"{len(self.skipped)} already in the lake" + (f" -> {self.store}" if self.store else "")
        )


# ------------------------------------------------------------------------------------------- seeds


def voxel_lookup(con: ConnectomeInfo) -> np.ndarray:
    """Grid-sized int32 array: voxel position of each in-mask grid voxel, -1 elsewhere."""
    lut = np.full(int(np.prod(con.grid.shape)), -1, np.int32)
    lut[np.ravel_multi_index(tuple(con.ijk.T), con.grid.shape)] = np.arange(con.ijk.shape[0], dtype=np.int32)
    return lut


def seed_voxels(seed: Seed, con: ConnectomeInfo, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Voxel positions and weights of a seed on the connectome, and how many seed voxels fell outside.

    Raises :class:`InputError` naming the seed when none of its voxels lies inside the mask.
    """
    grid = con.grid
    if seed.sphere is not None:
        x, y, z, r = seed.sphere
        flat = sphere_voxels((x, y, z), r, grid.shape, grid.affine)
        values = np.ones(flat.size, np.float32)
        if flat.size == 0:
            raise InputError(
                f"sphere seed {seed.key} at {(x, y, z)} mm radius {r} mm contains no voxel "
                "centre of the connectome grid (outside the field of view?)"
            )
    else:
        require_same_space(seed.mask.space, con.space, f"lesion {seed.key}", f"connectome '{con.name}'")
        flat, values = lesion_to_grid(
            seed.mask.indices,
            seed.mask.values,
            seed.mask.grid.shape,
            seed.mask.grid.affine,
            grid.shape,
            grid.affine,
        )
        values = np.ones(flat.size, np.float32) if values is None else np.asarray(values, np.float32)
        if flat.size == 0:  # e.g. a few 1 mm voxels between the centres of 2 mm voxels
            raise InputError(
                f"lesion seed {seed.key} covers no voxel centre of the connectome grid after "
                f"nearest resampling ({seed.mask.indices.size} voxel(s) on its own grid: too small "
                "for this grid, or outside its field of view)"
            )
    pos = lut[flat] if flat.size else np.array([], np.int32)
    inside = pos >= 0
    dropped = int(flat.size - inside.sum())
    if not inside.any():
        what = "sphere" if seed.sphere is not None else "lesion"
        raise InputError(
            f"{what} seed {seed.key} has no voxel inside the connectome mask "
            f"({flat.size} voxel(s) on the connectome grid, all outside the brain)"
        )
    return pos[inside], values[inside], dropped


def weight_matrix(voxels: list[tuple[np.ndarray, np.ndarray]], n_voxels: int) -> sp.csc_matrix:
    """Sparse (V, L) seed weights from per-seed voxel positions and weights."""
    rows = np.concatenate([v for v, _ in voxels])
    vals = np.concatenate([w for _, w in voxels])
    cols = np.concatenate([np.full(v.size, j) for j, (v, _) in enumerate(voxels)])
    return sp.csc_matrix((vals, (rows, cols)), shape=(n_voxels, len(voxels)), dtype=np.float64)


# ------------------------------------------------------------------------------------- batch sizing


def auto_batch_size(n_voxels: int, n_workers: int, with_r: bool, memory_bytes: int | None = None) -> int:
    """Seeds per pass so that every worker's float64 sums (plus a merge copy) fit in a quarter of memory."""
    if memory_bytes is None:
        import psutil

        memory_bytes = psutil.virtual_memory().available
    per_seed = n_voxels * 8 * (3 if with_r else 2) * 2  # sums + one merge copy
    budget = min(memory_bytes // 4, 8 * 2**30) // max(n_workers, 1)
    return int(max(1, min(512, budget // max(per_seed, 1))))


# ------------------------------------------------------------------------------------ worker tasks


#: memory for the subjects a task holds at once: their r, z and z^2 go through cache-resident
#: accumulators, and the large float64 sums are updated once per group instead of once per subject
#: (4 subjects of 120 x 235,375 voxels: ~20% less time per subject than one at a time)
GROUP_BYTES = 512 * 2**20


def _sums_task(ref: StoreRef, positions: list[int], seedw, with_r: bool) -> FnmSums:
    from zarr.core.buffer import default_buffer_prototype

    g = ref.group()
    ts, scale = g["timeseries"], g["scale"]
    sums = FnmSums.zeros(seedw.n_seeds, seedw.n_voxels, with_r=with_r)
    n_time, n_vox = ts.shape[1:]
    k = int(max(1, min(len(positions), GROUP_BYTES // (4 * n_time * n_vox))))
    # subjects are read (all their chunks at once) into buffers reused for the whole task: no fresh
    # 100 MB array, and its page faults, per subject
    bufs = [np.empty((n_time, n_vox), np.float32) for _ in range(k)]
    outs = [default_buffer_prototype().nd_buffer.from_numpy_array(b) for b in bufs]
    for a in range(0, len(positions), k):
        group = positions[a : a + k]
        seeds_units = []
        for j, s in enumerate(group):
            ts.get_basic_selection(s, out=outs[j])
            seeds_units.append(unit_columns(seed_series(bufs[j], scale[s], seedw)))
        sums.add_many(bufs[: len(group)], seeds_units)
    return sums


def _rows(sums: FnmSums, rows: range) -> FnmSums:
    """The sums of some seeds (rows) only."""
    sl = slice(rows.start, rows.stop)
    return FnmSums(sums.sum_z[sl], sums.sum_z2[sl], None if sums.sum_r is None else sums.sum_r[sl], sums.n)


def _merge(parts: list[FnmSums]) -> FnmSums:
    total = parts[0]
    for p in parts[1:]:
        total = total.merge(p)
    return total


def _finalize_task(
    sums: FnmSums, out: StoreRef, rows: slice, names: tuple[str, ...], with_avgr: bool, parcel_avg
) -> tuple[slice, dict[str, np.ndarray]]:
    """Maps from sums, written into their rows of the derivative store (one chunk per seed row, so
    tasks for other rows write other chunks); the small parcel summaries are returned, for the
    caller to write (their chunks hold many seed rows: concurrent writers would overwrite each other)."""
    maps = finalize_fnm(sums, with_avgr=with_avgr)
    g = out.group(mode="a")
    parcels = {}
    for name in names:
        g[name][rows] = maps[name]
        if parcel_avg is not None:
            parcels[name] = np.asarray((parcel_avg.T @ maps[name].T.astype(np.float64)).T, np.float32)
    return rows, parcels


# ----------------------------------------------------------------------------------------- pipeline


def fnm_params() -> dict:
    """Parameters that define the maps (``avgr`` is not one: it only adds a statistic)."""
    return {"conventions": FNM_CONVENTIONS, "resampling": "nearest (seed to connectome grid)"}


def output_keys(
    seed: Seed,
    con: ConnectomeInfo,
    params: dict,
    names,
    cohort: str | None,
    atlas: str | None = None,
    atlas_hash: str | None = None,
) -> list[tuple[str, str, str]]:
    """Catalog keys of every output a run publishes for ``seed``: maps and (atlas) parcel summaries."""
    seed_cohort = cohort if seed.sphere is None else None
    recs = _records(seed, con, params, "x", 0, names, cohort=seed_cohort)
    if atlas:
        recs += _records(seed, con, params, "x", 0, names, atlas, atlas_hash, cohort=seed_cohort)
    return [(r.statistic, r.inputs_hash, r.params_hash) for r in recs]


def _records(
    seed: Seed,
    con: ConnectomeInfo,
    params: dict,
    uri: str,
    index: int,
    names,
    atlas=None,
    atlas_hash=None,
    cohort=None,
) -> list[OutputRecord]:
    inputs = {"seed": seed.content_hash, "connectome": con.identity}
    if atlas:
        inputs["atlas"] = atlas_hash
    return [
        OutputRecord(
            kind="derivative",
            method=METHOD,
            statistic=name,
            cohort=cohort,
            participant=seed.participant,
            session=seed.session,
            label=seed.label,
            atlas=atlas,
            connectome=con.name,
            params=params,
            inputs=inputs,
            store_uri=uri,
            store_index=str(index),
        )
        for name in names
    ]


def run_fnm(
    lake: Lake,
    connectome: str,
    *,
    cohort: str | None = None,
    participants: list[str] | None = None,
    spheres: list[Seed] | None = None,
    atlas: str | None = None,
    bids_out: str | Path | None = None,
    with_avgr: bool = False,
    batch_size: int | None = None,
    scheduler: str | None = None,
    client=None,
) -> FnmResult:
    """Seed-to-voxel FNM maps (zmap, rmap, tmap, pmap[, avgr]) for every seed, plus parcel summaries."""
    if not cohort and not spheres:
        raise InputError("FNM needs seeds: --cohort NAME and/or --sphere X,Y,Z --radius MM")
    con = connectome_info(lake, connectome)
    if con.kind != "voxel":
        raise InputError(
            f"FNM needs a voxel connectome; '{connectome}' holds parcel time series "
            "(use `lakepipe run afnm` with it)"
        )
    atl = lake.read_atlas(atlas) if atlas else None
    if atl is not None:
        require_same_space(con.space, atl.space, f"connectome '{connectome}'", f"atlas '{atlas}'")
    names = MAPS + (("avgr",) if with_avgr else ())
    params = fnm_params()
    seeds: list[Seed] = []
    if cohort:
        seeds += cohort_seeds(lake, cohort, participants, with_masks=False)
    seeds += spheres or []
    keys = [s.key for s in seeds]
    if len(set(keys)) != len(keys):
        raise InputError("two seeds share one name; name spheres uniquely")

    # what is already published: every requested statistic, and parcel summaries for this atlas
    wanted = {
        s.key: output_keys(s, con, params, names, cohort, atlas, atl.sha256 if atl else None) for s in seeds
    }
    have = lake.catalog.existing_keys(METHOD, [k for ks in wanted.values() for k in ks])
    todo = [s for s in seeds if not all(k in have for k in wanted[s.key])]
    result = FnmResult(skipped=[s.key for s in seeds if s not in todo])
    if result.skipped:
        log.info(
            "fnm: %d of %d seeds already mapped with these inputs, skipped", len(result.skipped), len(seeds)
        )
    if not todo:
        return result
    lesion_seeds = [s for s in todo if s.sphere is None]
    if lesion_seeds:
        read_masks(lake, cohort, lesion_seeds)

    lut = voxel_lookup(con)
    voxels = []
    for s in todo:
        pos, w, dropped = seed_voxels(s, con, lut)
        if dropped:
            log.warning(
                "fnm: seed %s: %d of %d voxel(s) lie outside the connectome mask and are dropped",
                s.key,
                dropped,
                dropped + pos.size,
            )
        result.dropped_voxels[s.key] = dropped
        voxels.append((pos, w))

    parcel_avg, table = None, None
    if atl is not None:
        labels, table, _ = voxel_parcels(con, atl)
        parcel_avg, _ = parcel_averaging_matrix(labels, len(table))

    run = derivatives.new_run_id(METHOD)
    url = derivatives.derivative_url(lake.url, METHOD, run)
    n_vox, n_seeds, n_sub = con.ijk.shape[0], len(todo), len(con.subjects)
    _create_store(url, con, todo, names, result.dropped_voxels, params, connectome, atlas, table)
    out_ref, in_ref = StoreRef.here(url), StoreRef.here(stores.connectome_url(lake.url, connectome))
    positions = con.positions
    with dask_client(scheduler, lake_url=lake.url, client=client) as cl:
        n_workers = len(cl.scheduler_info()["workers"]) if cl is not None else 1
        size = batch_size or auto_batch_size(n_vox, n_workers, with_avgr)
        groups = subject_groups(n_sub, tasks_for(cl, n_sub, per_worker=1))
        batches = [range(a, min(a + size, n_seeds)) for a in range(0, n_seeds, size)]
        log.info(
            "fnm: %d seed(s) x %d voxels x %d subjects in %d pass(es) of <= %d seeds, %d task(s) each",
            n_seeds,
            n_vox,
            n_sub,
            len(batches),
            size,
            len(groups),
        )
        from lakepipe.progress import progress

        uri = stores.relative(lake.url, url)
        for k, batch in enumerate(progress(batches, desc="fnm seed batches"), 1):
            seedw = prepare_seeds(weight_matrix([voxels[i] for i in batch], n_vox))
            # in the graph, not scattered: if a worker dies mid-pass its tasks are rerun elsewhere with it
            # (a broadcast scatter waits on the dead worker; scattered data die with their holder); an
            # argument of each task (a few MB), not a key of its own: one worker would hold that key and
            # the other would start only once it had fetched it
            parts = [
                dask.delayed(_sums_task, pure=False)(in_ref, [positions[i] for i in g], seedw, with_avgr)
                for g in groups
            ]
            # the maps are finalised and written in row blocks, one per worker, each from the matching
            # rows of every part: both workers work and each moves only its share of the sums
            fins = []
            for rows in subject_groups(len(batch), n_workers):
                pieces = [dask.delayed(_rows, pure=False)(part, rows) for part in parts]
                merged = dask.delayed(_merge, pure=False)(pieces)
                fins.append(
                    dask.delayed(_finalize_task, pure=False)(
                        merged,
                        out_ref,
                        slice(batch.start + rows.start, batch.start + rows.stop),
                        names,
                        with_avgr,
                        parcel_avg,
                    )
                )
            done = compute(*fins, client=cl, desc=f"fnm pass {k}/{len(batches)}")
            if parcel_avg is not None:
                g = out_ref.group(mode="a")
                for rows, parcels in done:
                    for name, values in parcels.items():
                        g[f"parcel_{name}"][rows] = values
            # the batch's maps are complete in the store: publish them now, so a killed run keeps them
            records = []
            for i in batch:
                s = todo[i]
                seed_cohort = cohort if s.sphere is None else None
                records += _records(s, con, params, uri, i, names, cohort=seed_cohort)
                if atl is not None:
                    records += _records(s, con, params, uri, i, names, atlas, atl.sha256, cohort=seed_cohort)
            lake.publish(records)
            log.info("fnm: pass %d/%d published (%d seed(s))", k, len(batches), len(batch))
    result.n_batches = len(batches)
    result.store, result.computed = url, [s.key for s in todo]
    if bids_out:
        result.files = write_bids(derivatives.open_derivative(url), bids_out)
    log.info(result.summary())
    return result


def _create_store(
    url,
    con: ConnectomeInfo,
    seeds: list[Seed],
    names,
    dropped,
    params,
    connectome,
    atlas: str | None,
    table: pd.DataFrame | None,
) -> None:
    """Lay out the derivative store: (seed, voxel) maps, (seed, region) summaries, coordinates, attrs.

    Workers fill the map rows of their seed batch; the store is complete once every batch ran.
    """
    n_vox = con.ijk.shape[0]
    coords = xr.Dataset(
        coords={
            "seed": ("seed", [s.key for s in seeds]),
            "participant": ("seed", [s.participant or "" for s in seeds]),
            "session": ("seed", [s.session or "" for s in seeds]),
            "label": ("seed", [s.label for s in seeds]),
            "seed_voxels_dropped": ("seed", [dropped[s.key] for s in seeds]),
            "ijk": (("voxel", "axis"), con.ijk.astype(np.int16)),
            **(region_coords(table, "region") if table is not None else {}),
        },
        attrs={
            "method": METHOD,
            "connectome": connectome,
            "atlas": atlas,
            "n_subjects": len(con.subjects),
            "grid": {"shape": list(con.grid.shape), "affine": con.grid.affine.tolist()},
            "space": con.space,
            "parameters": params,
            "conventions": FNM_CONVENTIONS,
            "spheres": {s.key: s.meta for s in seeds if s.sphere is not None},
            "lakepipe_version": lakepipe.__version__,
        },
    )
    coords.to_zarr(zarr_store(url), mode="w", zarr_format=3, consolidated=False)
    g = zarr.open_group(zarr_store(url), mode="a", zarr_format=3)
    for name in names:
        g.create_array(
            name,
            shape=(len(seeds), n_vox),
            chunks=(1, n_vox),
            dtype="float32",
            dimension_names=["seed", "voxel"],
            fill_value=np.nan,
        )
        if table is not None:
            g.create_array(
                f"parcel_{name}",
                shape=(len(seeds), len(table)),
                chunks=(256, len(table)),
                dtype="float32",
                dimension_names=["seed", "region"],
                fill_value=np.nan,
            )


# ------------------------------------------------------------------------------------------- export


def seed_map(ds: xr.Dataset, stat: str, i: int) -> np.ndarray:
    """A seed's map as a 3D volume on the connectome grid (NaN outside the mask)."""
    grid = ds.attrs["grid"]
    vol = np.full(tuple(grid["shape"]), np.nan, np.float32)
    ijk = ds["ijk"].values.astype(int)
    vol[tuple(ijk.T)] = ds[stat][i].values if ds[stat].ndim == 2 else ds[stat].values  # read one row only
    return vol


def write_bids(ds: xr.Dataset, out_dir: str | Path) -> list[Path]:
    """NIfTI maps (+JSON) per seed and, when present, parcel summaries (TSV + JSON)."""
    out = Path(out_dir)
    derivatives.dataset_description(out)
    affine = np.asarray(ds.attrs["grid"]["affine"])
    stats = [n for n in ("zmap", "rmap", "tmap", "pmap", "avgr") if n in ds]
    files = []
    for i in range(ds.sizes["seed"]):
        p, s, lab = (str(ds[c].values[i]) or None for c in ("participant", "session", "label"))
        key = str(ds["seed"].values[i])
        ent = {"sub": p, "ses": s, "label": lab} if p else {"seed": lab}
        folder = out / subject_dir(p, s) if p else out / "seeds"
        meta = {
            "Method": METHOD,
            "Connectome": ds.attrs["connectome"],
            "NumberOfSubjects": ds.attrs["n_subjects"],
            "SeedVoxelsDropped": int(ds["seed_voxels_dropped"].values[i]),
            "Conventions": ds.attrs["conventions"],
            "LakepipeVersion": ds.attrs["lakepipe_version"],
            **({"Sphere": ds.attrs["spheres"][key]} if key in ds.attrs.get("spheres", {}) else {}),
        }
        for stat in stats:
            path = folder / bids_name({**ent, "method": METHOD, "desc": stat}, "statmap", ".nii.gz")
            write_nifti(seed_map(ds, stat, i), affine, path, ds.attrs.get("space"))
            derivatives.write_sidecar(
                Path(str(path)[: -len(".nii.gz")] + ".json"),
                {**meta, "Statistic": stat, "Description": FNM_CONVENTIONS.get(stat, stat)},
            )
            files.append(path)
            if f"parcel_{stat}" in ds:
                atlas_name = ds.attrs.get("atlas") or "atlas"
                tsv = folder / bids_name(
                    {**ent, "method": METHOD, "atlas": atlas_name, "desc": stat}, "parcelstats", ".tsv"
                )
                table = pd.DataFrame(
                    {
                        "index": ds["region"].values,
                        "name": ds["region_name"].values,
                        "network": ds["region_network"].values,
                        stat: ds[f"parcel_{stat}"].values[i],
                    }
                )
                files.append(
                    derivatives.write_tsv(
                        tsv,
                        table,
                        {**meta, "Statistic": stat, "Summary": "mean over the parcel's in-mask voxels"},
                    )
                )
    return files
