"""The latent network model every tutorial dataset is generated from.

A handful of smooth, bilateral network maps on the 2 mm brain mask (:data:`NETWORKS`), AR(1) network
time courses with a fixed between-network correlation (:data:`NETWORK_CORRELATIONS`), and per-voxel
baselines, signal scales and noise levels. :func:`subject_timeseries` draws one normative subject.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lakepipe.space import Grid, mni152_brain_mask_2mm, mni152_grid
from lakepipe.tutorial.common import STREAM_MODEL, STREAM_SUBJECT, generator, smooth_field, voxel_mm


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
        irregular = np.exp(0.2 * smooth_field(rng, mask.shape, 2.0)[mask])
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
    xyz = voxel_mm(grid, ijk)
    rng = generator(seed, STREAM_MODEL)
    loadings = _network_maps(rng, xyz, mask, networks)
    phi = rng.uniform(0.5, 0.7, len(networks))
    v = ijk.shape[0]
    smooth = smooth_field(rng, mask.shape, 4.0)[mask]
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


def network_courses(rng: np.random.Generator, model: LatentModel, timepoints: int) -> np.ndarray:
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
    rng = generator(seed, STREAM_SUBJECT, index)
    courses = network_courses(rng, model, timepoints)
    k: int = courses.shape[0]
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
