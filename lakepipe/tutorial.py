"""Deterministic, realistic example inputs for lakepipe, generated locally (nothing is downloaded).

:func:`write_tutorial` writes, under one folder:

- ``bids/``: a BIDS lesion dataset (binary acute-infarct masks in MNI152NLin6Asym at 1 mm and 2 mm,
  some participants with two sessions, one or two with a second label, ``participants.tsv``);
- ``connectome/``: a normative connectome in the GSP1000 HDF5 batch layout (``batch-001.h5``, ...);
- ``atlas/``: the Seitzman et al. (2018) 300-ROI atlas (the coordinates nilearn ships) as 5 mm spheres
  on the 2 mm MNI grid, with a label table;
- ``parcel_timeseries/`` (optional): the same subjects' parcel-mean series under that atlas
  (parcels x time, as in the HCP parcellated release);
- ``nifti_connectome/`` (optional): a few of the same subjects as 4D NIfTI plus the brain mask;
- ``README.md`` and the manifest ``tutorial.json``.

All of it comes from one latent network model (:func:`build_latent_model`): a handful of smooth,
bilateral network maps on the 2 mm brain mask, AR(1) network time courses with a fixed between-network
covariance, subject-specific loadings and noise. Seed-to-voxel maps computed from the connectome
therefore show networks, and lesions placed on those networks give meaningful lesion network maps.

Everything is a deterministic function of ``seed`` (:class:`numpy.random.Generator` streams keyed by
``(seed, component, index)``): subject ``k`` has the same series whatever the number of subjects or
the batch size, so a larger tutorial is a superset of a smaller one. Voxel series are generated and
written one subject at a time, so memory stays bounded by a few copies of one subject's (time x voxel)
array whatever the connectome size.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from lakepipe.bids import bids_name, check_entity
from lakepipe.errors import InputError
from lakepipe.space import Grid, mni152_brain_mask_2mm, mni152_grid

logger = logging.getLogger(__name__)

__all__ = [
    "NETWORKS",
    "NETWORK_CORRELATIONS",
    "LatentModel",
    "Network",
    "TutorialPaths",
    "build_latent_model",
    "seitzman_table",
    "sphere_labels",
    "subject_timeseries",
    "write_hdf5_batch",
    "write_tutorial",
]

#: Template space of every file the tutorial writes.
SPACE = "MNI152NLin6Asym"
#: Repetition time (s) recorded in the NIfTI headers and the manifest (GSP1000 used 3 s).
REPETITION_TIME = 3.0
#: Name of the atlas in file names (``atlas-<name>``).
ATLAS_NAME = "Seitzman2018"
#: Radius (mm) of the spheres drawn around the Seitzman coordinates.
ATLAS_RADIUS_MM = 5.0
#: How many subjects (the first ones) are also written as 4D NIfTI.
N_NIFTI_SUBJECTS = 3
#: Label of the main lesion masks and of the second label some participants have.
MAIN_LABEL = "acuteinfarct"
SECOND_LABEL = "chronic"
#: Version of the folder layout; part of the manifest, so a layout change regenerates old folders.
LAYOUT_VERSION = 1

# names of the random streams: (seed, stream, index...) keys independent generators
_STREAM_MODEL, _STREAM_SUBJECT, _STREAM_LESION, _STREAM_COHORT = 1, 2, 3, 4

#: Hidden file marking a folder as written by :func:`write_tutorial` (only such folders are cleared).
_MARKER = ".lakepipe-tutorial"
_OUR_ENTRIES = (
    "bids",
    "connectome",
    "atlas",
    "parcel_timeseries",
    "nifti_connectome",
    "README.md",
    "tutorial.json",
)


# ----------------------------------------------------------------------------------------------
# latent network model
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """A latent network: smooth blobs around MNI coordinates (mm).

    Blobs with ``x != 0`` are mirrored across the midline (``x -> -x``), so every network is bilateral.
    """

    name: str
    blobs: tuple[tuple[float, float, float], ...]
    sigma_mm: float

    def centres(self) -> np.ndarray:
        """All blob centres (mm), mirrored ones included, shape (n, 3)."""
        out = []
        for x, y, z in self.blobs:
            out.append((x, y, z))
            if x != 0:
                out.append((-x, y, z))
        return np.asarray(out, dtype=float)


#: The latent networks (plausible cortical/subcortical MNI locations; x > 0 blobs are mirrored).
NETWORKS: tuple[Network, ...] = (
    Network("DefaultMode", ((0, -54, 28), (0, 50, 10), (46, -66, 32)), 8.0),
    Network("Somatomotor", ((38, -24, 56), (0, -14, 60), (20, -52, -24)), 8.0),
    Network("Visual", ((10, -88, 2), (38, -80, 2)), 8.0),
    Network("Salience", ((36, 18, 2), (0, 22, 36)), 8.0),
    Network("FrontoParietal", ((44, 32, 30), (50, -48, 46)), 8.0),
    Network("DorsalAttention", ((26, -6, 56), (26, -62, 54), (46, -70, -4)), 8.0),
    Network("Subcortical", ((10, -18, 6), (26, 4, 2)), 6.0),
)

#: Between-network correlations of the network time courses (pairs not listed are 0).
NETWORK_CORRELATIONS: dict[tuple[str, str], float] = {
    ("DefaultMode", "DorsalAttention"): -0.35,
    ("DefaultMode", "Salience"): -0.2,
    ("DefaultMode", "FrontoParietal"): 0.2,
    ("DorsalAttention", "FrontoParietal"): 0.3,
    ("DorsalAttention", "Visual"): 0.25,
    ("Somatomotor", "Salience"): 0.25,
    ("Salience", "Subcortical"): 0.2,
}


@dataclass
class LatentModel:
    """The fixed part of the generative model, shared by all subjects.

    Attributes
    ----------
    grid
        The 2 mm MNI152NLin6Asym grid.
    mask
        Brain mask on ``grid`` (bool, 91 x 109 x 91).
    ijk
        In-mask voxel indices in C order of the mask, shape (V, 3).
    xyz
        Their MNI coordinates in mm, shape (V, 3).
    loadings
        Network maps, shape (K, V), float32, about 1 at blob centres.
    phi
        AR(1) coefficient of each network's time course, shape (K,).
    correlation
        Between-network correlation of the time courses, shape (K, K).
    baseline
        Positive mean of each voxel's raw series (about 100 to 1000), shape (V,).
    scale
        Signal units per voxel (about 1 % of the baseline), shape (V,).
    noise_sd
        Noise standard deviation per voxel in signal units, shape (V,).
    """

    grid: Grid
    mask: np.ndarray
    ijk: np.ndarray
    xyz: np.ndarray
    loadings: np.ndarray
    phi: np.ndarray
    correlation: np.ndarray
    baseline: np.ndarray
    scale: np.ndarray
    noise_sd: np.ndarray
    networks: tuple[Network, ...] = NETWORKS

    @property
    def n_voxels(self) -> int:
        """Number of in-mask voxels V."""
        return int(self.ijk.shape[0])

    @property
    def lateral(self) -> np.ndarray:
        """Left (-1) to right (+1) position of each voxel, ``tanh(x / 30 mm)`` (float32)."""
        return np.tanh(self.xyz[:, 0] / 30.0).astype(np.float32)

    def voxel_index(self, xyz_mm: Sequence[float]) -> int:
        """Column of the in-mask voxel nearest to an MNI coordinate (mm)."""
        d2 = ((self.xyz - np.asarray(xyz_mm, float)) ** 2).sum(axis=1)
        return int(np.argmin(d2))


def _rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    """An independent generator for one component (and item) of the tutorial."""
    return np.random.default_rng([int(seed), stream, *map(int, index)])


def _voxel_mm(grid: Grid, ijk: np.ndarray) -> np.ndarray:
    """MNI coordinates (mm) of voxel indices ``ijk`` (n, 3)."""
    return ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation (float32)."""
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="nearest")
    out /= max(float(out.std()), 1e-12)
    return out


