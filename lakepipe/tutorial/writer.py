"""Orchestration: :func:`write_tutorial`, the folder it owns, the manifest and the up-to-date check."""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import time
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from lakepipe._version import __version__
from lakepipe.errors import InputError
from lakepipe.tutorial.atlas import ATLAS_NAME, ATLAS_RADIUS_MM, ATLAS_STEM, write_atlas
from lakepipe.tutorial.cohorts import write_lnm
from lakepipe.tutorial.common import REPETITION_TIME, SPACE, write_json
from lakepipe.tutorial.connectome import optional_sinks, write_connectome
from lakepipe.tutorial.fmriprep import write_fmriprep
from lakepipe.tutorial.hcp import write_hcp
from lakepipe.tutorial.lesions import write_lesions
from lakepipe.tutorial.model import NETWORKS, build_latent_model
from lakepipe.tutorial.readme import write_readme

logger = logging.getLogger(__name__)

#: Version of the folder layout; part of the manifest, so a layout change regenerates old folders.
#: 2: ``lnm/`` (written by default), ``fmriprep/`` and ``hcp/`` added.
LAYOUT_VERSION = 2

#: Hidden file marking a folder as written by :func:`write_tutorial` (only such folders are cleared).
_MARKER = ".lakepipe-tutorial"
_OUR_ENTRIES = (
    "bids",
    "connectome",
    "atlas",
    "parcel_timeseries",
    "nifti_connectome",
    "lnm",
    "fmriprep",
    "hcp",
    "README.md",
    "tutorial.json",
)


@dataclass(frozen=True)
class TutorialPaths:
    """Where :func:`write_tutorial` put things.

    Attributes
    ----------
    root
        The tutorial folder.
    bids
        BIDS lesion dataset.
    connectome
        Folder of GSP1000-style HDF5 batches.
    atlas_nifti
        Seitzman 2018 sphere atlas (int16 labels on the 2 mm MNI grid).
    atlas_labels
        Its label table (TSV: index, name, network, hemisphere, ...).
    parcel_timeseries
        Folder of per-subject parcel series plus ``regions.tsv``, or ``None``.
    nifti_connectome
        Folder of per-subject 4D NIfTI plus ``brain_mask.nii.gz``, or ``None``.
    manifest
        ``tutorial.json`` (parameters, seed, lakepipe version, file list).
    lnm_cases
        BIDS lesion dataset of the spatial-neglect cases (``lnm/cases``), or ``None``.
    lnm_controls
        BIDS lesion dataset of their stroke controls (``lnm/controls``), or ``None``.
    lnm_truth
        Ground truth of that question (``lnm/truth``: network loading maps, ``truth.json``), or ``None``.
    fmriprep
        fMRIPrep-style derivatives folder (``fmriprep``), or ``None``.
    hcp
        Synthetic HCP parcellated release in the Neuromatch Academy layout (``hcp``), or ``None``.
    """

    root: Path
    bids: Path
    connectome: Path
    atlas_nifti: Path
    atlas_labels: Path
    parcel_timeseries: Path | None
    nifti_connectome: Path | None
    manifest: Path
    lnm_cases: Path | None = None
    lnm_controls: Path | None = None
    lnm_truth: Path | None = None
    fmriprep: Path | None = None
    hcp: Path | None = None


def _paths(root: Path, params: dict) -> TutorialPaths:
    lnm = params["lnm"]
    return TutorialPaths(
        root=root,
        bids=root / "bids",
        connectome=root / "connectome",
        atlas_nifti=root / "atlas" / f"{ATLAS_STEM}.nii.gz",
        atlas_labels=root / "atlas" / f"{ATLAS_STEM}.tsv",
        parcel_timeseries=root / "parcel_timeseries" if params["parcel_timeseries"] else None,
        nifti_connectome=root / "nifti_connectome" if params["nifti_connectome"] else None,
        manifest=root / "tutorial.json",
        lnm_cases=root / "lnm" / "cases" if lnm else None,
        lnm_controls=root / "lnm" / "controls" if lnm else None,
        lnm_truth=root / "lnm" / "truth" if lnm else None,
        fmriprep=root / "fmriprep" if params["fmriprep"] else None,
        hcp=root / "hcp" if params["hcp"] else None,
    )


