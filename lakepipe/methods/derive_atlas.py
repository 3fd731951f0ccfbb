"""``atlas derive``: an atlas of regions extracted from a decomposition of the lake's connectome.

nilearn's "regions extraction using dictionary learning and functional connectomes", on the lake:
the connectome's subjects are decomposed into K network maps by ``nilearn.decomposition.DictLearning``
or ``CanICA``, the maps are split into spatially contiguous regions by
``nilearn.regions.RegionExtractor`` (its thresholding and minimum region size options), and the regions
become a label atlas in the lake (``atlases/<name>.zarr``: label volume, one table row per region with
its source component as its network, plus the 4D component maps), usable wherever an ingested atlas
is (``parcellate``, ``run afnm``, ``plot fc`` orders its regions by component).

Streaming (why it equals nilearn's ``fit``): nilearn's estimators reduce each subject on its own
(``_mask_and_reduce_single``: mask, smooth, clean, keep the subject's K leading principal maps) and
only then decompose the stack of reduced subjects (``_raw_fit``). Here one Dask task per group of
subjects reads its subjects from the Zarr store one at a time (raw series = stored unit-norm series x
scale + mean, the first ``n_valid`` frames), smooths them as nilearn's masker does
(``nilearn.image.smooth_img``, a block of frames at a time: the filter acts on the three spatial axes
only, so blocks give the same frames), cleans them with the masker's call
(``nilearn.signal.clean(detrend=True, standardize="zscore_sample")``) and reduces them
(:func:`lakepipe.compute.decomposition.reduce_subject`: the exact SVD nilearn's ``_fast_svd`` computes,
see there); the stacked reductions, in subject order, go to the estimator's own ``_raw_fit``. Memory:
one subject's series per task (a few frames of the full grid when smoothing) and the stack,
``sum(K) x voxels`` float32, never the whole connectome. A participant's runs (rows of one group) are
reduced separately, as nilearn treats each image it is given.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd
import xarray as xr

from lakepipe._version import __version__
from lakepipe.bids import check_entity
from lakepipe.catalog import OutputRecord, content_hash
from lakepipe.compute.decomposition import lasso_code, reduce_subject, regions_to_labels
from lakepipe.errors import InputError
from lakepipe.io import bidsout, layout
from lakepipe.io.nifti import write_nifti
from lakepipe.io.storage import StoreRef, zarr_store
from lakepipe.io.stores import write_atlas
from lakepipe.io.stores.atlases import atlas_maps, read_atlas
from lakepipe.io.stores.rows import open_rows
from lakepipe.methods.base import Method, MethodResult, Plan, PlanItem, Statistic
from lakepipe.methods.common import ConnectomeInfo, connectome_info, subject_groups, tasks_for
from lakepipe.methods.params.base import Params
from lakepipe.methods.params.derive_atlas import DeriveAtlasParams

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext
    from lakepipe.space import Grid

log = logging.getLogger(__name__)

#: nilearn's default smoothing of each estimator (FWHM, mm)
DEFAULT_SMOOTHING = {"dictlearning": 4.0, "canica": 6.0}
#: frames smoothed at once (a block of full-grid volumes: 3.6 MB a frame at 2 mm)
SMOOTH_BLOCK = 16


# ------------------------------------------------------------------------------------ worker tasks


def _smooth(
    raw: np.ndarray, ijk: np.ndarray, grid_shape: tuple[int, ...], affine: np.ndarray, fwhm: float
) -> np.ndarray:
    """``raw`` (T, V) smoothed as nilearn's masker smooths the 4D image, a block of frames at a time.

    Values outside the mask are 0 (the stored connectome holds only in-mask voxels), so the volume is
    cut to the mask's bounding box widened by the Gaussian kernel's radius (scipy truncates it at 4
    sd) plus one voxel: inside that margin the full grid holds zeros too, so the filter, which
    reflects at the array's edges, sees the same zeros and every in-mask value is unchanged.
    """
    from nilearn.image import smooth_img

    sd_vox = fwhm / np.sqrt(8 * np.log(2)) / np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    pad = np.ceil(4.0 * sd_vox + 0.5).astype(int) + 1
    lo = np.maximum(ijk.min(axis=0) - pad, 0)
    hi = np.minimum(ijk.max(axis=0) + pad + 1, np.asarray(grid_shape[:3]))
    shift = np.eye(4)
    shift[:3, 3] = lo
    box_affine = np.asarray(affine) @ shift
    idx = tuple((ijk - lo).T)
    out = np.empty_like(raw)
    for a in range(0, raw.shape[0], SMOOTH_BLOCK):
        b = min(a + SMOOTH_BLOCK, raw.shape[0])
        vol = np.zeros((*(hi - lo), b - a), np.float32)
        vol[idx] = raw[a:b].T
        smoothed = np.asarray(smooth_img(nib.Nifti1Image(vol, box_affine), fwhm).dataobj)
        out[a:b] = smoothed[idx].T
    return out


def _reduce_rows(
    ref: StoreRef,
    rows: list[int],
    ijk: np.ndarray,
    grid_shape: tuple[int, ...],
    affine: np.ndarray,
    fwhm: float | None,
    n_components: int,
) -> list[np.ndarray]:
    """Each store row read, smoothed, cleaned and reduced to its leading maps (runs on a worker;
    memory: one row's series)."""
    from nilearn import signal

    src = open_rows(ref)
    buf = np.empty(src.shape[1:], np.float32)
    out = []
    try:
        for r in rows:
            src.read_into(r, buf)
            t = src.shape[1] if src.n_valid is None else int(src.n_valid[r])
            raw = buf[:t] * src.scale(r) + src.mean(r)
            if fwhm:
                raw = _smooth(raw, ijk, grid_shape, affine, fwhm)
            clean = signal.clean(raw, detrend=True, standardize="zscore_sample", standardize_confounds=True)
            out.append(reduce_subject(clean, n_components))
    finally:
        src.close()
    return out


# ------------------------------------------------------------------------------------------ method


def _dictlearning_maps(est: Any, data: np.ndarray) -> np.ndarray:
    """nilearn's ``DictLearning._raw_fit`` on the stacked reductions, its last step (the sparse code
    of every voxel on the learned dictionary) by :func:`lasso_code`, the same lasso problems solved on
    all voxels at once instead of scikit-learn's Lasso fit per voxel (0.2 ms each: 50 s at 2 mm)."""
    from sklearn.decomposition import dict_learning_online

    est._init_dict(data)  # CanICA's maps, then their loadings: nilearn's initial dictionary
    est._init_loadings(data)
    n_voxels = data.shape[1]
    dictionary = dict_learning_online(
        data.T,
        est.n_components,
        alpha=est.alpha,
        batch_size=est.batch_size,
        method=est.method,
        dict_init=est.loadings_init_,
        random_state=est.random_state,
        return_code=False,
        shuffle=True,
        n_jobs=1,
        max_iter=((n_voxels - 1) // est.batch_size + 1) * est.n_epochs,
    )
    maps = lasso_code(data.T, dictionary, est.alpha).T
    norms = np.sqrt((maps**2).sum(axis=1))  # unit norm, then the sign with the larger positive part
    maps /= np.where(norms == 0, 1.0, norms)[:, None]
    flip = (maps > 0).sum(axis=1) < (maps < 0).sum(axis=1)
    maps[flip] *= -1
    return np.asarray(maps, np.float32)


def _mask_image(con: ConnectomeInfo, ijk: np.ndarray) -> nib.Nifti1Image:
    grid = con.grid
    assert grid is not None
    mask = np.zeros(grid.shape, np.int8)
    mask[tuple(ijk.T)] = 1
    return nib.Nifti1Image(mask, grid.affine)


def _hemisphere(xyz: np.ndarray) -> str | None:
    """``L``/``R`` for a region (nearly) all on one side of the midline, None for a bilateral one."""
    left = float(np.mean(xyz[:, 0] < 0))
    return "L" if left >= 0.9 else "R" if left <= 0.1 else None


class DeriveAtlas(Method):
    name = "derive-atlas"
    command = ("atlas", "derive")
    params_type = DeriveAtlasParams
    statistics = (
        Statistic("dseg", "label volume of the extracted regions", variable="dseg"),
        Statistic("components", "the K component maps (4D) the regions came from", variable="components"),
    )
    default_statistic = "dseg"
    per_seed = False

    # ---- parameters and records
    def atlas_name(self, p: DeriveAtlasParams) -> str:
        name = p.name or f"{p.connectome}{p.decomposition}{p.n_components}"
        return check_entity(name, "atlas")

    def output_params(self, p: DeriveAtlasParams) -> dict[str, Any]:
        out = p.to_dict()
        out.pop("name")
        # options the chosen estimator or extractor does not use do not make another atlas
        unused: tuple[str, ...] = (
            ("n_init",) if p.decomposition == "dictlearning" else ("alpha", "n_epochs", "dict_method")
        )
        unused += ("region_smoothing_fwhm",) if p.extractor == "connected_components" else ()
        for key in unused:
            out.pop(key)
        out["smoothing_fwhm"] = self.smoothing(p)
        out["cleaning"] = {"detrend": True, "standardize": "zscore_sample"}
        out["reduction"] = "per subject: K leading principal maps (exact SVD), as nilearn's _mask_and_reduce"
        return out

    def smoothing(self, p: DeriveAtlasParams) -> float | None:
        fwhm = DEFAULT_SMOOTHING[p.decomposition] if p.smoothing_fwhm is None else float(p.smoothing_fwhm)
        if fwhm < 0:
            raise InputError(f"--smoothing-fwhm must be >= 0 (0: no smoothing), got {fwhm:g}")
        return fwhm or None

    def inputs(self, params: Params) -> set[str]:
        assert isinstance(params, DeriveAtlasParams)
        return {f"connectome:{params.connectome}"}

    def products(self, params: Params) -> set[str]:
        assert isinstance(params, DeriveAtlasParams)
        return {self.name, f"atlas:{self.atlas_name(params)}"}

    def records(
        self,
        lake: Lake,
        p: DeriveAtlasParams,
        con: ConnectomeInfo,
        shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> list[OutputRecord]:
        name = self.atlas_name(p)
        uri = layout.relative(lake.url, layout.atlas_store(lake.url, name))
        return [
            OutputRecord(
                kind="atlas",
                method=self.name,
                statistic=s.name,
                atlas=name,
                connectome=con.name,
                params=self.output_params(p),
                inputs={"connectome": con.identity},
                store_uri=uri,
                store_index=s.name,
                shape=(shapes or {}).get(s.name),
            )
            for s in self.statistics
        ]

    # ---- plan
    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        assert isinstance(params, DeriveAtlasParams)
        p = params
        con = connectome_info(lake, p.connectome)
        if con.kind != "voxel":
            raise InputError(
                f"connectome '{con.name}' holds parcel series: a decomposition into network maps needs a "
                "voxel-level connectome"
            )
        units = con.units
        if p.subjects is not None and p.subjects > len(units):
            raise InputError(
                f"--subjects {p.subjects}, but connectome '{con.name}' has {len(units)} subjects"
            )
        units = units[: p.subjects] if p.subjects else units
        if len(units) < 1:
            raise InputError(f"connectome '{con.name}' has no subjects")
        self._check_components(con, units, p.n_components)
        self.smoothing(p)
        name = self.atlas_name(p)
        item = PlanItem(f"{con.name} -> atlas {name}", self.records(lake, p, con))
        plan = Plan(self.name, p, [item], recompute=recompute, context={"connectome": con, "units": units})
        self.mark_done(lake, plan.items)
        if not item.done:
            existing = lake.catalog.query(kind="atlas", atlas=name)
            if len(existing) and not (recompute and set(existing["method"]) == {self.name}):
                how = (
                    "derived with other parameters or inputs"
                    if set(existing["method"]) == {self.name}
                    else "ingested"
                )
                raise InputError(
                    f"atlas '{name}' is already in the lake ({how}); choose another --name"
                    + (" or --recompute to replace it" if how.startswith("derived") else "")
                )
        return plan

    def _check_components(self, con: ConnectomeInfo, units: list[list[int]], k: int) -> None:
        """K is refused when a subject's reduction could not keep K maps (fewer frames than K) or when
        there are fewer voxels than K."""
        rows = [r for u in units for r in u]  # store rows
        n_time = int(con.dataset.sizes["time"])
        # the dataset holds the registered rows, in the order of con.positions (their store rows)
        valid = con.dataset["n_valid"].values if "n_valid" in con.dataset else [n_time] * len(con.positions)
        n_of_row = dict(zip(con.positions, (int(v) for v in valid), strict=True))
        frames = [n_of_row[r] for r in rows]
        shortest = min(frames)
        n_vox = int(con.dataset.sizes["voxel"])
        if k > shortest or k >= n_vox:
            raise InputError(
                f"--n-components {k} is more than the data allow: each subject is first reduced to K "
                f"principal maps over time, and the shortest of the {len(rows)} series has {shortest} time "
                f"points (connectome '{con.name}', {n_vox} voxels); choose K <= {min(shortest, n_vox - 1)}"
            )

    # ---- run
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
        assert isinstance(params, DeriveAtlasParams)
        p = params
        plan = plan or self.plan(lake, p, recompute=recompute)
        con: ConnectomeInfo = plan.context["connectome"]
        name = self.atlas_name(p)
        result = MethodResult(self.name)
        if not plan.todo:
            run.count_skipped(len(plan.items[0].records))
            result.skipped = [plan.items[0].key]
            atlas = read_atlas(lake.url, name)
            result.message = f"atlas '{name}' ({atlas.n_regions} regions) already in the lake"
        else:
            details = self._derive(lake, run, p, con, plan.context["units"], name, plan.recompute)
            result.computed, result.details = [plan.items[0].key], details
            result.store = layout.atlas_store(lake.url, name)
            result.message = (
                f"atlas '{name}': {details['n_regions']} regions from {p.n_components} {p.decomposition} "
                f"components of {details['n_subjects']} subjects of {con.name}"
                + (" (recomputed)" if plan.recompute else "")
            )
        if bids_out:
            result.files = self.export(lake, lake.published(plan.items[0].records), bids_out)
        log.info(result.message)
        return result

    def _decompose(self, p: DeriveAtlasParams, data: np.ndarray, mask_img: nib.Nifti1Image) -> np.ndarray:
        """The estimator's group stage on the stacked reductions: (K, V) maps in the mask's voxel order."""
        from nilearn.decomposition import CanICA, DictLearning
        from nilearn.maskers import NiftiMasker

        common = {"n_components": p.n_components, "random_state": p.random_state, "mask": mask_img}
        if p.decomposition == "dictlearning":
            est: Any = DictLearning(alpha=p.alpha, n_epochs=p.n_epochs, method=p.dict_method, **common)
        else:
            est = CanICA(n_init=p.n_init, **common)
        # what fit() sets before _raw_fit (DictLearning's CanICA initialisation reads it)
        est.masker_ = NiftiMasker(mask_img=mask_img).fit()
        # one BLAS thread, as on a Dask worker: in a long-lived process that had run Dask clusters
        # and subprocesses, scipy's OpenBLAS deadlocked starting its threads here (its
        # blas_thread_init waiting on its own lock, seen once in the test suite); the group stage
        # is a few small SVDs and sparse codings, so one thread costs little
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", UserWarning)
            if p.decomposition == "dictlearning":
                return _dictlearning_maps(est, data)
            est._raw_fit(data)
        return np.asarray(est.components_, np.float32)

    def _derive(
        self,
        lake: Lake,
        run: RunContext,
        p: DeriveAtlasParams,
        con: ConnectomeInfo,
        units: list[list[int]],
        name: str,
        recompute: bool,
    ) -> dict[str, Any]:
        import dask

        grid = con.grid
        assert grid is not None
        ijk = np.asarray(con.ijk, np.int64)
        # nilearn's masker orders voxels in C order of the mask: stack the reductions that way
        order = np.argsort(np.ravel_multi_index(tuple(ijk.T), grid.shape), kind="stable")
        fwhm = self.smoothing(p)
        ref = StoreRef.here(layout.connectome_store(lake.url, con.name))
        rows = [r for u in units for r in u]
        groups = subject_groups(len(rows), tasks_for(run.runtime.n_workers, len(rows)))
        ijk_d = run.runtime.literal(ijk, "derive-ijk")
        parts = [
            dask.delayed(_reduce_rows, pure=False)(
                ref, [rows[i] for i in g], ijk_d, tuple(grid.shape), grid.affine, fwhm, p.n_components
            )
            for g in groups
        ]
        reduced = run.runtime.compute(*parts, desc=f"derive-atlas: reduce {con.name}")
        data = np.concatenate([m for part in reduced for m in part], axis=0)[:, order]
        del reduced
        mask_img = _mask_image(con, ijk)
        components = np.empty((p.n_components, ijk.shape[0]), np.float32)
        components[:, order] = self._decompose(p, data, mask_img)
        del data
        empty = [f"C{k + 1:02d}" for k in range(p.n_components) if not components[k].any()]
        if len(empty) == p.n_components:
            raise InputError(
                f"the {p.decomposition} decomposition gave {p.n_components} all-zero maps"
                + (
                    f": --alpha {p.alpha:g} is too sparse for these data; lower --alpha"
                    if p.decomposition == "dictlearning"
                    else ""
                )
            )
        if empty:
            log.warning(
                "derive-atlas: %d of %d components are all zero: %s", len(empty), p.n_components, empty
            )
        maps = np.zeros((*grid.shape, p.n_components), np.float32)
        maps[tuple(ijk.T)] = components.T
        labels, table, dropped, per_component = self._regions(p, maps, mask_img, grid)
        comp_names = [f"C{k + 1:02d}" for k in range(p.n_components)]
        volume_hash = hashlib.sha256(np.ascontiguousarray(labels).tobytes())
        volume_hash.update(np.round(grid.affine, 6).tobytes())
        digest = content_hash({"dseg": volume_hash.hexdigest(), "table": table.to_csv(index=False)})
        write_atlas(
            lake.url,
            name,
            labels,
            grid,
            table,
            con.space,
            {
                "source": f"derive-atlas of connectome {con.name}",
                "sha256": digest,
                "derivation": self.output_params(p),
                "connectome": con.name,
                "n_subjects": len(units),
                "dropped_regions": dropped,
                "regions_per_component": per_component,
                "lakepipe_version": __version__,
            },
            kind="derived",
            maps=maps,
            component_names=comp_names,
        )
        shapes = {"dseg": tuple(grid.shape), "components": (*grid.shape, p.n_components)}
        run.publish(self.records(lake, p, con, shapes), replace=recompute)
        return {
            "n_regions": len(table),
            "n_subjects": len(units),
            "regions_per_component": per_component,
            "dropped_regions": dropped,
        }

    def _regions(
        self, p: DeriveAtlasParams, maps: np.ndarray, mask_img: nib.Nifti1Image, grid: Grid
    ) -> tuple[np.ndarray, pd.DataFrame, list[str], dict[str, int]]:
        """RegionExtractor on the component maps, then a label volume (a voxel in several regions takes
        the one with the largest map value) and its table."""
        from nilearn.regions import RegionExtractor

        extractor = RegionExtractor(
            nib.Nifti1Image(maps, grid.affine),
            mask_img=mask_img,
            threshold=p.threshold,
            thresholding_strategy=p.thresholding_strategy,
            min_region_size=p.min_region_size,
            extractor=p.extractor,
            smoothing_fwhm=p.region_smoothing_fwhm,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                extractor.fit()
            regions = np.asarray(extractor.regions_img_.dataobj, np.float32)
            index = [int(i) for i in extractor.index_]
        except (TypeError, ValueError) as exc:
            # nilearn fails on an empty extraction (connected_regions returns no image)
            if self._supra_threshold(p, maps, mask_img):
                raise InputError(
                    f"no region left after extraction: every region is smaller than --min-region-size "
                    f"{p.min_region_size:g} mm^3; lower --min-region-size"
                ) from None
            raise InputError(
                f"no region left after extraction: no map value passes --threshold {p.threshold:g} "
                f"({p.thresholding_strategy}); lower --threshold"
            ) from exc
        if regions.ndim == 3:
            regions = regions[..., None]
        labels, counts = regions_to_labels(regions)
        if not counts.any():
            raise InputError(
                "no region left after extraction: lower --threshold or --min-region-size"
            )  # pragma: no cover - RegionExtractor returns no empty region
        ijk_mm = np.argwhere(labels > 0)
        xyz = ijk_mm @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        lab = labels[tuple(ijk_mm.T)]
        rows: list[dict[str, Any]] = []
        dropped: list[str] = []
        remap = np.zeros(counts.size + 1, np.int32)
        seen: dict[int, int] = {}
        for r in range(counts.size):
            comp = index[r]
            seen[comp] = seen.get(comp, 0) + 1
            rname = f"C{comp + 1:02d}-{seen[comp]:02d}"
            if counts[r] == 0:
                dropped.append(rname)
                continue
            remap[r + 1] = len(rows) + 1
            rows.append(
                {
                    "index": len(rows) + 1,
                    "name": rname,
                    "network": f"C{comp + 1:02d}",
                    "hemisphere": _hemisphere(xyz[lab == r + 1]),
                }
            )
        if dropped:
            log.info("derive-atlas: %d region(s) lie entirely under other regions: %s", len(dropped), dropped)
        per_component = pd.Series([r["network"] for r in rows]).value_counts(sort=False).to_dict()
        return remap[labels], pd.DataFrame(rows), dropped, {str(k): int(v) for k, v in per_component.items()}

    def _supra_threshold(self, p: DeriveAtlasParams, maps: np.ndarray, mask_img: nib.Nifti1Image) -> bool:
        """Whether nilearn's thresholding step (RegionExtractor's first) leaves any voxel."""
        from nilearn.image import threshold_img
        from nilearn.regions.region_extractor import _threshold_maps_ratio

        img = nib.Nifti1Image(maps, mask_img.affine)
        with warnings.catch_warnings():  # nilearn warns about the very threshold being diagnosed
            warnings.simplefilter("ignore", UserWarning)
            if p.thresholding_strategy == "ratio_n_voxels":
                kept = _threshold_maps_ratio(img, p.threshold)
            else:
                thr: float | str = (
                    f"{p.threshold}%" if p.thresholding_strategy == "percentile" else p.threshold
                )
                kept = threshold_img(img, threshold=thr, mask_img=mask_img, copy=True, two_sided=False)
        return bool(np.any(np.asarray(kept.dataobj) > 0))

    # ---- outputs
    def outputs(self, lake: Lake, plan: Plan, statistic: str | None = None) -> xr.Dataset:  # type: ignore[override]
        """The atlas as a lazy Dataset: ``dseg`` (i, j, k), the region table, ``components`` (i, j, k,
        component)."""
        name = self.atlas_name(plan.params)  # type: ignore[arg-type]
        ds = xr.open_zarr(
            zarr_store(layout.atlas_store(lake.url, name), read_only=True), zarr_format=3, consolidated=False
        )
        return ds

    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """``space-<space>_atlas-<name>_dseg.{nii.gz,tsv,json}`` and
        ``space-<space>_atlas-<name>_desc-components_statmap.{nii.gz,json}`` per derived atlas."""
        out = Path(out_dir)
        bidsout.dataset_description(out)
        files: list[Path] = []
        for name, group in rows.groupby("atlas", sort=False):
            atlas = read_atlas(lake.url, str(name))
            stats = set(group["statistic"]) & set(statistics or group["statistic"])
            ent = {"space": atlas.space, "atlas": str(name)}
            meta = {
                "Description": "regions extracted from a decomposition of connectome "
                + str((atlas.attrs or {}).get("connectome")),
                "Derivation": (atlas.attrs or {}).get("derivation"),
                "Space": atlas.space,
                "NumberOfSubjects": (atlas.attrs or {}).get("n_subjects"),
                "LakepipeVersion": __version__,
            }
            if "dseg" in stats:
                path = bidsout.derivative_path(out, ent, "dseg", ".nii.gz")
                files.append(write_nifti(atlas.labels.astype(np.int16), atlas.grid.affine, path, atlas.space))
                bidsout.write_sidecar(bidsout.sidecar_path(path), meta)
                tsv = bidsout.derivative_path(out, ent, "dseg", ".tsv")
                files.append(bidsout.write_tsv(tsv, atlas.table, meta))
            if "components" in stats:
                maps = atlas_maps(lake.url, str(name))
                assert maps is not None
                path = bidsout.derivative_path(out, {**ent, "desc": "components"}, "statmap", ".nii.gz")
                files.append(write_nifti(np.asarray(maps[:]), atlas.grid.affine, path, atlas.space))
                bidsout.write_sidecar(bidsout.sidecar_path(path), {**meta, "Description": "component maps"})
        return files


METHOD = DeriveAtlas()