def _correlation_matrix(networks: Sequence[Network]) -> np.ndarray:
    """Between-network correlation matrix from :data:`NETWORK_CORRELATIONS` (checked positive definite)."""
    names = [n.name for n in networks]
    c = np.eye(len(names))
    for (a, b), r in NETWORK_CORRELATIONS.items():
        if a in names and b in names:
            i, j = names.index(a), names.index(b)
            c[i, j] = c[j, i] = r
    if np.linalg.eigvalsh(c).min() <= 0:  # pragma: no cover - guards edits of the table
        raise ValueError("NETWORK_CORRELATIONS is not positive definite")
    return c


def _network_maps(
    rng: np.random.Generator, model_xyz: np.ndarray, mask: np.ndarray, networks: Sequence[Network]
) -> np.ndarray:
    """Smooth irregular loadings (K, V): max of Gaussian blobs times a smooth log-normal field."""
    maps = np.zeros((len(networks), model_xyz.shape[0]), np.float32)
    for k, net in enumerate(networks):
        blob = np.zeros(model_xyz.shape[0])
        for c in net.centres():
            d2 = ((model_xyz - c) ** 2).sum(axis=1)
            np.maximum(blob, np.exp(-d2 / (2 * net.sigma_mm**2)), out=blob)
        irregular = np.exp(0.2 * _smooth_field(rng, mask.shape, 2.0)[mask])
        loading = 1.2 * blob * irregular
        loading[loading < 1e-3] = 0.0
        maps[k] = loading
    return maps


def build_latent_model(seed: int = 0, networks: Sequence[Network] = NETWORKS) -> LatentModel:
    """The subject-independent part of the tutorial's generative model.

    Parameters
    ----------
    seed
        Seed of every random choice (irregularity of the maps, voxel baselines and noise levels).
    networks
        The latent networks; defaults to :data:`NETWORKS`.

    Returns
    -------
    LatentModel
    """
    grid = mni152_grid(2)
    mask = mni152_brain_mask_2mm()
    ijk = np.argwhere(mask)
    xyz = _voxel_mm(grid, ijk)
    rng = _rng(seed, _STREAM_MODEL)
    loadings = _network_maps(rng, xyz, mask, networks)
    phi = rng.uniform(0.5, 0.7, len(networks))
    v = ijk.shape[0]
    smooth = _smooth_field(rng, mask.shape, 4.0)[mask]
    baseline = np.clip(550 + 250 * smooth + 25 * rng.standard_normal(v), 100, 1000)
    scale = 0.01 * baseline * rng.uniform(0.8, 1.2, v)
    noise_sd = rng.uniform(0.8, 1.2, v)
    return LatentModel(
        grid=grid,
        mask=mask,
        ijk=ijk,
        xyz=xyz,
        loadings=loadings,
        phi=phi,
        correlation=_correlation_matrix(networks),
        baseline=baseline.astype(np.float32),
        scale=scale.astype(np.float32),
        noise_sd=noise_sd.astype(np.float32),
        networks=tuple(networks),
    )


def _network_courses(rng: np.random.Generator, model: LatentModel, timepoints: int) -> np.ndarray:
    """AR(1) network time courses (K, T), stationary correlation close to ``model.correlation``."""
    k = len(model.phi)
    chol = np.linalg.cholesky(model.correlation)
    innov_sd = np.sqrt(1 - model.phi**2)
    z = chol @ rng.standard_normal((k, timepoints))
    f = np.empty((k, timepoints))
    f[:, 0] = z[:, 0]
    for t in range(1, timepoints):
        f[:, t] = model.phi * f[:, t - 1] + innov_sd * z[:, t]
    return f


def subject_timeseries(model: LatentModel, seed: int, index: int, timepoints: int) -> np.ndarray:
    """Raw voxel series of one normative subject, shape (T, V), float32.

    ``baseline + scale * (loadings_s.T @ courses_s + noise_s)`` with subject-specific AR(1) network
    courses, loadings varied per subject (a gain and a left/right balance per network) and white noise.

    Parameters
    ----------
    model
        The latent model (:func:`build_latent_model`).
    seed
        Tutorial seed; with ``index`` it fixes the subject's random stream.
    index
        Zero-based subject number.
    timepoints
        Number of time points T.

    Returns
    -------
    numpy.ndarray
    """
    rng = _rng(seed, _STREAM_SUBJECT, index)
    courses = _network_courses(rng, model, timepoints)
    k = courses.shape[0]
    gain = np.clip(rng.normal(1.0, 0.1, k), 0.6, 1.4)
    balance = rng.normal(0.0, 0.1, k)
    noise_level = rng.uniform(0.85, 1.15)
    loadings = model.loadings * (gain[:, None] * (1 + balance[:, None] * model.lateral[None, :]))
    x = rng.standard_normal((timepoints, model.n_voxels), dtype=np.float32)
    x *= model.noise_sd * np.float32(noise_level)
    x += courses.T.astype(np.float32) @ loadings.astype(np.float32)
    x *= model.scale
    x += model.baseline
    return x


