"""fMRIPrep derivatives as a connectome source: preprocessed BOLD runs cleaned with nilearn.

Runs are found as fMRIPrep names them, ``sub-<p>/[ses-<s>/]func/sub-<p>[_ses-<s>]_task-<t>[_run-<n>]_
space-<space>[_res-<r>]_desc-preproc_bold.nii.gz`` with ``..._desc-confounds_timeseries.tsv`` (and its
JSON) and the BOLD's JSON sidecar (``RepetitionTime``). Each run is cleaned the way the nilearn
seed-to-voxel recipe cleans it, with nilearn's own machinery: confounds and the sample mask from
:func:`nilearn.interfaces.fmriprep.load_confounds_strategy` (``simple``, ``scrubbing``, ``compcor``,
...), then :class:`nilearn.maskers.NiftiMasker` with the same option names (``smoothing_fwhm``,
``detrend``, ``standardize``, ``low_pass``, ``high_pass``, ``t_r``), after the run is resampled onto
the lake's target grid and brain mask (default: the MNI152NLin6Asym 2 mm grid and brain mask) with
:func:`nilearn.image.resample_img` (``interpolation``: ``linear`` by default, where NiftiMasker would
use ``continuous``, a cubic spline: it rings around the edge of the acquired brain, and costs 5.6x as
much, 0.53 s against 0.094 s a 4 mm volume onto the 2 mm grid on a 2-core Xeon). A
subject's runs are concatenated after cleaning (``runs="concat"``) or kept apart as rows of their own
(``runs="average"``: the analyses average each subject's per-run maps, the Lead-DBS convention).
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lakepipe.bids import check_entity, parse_entities
from lakepipe.errors import InputError
from lakepipe.io.sources.base import (
    ConnectomeSource,
    SubjectRef,
    VoxelGeometry,
    file_fingerprint,
    register_source,
)
from lakepipe.space import Grid, mni152_brain_mask_2mm, mni152_grid

STRATEGIES = ("simple", "scrubbing", "compcor", "ica_aroma", "none")
#: nilearn's resample_img interpolations for runs not on the target grid
INTERPOLATIONS = ("linear", "continuous", "nearest")
RUNS = ("concat", "average")
_BOLD = re.compile(r"_desc-preproc_bold\.nii(\.gz)?$")


@dataclass(frozen=True)
class Run:
    """One preprocessed BOLD run and its companions."""

    participant: str
    session: str | None
    task: str
    run: str | None
    bold: Path
    confounds: Path
    n_volumes: int
    t_r: float

    @property
    def label(self) -> str:
        return (
            f"sub-{self.participant}"
            + (f"_ses-{self.session}" if self.session else "")
            + (f"_run-{self.run}" if self.run else "")
        )


@dataclass(frozen=True)
class Cleaning:
    """How each run is cleaned (nilearn's names); recorded with the connectome."""

    strategy: str = "simple"
    detrend: bool = True
    standardize: str | bool = "zscore_sample"
    low_pass: float | None = None
    high_pass: float | None = None
    t_r: float | None = None
    smoothing_fwhm: float | None = None
    fd_threshold: float | None = None
    std_dvars_threshold: float | None = None
    min_volumes: int = 30
    #: onto the target grid: nilearn's resample_img interpolation (linear: no spline ringing, 5x faster)
    interpolation: str = "linear"

    def confound_kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.strategy == "scrubbing":
            if self.fd_threshold is not None:
                out["fd_threshold"] = self.fd_threshold
            if self.std_dvars_threshold is not None:
                out["std_dvars_threshold"] = self.std_dvars_threshold
        return out


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_name(_BOLD.sub("_desc-preproc_bold.json", path.name))
    try:
        loaded: dict[str, Any] = json.loads(side.read_text())
        return loaded
    except FileNotFoundError:
        raise InputError("no JSON sidecar (RepetitionTime) next to the BOLD run", path) from None
    except ValueError as exc:
        raise InputError(f"BOLD sidecar is not valid JSON ({exc})", side) from None


def _confounds_path(bold: Path, ent: dict[str, str]) -> Path:
    parts = [f"sub-{ent['sub']}"] + [f"{k}-{ent[k]}" for k in ("ses", "task", "acq", "run") if k in ent]
    return bold.with_name("_".join(parts) + "_desc-confounds_timeseries.tsv")


@register_source("fmriprep")
@dataclass
class FmriprepSource(ConnectomeSource):
    """fMRIPrep derivatives cleaned with nilearn (see the module docstring)."""

    variable_time: ClassVar[bool] = True
    takes_space: ClassVar[bool] = True
    task: str | None = None
    bold_space: str = "MNI152NLin6Asym"
    cleaning: Cleaning = field(default_factory=Cleaning)
    runs_mode: str = "concat"
    mask_path: str | None = None
    runs: dict[str, list[Run]] = field(default_factory=dict)

    @classmethod
    def detect(cls, root: Path) -> bool:
        desc = root / "dataset_description.json"
        if desc.exists():
            try:
                generated = json.loads(desc.read_text()).get("GeneratedBy", [])
            except ValueError:
                generated = []
            if any(str(g.get("Name", "")).lower() == "fmriprep" for g in generated if isinstance(g, dict)):
                return True
        return any(_BOLD.search(p.name) for p in root.glob("sub-*/**/func/*"))

    @classmethod
    def open(cls, root: Path, **options: Any) -> FmriprepSource:
        known = {
            "task",
            "participant_label",
            "space",
            "res",
            "mask",
            "runs",
            "confounds_strategy",
            "detrend",
            "standardize",
            "low_pass",
            "high_pass",
            "t_r",
            "smoothing_fwhm",
            "fd_threshold",
            "std_dvars_threshold",
            "min_volumes",
            "interpolation",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"fMRIPrep sources take no {'/'.join(unknown)} option", root)
        strategy = str(options.get("confounds_strategy", "simple"))
        if strategy not in STRATEGIES:
            raise InputError(f"--confounds-strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        runs_mode = str(options.get("runs", "concat"))
        if runs_mode not in RUNS:
            raise InputError(f"--runs must be concat or average, not {runs_mode!r}")
        interpolation = str(options.get("interpolation") or "linear")
        if interpolation not in INTERPOLATIONS:
            raise InputError(
                f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, not {interpolation!r}"
            )
        standardize = options.get("standardize", "zscore_sample")
        if isinstance(standardize, str) and standardize.lower() in ("false", "none", "no"):
            standardize = False
        cleaning = Cleaning(
            strategy=strategy,
            detrend=bool(options.get("detrend", True)),
            standardize=standardize,
            low_pass=_float(options.get("low_pass")),
            high_pass=_float(options.get("high_pass")),
            t_r=_float(options.get("t_r")),
            smoothing_fwhm=_float(options.get("smoothing_fwhm")),
            fd_threshold=_float(options.get("fd_threshold")),
            std_dvars_threshold=_float(options.get("std_dvars_threshold")),
            min_volumes=int(options.get("min_volumes") or 30),
            interpolation=interpolation,
        )
        space = str(options.get("space") or "MNI152NLin6Asym")
        wanted = {check_entity(p, "sub") for p in options.get("participant_label") or []} or None
        src = cls(
            root=root,
            kind="voxel",
            task=options.get("task"),
            bold_space=space,
            cleaning=cleaning,
            runs_mode=runs_mode,
            mask_path=str(options["mask"]) if options.get("mask") else None,
        )
        src.geometry = src._target_geometry()
        src._find_runs(wanted, options.get("res"))
        return src

    # ---- discovery --------------------------------------------------------------------------------
    def _target_geometry(self) -> VoxelGeometry:
        """The lake's target grid and brain mask (in-mask voxels in C order)."""
        if self.mask_path:
            from lakepipe.io.nifti import load_volume

            data, grid = load_volume(self.mask_path, "a brain mask")
            mask = np.asarray(data) > 0
        else:
            grid, mask = mni152_grid(2), mni152_brain_mask_2mm()
        ijk = np.argwhere(mask).astype(np.int32)
        if ijk.size == 0:
            raise InputError("brain mask is empty", self.mask_path or "MNI152 brain mask")
        return VoxelGeometry(grid, ijk)

    def _find_runs(self, wanted: set[str] | None, res: Any) -> None:
        from lakepipe.io.nifti import load_image

        found = sorted(p for p in self.root.glob("sub-*/**/func/*") if _BOLD.search(p.name))
        if not found:
            raise InputError("no fMRIPrep BOLD runs (sub-*/func/*_desc-preproc_bold.nii.gz)", self.root)
        spaces, tasks = set(), set()
        t_rs: dict[float, Path] = {}
        for bold in found:
            ent = parse_entities(bold.name)
            participant = check_entity(ent.get("sub", ""), "sub", str(bold))
            if wanted is not None and participant not in wanted:
                continue
            tasks.add(ent.get("task", ""))
            if self.task and ent.get("task") != self.task:
                continue
            space = ent.get("space", "")
            spaces.add(space)
            if space != self.bold_space or (res is not None and ent.get("res") != str(res)):
                continue
            confounds = _confounds_path(bold, ent)
            if not confounds.exists():
                raise InputError(f"no confounds file for this run (expected {confounds.name})", bold)
            img = load_image(bold)
            if len(img.shape) != 4:
                raise InputError(f"expected a 4D BOLD run, got shape {img.shape}", bold)
            side = _sidecar(bold)
            if "RepetitionTime" not in side:
                raise InputError("the BOLD sidecar has no RepetitionTime", bold)
            t_r = float(side["RepetitionTime"])
            header_tr = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 0.0
            units = img.header.get_xyzt_units()[1]
            if units == "msec":
                header_tr /= 1000.0
            if header_tr > 0 and abs(header_tr - t_r) > 1e-3 * t_r:
                raise InputError(f"the NIfTI header says TR {header_tr:g} s, the sidecar {t_r:g} s", bold)
            if self.cleaning.t_r is not None and abs(self.cleaning.t_r - t_r) > 1e-3 * t_r:
                raise InputError(
                    f"--t-r {self.cleaning.t_r:g} s differs from the sidecar's RepetitionTime {t_r:g} s", bold
                )
            t_rs.setdefault(t_r, bold)
            self._check_field_of_view(img, bold)
            run = Run(
                participant,
                ent.get("ses"),
                ent.get("task", ""),
                ent.get("run"),
                bold,
                confounds,
                int(img.shape[3]),
                t_r,
            )
            self.runs.setdefault(participant, []).append(run)
        if len(t_rs) > 1:
            (a, pa), (b, pb) = list(t_rs.items())[:2]
            raise InputError(f"runs have different repetition times ({a:g} s in {pa.name}, {b:g} s)", pb)
        if not self.runs:
            problem = f"no BOLD run in space {self.bold_space}" + (
                f" for task {self.task}" if self.task else ""
            )
            raise InputError(f"{problem} (spaces found: {sorted(spaces)}, tasks: {sorted(tasks)})", self.root)
        if wanted:
            missing = wanted - set(self.runs)
            if missing:
                raise InputError(f"no BOLD runs for participant(s) {sorted(missing)}", self.root)
        self._make_subjects()

    def _check_field_of_view(self, img: Any, path: Path) -> None:
        """Refuse a run whose field of view holds none of the target mask's voxels."""
        assert self.geometry is not None
        xyz = self.geometry.grid.affine[:3, :3] @ self.geometry.ijk.T + self.geometry.grid.affine[:3, 3:4]
        inv = np.linalg.inv(np.asarray(img.affine, float))
        vox = inv[:3, :3] @ xyz + inv[:3, 3:4]
        inside = np.all((vox > -0.5) & (vox < np.asarray(img.shape[:3])[:, None] - 0.5), axis=0)
        if not inside.any():
            raise InputError(
                "the brain mask does not overlap the BOLD field of view (other space or grid?)", path
            )

    def _make_subjects(self) -> None:
        self.subjects = []
        n_time = 0
        for participant in sorted(self.runs):
            runs = sorted(self.runs[participant], key=lambda r: (r.session or "", r.run or ""))
            self.runs[participant] = runs
            groups = [runs] if self.runs_mode == "concat" else [[r] for r in runs]
            for group in groups:
                sid = (
                    participant
                    if self.runs_mode == "concat"
                    else participant
                    + "".join((f"ses{r.session}" if r.session else "") + f"run{r.run or '1'}" for r in group)
                )
                fp = "|".join(file_fingerprint(r.bold) + file_fingerprint(r.confounds) for r in group)
                ref = SubjectRef(sid, group[0].bold, None, fp, group=participant)
                self.subjects.append(ref)
                n_time = max(n_time, sum(r.n_volumes for r in group))
        self.n_time = n_time
        self._runs_of = {ref.subject_id: self._group_runs(ref.subject_id) for ref in self.subjects}

    def _group_runs(self, subject_id: str) -> list[Run]:
        if self.runs_mode == "concat":
            return self.runs[subject_id]
        for runs in self.runs.values():
            for r in runs:
                sid = r.participant + (f"ses{r.session}" if r.session else "") + f"run{r.run or '1'}"
                if sid == subject_id:
                    return [r]
        raise KeyError(subject_id)

    # ---- reading ----------------------------------------------------------------------------------
    def recorded_options(self) -> dict[str, Any]:
        import nilearn

        assert self.geometry is not None
        mask = np.zeros(self.geometry.grid.shape, bool)
        mask[tuple(self.geometry.ijk.T)] = True
        from hashlib import sha256

        opts = dict(vars(self.cleaning))
        linear = self.cleaning.interpolation == "linear"
        return {
            "source_format": "fmriprep",
            "task": self.task,
            "bold_space": self.bold_space,
            "runs": self.runs_mode,
            "cleaning": opts,
            "target_grid": {
                "shape": list(self.geometry.grid.shape),
                "affine": self.geometry.grid.affine.tolist(),
            },
            "target_mask_sha256": sha256(np.packbits(mask).tobytes()).hexdigest(),
            "resampling": f"nilearn resample_img ({self.cleaning.interpolation}) onto the target grid"
            + (", as one sparse trilinear product per run of finite values" if linear else ""),
            "precision": "nilearn's default (the run's dtype; float64 for scaled integers), stored float32",
            "nilearn": nilearn.__version__,
        }

    def masker(self) -> Any:
        """The NiftiMasker every run goes through (nilearn's cleaning, on the target grid and mask)."""
        import nibabel as nib
        from nilearn.maskers import NiftiMasker

        assert self.geometry is not None
        grid: Grid = self.geometry.grid
        mask = np.zeros(grid.shape, np.uint8)
        mask[tuple(self.geometry.ijk.T)] = 1
        c = self.cleaning
        # nilearn's default dtype (the run's own: float64 for scaled integers), as the recipe runs it:
        # float32 data lose the digits the cleaning cancels (intensities ~1000, cleaned series ~10),
        # ~1e-4 of the cleaned series at 2 mm, and averaging a seed's voxels would then no longer
        # commute with cleaning them (NiftiSpheresMasker averages first)
        return NiftiMasker(
            mask_img=nib.Nifti1Image(mask, grid.affine),
            smoothing_fwhm=c.smoothing_fwhm,
            standardize=None if c.standardize is False else c.standardize,  # nilearn >= 0.15: None
            detrend=c.detrend,
            low_pass=c.low_pass,
            high_pass=c.high_pass,
            t_r=c.t_r or self._t_r(),
            target_affine=grid.affine,
            target_shape=grid.shape,
        )

    def _t_r(self) -> float:
        return next(iter(self.runs.values()))[0].t_r

    def confounds(self, run: Run) -> tuple[Any, Any]:
        """Confounds and sample mask of one run (nilearn's ``load_confounds_strategy``)."""
        if self.cleaning.strategy == "none":
            return None, None
        from nilearn.interfaces.fmriprep import load_confounds_strategy

        try:
            confounds, sample_mask = load_confounds_strategy(
                str(run.bold), denoise_strategy=self.cleaning.strategy, **self.cleaning.confound_kwargs()
            )
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise InputError(
                f"cannot load confounds ({self.cleaning.strategy}): {exc}", run.confounds
            ) from None
        return confounds, sample_mask

    def clean_run(self, run: Run) -> np.ndarray:
        """One run cleaned and masked: (kept volumes, voxels) float32."""
        confounds, sample_mask = self.confounds(run)
        kept = run.n_volumes if sample_mask is None else int(np.size(sample_mask))
        if kept < self.cleaning.min_volumes:
            raise InputError(
                f"{kept} of {run.n_volumes} volumes remain after {self.cleaning.strategy} "
                f"(fewer than --min-volumes {self.cleaning.min_volumes})",
                run.bold,
            )
        try:
            bold, finite = self._finite_bold(run)
            with warnings.catch_warnings():  # resampling onto the target grid is what is asked for
                warnings.filterwarnings(
                    "ignore", message="imgs are being resampled to the mask_img resolution"
                )
                series = self.masker().fit_transform(
                    self._on_target(bold, finite), confounds=confounds, sample_mask=sample_mask
                )
        except (ValueError, EOFError, OSError) as exc:
            raise InputError(f"cannot clean the run ({exc})", run.bold) from None
        series = np.asarray(series, np.float32)
        if not np.all(np.isfinite(series)):
            raise InputError("the run holds NaN or infinite values", run.bold)
        return series

    def _on_target(self, bold: Any, finite: bool) -> Any:
        """The run on the target grid, resampled with the recorded interpolation (nilearn's
        ``resample_img``, as NiftiMasker resamples, which would use ``continuous``); unchanged when it
        is on the grid already. ``linear`` on ``finite`` data is the same interpolation as one sparse
        product for the whole run (:func:`lakepipe.compute.resample.resample_linear`; 0.6 s
        against nilearn's 6.1 s for 60 volumes from 4 mm onto the 2 mm grid here); with NaN or
        infinite values (outside the mask) it is nilearn's, which fills them first."""
        import nibabel as nib
        from nilearn.image import load_img, resample_img

        assert self.geometry is not None
        grid = self.geometry.grid
        img = load_img(bold)
        if tuple(img.shape[:3]) == tuple(grid.shape) and np.allclose(img.affine, grid.affine):
            return img
        if self.cleaning.interpolation == "linear" and finite:
            from lakepipe.compute.resample import resample_linear

            # integers as read scaled, in float64 (resample_img would keep an integer dtype for
            # linear and truncate); continuous casts integers itself, as NiftiMasker always did
            integer = img.get_data_dtype().kind in "iu"
            data = img.get_fdata(dtype=np.float64) if integer else np.asanyarray(img.dataobj)
            op = _linear_operator(img.affine, img.shape[:3], grid.affine, grid.shape)
            out = resample_linear(data, img.affine, grid.shape, grid.affine, operator=op)
            header = img.header.copy()
            header.set_data_dtype(out.dtype)
            return nib.Nifti1Image(out, grid.affine, header)
        return resample_img(
            img,
            target_affine=grid.affine,
            target_shape=grid.shape,
            interpolation=self.cleaning.interpolation,
            force_resample=True,
            copy_header=True,
        )

    def _finite_bold(self, run: Run) -> tuple[Any, bool]:
        """The run's BOLD for the masker, and whether all its values are finite. NaN or infinite
        values inside the target brain mask (nearest target voxel) are refused: nilearn's maskers
        silently make them 0, a spike in the cleaned series. Integer data cannot hold them: their
        path is returned and nilearn reads them; float data are read here once and handed to the
        masker in memory (not read twice)."""
        import nibabel as nib

        from lakepipe.io.nifti import load_image

        img = load_image(run.bold)
        if img.get_data_dtype().kind != "f":
            return str(run.bold), True
        data = np.asanyarray(img.dataobj)
        bad = ~np.isfinite(data)
        finite = not bad.any()
        if not finite:
            self._refuse_bad_in_mask(run, img, bad)
        return nib.Nifti1Image(data, img.affine, img.header), finite

    def _refuse_bad_in_mask(self, run: Run, img: Any, bad: np.ndarray) -> None:
        """:class:`InputError` when a non-finite value (``bad``, the run's 4-D mask of them) lies in
        a voxel whose nearest target voxel is in the brain mask."""
        assert self.geometry is not None
        grid = self.geometry.grid
        target = np.zeros(grid.shape, bool)
        target[tuple(self.geometry.ijk.T)] = True
        # each BOLD voxel centre to the nearest target voxel
        ijk = np.indices(bad.shape[:3]).reshape(3, -1)
        to_target = np.linalg.inv(grid.affine) @ np.asarray(img.affine, float)
        nearest = np.rint(to_target[:3, :3] @ ijk + to_target[:3, 3:4]).astype(np.int64)
        ok = np.all((nearest >= 0) & (nearest < np.asarray(grid.shape)[:, None]), axis=0)
        inside = np.zeros(ijk.shape[1], bool)
        inside[ok] = target[tuple(nearest[:, ok])]
        bad_in = bad.reshape(-1, bad.shape[3])[inside]
        if bad_in.any():
            first = int(np.flatnonzero(bad_in.any(axis=0))[0])
            raise InputError(
                f"the run holds {int(bad_in.sum())} NaN or infinite value(s) inside the brain mask "
                f"(first in volume {first})",
                run.bold,
            )

    def read(self, ref: SubjectRef) -> np.ndarray:
        return np.concatenate([self.clean_run(r) for r in self._runs_of[ref.subject_id]], axis=0)


def _linear_operator(src_affine: Any, src_shape: Any, dst_affine: Any, dst_shape: Any) -> Any:
    """The sparse trilinear map between two grids, kept for the next run on the same grids (the
    cache key is the grids as tuples)."""
    src = tuple(np.asarray(src_affine, float).ravel().tolist())
    dst = tuple(np.asarray(dst_affine, float).ravel().tolist())
    return _cached_operator(src, tuple(src_shape), dst, tuple(dst_shape))


@functools.lru_cache(maxsize=1)  # one grid pair (85 MB from 4 mm onto 2 mm): a worker's runs share it
def _cached_operator(src_affine: tuple, src_shape: tuple, dst_affine: tuple, dst_shape: tuple) -> Any:
    from lakepipe.compute.resample import linear_operator

    src, dst = np.reshape(src_affine, (4, 4)), np.reshape(dst_affine, (4, 4))
    return linear_operator(src, src_shape, dst, dst_shape)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
