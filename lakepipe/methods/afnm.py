"""``run afnm``: accelerated functional network mapping, ``scores = M @ C`` for a whole cohort.

The atlas is resampled once per distinct lesion grid; lesion-to-parcel counts are computed in
Dask tasks over chunks of lesions; the weight matrix M (lesions x regions) multiplies the group FC
matrix C in one product. Lesions already mapped with the same inputs and parameters are skipped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.compute.weights import parcel_counts, parcel_sizes, weight_matrix
from lakepipe.errors import InputError, NotFoundError
from lakepipe.io import bidsout, layout
from lakepipe.io.matrices import align_to_atlas, load_matrix
from lakepipe.methods.base import PENDING, Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import AtlasId, atlas_identity, atlas_labels_on_grid, require_same_space
from lakepipe.methods.params.afnm import AfnmParams
from lakepipe.methods.params.base import Params
from lakepipe.methods.seeds import Seed, cohort_seeds, read_masks

if TYPE_CHECKING:  # the stores (Zarr, xarray) are imported where a computation opens them
    import xarray as xr

    from lakepipe.io.stores import Atlas
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext, Runtime

log = logging.getLogger(__name__)
MATRIX_FILE_SUFFIXES = (".mat", ".npy", ".tsv", ".csv")
#: lesion voxels (summed over the lesions) up to which the parcel counts are made in this process
LOCAL_COUNT_VOXELS = 2**26


@dataclass(frozen=True)
class MatrixRef:
    """What identifies the matrix C in the outputs made with it: an identity hash and a description
    (for a parcellate output of the lake, read from the catalog alone; ``store`` names its store)."""

    identity: str
    description: dict[str, Any]


@dataclass(frozen=True)
class GroupMatrix:
    """The matrix C aligned to the atlas: values, region table and what identifies it."""

    values: np.ndarray
    table: pd.DataFrame
    ref: MatrixRef


def is_matrix_file(matrix: str | None) -> bool:
    return bool(matrix) and Path(str(matrix)).suffix.lower() in MATRIX_FILE_SUFFIXES


def matrix_from_file(atlas: Atlas, p: AfnmParams) -> GroupMatrix:
    """C from a .mat/.npy/.tsv file, aligned to the atlas regions."""
    assert p.matrix is not None
    lm = load_matrix(p.matrix, variable=p.matrix_variable, labels=p.matrix_labels)
    order_list = None
    if p.matrix_order:
        order_list = [ln.strip() for ln in Path(p.matrix_order).read_text().splitlines() if ln.strip()]
    values, table = align_to_atlas(lm, atlas.table, order_list)
    if len(table) < len(atlas.table):
        log.warning(
            "matrix covers %d of %d atlas regions; the others are left out", len(table), len(atlas.table)
        )
    ident = content_hash(
        {"values": content_hash(values.round(7).tolist()), "regions": table["name"].tolist()}
    )
    return GroupMatrix(values, table, MatrixRef(ident, {"source": Path(p.matrix).name, "kind": "file"}))


def matrix_in_lake(lake: Lake, atlas: str, stat: str, connectome: str | None) -> MatrixRef | None:
    """The parcellate output of the lake that is C, from the catalog (None when there is none yet)."""
    rows = lake.catalog.query(method="parcellate", atlas=atlas, connectome=connectome, statistic=stat)
    if rows.empty:
        return None
    if rows["connectome"].nunique() > 1:
        raise InputError(
            f"group FC for atlas '{atlas}' exists for several connectomes "
            f"({sorted(rows['connectome'].unique())}): choose one with --connectome"
        )
    row = rows.sort_values("created").iloc[-1]
    return MatrixRef(
        row["inputs_hash"] + ":" + stat,
        {"kind": "parcellate", "statistic": stat, "connectome": row["connectome"], "store": row["store_uri"]},
    )


def matrix_from_lake(lake: Lake, ref: MatrixRef) -> GroupMatrix:
    """C read from the parcellate output ``ref`` names."""
    from lakepipe.io.stores import open_derivative
    from lakepipe.methods.common import region_table

    ds = open_derivative(lake.store_url(ref.description["store"]))
    return GroupMatrix(ds[ref.description["statistic"]].values.astype(np.float64), region_table(ds), ref)


def _counts_task(masks: list[Any], labels_flat: np.ndarray, n_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-parcel lesion counts (k, N+1) and lesion sizes (k,) for masks sharing one grid."""

    counts = np.stack([parcel_counts(labels_flat, m.indices, n_regions, m.values) for m in masks])
    sizes = np.array([m.n_voxels for m in masks], np.float64)
    return counts, sizes