# ----------------------------------------------------------------------------------------------
# HDF5 batches (GSP1000 layout)
# ----------------------------------------------------------------------------------------------


def _as_indices_v3(mask_indices: np.ndarray) -> np.ndarray:
    """``mask_indices`` as (V, 3); a (3, V) array with V != 3 is transposed."""
    idx = np.asarray(mask_indices)
    if idx.ndim != 2 or 3 not in idx.shape:
        raise InputError(f"mask_indices must be (V, 3) or (3, V), got {idx.shape}")
    return idx.T if idx.shape[1] != 3 else idx


def _iter_subjects(timeseries: np.ndarray | Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Subjects of a (S, T, V) array or of an iterable of (T, V) arrays."""
    if isinstance(timeseries, np.ndarray):
        if timeseries.ndim != 3:
            raise InputError(f"timeseries must be (subjects, time, voxels), got {timeseries.shape}")
        yield from timeseries
    else:
        yield from timeseries


def _subject_chunks(t: int, v: int, chunk_mb: float) -> tuple[int, int, int]:
    """Chunk shape inside one subject: the full time axis and as many voxels as fit ``chunk_mb``."""
    vb = int(chunk_mb * 2**20 // (4 * max(t, 1)))
    return 1, max(t, 1), max(1, min(v, vb))


def write_hdf5_batch(
    path: str | PathLike,
    timeseries: np.ndarray | Iterable[np.ndarray],
    mask_indices: np.ndarray,
    mask_affine: np.ndarray,
    mask_shape: Sequence[int],
    subject_ids: Sequence[str] | None = None,
    indices_orientation: str = "V3",
    *,
    compression: str | None = None,
    chunk_mb: float = 64.0,
    space: str | None = SPACE,
    validate: bool = True,
) -> Path:
    """Write one connectome batch in the GSP1000 HDF5 layout, streaming subject by subject.

    Layout: dataset ``timeseries`` (subjects, time, voxels) float32, chunked within a subject (full
    time axis, up to ``chunk_mb`` MiB of voxels); dataset ``mask_indices`` (integer ijk of the in-mask
    voxels, column ``v`` of ``timeseries`` is voxel ``mask_indices[v]``); dataset ``mask_affine``
    (4 x 4); attribute ``mask_shape`` (3 ints) on the file root; optional dataset ``subject_ids``
    (byte strings) and root attribute ``space``. The file is written under a temporary name and
    renamed when complete.

    Parameters
    ----------
    path
        Output ``.h5`` file.
    timeseries
        A (S, T, V) array or an iterable of (T, V) arrays (one per subject; consumed lazily, so a
        generator keeps only one subject in memory).
    mask_indices
        In-mask voxel indices, (V, 3) (a (3, V) array is accepted too).
    mask_affine
        Voxel-to-mm affine of the mask grid, 4 x 4.
    mask_shape
        Shape of the mask grid (3 ints).
    subject_ids
        One identifier per subject, or ``None`` to write no ``subject_ids`` dataset.
    indices_orientation
        ``"V3"`` writes ``mask_indices`` as (V, 3), ``"3V"`` as (3, V) (both occur in the wild).
    compression
        h5py compression filter for ``timeseries`` (e.g. ``"gzip"``); ``None`` (default) is fastest.
    chunk_mb
        Largest chunk size in MiB.
    space
        Template space recorded as the root attribute ``space``; ``None`` writes none.
    validate
        Check shapes (voxel count against ``mask_indices``, same T for all subjects, one id per
        subject). ``False`` writes whatever is given, to build deliberately broken files for tests.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    import h5py

    path = Path(path)
    if indices_orientation not in ("V3", "3V"):
        raise InputError(f"indices_orientation must be 'V3' or '3V', got {indices_orientation!r}")
    idx = _as_indices_v3(mask_indices) if validate else np.asarray(mask_indices)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["mask_shape"] = np.asarray(mask_shape, dtype=np.int64)
            if space:
                f.attrs["space"] = space
            f.create_dataset(
                "mask_indices", data=(idx.T if indices_orientation == "3V" else idx).astype(np.int32)
            )
            f.create_dataset("mask_affine", data=np.asarray(mask_affine, dtype=np.float64))
            dset = None
            for x in _iter_subjects(timeseries):
                x = np.asarray(x, dtype=np.float32)
                if dset is None:
                    if validate and (x.ndim != 2 or x.shape[1] != idx.shape[0]):
                        raise InputError(
                            f"subject series {x.shape} do not match {idx.shape[0]} mask voxels", path
                        )
                    dset = f.create_dataset(
                        "timeseries",
                        shape=(0, *x.shape),
                        maxshape=(None, *x.shape),
                        dtype=np.float32,
                        chunks=_subject_chunks(*x.shape, chunk_mb),
                        compression=compression,
                    )
                elif validate and x.shape != dset.shape[1:]:
                    raise InputError(f"subject {n} has shape {x.shape}, expected {dset.shape[1:]}", path)
                dset.resize(n + 1, axis=0)
                dset[n] = x
                n += 1
            if dset is None:
                raise InputError("no subjects to write", path)
            if subject_ids is not None:
                ids = [str(s) for s in subject_ids]
                if validate and len(ids) != n:
                    raise InputError(f"{len(ids)} subject ids for {n} subjects", path)
                f.create_dataset("subject_ids", data=np.array([s.encode() for s in ids]))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("wrote %s (%d subjects)", path, n)
    return path


# ----------------------------------------------------------------------------------------------
# atlas
# ----------------------------------------------------------------------------------------------


def _hemisphere(x_mm: float) -> str:
    """``L``/``R``/``M`` from an MNI x coordinate (|x| < 2 mm is midline)."""
    return "M" if abs(x_mm) < 2.0 else ("L" if x_mm < 0 else "R")


def seitzman_table():
    """The Seitzman 2018 ROIs in their published order, one row per label 1..300.

    Returns
    -------
    pandas.DataFrame
        Columns ``index``, ``name`` (``Seitzman_<network>_<n>``, n counting within the network),
        ``network``, ``hemisphere``, ``region``, ``x``, ``y``, ``z``, ``radius_mm`` (published radius).
    """
    import pandas as pd
    from nilearn.datasets import fetch_coords_seitzman_2018

    d = fetch_coords_seitzman_2018(ordered_regions=False)
    rois = d.rois.reset_index(drop=True)
    table = pd.DataFrame(
        {
            "index": np.arange(1, len(rois) + 1),
            "network": [str(n) for n in d.networks],
            "region": [str(r) for r in d.regions],
            "x": rois["x"].to_numpy(float),
            "y": rois["y"].to_numpy(float),
            "z": rois["z"].to_numpy(float),
            "radius_mm": np.asarray(d.radius, float),
        }
    )
    counter = table.groupby("network").cumcount() + 1
    table.insert(1, "name", [f"Seitzman_{net}_{c}" for net, c in zip(table["network"], counter, strict=True)])
    table.insert(3, "hemisphere", [_hemisphere(x) for x in table["x"]])
    return table


def sphere_labels(
    centres_mm: np.ndarray, radius_mm: float, grid: Grid, mask: np.ndarray | None = None
) -> np.ndarray:
    """Label volume of spheres (label k+1 for centre k); overlaps go to the nearest centre.

    Parameters
    ----------
    centres_mm
        Sphere centres in mm, shape (n, 3).
    radius_mm
        Radius: voxels whose centres lie within it belong to the sphere.
    grid
        Output grid.
    mask
        Optional boolean volume on ``grid``; voxels outside are 0.

    Returns
    -------
    numpy.ndarray
        int16 volume of ``grid.shape``.
    """
    labels = np.zeros(grid.shape, np.int16)
    best = np.full(grid.shape, np.inf)
    inv = np.linalg.inv(grid.affine)
    reach = int(np.ceil(radius_mm / grid.voxel_size.min())) + 1
    shape = np.array(grid.shape)
    for k, c in enumerate(np.asarray(centres_mm, float)):
        centre = np.rint(inv[:3, :3] @ c + inv[:3, 3]).astype(int)
        lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, shape)
        if np.any(lo >= hi):
            continue
        box = np.indices(hi - lo).reshape(3, -1).T + lo
        d = np.sqrt(((_voxel_mm(grid, box) - c) ** 2).sum(axis=1))
        sel = d <= radius_mm + 1e-6
        box, d = box[sel], d[sel]
        ii = tuple(box.T)
        closer = d < best[ii]
        labels[tuple(box[closer].T)] = k + 1
        best[tuple(box[closer].T)] = d[closer]
    if mask is not None:
        labels[~mask] = 0
    return labels


