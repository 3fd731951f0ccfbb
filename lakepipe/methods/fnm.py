"""``run fnm``: classic functional network mapping of many seeds in one pass over the connectome.

Seeds (lesions of a cohort, spheres) become one sparse voxel x seed weight matrix per batch. Each
Dask task streams a group of connectome subjects and returns float64 running sums of z and z^2
for the whole batch; the sums are merged and finalised into maps on a worker, which writes its
seed rows of the derivative store directly, so only small summaries travel back. The connectome
is read once per seed batch; the batch size follows the memory available. Each finished batch is
published at once, so a killed run keeps what it finished and a re-run computes the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lakepipe.catalog import OutputRecord
from lakepipe.compute.fnm_conventions import FNM_CONVENTIONS
from lakepipe.errors import InputError
from lakepipe.methods.base import PENDING, Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import (
    AtlasId,
    ConnectomeId,
    ConnectomeInfo,
    atlas_identity,
    connectome_identity,
    connectome_info,
    region_coords,
    require_same_space,
    subject_groups,
)
from lakepipe.methods.params.base import Params
from lakepipe.methods.params.fnm import FnmParams
from lakepipe.methods.seeds import Seed, cohort_seeds, sphere_seed, spheres_from_table

if TYPE_CHECKING:  # the compute kernels and the stores are imported where a run computes or exports
    import xarray as xr

    from lakepipe.compute.seeds import SeedVoxels
    from lakepipe.io.stores import Atlas, IncrementalStore
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext

log = logging.getLogger(__name__)
#: the group maps every run writes per seed (``pfdrmap``: BH q of the seed's pmap over its voxels)
MAPS = ("zmap", "rmap", "tmap", "pmap", "pfdrmap")
#: each connectome subject's maps, (seed, subject, voxel), with ``--per-subject``
SUBJECT_MAPS = ("zmap_subjects", "rmap_subjects")
#: a pass splits its seeds between tasks (each reading every subject) only in blocks of at least this
#: many seeds: then a task's GEMMs and transforms outlast its (overlapped) reads
SEEDS_PER_TASK = 256
#: most seeds in one pass
MAX_BATCH = 4096
#: seed rows finalised and written per task (bounds the float32 maps a worker holds at once)
FINALIZE_ROWS = 64
#: threads that read and write the NIfTI maps of an export
EXPORT_THREADS = 4
#: whether the maps are compressed: zstd saved 5.5 % of their bytes for 2.5 times the CPU of writing them
COMPRESS_MAPS = False


def sphere_seeds(p: FnmParams) -> list[Seed]:
    """The sphere seeds of the parameters (``sphere``/``radius``/``sphere_name`` and a ``spheres`` table)."""
    seeds = []
    names = list(p.sphere_name or ())
    for k, text in enumerate(p.sphere or ()):
        try:
            x, y, z = (float(v) for v in str(text).split(","))
        except ValueError:
            raise InputError(f"--sphere expects X,Y,Z in mm, got {text!r}") from None
        if p.radius is None:
            raise InputError("--sphere needs --radius MM")
        seeds.append(sphere_seed(x, y, z, p.radius, names[k] if k < len(names) else None))
    if p.spheres:
        seeds += spheres_from_table(p.spheres, p.radius)
    return seeds


def sums_budget(memory_bytes: int | None = None) -> int:
    """Bytes the float64 sums of one pass may take: a quarter of the available memory, at most 8 GiB."""
    if memory_bytes is None:
        import psutil

        memory_bytes = psutil.virtual_memory().available
    return int(min(memory_bytes // 4, 8 * 2**30))


def _seed_bytes(n_voxels: int, with_r: bool) -> int:
    return n_voxels * 8 * (3 if with_r else 2)  # float64 sums of z, z^2 (and r) of one seed


def auto_batch_size(n_voxels: int, n_workers: int, with_r: bool, memory_bytes: int | None = None) -> int:
    """Seeds per pass: as many as have their float64 sums held once within :func:`sums_budget`
    (:func:`task_layout` then splits the seeds, not the subjects, between tasks where needed)."""
    budget = sums_budget(memory_bytes)
    return int(max(1, min(MAX_BATCH, budget // max(_seed_bytes(n_voxels, with_r), 1))))


def task_layout(
    n_seeds: int,
    n_workers: int,
    n_subjects: int,
    n_voxels: int,
    with_r: bool,
    memory_bytes: int | None = None,
) -> tuple[int, int]:
    """(seed blocks, subject groups) of one pass: one task per block and group.

    A subject group reads its subjects once, but holds the sums of all the block's seeds, merged with
    the other groups' at the end; a seed block holds only its seeds' sums but reads every subject.
    Reads overlap the computing (:func:`sums_task`), so splitting seeds costs nothing once a task's
    GEMMs outlast its reads (blocks of >= ``SEEDS_PER_TASK`` seeds) and saves the merge and all but
    one copy of the sums; seeds are also split where the groups' copies (and the merge's) would not
    fit in :func:`sums_budget`.
    """
    n_workers = max(1, n_workers)
    blocks = max(1, min(n_workers, n_seeds // SEEDS_PER_TASK))
    groups = max(1, min(n_subjects, n_workers // blocks))
    held = (groups + (2 if groups > 1 else 0)) * n_seeds * _seed_bytes(n_voxels, with_r)
    if groups > 1 and held > sums_budget(memory_bytes):
        blocks, groups = min(n_workers, n_seeds), 1
    return blocks, groups


# ------------------------------------------------------------------------------------------ method


class Fnm(Method):
    name = "fnm"
    command = ("run", "fnm")
    params_type = FnmParams
    statistics = (
        Statistic("zmap", str(FNM_CONVENTIONS["zmap"])),
        Statistic("rmap", str(FNM_CONVENTIONS["rmap"])),
        Statistic("tmap", str(FNM_CONVENTIONS["tmap"])),
        Statistic("pmap", str(FNM_CONVENTIONS["pmap"])),
        Statistic("pfdrmap", str(FNM_CONVENTIONS["pfdrmap"])),
        Statistic("avgr", str(FNM_CONVENTIONS["avgr"])),
        Statistic("zmap_subjects", str(FNM_CONVENTIONS["zmap_subjects"])),
        Statistic("rmap_subjects", str(FNM_CONVENTIONS["rmap_subjects"])),
    )
    default_statistic = "zmap"

    def variable(self, statistic: str, atlas: str | None = None) -> str:
        name = self.statistic(statistic).name
        return f"parcel_{name}" if atlas else name

    def statistic_dims(self, statistic: str, atlas: str | None = None) -> str:
        return "region" if atlas else "voxel"

    def select(self, rows: pd.DataFrame, atlas: str | None) -> pd.DataFrame:
        return rows if atlas else rows[rows["atlas"].isna()]  # voxel maps; parcel summaries carry their atlas

    def output_params(self) -> dict[str, Any]:
        """Parameters that define the maps (``avgr`` is not one: it only adds a statistic)."""
        return {"conventions": FNM_CONVENTIONS, "resampling": "nearest (seed to connectome grid)"}

    def map_names(self, p: FnmParams) -> tuple[str, ...]:
        """The group maps the parameters ask for."""
        return MAPS + (("avgr",) if p.avgr else ())

    def output_names(self, p: FnmParams) -> tuple[str, ...]:
        """The statistics published per seed: group maps and, with ``per_subject``, subjects' maps."""
        return self.map_names(p) + (SUBJECT_MAPS if p.per_subject else ())

    def records(
        self,
        p: FnmParams,
        seed: Seed,
        con: ConnectomeId | ConnectomeInfo,
        atlas: AtlasId | Atlas | None,
        uri: str = PENDING,
        index: int = 0,
    ) -> list[OutputRecord]:
        """Every output of one seed: its maps and, with an atlas, their parcel summaries."""
        cohort = p.cohort if seed.sphere is None else None
        out = []
        for summary_atlas in (None, atlas) if atlas is not None else (None,):
            inputs = {"seed": seed.content_hash, "connectome": con.identity}
            if summary_atlas is not None:
                inputs["atlas"] = summary_atlas.sha256
            out += [
                OutputRecord(
                    kind="derivative",
                    method=self.name,
                    statistic=name,
                    cohort=cohort,
                    participant=seed.participant,
                    session=seed.session,
                    label=seed.label,
                    atlas=summary_atlas.name if summary_atlas else None,
                    connectome=con.name,
                    params=self.output_params(),
                    inputs=inputs,
                    store_uri=uri,
                    store_index=str(index),
                )
                for name in (self.output_names(p) if summary_atlas is None else self.map_names(p))
            ]
        return out

    def seeds(self, lake: Lake, p: FnmParams) -> list[Seed]:
        if not p.cohort and not p.sphere and not p.spheres:
            raise InputError("FNM needs seeds: --cohort NAME and/or --sphere X,Y,Z --radius MM")
        seeds: list[Seed] = []
        if p.cohort:
            seeds += cohort_seeds(lake, p.cohort, list(p.participants or ()) or None, with_masks=False)
        seeds += sphere_seeds(p)
        keys = [s.key for s in seeds]
        if len(set(keys)) != len(keys):
            raise InputError("two seeds share one name; name spheres uniquely")
        return seeds

    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        assert isinstance(params, FnmParams)
        plan = self._keys(lake, params, recompute)
        if plan.todo:
            plan.context = self._inputs(lake, params)
        return plan

    def _keys(self, lake: Lake, params: FnmParams, recompute: bool) -> Plan:
        """The plan from the catalog alone: the skip keys need no store opened."""
        con_id = connectome_identity(lake, params.connectome)
        atlas_id = atlas_identity(lake, params.atlas) if params.atlas else None
        seeds = self.seeds(lake, params)
        plan = Plan(self.name, params, recompute=recompute)
        plan.items = [
            PlanItem(s.key, self.records(params, s, con_id, atlas_id), payload=s, participant=s.participant)
            for s in seeds
        ]
        self.mark_done(lake, plan.items)
        return plan

    def _inputs(self, lake: Lake, params: FnmParams) -> dict[str, Any]:
        """The connectome and atlas a computation reads, opened and checked (an FNM output in the
        lake was made from inputs that passed these checks)."""
        con = connectome_info(lake, params.connectome)
        if con.kind != "voxel":
            raise InputError(
                f"FNM needs a voxel connectome; '{con.name}' holds parcel time series "
                "(use `lakepipe run afnm` with it)"
            )
        atlas = lake.read_atlas(params.atlas) if params.atlas else None
        if atlas is not None:
            require_same_space(con.space, atlas.space, f"connectome '{con.name}'", f"atlas '{atlas.name}'")
        return {"connectome": con, "atlas": atlas}

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
        assert isinstance(params, FnmParams)
        # the catalog says what is to compute; the stores are opened once the workers' process
        # is starting (it imports while they are read)
        plan = plan or self._keys(lake, params, recompute)
        result = MethodResult(self.name, skipped=[i.key for i in plan.skipped])
        run.count_skipped(len(result.skipped))
        if result.skipped:
            log.info(
                "fnm: %d of %d seeds already mapped with these inputs, skipped",
                len(result.skipped),
                len(plan.items),
            )
        todo = [i.payload for i in plan.todo]
        if todo:
            # the local workers' process imports the tasks and loads the Fisher z kernel while the
            # store is opened; the workers start and warm up while the masks are read and the graph
            # is built (the cluster starts after the inputs pass their checks: bad input starts none)
            run.runtime.preload(["lakepipe.methods.fnm_tasks", "lakepipe.compute.fisher_warm"])
            if "connectome" not in plan.context:
                plan.context = self._inputs(lake, params)
            from lakepipe.methods.fnm_tasks import warm_worker

            run.runtime.prestart(warm=warm_worker)
            self._compute(lake, run, params, plan, todo, result)
        n_batches = result.details.get("passes", 0)
        verb = "remapped" if plan.recompute and result.computed else "mapped"
        result.message = (
            f"FNM: {len(result.computed)} seed(s) {verb} in {n_batches} pass(es) over the connectome, "
            f"{len(result.skipped)} already in the lake"
        )
        if bids_out:
            rows = lake.published([r for i in plan.items for r in i.records])
            result.files = self.export(lake, rows, bids_out)
        log.info(result.summary())
        return result

    def seed_voxels(self, seeds: Sequence[Seed], con: ConnectomeInfo) -> list[SeedVoxels]:
        """Each seed's voxels on the connectome; a seed with none is an :class:`InputError` naming it."""
        from lakepipe.compute.seeds import mask_seed_voxels, sphere_seed_voxels, voxel_lookup

        grid = con.grid
        assert grid is not None
        lut = voxel_lookup(con.ijk, grid.shape)
        out = []
        for s in seeds:
            if s.sphere is not None:
                x, y, z, r = s.sphere
                sv = sphere_seed_voxels((x, y, z), r, grid.shape, grid.affine, lut)
                if sv.on_grid == 0:
                    raise InputError(
                        f"sphere seed {s.key} at {(x, y, z)} mm radius {r} mm contains no voxel "
                        "centre of the connectome grid (outside the field of view?)"
                    )
            else:
                assert s.mask is not None
                require_same_space(s.mask.space, con.space, f"lesion {s.key}", f"connectome '{con.name}'")
                sv = mask_seed_voxels(
                    s.mask.indices,
                    s.mask.values,
                    s.mask.grid.shape,
                    s.mask.grid.affine,
                    grid.shape,
                    grid.affine,
                    lut,
                )
                if sv.on_grid == 0:  # e.g. a few 1 mm voxels between the centres of 2 mm voxels
                    raise InputError(
                        f"lesion seed {s.key} covers no voxel centre of the connectome grid after nearest "
                        f"resampling ({s.mask.indices.size} voxel(s) on its own grid: too small for this "
                        "grid, "
                        "or outside its field of view)"
                    )
            if sv.positions.size == 0:
                what = "sphere" if s.sphere is not None else "lesion"
                raise InputError(
                    f"{what} seed {s.key} has no voxel inside the connectome mask "
                    f"({sv.on_grid} voxel(s) on the connectome grid, all outside the brain)"
                )
            if sv.dropped:
                log.warning(
                    "fnm: seed %s: %d of %d voxel(s) lie outside the connectome mask and are dropped",
                    s.key,
                    sv.dropped,
                    sv.on_grid,
                )
            out.append(sv)
        return out

    def _compute(
        self, lake: Lake, run: RunContext, p: FnmParams, plan: Plan, todo: list[Seed], result: MethodResult
    ) -> None:
        import dask

        from lakepipe.compute.fnm import prepare_seeds
        from lakepipe.compute.groupfc import parcel_averaging_matrix
        from lakepipe.compute.seeds import seed_weight_matrix
        from lakepipe.io import layout
        from lakepipe.io.storage import StoreRef
        from lakepipe.methods import fnm_tasks
        from lakepipe.methods.common import voxel_parcels
        from lakepipe.methods.seeds import read_masks
        from lakepipe.progress import progress

        con: ConnectomeInfo = plan.context["connectome"]
        atlas: Atlas | None = plan.context["atlas"]
        lesion_seeds = [s for s in todo if s.sphere is None]
        if lesion_seeds:
            assert p.cohort is not None
            read_masks(lake, p.cohort, lesion_seeds)
        voxels = self.seed_voxels(todo, con)
        result.details["dropped_voxels"] = {s.key: v.dropped for s, v in zip(todo, voxels, strict=True)}
        parcel_avg, table = None, None
        if atlas is not None:
            labels, table, _ = voxel_parcels(con, atlas)
            parcel_avg, _ = parcel_averaging_matrix(labels, len(table))
        names = self.map_names(p)
        url = layout.derivative_store(lake.url, self.name, layout.new_store_name(self.name))
        out = self._create_store(
            url, con, todo, names, result.details["dropped_voxels"], atlas, table, p.per_subject
        )
        in_ref = StoreRef.here(layout.connectome_store(lake.url, con.name))
        n_vox, n_seeds, n_sub = con.ijk.shape[0], len(todo), con.n_units
        units = con.units
        runtime = run.runtime
        n_workers = runtime.n_workers
        size = p.batch_size or auto_batch_size(n_vox, n_workers, p.avgr)
        batches = [range(a, min(a + size, n_seeds)) for a in range(0, n_seeds, size)]
        layouts = [task_layout(len(b), n_workers, n_sub, n_vox, p.avgr) for b in batches]
        log.info(
            "fnm: %d seed(s) x %d voxels x %d subjects in %d pass(es) of <= %d seeds, "
            "%d seed block(s) x %d subject group(s) each",
            n_seeds,
            n_vox,
            n_sub,
            len(batches),
            size,
            *layouts[0],
        )
        uri = layout.relative(lake.url, url)
        result.details["layouts"] = layouts
        for k, (batch, (n_blocks, n_groups)) in enumerate(
            progress(list(zip(batches, layouts, strict=True)), desc="fnm seed batches"), 1
        ):
            groups = subject_groups(n_sub, n_groups)
            fins = []
            for block in subject_groups(len(batch), n_blocks):
                rows_b = range(batch.start + block.start, batch.start + block.stop)  # the block's seed rows
                seedw = prepare_seeds(seed_weight_matrix([voxels[i] for i in rows_b], n_vox))
                # in the graph, not scattered: if a worker dies mid-pass its tasks are rerun elsewhere with
                # it (scattered data die with their holder); an argument of each task (a few MB), not a key
                # of its own: one worker would hold that key and the other would start only once it had it
                parts = [
                    dask.delayed(fnm_tasks.sums_task, pure=False)(
                        in_ref,
                        [units[i] for i in g],
                        seedw,
                        p.avgr,
                        fnm_tasks.SubjectMapsTarget(out, slice(rows_b.start, rows_b.stop), tuple(g))
                        if p.per_subject
                        else None,
                    )
                    for g in groups
                ]
                # maps finalised and written in row blocks of at most FINALIZE_ROWS seeds, each from the
                # matching rows of every part: with several subject groups, one block (at least) per
                # group, so every worker finalises and each moves only its share of the sums; with one
                # group, the blocks are finalised where the part is, nothing moves
                n_fin = max(len(groups) if len(groups) > 1 else 1, -(-len(block) // FINALIZE_ROWS))
                for rows in subject_groups(len(block), n_fin):
                    pieces = [dask.delayed(fnm_tasks.seed_rows, pure=False)(part, rows) for part in parts]
                    merged = (
                        pieces[0] if len(pieces) == 1 else dask.delayed(fnm_tasks.merge, pure=False)(pieces)
                    )
                    fins.append(
                        dask.delayed(fnm_tasks.finalize_task, pure=False)(
                            merged,
                            out,
                            slice(rows_b.start + rows.start, rows_b.start + rows.stop),
                            names,
                            p.avgr,
                            parcel_avg,
                        )
                    )
            done = runtime.compute(*fins, desc=f"fnm pass {k}/{len(batches)}")
            if parcel_avg is not None:
                g = out.group()
                for rows_, parcels in done:
                    out.write_rows(rows_, {f"parcel_{n}": v for n, v in parcels.items()}, group=g)
            # the batch's maps are complete in the store: publish them now, so a killed run keeps them
            records = [r for i in batch for r in self.records(p, todo[i], con, atlas, uri, i)]
            run.publish(records, replace=plan.recompute)
            log.info("fnm: pass %d/%d published (%d seed(s))", k, len(batches), len(batch))
        result.details["passes"] = len(batches)
        result.store, result.computed = url, [s.key for s in todo]

    def _create_store(
        self,
        url: str,
        con: ConnectomeInfo,
        seeds: list[Seed],
        names: tuple[str, ...],
        dropped: dict[str, int],
        atlas: Atlas | None,
        table: pd.DataFrame | None,
        per_subject: bool = False,
    ) -> IncrementalStore:
        """Lay out the derivative store: (seed, voxel) maps, (seed, region) summaries, with
        ``per_subject`` the (seed, subject, voxel) maps of each subject, coordinates, attrs."""
        import xarray as xr

        from lakepipe._version import __version__
        from lakepipe.io.storage import StoreRef
        from lakepipe.io.stores import IncrementalStore

        grid = con.grid
        assert grid is not None
        n_vox, n = con.ijk.shape[0], len(seeds)
        coords = xr.Dataset(
            coords={
                "seed": ("seed", [s.key for s in seeds]),
                "participant": ("seed", [s.participant or "" for s in seeds]),
                "session": ("seed", [s.session or "" for s in seeds]),
                "label": ("seed", [s.label for s in seeds]),
                "seed_voxels_dropped": ("seed", [dropped[s.key] for s in seeds]),
                "ijk": (("voxel", "axis"), con.ijk.astype(np.int16)),
                **(region_coords(table, "region") if table is not None else {}),
                **({"subject": ("subject", con.unit_names)} if per_subject else {}),
            },
            attrs={
                "method": self.name,
                "connectome": con.name,
                "atlas": atlas.name if atlas else None,
                "n_subjects": con.n_units,
                "grid": {"shape": list(grid.shape), "affine": grid.affine.tolist()},
                "space": con.space,
                "parameters": self.output_params(),
                "conventions": FNM_CONVENTIONS,
                "spheres": {s.key: s.meta for s in seeds if s.sphere is not None},
                "lakepipe_version": __version__,
            },
        )
        variables: dict[str, tuple[Sequence[str], Sequence[int], Sequence[int]]] = {}
        for name in names:
            variables[name] = (("seed", "voxel"), (n, n_vox), (1, n_vox))
            if table is not None:
                variables[f"parcel_{name}"] = (("seed", "region"), (n, len(table)), (256, len(table)))
        if per_subject:  # one chunk per seed and subject: each sums task writes its own
            for name in SUBJECT_MAPS:
                variables[name] = (("seed", "subject", "voxel"), (n, con.n_units, n_vox), (1, 1, n_vox))
        return IncrementalStore.create(
            url, coords, variables, StoreRef.here(url).endpoint_url, compress=COMPRESS_MAPS
        )

    # ------------------------------------------------------------------------------------- export
    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """NIfTI maps (+JSON) per seed and statistic, in ``sub-<p>/[ses-<s>/]anat/`` (spheres in
        ``seeds/``), with the space in the name; parcel summaries (rows with an atlas) as TSV + JSON."""
        from concurrent.futures import ThreadPoolExecutor

        from lakepipe.io import bidsout
        from lakepipe.io.stores import open_derivative

        out = Path(out_dir)
        bidsout.dataset_description(out)
        if statistics:
            rows = rows[rows["statistic"].isin(statistics)]
        files: list[Path] = []
        maps: list[tuple[Any, ...]] = []  # what _write_map writes at each voxel map's path
        for uri, grp in rows.groupby("store_uri", sort=False):
            ds = open_derivative(lake.store_url(str(uri)))
            affine = np.asarray(ds.attrs["grid"]["affine"])
            space = ds.attrs.get("space")
            for (index, atlas), seed_rows in grp.groupby(
                [grp["store_index"].astype(int), grp["atlas"].fillna("")], sort=False
            ):
                i = int(index)
                p_, s_, lab = (str(ds[c].values[i]) or None for c in ("participant", "session", "label"))
                key = str(ds["seed"].values[i])
                ent = {"sub": p_, "ses": s_, "label": lab} if p_ else {"seed": lab}
                meta = {
                    "Method": self.name,
                    "Connectome": ds.attrs["connectome"],
                    "Space": space,
                    "NumberOfSubjects": ds.attrs["n_subjects"],
                    "SeedVoxelsDropped": int(ds["seed_voxels_dropped"].values[i]),
                    "Conventions": ds.attrs["conventions"],
                    "LakepipeVersion": ds.attrs["lakepipe_version"],
                    **({"Sphere": ds.attrs["spheres"][key]} if key in ds.attrs.get("spheres", {}) else {}),
                }
                for stat in seed_rows["statistic"]:
                    desc = FNM_CONVENTIONS.get(stat, stat)
                    if atlas:
                        table = pd.DataFrame(
                            {
                                "index": ds["region"].values,
                                "name": ds["region_name"].values,
                                "network": ds["region_network"].values,
                                stat: ds[f"parcel_{stat}"][i].values,
                            }
                        )
                        path = bidsout.derivative_path(
                            out,
                            {**ent, "space": space, "method": self.name, "atlas": atlas, "desc": stat},
                            "parcelstats",
                            ".tsv",
                        )
                        files.append(
                            bidsout.write_tsv(
                                path,
                                table,
                                {
                                    **meta,
                                    "Statistic": stat,
                                    "Atlas": atlas,
                                    "Summary": "mean over the parcel's in-mask voxels",
                                },
                            )
                        )
                        continue
                    extra = {}
                    if stat in SUBJECT_MAPS:  # 4D: one volume per connectome subject, in this order
                        extra = {"VolumeSubjects": [str(v) for v in ds["subject"].values]}
                    path = bidsout.derivative_path(
                        out,
                        {**ent, "space": space, "method": self.name, "desc": stat.replace("_", "")},
                        "statmap",
                        ".nii.gz",
                    )
                    sidecar = {**meta, "Statistic": stat, "Description": desc, **extra}
                    if stat in SUBJECT_MAPS:  # one volume per subject: one such map in memory at a time
                        _write_map(ds, stat, i, affine, path, space, sidecar)
                    else:
                        maps.append((ds, stat, i, affine, path, space, sidecar))
                    files.append(path)
        # the group maps are read and gzipped in threads (zlib and the store reads release the GIL):
        # with many seeds this is most of an export's time
        with ThreadPoolExecutor(EXPORT_THREADS, thread_name_prefix="fnm-export") as pool:
            for _ in pool.map(lambda job: _write_map(*job), maps):  # each map's error is raised here
                pass
        return files


def _write_map(
    ds: xr.Dataset, stat: str, row: int, affine: np.ndarray, path: Path, space: str | None, sidecar: dict
) -> None:
    """One seed's voxel map as NIfTI, with its JSON sidecar."""
    from lakepipe.io import bidsout
    from lakepipe.io.nifti import write_nifti
    from lakepipe.io.stores import voxel_volume

    write_nifti(voxel_volume(ds, stat, row), affine, path, space)
    bidsout.write_sidecar(bidsout.sidecar_path(path), sidecar)


METHOD = Fnm()