def lesion_counts(
    seeds: list[Seed], atlas: Atlas, table: pd.DataFrame, runtime: Runtime, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (L, N+1), lesion sizes (L,), parcel sizes per lesion (L, N+1) in matrix region order.

    The atlas is resampled once per distinct lesion grid.
    """
    import dask

    restricted = atlas.table["index"].isin(table["index"]).to_numpy()
    by_grid: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(seeds):
        assert s.mask is not None
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
    # a label lookup per lesion voxel and a bincount per lesion: light work, done here unless the
    # lesions are many and large (sending the label volume and the masks to the workers, and the
    # tasks, cost more than the counts: ~0.1 ms for a typical lesion)
    local = sum(s.mask.indices.size for s in seeds if s.mask is not None) <= LOCAL_COUNT_VOXELS
    parts, where = [], []
    for idxs in by_grid.values():
        grid = seeds[idxs[0]].mask.grid  # type: ignore[union-attr]
        labels = pos_in_c[atlas_labels_on_grid(atlas, grid)]
        psize[idxs] = parcel_sizes(labels, n)
        if local:
            c, s_ = _counts_task([seeds[i].mask for i in idxs], labels, n)
            counts[idxs], lsize[idxs] = c, s_
            continue
        # one copy of the (up to 1 mm, 29 MB) label volume per worker, not one per task in the graph
        labels_d = runtime.literal(labels, "afnm-labels")
        for a in range(0, len(idxs), chunk):
            sel = idxs[a : a + chunk]
            masks = runtime.literal([seeds[i].mask for i in sel], "afnm-masks")
            parts.append(dask.delayed(_counts_task, pure=False)(masks, labels_d, n))
            where.append(sel)
    results = runtime.compute(*parts, desc="afnm lesion counts") if parts else ()
    for sel, (c, s) in zip(where, results, strict=True):
        counts[sel] = c
        lsize[sel] = s
    return counts, lsize, psize


class Afnm(Method):
    name = "afnm"
    command = ("run", "afnm")
    params_type = AfnmParams
    statistics = (Statistic("afnmap", "AFNM score m @ C per region", variable="score", dims="region"),)
    default_statistic = "afnmap"

    def output_params(self, p: AfnmParams, ref: MatrixRef) -> dict[str, Any]:
        out: dict[str, Any] = {
            "weighting": p.weighting,
            "matrix": ref.description,
            "resampling": "nearest (atlas to lesion grid)",
        }
        if p.weighting == "coverage":
            out.update(coverage_small=p.coverage_small, coverage_fraction=p.coverage_fraction)
        return out

    def inputs(self, params: Params) -> set[str]:
        assert isinstance(params, AfnmParams)
        out = {f"cohort:{params.cohort}", f"atlas:{params.atlas}"}
        if not is_matrix_file(params.matrix):
            out.add(f"parcellate:connectome:{params.connectome}" if params.connectome else "parcellate")
        return out

    def record(
        self,
        p: AfnmParams,
        ref: MatrixRef,
        seed: Seed,
        atlas: Atlas | AtlasId,
        uri: str = PENDING,
        index: int = 0,
        n: int | None = None,
    ) -> OutputRecord:
        return OutputRecord(
            kind="derivative",
            method=self.name,
            statistic="afnmap",
            cohort=p.cohort,
            participant=seed.participant,
            session=seed.session,
            label=seed.label,
            atlas=p.atlas,
            connectome=ref.description.get("connectome"),
            params=self.output_params(p, ref),
            inputs={"lesion": seed.content_hash, "atlas": atlas.sha256, "matrix": ref.identity},
            store_uri=uri,
            store_index=str(index),
            shape=(n,) if n else None,
        )

    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        assert isinstance(params, AfnmParams)
        p = params
        plan = Plan(self.name, p, recompute=recompute)
        # the skip keys need only the catalog (and a matrix file, when C is one); the atlas and the
        # parcellate store are read when something is to compute
        atlas: Atlas | AtlasId
        ref: MatrixRef | None
        if is_matrix_file(p.matrix):
            plan.context["atlas"] = atlas = lake.read_atlas(p.atlas)
            gm = matrix_from_file(atlas, p)
            plan.context["matrix"], ref = gm, gm.ref
        else:
            atlas, ref = atlas_identity(lake, p.atlas), self._lake_matrix(lake, p)
        seeds = cohort_seeds(lake, p.cohort, list(p.participants or ()) or None, with_masks=False)
        if ref is None:  # everything waits for parcellate; keys are known only after it
            plan.notes.append(f"group FC of {p.connectome} x {p.atlas} computed first")
            plan.items = [PlanItem(s.key, [], payload=s, participant=s.participant) for s in seeds]
            return plan
        plan.context["ref"] = ref
        plan.items = [
            PlanItem(s.key, [self.record(p, ref, s, atlas)], payload=s, participant=s.participant)
            for s in seeds
        ]
        self.mark_done(lake, plan.items)
        if plan.todo and "matrix" not in plan.context:
            plan.context["atlas"] = lake.read_atlas(p.atlas)
            plan.context["matrix"] = matrix_from_lake(lake, ref)
        return plan

    def _lake_matrix(self, lake: Lake, p: AfnmParams) -> MatrixRef | None:
        """C as a parcellate output of the lake, or None when it is the group FC of ``p.connectome``
        that parcellate has yet to compute."""
        stat = p.matrix or "fcgroupz"
        if stat not in ("fcgroupz", "fcgroupr"):
            raise InputError(
                f"--matrix {stat!r} is neither a matrix file (.mat/.npy/.tsv) nor fcgroupz/fcgroupr"
            )
        ref = matrix_in_lake(lake, p.atlas, stat, p.connectome)
        if ref is None and not p.connectome:
            raise NotFoundError(
                f"no group FC matrix for atlas '{p.atlas}': run `lakepipe parcellate` "
                "or pass --connectome or --matrix FILE"
            )
        return ref

    def run(
        self,
        lake: Lake,
        run: RunContext,
        params: Params,
        *,
        plan: Plan | None = None,
        recompute: bool = False,
        bids_out: str | Path | None = None,
    ) -> MethodResult:
        assert isinstance(params, AfnmParams)
        p = params
        plan = plan or self.plan(lake, p, recompute=recompute)
        if "ref" not in plan.context:
            from lakepipe.methods.parcellate import METHOD as PARCELLATE

            log.info("no group FC for %s x %s yet: running parcellate first", p.connectome, p.atlas)
            PARCELLATE.run(lake, run, PARCELLATE.params(connectome=p.connectome, atlas=p.atlas))
            plan = self.plan(lake, p, recompute=recompute)
        result = MethodResult(self.name, skipped=[i.key for i in plan.skipped])
        run.count_skipped(len(result.skipped))
        if result.skipped:
            log.info(
                "afnm: %d of %d lesions already mapped with these inputs, skipped",
                len(result.skipped),
                len(plan.items),
            )
        todo = [i.payload for i in plan.todo]
        empty: list[str] = []
        if todo:
            atlas: Atlas = plan.context["atlas"]
            gm: GroupMatrix = plan.context["matrix"]
            empty = self._compute(lake, run, p, plan, todo, atlas, gm, result)
        result.message = (
            f"AFNM: {len(result.computed)} lesion(s) {'re' if plan.recompute and result.computed else ''}"
            "mapped, "
            f"{len(result.skipped)} already in the lake"
            + (f", {len(empty)} touching no parcel" if empty else "")
        )
        if bids_out:
            covered = self.plan(lake, p)
            result.files = self.export(
                lake, lake.published([r for i in covered.items for r in i.records]), bids_out
            )
        log.info(result.summary())
        return result

    def _compute(
        self,
        lake: Lake,
        run: RunContext,
        p: AfnmParams,
        plan: Plan,
        todo: list[Seed],
        atlas: Atlas,
        gm: GroupMatrix,
        result: MethodResult,
    ) -> list[str]:
        from lakepipe.io.stores import write_derivative

        todo = read_masks(lake, p.cohort, todo)
        for s in todo:
            require_same_space(
                s.mask.space if s.mask else None, atlas.space, f"lesion {s.key}", f"atlas '{atlas.name}'"
            )
        counts, lsize, psize = lesion_counts(todo, atlas, gm.table, run.runtime)
        m = np.zeros((len(todo), len(gm.table)))
        for key in np.unique(psize, axis=0):  # one weight_matrix call per distinct grid
            rows = np.all(psize == key, axis=1)
            m[rows] = weight_matrix(
                counts[rows], key, lsize[rows], p.weighting, p.coverage_small, p.coverage_fraction
            )
        n_touched = (counts[:, 1:] > 0).sum(axis=1)
        empty_idx = np.flatnonzero(~m.any(axis=1))
        empty = [todo[i].key for i in empty_idx]
        if empty:
            result.details["empty"] = empty
            if p.on_empty == "error":
                raise InputError(
                    f"{len(empty)} lesion(s) touch no region of atlas '{atlas.name}': {empty[:5]}"
                )
            log.warning(
                "afnm: %d lesion(s) touch no region of atlas '%s'%s: %s",
                len(empty),
                atlas.name,
                " (skipped)" if p.on_empty == "skip" else " (scores are zero)",
                empty[:5],
            )
            if p.on_empty == "skip":
                keep = np.setdiff1d(np.arange(len(todo)), empty_idx)
                todo, m, n_touched, lsize = [todo[i] for i in keep], m[keep], n_touched[keep], lsize[keep]
                if not todo:
                    return empty
        scores = m @ gm.values  # one product for the whole cohort
        ds = self._dataset(todo, scores, m if p.with_weights else None, n_touched, lsize, gm, p, atlas)
        url = layout.derivative_store(lake.url, self.name, layout.new_store_name(self.name))
        write_derivative(url, ds)
        uri = layout.relative(lake.url, url)
        run.publish(
            [self.record(p, gm.ref, s, atlas, uri, i, len(gm.table)) for i, s in enumerate(todo)],
            replace=plan.recompute,
        )
        result.store, result.computed = url, [s.key for s in todo]
        return empty

    def _dataset(
        self,
        seeds: list[Seed],
        scores: np.ndarray,
        m: np.ndarray | None,
        n_touched: np.ndarray,
        lsize: np.ndarray,
        gm: GroupMatrix,
        p: AfnmParams,
        atlas: Atlas,
    ) -> xr.Dataset:
        import xarray as xr

        from lakepipe._version import __version__
        from lakepipe.methods.common import region_coords

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
                "method": self.name,
                "atlas": p.atlas,
                "cohort": p.cohort,
                "space": atlas.space,
                "parameters": self.output_params(p, gm.ref),
                "lakepipe_version": __version__,
                "description": "AFNM score = m @ C: lesion-to-parcel weights times the group FC matrix",
            },
        )

    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """Per lesion ``sub-<p>/[ses-<s>/]anat/sub-<p>[_ses-<s>]_space-<s>_label-<l>_method-afnm_atlas-<a>_
        desc-afnmap_parcelstats.{tsv,json}``."""
        from lakepipe.io.stores import open_derivative

        out = Path(out_dir)
        bidsout.dataset_description(out)
        files = []
        for uri, grp in rows.groupby("store_uri", sort=False):
            ds = open_derivative(lake.store_url(str(uri)))
            idx = grp["store_index"].astype(int).to_numpy()
            part = ds.isel(seed=idx).load()
            region = {
                "index": part["region"].values,
                "name": part["region_name"].values,
                "network": part["region_network"].values,
                "hemisphere": part["region_hemisphere"].values,
            }
            for j in range(part.sizes["seed"]):
                p_, s_, lab = (str(part[c].values[j]) or None for c in ("participant", "session", "label"))
                ent = {
                    "sub": p_,
                    "ses": s_,
                    "space": ds.attrs.get("space"),
                    "label": lab,
                    "method": self.name,
                    "atlas": ds.attrs["atlas"],
                    "desc": "afnmap",
                }
                table = pd.DataFrame(region)
                for var in ("score", "weight"):
                    if var in part:
                        table[var] = part[var].values[j]
                meta = {
                    "Description": ds.attrs["description"],
                    "Method": self.name,
                    "Atlas": ds.attrs["atlas"],
                    "Cohort": ds.attrs["cohort"],
                    "Space": ds.attrs.get("space"),
                    "Parameters": ds.attrs["parameters"],
                    "TouchedRegions": int(part["n_touched"].values[j]),
                    "LesionVoxels": int(part["lesion_voxels"].values[j]),
                    "LakepipeVersion": ds.attrs["lakepipe_version"],
                }
                files.append(
                    bidsout.write_tsv(bidsout.derivative_path(out, ent, "parcelstats", ".tsv"), table, meta)
                )
        return files


METHOD = Afnm()