def _write_atlas(atlas_dir: Path, model: LatentModel) -> tuple[Path, Path, np.ndarray, object]:
    """Write the Seitzman sphere atlas; return paths, the label volume and the table."""
    atlas_dir.mkdir(parents=True)
    table = seitzman_table()
    vol = sphere_labels(table[["x", "y", "z"]].to_numpy(), ATLAS_RADIUS_MM, model.grid, model.mask)
    counts = np.bincount(vol.ravel(), minlength=len(table) + 1)[1:]
    table["n_voxels"] = counts
    empty = table.loc[counts == 0, "index"].tolist()
    logger.info(
        "atlas %s: %d spheres of %g mm on the 2 mm grid, %d labelled voxels",
        ATLAS_NAME,
        len(table),
        ATLAS_RADIUS_MM,
        int(counts.sum()),
    )
    if empty:
        logger.info(
            "atlas %s: %d of %d ROIs have no voxel inside the brain mask (kept in the table): %s",
            ATLAS_NAME,
            len(empty),
            len(table),
            empty,
        )
    stem = f"tpl-{SPACE}_res-02_atlas-{ATLAS_NAME}_dseg"
    nii = atlas_dir / f"{stem}.nii.gz"
    _save_nifti(vol, model.grid.affine, nii, intent="label")
    tsv = atlas_dir / f"{stem}.tsv"
    table[["index", "name", "network", "hemisphere", "region", "x", "y", "z", "n_voxels"]].to_csv(
        tsv, sep="\t", index=False, lineterminator="\n"
    )
    return nii, tsv, vol, table


# ----------------------------------------------------------------------------------------------
# NIfTI helpers
# ----------------------------------------------------------------------------------------------