def _file_list(root: Path) -> dict[str, int]:
    """Relative path -> size in bytes of every file under ``root`` except the manifest."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "tutorial.json" and not p.name.startswith(".")
    }


def _up_to_date(root: Path, parameters: dict) -> bool:
    """Whether ``root`` already holds a complete tutorial made with these parameters and this version."""
    try:
        manifest = json.loads((root / "tutorial.json").read_text())
    except (OSError, ValueError):
        return False
    if (
        manifest.get("parameters") != parameters
        or manifest.get("layout_version") != LAYOUT_VERSION
        or manifest.get("lakepipe_version") != __version__
    ):
        return False
    files = manifest.get("files", {})
    return bool(files) and all(
        (root / f).is_file() and (root / f).stat().st_size == size for f, size in files.items()
    )


def _prepare_root(root: Path) -> None:
    """Create ``root``, or clear an earlier tutorial there; refuse a folder holding anything else.

    Only a folder marked by an earlier run (the hidden marker file or ``tutorial.json``) and holding
    nothing but tutorial entries is cleared, so a user's own ``bids/`` folder is never deleted.
    """
    if root.exists() and not root.is_dir():
        raise InputError("exists and is not a folder", root)
    root.mkdir(parents=True, exist_ok=True)
    entries = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    marked = (root / _MARKER).exists() or (root / "tutorial.json").exists()
    foreign = sorted(n for n in entries if n not in _OUR_ENTRIES or not marked)
    if foreign:
        raise InputError(f"folder is not empty and not a lakepipe tutorial (found {foreign[:3]})", root)
    (root / "tutorial.json").unlink(missing_ok=True)  # first: a half-cleared folder is never "complete"
    for name in _OUR_ENTRIES:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    (root / _MARKER).write_text("written by lakepipe.tutorial.write_tutorial\n")


def _check_parameters(params: dict) -> None:
    """Refuse bad values, naming the command-line option."""
    integers = (
        ("participants", 1),
        ("subjects", 1),
        ("timepoints", 3),
        ("batch_size", 1),
        ("seed", 0),
        ("lnm_cases", 1),
        ("lnm_controls", 1),
        ("fmriprep_subjects", 1),
        ("fmriprep_timepoints", 30),
        ("hcp_subjects", 1),
        ("hcp_rest_timepoints", 10),
    )
    for name, low in integers:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(
                f"{name} must be an integer >= {low}, got {value!r}", "--" + name.replace("_", "-")
            )
    v = params["fmriprep_voxel_mm"]
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 2.0 <= v <= 4.0:
        raise InputError(
            f"fmriprep_voxel_mm must be a number from 2 to 4 (mm), got {v!r}", "--fmriprep-voxel-mm"
        )


def _parameters(params: dict) -> dict:
    """Checked and normalised parameters (what the manifest records)."""
    _check_parameters(params)
    return {
        k: (float(v) if k == "fmriprep_voxel_mm" else v if isinstance(v, bool) else int(v))
        for k, v in params.items()
    }


def tutorial_is_current(out_dir: str | PathLike, **options: object) -> bool:
    """Whether ``out_dir`` already holds the complete tutorial :func:`write_tutorial` would write
    with these options (so writing it would change nothing)."""
    bound = inspect.signature(write_tutorial).bind(out_dir, **options)
    bound.apply_defaults()
    args = dict(bound.arguments)
    root = Path(args.pop("out_dir"))
    return root.is_dir() and _up_to_date(root, _parameters(args))


def write_tutorial(
    out_dir: str | PathLike,
    *,
    participants: int = 10,
    subjects: int = 12,
    timepoints: int = 60,
    batch_size: int = 4,
    seed: int = 0,
    nifti_connectome: bool = False,
    parcel_timeseries: bool = True,
    lnm: bool = True,
    lnm_cases: int = 16,
    lnm_controls: int = 16,
    fmriprep: bool = False,
    fmriprep_subjects: int = 3,
    fmriprep_timepoints: int = 120,
    fmriprep_voxel_mm: float = 4.0,
    hcp: bool = False,
    hcp_subjects: int = 6,
    hcp_rest_timepoints: int = 240,
) -> TutorialPaths:
    """Write the tutorial inputs (lesions, connectome, atlas, ...) into ``out_dir``.

    Deterministic: the same arguments give the same files (byte for byte). A folder that already holds a
    complete tutorial made with the same arguments and lakepipe version is left as it is; an earlier
    tutorial with other arguments (or a partial one) is replaced; a folder holding anything else is
    refused.

    Parameters
    ----------
    out_dir
        Output folder (created if needed).
    participants
        Number of lesion participants (``sub-01``, ...).
    subjects
        Number of normative connectome subjects (``GSP0001``, ...).
    timepoints
        Time points per connectome subject.
    batch_size
        Subjects per HDF5 batch file (the last one may hold fewer).
    seed
        Seed of every random choice.
    nifti_connectome
        Also write the first few subjects as 4D NIfTI with a brain mask.
    parcel_timeseries
        Also write each subject's parcel-mean series under the atlas.
    lnm
        Write the lesion network mapping question with a known answer (``lnm/``: neglect cases,
        stroke controls, ground truth).
    lnm_cases, lnm_controls
        Cohort sizes of that question.
    fmriprep
        Also write a small fMRIPrep-style derivatives folder (``fmriprep/``).
    fmriprep_subjects
        Its subjects (two ``task-rest`` runs each).
    fmriprep_timepoints
        Volumes per run (TR 2 s).
    fmriprep_voxel_mm
        Voxel size of its BOLD (2 to 4 mm); 2 writes the template's 2 mm grid (``res-2``), any other
        value a native-resolution output (no ``res`` entity, as fMRIPrep names it).
    hcp
        Also write a small synthetic HCP parcellated release (``hcp/``, Neuromatch Academy layout).
    hcp_subjects
        Its subjects (four rest runs and two MOTOR runs each).
    hcp_rest_timepoints
        Frames per rest run (TR 0.72 s; the real runs have 1200).

    Returns
    -------
    TutorialPaths
        Where everything is.

    Raises
    ------
    lakepipe.errors.InputError
        Bad parameters, or ``out_dir`` holds files that are not a lakepipe tutorial.
    """
    params = _parameters(
        {
            "participants": participants,
            "subjects": subjects,
            "timepoints": timepoints,
            "batch_size": batch_size,
            "seed": seed,
            "nifti_connectome": bool(nifti_connectome),
            "parcel_timeseries": bool(parcel_timeseries),
            "lnm": bool(lnm),
            "lnm_cases": lnm_cases,
            "lnm_controls": lnm_controls,
            "fmriprep": bool(fmriprep),
            "fmriprep_subjects": fmriprep_subjects,
            "fmriprep_timepoints": fmriprep_timepoints,
            "fmriprep_voxel_mm": fmriprep_voxel_mm,
            "hcp": bool(hcp),
            "hcp_subjects": hcp_subjects,
            "hcp_rest_timepoints": hcp_rest_timepoints,
        }
    )
    root = Path(out_dir)
    paths = _paths(root, params)
    if _up_to_date(root, params):
        logger.info("tutorial in %s is up to date; nothing to do", root)
        return paths
    _prepare_root(root)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    model = build_latent_model(seed)
    lesions = write_lesions(paths.bids, participants, seed)
    _, _, atlas_vol, table = write_atlas(paths.atlas_nifti.parent, model)
    sinks = optional_sinks(paths, model, subjects, atlas_vol, table)
    batches = write_connectome(paths.connectome, model, seed, subjects, timepoints, batch_size, sinks)
    timed("lesions_atlas_connectome", t)
    sections: dict[str, dict | None] = {"lnm": None, "fmriprep": None, "hcp": None}
    if params["lnm"]:
        t = time.perf_counter()
        sections["lnm"] = write_lnm(root / "lnm", model, seed, lnm_cases, lnm_controls)
        timed("lnm", t)
    if params["fmriprep"]:
        t = time.perf_counter()
        sections["fmriprep"] = write_fmriprep(
            root / "fmriprep",
            model,
            seed,
            fmriprep_subjects,
            fmriprep_timepoints,
            params["fmriprep_voxel_mm"],
        )
        timed("fmriprep", t)
    if params["hcp"]:
        t = time.perf_counter()
        sections["hcp"] = write_hcp(root / "hcp", seed, hcp_subjects, hcp_rest_timepoints)
        timed("hcp", t)
    n_empty = int((table["n_voxels"] == 0).sum())
    write_readme(paths, params, model.n_voxels, n_empty, sections)
    manifest = {
        "generator": "lakepipe.tutorial",
        "layout_version": LAYOUT_VERSION,
        "lakepipe_version": __version__,
        "seed": int(seed),
        "parameters": params,
        "space": SPACE,
        "repetition_time": REPETITION_TIME,
        "connectome": {
            "n_subjects": subjects,
            "n_timepoints": timepoints,
            "n_voxels": model.n_voxels,
            "batches": batches,
            "networks": [
                {"name": n.name, "centres_mm": n.centres().tolist(), "sigma_mm": n.sigma_mm} for n in NETWORKS
            ],
        },
        "atlas": {
            "name": ATLAS_NAME,
            "n_regions": int(len(table)),
            "radius_mm": ATLAS_RADIUS_MM,
            "empty_indices": table.loc[table["n_voxels"] == 0, "index"].tolist(),
        },
        "lesions": lesions,
        **sections,
        "files": _file_list(root),
    }
    write_json(paths.manifest, manifest)
    logger.info("tutorial written to %s in %.1f s (%s)", root, time.perf_counter() - t0, timings)
    return paths