def _save_nifti(
    data: np.ndarray, affine: np.ndarray, path: Path, *, intent: str | None = None, tr: float | None = None
) -> Path:
    """Save ``data`` with ``affine`` as MNI-coded NIfTI-1 (sform and qform), units mm (and s)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=4)  # 4 = MNI_152
    img.header.set_qform(affine, code=4)
    img.header.set_xyzt_units("mm", "sec")
    if intent:
        img.header.set_intent(intent)
    if tr is not None and data.ndim == 4:
        img.header.set_zooms((*img.header.get_zooms()[:3], tr))
    img.to_filename(path)
    return path


# ----------------------------------------------------------------------------------------------
# lesions
# ----------------------------------------------------------------------------------------------

#: Stroke sites (right hemisphere MNI mm; mirrored for the left) chosen on the latent networks.
CORTICAL_SITES: dict[str, tuple[float, float, float]] = {
    "insula_operculum": (38, 12, 4),
    "precentral": (40, -20, 50),
    "inferior_parietal": (46, -54, 38),
    "occipital": (16, -84, 6),
    "dorsolateral_prefrontal": (40, 30, 28),
    "superior_parietal": (26, -62, 52),
}
SUBCORTICAL_SITES: dict[str, tuple[float, float, float]] = {
    "thalamus": (12, -18, 6),
    "putamen_internal_capsule": (24, 2, 6),
    "caudate": (14, 12, 10),
}


@dataclass(frozen=True)
class _LesionPlan:
    """What one lesion of the cohort will be (before it is drawn)."""

    participant: str
    session: str
    label: str
    res: int
    site: str
    centre_mm: tuple[float, float, float]
    volume_mm3: float
    key: int  # random stream index of the lesion shape
    grow: float = 1.0  # > 1: a follow-up (grown, shifted) version of the lesion with the same key
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _upsampled_brain_mask_1mm(mask2: np.ndarray) -> np.ndarray:
    """Conservative 1 mm brain mask: a 1 mm voxel is in if every nearest 2 mm voxel is in, eroded once.

    On the standard grids 1 mm index ``i`` sits at 2 mm index ``i / 2`` on every axis, halfway between
    two 2 mm voxels for odd ``i``; requiring both keeps a lesion inside the 2 mm mask whatever
    rounding a nearest-neighbour resampler uses.
    """
    from scipy.ndimage import binary_erosion

    padded = np.pad(mask2, ((0, 1), (0, 1), (0, 1)))
    shape1 = mni152_grid(1).shape
    lo = [np.arange(n) // 2 for n in shape1]
    hi = [(np.arange(n) + 1) // 2 for n in shape1]
    out = np.ones(shape1, bool)
    for a in (lo[0], hi[0]):
        for b in (lo[1], hi[1]):
            for c in (lo[2], hi[2]):
                out &= padded[np.ix_(a, b, c)]
    return binary_erosion(out)


#: Largest follow-up growth factor; lesion boxes are sized for it so a follow-up reuses the same field.
_MAX_GROWTH = 1.5


def _blob_score(
    rng: np.random.Generator, centre_vox: np.ndarray, n_voxels: float, shape: tuple[int, int, int]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Smooth irregular score around ``centre_vox`` in a box: higher = more likely lesioned.

    The score is a negative anisotropic squared distance (axes 0.75-1.35 of the equivalent radius)
    plus smoothed noise whose correlation length scales with the lesion, so thresholding it gives a
    lobulated blob rather than a sphere.
    """
    radius = (3 * n_voxels / (4 * np.pi)) ** (1 / 3)
    axes = rng.uniform(0.75, 1.35, 3)
    rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    half = int(np.ceil(1.8 * radius * axes.max())) + 4
    lo = np.maximum(np.rint(centre_vox).astype(int) - half, 0)
    hi = np.minimum(np.rint(centre_vox).astype(int) + half + 1, np.array(shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axis = [(np.arange(a, b) - c).astype(np.float32) for a, b, c in zip(lo, hi, centre_vox, strict=True)]
    open_axes = np.ix_(*axis)
    d2 = np.zeros(tuple(hi - lo), np.float32)
    for j in range(3):  # squared length of the rotated, axis-scaled offset, built by broadcasting
        u = sum(np.float32(rotation[i, j] / (radius * axes[j])) * open_axes[i] for i in range(3))
        d2 += u * u
    coarse = _smooth_field(rng, tuple(hi - lo), max(1.0, 0.35 * radius))
    fine = _smooth_field(rng, tuple(hi - lo), max(0.7, 0.1 * radius))  # lobulated borders
    return box, -d2 + np.float32(rng.uniform(0.6, 1.0)) * coarse + np.float32(0.25) * fine


def _select_blob(score: np.ndarray, allowed: np.ndarray, n_voxels: int) -> np.ndarray:
    """The ``n_voxels`` highest-score allowed voxels: their largest connected component, holes filled."""
    from scipy.ndimage import binary_fill_holes, label

    score = np.where(allowed, score, -np.inf)
    n = int(min(max(n_voxels, 1), int(allowed.sum())))
    if n == 0:
        return np.zeros(score.shape, bool)
    thr = np.partition(score.ravel(), score.size - n)[score.size - n]
    sel = (score >= thr) & allowed
    comp, ncomp = label(sel)
    if ncomp > 1:
        sizes = np.bincount(comp.ravel())[1:]
        sel = comp == (1 + int(np.argmax(sizes)))
    return binary_fill_holes(sel) & allowed


def _draw_lesion(plan: _LesionPlan, seed: int, brain: dict[int, np.ndarray]) -> np.ndarray:
    """Binary lesion volume for one plan, on the grid of ``plan.res``, inside the brain and one hemisphere."""
    from scipy.ndimage import shift as nd_shift

    grid = mni152_grid(plan.res)
    inv = np.linalg.inv(grid.affine)
    voxel_volume = float(np.prod(grid.voxel_size))
    n_target = plan.volume_mm3 / voxel_volume
    centre = inv[:3, :3] @ np.asarray(plan.centre_mm, float) + inv[:3, 3]
    rng = _rng(seed, _STREAM_LESION, plan.key)
    box, score = _blob_score(rng, centre, n_target * _MAX_GROWTH, grid.shape)  # same box: follow-ups
    open_axes = np.ix_(*[np.arange(s.start, s.stop) for s in box])
    xs = sum(grid.affine[0, i] * open_axes[i] for i in range(3)) + grid.affine[0, 3]
    hemi = (np.sign(xs) == np.sign(plan.centre_mm[0])) & (np.abs(xs) >= 2)
    allowed = brain[plan.res][box] & hemi
    lesion = _select_blob(score, allowed, int(round(n_target)))
    if plan.grow != 1.0 or any(plan.shift_mm):  # follow-up: the first lesion plus its grown, shifted self
        shift_vox = inv[:3, :3] @ np.asarray(plan.shift_mm, float)
        moved = nd_shift(score, shift_vox, order=1, mode="nearest")
        lesion |= _select_blob(moved, allowed, int(round(n_target * plan.grow)))
    out = np.zeros(grid.shape, np.uint8)
    out[box] = lesion
    return out


def _jitter_site(
    rng: np.random.Generator, site_mm: tuple[float, float, float], left: bool, sd_mm: float = 3.0
) -> tuple[float, float, float]:
    """A site mirrored to the chosen hemisphere and jittered by a few mm."""
    x, y, z = np.asarray(site_mm, float) + rng.normal(0, sd_mm, 3)
    x = abs(x) if x != 0 else 10.0
    return (float(round(-x if left else x, 1)), float(round(y, 1)), float(round(z, 1)))


def _cohort_plan(participants: int, seed: int) -> tuple[list[_LesionPlan], dict]:
    """Decide every lesion (participant, session, label, grid, site, size) and the clinical table."""
    rng = _rng(seed, _STREAM_COHORT)
    width = max(2, len(str(participants)))
    ids = [f"{i + 1:0{width}d}" for i in range(participants)]
    # sizes (mm^3): one tiny lacune (< 30 voxels at 1 mm), the rest log-spaced up to a large infarct
    sizes = list(np.geomspace(400, 45000, participants - 1)) if participants > 1 else [45000.0]
    sizes = ([float(rng.integers(12, 28))] + sizes) if participants > 1 else sizes
    order = rng.permutation(participants)
    volume = {ids[o]: sizes[i] for i, o in enumerate(order)}
    ranked = sorted(ids, key=lambda p: volume[p])
    tiny = ranked[0] if participants > 1 else None
    subcortical = set(ranked[:2]) if participants > 2 else ({tiny} - {None})
    # ~30 % on the 2 mm grid (never the tiny one), ~1/3 with a follow-up session
    others = [p for p in ids if p != tiny]
    n_2mm = int(round(0.3 * participants))
    res2 = set(rng.choice(others, size=min(n_2mm, len(others)), replace=False).tolist())
    n_two = int(round(participants / 3))
    two_sessions = set(rng.choice(ids, size=min(n_two, len(ids)), replace=False).tolist())
    singles = [p for p in ids if p != tiny and p not in two_sessions] or [p for p in ids if p != tiny]
    n_second = 1 if participants < 6 else 2
    second = set(singles[:n_second]) if participants > 1 else set()

    # sites cycle through a shuffled list, so a cohort covers many networks
    cycles = {
        id(pool): [str(x) for x in rng.permutation(sorted(pool))]
        for pool in (CORTICAL_SITES, SUBCORTICAL_SITES)
    }
    plans: list[_LesionPlan] = []
    clinical: dict[str, dict] = {}
    key = 0
    for p in ids:
        left = bool(rng.random() < 0.5)
        pool = SUBCORTICAL_SITES if p in subcortical else CORTICAL_SITES
        cycle = cycles[id(pool)]
        site = cycle.pop(0)
        cycle.append(site)
        centre = _jitter_site(rng, pool[site], left)
        res = 2 if p in res2 else 1
        base = _LesionPlan(p, "01", MAIN_LABEL, res, site, centre, volume[p], key)
        plans.append(base)
        onset = int(rng.integers(0, 4))
        sessions = {"01": onset}
        if p in two_sessions:
            radius_mm = (3 * volume[p] / (4 * np.pi)) ** (1 / 3)
            shift = tuple(float(round(s, 1)) for s in rng.normal(0, max(0.5, 0.1 * radius_mm), 3))
            plans.append(
                _LesionPlan(
                    p,
                    "02",
                    MAIN_LABEL,
                    res,
                    site,
                    centre,
                    volume[p],
                    key,
                    grow=float(rng.uniform(1.1, 1.4)),
                    shift_mm=shift,
                )
            )
            sessions["02"] = onset + int(rng.integers(3, 8))
        if p in second:
            key += 1
            old_site = str(rng.choice(sorted(SUBCORTICAL_SITES)))
            old_centre = _jitter_site(rng, SUBCORTICAL_SITES[old_site], not left)
            old_volume = float(rng.uniform(300, 3000))
            for ses in sessions:
                plans.append(_LesionPlan(p, ses, SECOND_LABEL, res, old_site, old_centre, old_volume, key))
        key += 1
        clinical[p] = {
            "age": int(rng.integers(38, 89)),
            "sex": str(rng.choice(["F", "M"])),
            "sessions": sessions,
            "nihss_noise": float(rng.normal(0, 1.5)),
        }
    return plans, clinical


def _nihss(volume_mm3: float, noise: float) -> int:
    """A symptom score (0-42) increasing with the log of the acute lesion volume."""
    return int(np.clip(round(-4 + 5.5 * np.log10(max(volume_mm3, 1.0)) + noise), 0, 42))


def _lesion_path(bids_dir: Path, plan: _LesionPlan) -> Path:
    """``sub-X/ses-Y/anat/sub-X_ses-Y_space-S[_res-2]_label-L_mask.nii.gz`` (1 mm files carry no res)."""
    sub, ses = check_entity(plan.participant, "sub"), check_entity(plan.session, "ses")
    name = bids_name(
        {
            "sub": sub,
            "ses": ses,
            "space": SPACE,
            "res": "2" if plan.res == 2 else None,
            "label": check_entity(plan.label, "label"),
        },
        "mask",
        ".nii.gz",
    )
    return bids_dir / f"sub-{sub}" / f"ses-{ses}" / "anat" / name


def _bids_metadata(bids_dir: Path, clinical: dict, acute_volume: dict[str, float]) -> None:
    """``dataset_description.json``, ``participants.tsv/.json`` and per-participant ``sessions.tsv``."""
    import lakepipe

    description = {
        "Name": "lakepipe tutorial lesion dataset (synthetic)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["lakepipe"],
        "Description": "Synthetic binary lesion masks in MNI152NLin6Asym space generated by "
        "lakepipe.tutorial for examples and tests. Not real patients.",
        "GeneratedBy": [{"Name": "lakepipe.tutorial", "Version": lakepipe.__version__}],
    }
    _write_json(bids_dir / "dataset_description.json", description)
    rows = ["participant_id\tage\tsex\tnihss\tdays_since_onset"]
    for p, c in clinical.items():
        rows.append(
            f"sub-{p}\t{c['age']}\t{c['sex']}\t{_nihss(acute_volume[p], c['nihss_noise'])}"
            f"\t{c['sessions']['01']}"
        )
        ses_rows = ["session_id\tdays_since_onset"] + [f"ses-{s}\t{d}" for s, d in c["sessions"].items()]
        (bids_dir / f"sub-{p}" / f"sub-{p}_sessions.tsv").write_text("\n".join(ses_rows) + "\n")
    (bids_dir / "participants.tsv").write_text("\n".join(rows) + "\n")
    _write_json(
        bids_dir / "participants.json",
        {
            "participant_id": {"Description": "Participant label"},
            "age": {"Description": "Age at stroke onset", "Units": "year"},
            "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
            "nihss": {
                "Description": "NIH Stroke Scale at the first session (synthetic; increases with "
                "the log of the acute lesion volume)",
                "Units": "score (0-42)",
            },
            "days_since_onset": {
                "Description": "Days from stroke onset to the first session (ses-01); "
                "see sub-<label>_sessions.tsv for every session",
                "Units": "day",
            },
        },
    )


def _write_lesions(bids_dir: Path, participants: int, seed: int) -> list[dict]:
    """Draw and write every lesion mask plus the BIDS metadata; return one manifest row per mask."""
    plans, clinical = _cohort_plan(participants, seed)
    mask2 = mni152_brain_mask_2mm()
    brain = {2: mask2, 1: _upsampled_brain_mask_1mm(mask2)}
    rows, acute_volume = [], {}
    for plan in plans:
        data = _draw_lesion(plan, seed, brain)
        n = int(data.sum())
        if n == 0:  # pragma: no cover - guarded by construction
            raise RuntimeError(f"empty tutorial lesion for {plan}")
        path = _lesion_path(bids_dir, plan)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_nifti(data, mni152_grid(plan.res).affine, path)
        volume = n * float(np.prod(mni152_grid(plan.res).voxel_size))
        if plan.label == MAIN_LABEL and plan.session == "01":
            acute_volume[plan.participant] = volume
        rows.append(
            {
                "participant": plan.participant,
                "session": plan.session,
                "label": plan.label,
                "res_mm": plan.res,
                "site": plan.site,
                "centre_mm": list(plan.centre_mm),
                "n_voxels": n,
                "volume_mm3": volume,
                "path": path.relative_to(bids_dir.parent).as_posix(),
            }
        )
    _bids_metadata(bids_dir, clinical, acute_volume)
    logger.info(
        "lesions: %d masks for %d participants (%d at 2 mm), %d to %d voxels",
        len(rows),
        participants,
        sum(r["res_mm"] == 2 for r in rows),
        min(r["n_voxels"] for r in rows),
        max(r["n_voxels"] for r in rows),
    )
    return rows


# ----------------------------------------------------------------------------------------------
# connectome (HDF5, parcel series, 4D NIfTI), streamed one subject at a time
# ----------------------------------------------------------------------------------------------


class _ParcelMeans:
    """Parcel means (parcels x time) of voxel series under a label vector, for non-empty parcels."""

    def __init__(self, voxel_labels: np.ndarray):
        order = np.argsort(voxel_labels, kind="stable")
        keep = voxel_labels[order] > 0
        self.columns = order[keep]
        labs = voxel_labels[self.columns]
        self.labels, self.starts, self.counts = np.unique(labs, return_index=True, return_counts=True)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        sums = np.add.reduceat(x[:, self.columns].astype(np.float64), self.starts, axis=1)
        return (sums / self.counts).T.astype(np.float32)


def _subject_ids(subjects: int) -> list[str]:
    """``GSP0001``-style identifiers (at least 4 digits)."""
    width = max(4, len(str(subjects)))
    return [f"GSP{i + 1:0{width}d}" for i in range(subjects)]


def _parcel_sink(out_dir: Path, ids: list[str], means: _ParcelMeans) -> Callable[[int, np.ndarray], None]:
    """Write each subject's parcel series as ``sub-<id>_timeseries.npy`` (the last one as ``.tsv``)."""

    def sink(s: int, x: np.ndarray) -> None:
        ts = means(x)
        if s == len(ids) - 1 and len(ids) > 1:  # one TSV (no header, parcels x time) for that reader
            np.savetxt(out_dir / f"sub-{ids[s]}_timeseries.tsv", ts, delimiter="\t", fmt="%.9g")
        else:
            np.save(out_dir / f"sub-{ids[s]}_timeseries.npy", ts)

    return sink


def _nifti_sink(
    out_dir: Path, ids: list[str], model: LatentModel, n_subjects: int
) -> Callable[[int, np.ndarray], None]:
    """Write the first ``n_subjects`` subjects as 4D NIfTI (zeros outside the brain mask)."""
    flat = np.ravel_multi_index(tuple(model.ijk.T), model.grid.shape, order="F")

    def sink(s: int, x: np.ndarray) -> None:
        if s >= n_subjects:
            return
        vol = np.zeros((*model.grid.shape, x.shape[0]), np.float32, order="F")  # NIfTI's on-disk order
        columns = vol.reshape(-1, x.shape[0], order="F")  # a view: one contiguous column per volume
        for t in range(x.shape[0]):
            columns[flat, t] = x[t]
        _save_nifti(vol, model.grid.affine, out_dir / f"sub-{ids[s]}_bold.nii.gz", tr=REPETITION_TIME)

    return sink


def _write_connectome(
    conn_dir: Path,
    model: LatentModel,
    seed: int,
    subjects: int,
    timepoints: int,
    batch_size: int,
    sinks: Sequence[Callable[[int, np.ndarray], None]],
) -> list[dict]:
    """Generate subjects one at a time into HDF5 batches, feeding each to ``sinks`` too."""
    conn_dir.mkdir(parents=True)
    ids = _subject_ids(subjects)
    batches = []
    for b, start in enumerate(range(0, subjects, batch_size)):
        members = range(start, min(start + batch_size, subjects))

        def stream(members: range = members) -> Iterator[np.ndarray]:
            for s in members:
                x = subject_timeseries(model, seed, s, timepoints)
                for sink in sinks:
                    sink(s, x)
                yield x

        path = conn_dir / f"batch-{b + 1:03d}.h5"
        write_hdf5_batch(
            path,
            stream(),
            model.ijk,
            model.grid.affine,
            model.grid.shape,
            subject_ids=[ids[s] for s in members],
        )
        batches.append({"file": path.name, "subject_ids": [ids[s] for s in members]})
        logger.info(
            "connectome: wrote %s (%d subjects x %d timepoints x %d voxels)",
            path.name,
            len(members),
            timepoints,
            model.n_voxels,
        )
    return batches


# ----------------------------------------------------------------------------------------------
# folder, manifest, README
# ----------------------------------------------------------------------------------------------


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
    """

    root: Path
    bids: Path
    connectome: Path
    atlas_nifti: Path
    atlas_labels: Path
    parcel_timeseries: Path | None
    nifti_connectome: Path | None
    manifest: Path


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _paths(root: Path, parcel_timeseries: bool, nifti_connectome: bool) -> TutorialPaths:
    stem = f"tpl-{SPACE}_res-02_atlas-{ATLAS_NAME}_dseg"
    return TutorialPaths(
        root=root,
        bids=root / "bids",
        connectome=root / "connectome",
        atlas_nifti=root / "atlas" / f"{stem}.nii.gz",
        atlas_labels=root / "atlas" / f"{stem}.tsv",
        parcel_timeseries=root / "parcel_timeseries" if parcel_timeseries else None,
        nifti_connectome=root / "nifti_connectome" if nifti_connectome else None,
        manifest=root / "tutorial.json",
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
    import lakepipe

    try:
        manifest = json.loads((root / "tutorial.json").read_text())
    except (OSError, ValueError):
        return False
    if (
        manifest.get("parameters") != parameters
        or manifest.get("layout_version") != LAYOUT_VERSION
        or manifest.get("lakepipe_version") != lakepipe.__version__
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


def _check_parameters(participants: int, subjects: int, timepoints: int, batch_size: int, seed: int) -> None:
    for name, value, low in (
        ("participants", participants, 1),
        ("subjects", subjects, 1),
        ("timepoints", timepoints, 3),
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(
                f"{name} must be an integer >= {low}, got {value!r}", "--" + name.replace("_", "-")
            )


_README = """# lakepipe tutorial data

Synthetic, deterministic example inputs written by `lakepipe tutorial` (`lakepipe.tutorial.write_tutorial`)
with seed {seed}. Nothing here is real patient or scanner data; nothing was downloaded. Space of
everything: MNI152NLin6Asym (2 mm grid 91 x 109 x 91, 1 mm grid 182 x 218 x 182, FSL/GSP1000 affines).
`tutorial.json` lists the parameters, the lakepipe version and every file with its size.

## bids/  (lesion masks, BIDS 1.9 raw dataset)
{participants} participants; files
`sub-<p>/ses-<s>/anat/sub-<p>_ses-<s>_space-MNI152NLin6Asym[_res-2]_label-<label>_mask.nii.gz`.
Binary uint8 masks. Masks on the 1 mm grid carry **no** `res` entity; masks on the 2 mm grid carry `res-2`.
About a third of the participants have a follow-up session `ses-02` whose lesion is the `ses-01` lesion
grown and slightly shifted; one or two participants also have an older `label-{second}` lesion.
Lesions are smooth irregular blobs (thresholded smoothed noise around a centre) at cortical and subcortical
stroke sites on the latent networks, from one tiny lacune (< 30 voxels) to a large infarct (~45 ml),
each confined to one hemisphere and to the brain mask. `participants.tsv`: `participant_id`, `age`,
`sex`, `nihss` (synthetic symptom score rising with the log of the acute lesion volume),
`days_since_onset` (first session); `sub-<p>/sub-<p>_sessions.tsv` gives every session's day.

## connectome/  (GSP1000 HDF5 batch layout)
{subjects} normative subjects x {timepoints} time points (TR {tr} s) on the 2 mm brain mask
({voxels} voxels), {batch_size} subjects per `batch-NNN.h5`. Each file: `timeseries` (subjects, time,
voxels) float32, raw values (positive baseline ~100-1000 per voxel plus ~1 % signal); `mask_indices`
(V, 3) int32 ijk of the in-mask voxels in C order of the mask; `mask_affine` (4 x 4); root attribute
`mask_shape`; `subject_ids` (bytes, `GSP0001`, ...). Generated from a latent network model: {networks}
smooth bilateral network maps ({network_names}), AR(1) network time courses with a fixed
between-network correlation, subject-specific loadings and white noise. Seed-to-voxel correlations are
about 0.3-0.6 within a network and near 0 elsewhere.

## atlas/
`tpl-MNI152NLin6Asym_res-02_atlas-Seitzman2018_dseg.nii.gz`: the Seitzman et al. 2018 (NeuroImage
206:116290) 300 ROI coordinates shipped by nilearn, as {radius:g} mm spheres labelled 1..300 in the
published order (overlaps go to the nearest centre), restricted to the brain mask. The `.tsv` has
`index`, `name` (`Seitzman_<network>_<n>`), `network`, `hemisphere` (L/R/M), `region`, `x`, `y`, `z`,
`n_voxels`; ROIs with no voxel in the mask ({empty} here) stay in the table with `n_voxels` 0.

## parcel_timeseries/  ({parcel_state})
Per-subject `sub-<id>_timeseries.npy`, float32 parcels x time (HCP parcellated layout), the mean of the
same subjects' voxel series over each non-empty atlas parcel; the last subject is written as a
header-less `.tsv` with the same layout instead. `regions.tsv` (`index`, `name`, `network`) names the rows.

## nifti_connectome/  ({nifti_state})
The first {n_nifti} subjects as 4D float32 NIfTI `sub-<id>_bold.nii.gz` on the 2 mm grid (zeros outside the
mask), plus `brain_mask.nii.gz`.
"""


def _write_readme(paths: TutorialPaths, params: dict, n_voxels: int, n_empty: int) -> None:
    text = _README.format(
        seed=params["seed"],
        participants=params["participants"],
        second=SECOND_LABEL,
        subjects=params["subjects"],
        timepoints=params["timepoints"],
        tr=REPETITION_TIME,
        voxels=n_voxels,
        batch_size=params["batch_size"],
        networks=len(NETWORKS),
        network_names=", ".join(n.name for n in NETWORKS),
        radius=ATLAS_RADIUS_MM,
        empty=n_empty,
        parcel_state="written" if paths.parcel_timeseries else "not written: parcel_timeseries=False",
        nifti_state="written" if paths.nifti_connectome else "not written: nifti_connectome=False",
        n_nifti=min(N_NIFTI_SUBJECTS, params["subjects"]),
    )
    (paths.root / "README.md").write_text(text)


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

    Returns
    -------
    TutorialPaths
        Where everything is.

    Raises
    ------
    lakepipe.errors.InputError
        Bad parameters, or ``out_dir`` holds files that are not a lakepipe tutorial.
    """
    import lakepipe

    _check_parameters(participants, subjects, timepoints, batch_size, seed)
    root = Path(out_dir)
    params = {
        "participants": int(participants),
        "subjects": int(subjects),
        "timepoints": int(timepoints),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "nifti_connectome": bool(nifti_connectome),
        "parcel_timeseries": bool(parcel_timeseries),
    }
    paths = _paths(root, parcel_timeseries, nifti_connectome)
    if _up_to_date(root, params):
        logger.info("tutorial in %s is up to date; nothing to do", root)
        return paths
    _prepare_root(root)
    t0 = time.perf_counter()
    model = build_latent_model(seed)
    lesions = _write_lesions(paths.bids, participants, seed)
    _, _, atlas_vol, table = _write_atlas(paths.atlas_nifti.parent, model)
    sinks = _optional_sinks(paths, model, subjects, atlas_vol, table)
    batches = _write_connectome(paths.connectome, model, seed, subjects, timepoints, batch_size, sinks)
    n_empty = int((table["n_voxels"] == 0).sum())
    _write_readme(paths, params, model.n_voxels, n_empty)
    manifest = {
        "generator": "lakepipe.tutorial",
        "layout_version": LAYOUT_VERSION,
        "lakepipe_version": lakepipe.__version__,
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
        "files": _file_list(root),
    }
    _write_json(paths.manifest, manifest)
    logger.info("tutorial written to %s in %.1f s", root, time.perf_counter() - t0)
    return paths


def _optional_sinks(
    paths: TutorialPaths, model: LatentModel, subjects: int, atlas_vol: np.ndarray, table
) -> list[Callable[[int, np.ndarray], None]]:
    """Per-subject writers for the parcel series and the 4D NIfTI, as asked."""
    ids = _subject_ids(subjects)
    sinks = []
    if paths.parcel_timeseries is not None:
        paths.parcel_timeseries.mkdir(parents=True)
        means = _ParcelMeans(atlas_vol[model.mask].astype(np.int64))
        regions = table.set_index("index").loc[means.labels, ["name", "network"]].reset_index()
        regions.to_csv(paths.parcel_timeseries / "regions.tsv", sep="\t", index=False, lineterminator="\n")
        sinks.append(_parcel_sink(paths.parcel_timeseries, ids, means))
    if paths.nifti_connectome is not None:
        paths.nifti_connectome.mkdir(parents=True)
        _save_nifti(
            model.mask.astype(np.uint8), model.grid.affine, paths.nifti_connectome / "brain_mask.nii.gz"
        )
        sinks.append(_nifti_sink(paths.nifti_connectome, ids, model, N_NIFTI_SUBJECTS))
    return sinks
