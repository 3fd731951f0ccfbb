"""Independent, straightforward reference implementations the pipelines are checked against.

Deliberately naive: raw series straight from the source files (h5py, nibabel), atlases resampled
with nilearn, correlations with numpy/nilearn, loops over parcels, lesions and seeds. Nothing here
imports lakepipe's compute kernels.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from nilearn.image import resample_to_img

CLIP = 0.999999


def load_h5_connectome(folder: Path, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(S, T, V) raw series of every subject (as ``dtype``), the (V, 3) ijk, affine and grid shape."""
    series, ijk, affine, shape = [], None, None, None
    for path in sorted(Path(folder).glob("*.h5")):
        with h5py.File(path) as f:
            series.append(f["timeseries"][()])
            idx = f["mask_indices"][()]
            ijk = idx if idx.shape[1] == 3 else idx.T
            affine, shape = f["mask_affine"][()], tuple(int(s) for s in f.attrs["mask_shape"])
    return np.concatenate(series).astype(dtype, copy=False), ijk, affine, shape


def atlas_on_connectome(atlas_path: Path, affine: np.ndarray, shape: tuple) -> np.ndarray:
    """Atlas labels resampled with nilearn (nearest) onto the connectome grid."""
    target = nib.Nifti1Image(np.zeros(shape, np.int8), affine)
    img = nib.load(str(atlas_path))
    img = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int32), img.affine)
    out = resample_to_img(img, target, interpolation="nearest", force_resample=True, copy_header=True)
    return np.asarray(out.dataobj).astype(int)


def group_fc_z(series: np.ndarray, voxel_labels: np.ndarray, labels: list[int]) -> np.ndarray:
    """Mean over subjects of arctanh(r) between parcel-mean series (nilearn ConnectivityMeasure)."""
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    parcel_ts = np.stack(
        [np.stack([s[:, voxel_labels == lab].mean(axis=1) for lab in labels], axis=1) for s in series]
    )
    measure = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance(), standardize=False)
    r = measure.fit_transform(list(parcel_ts))
    z = np.arctanh(np.clip(r, -CLIP, CLIP))
    for zi in z:
        np.fill_diagonal(zi, 0)
    return z.mean(axis=0)


def afnm_fractional(
    lesion_path: Path, atlas_path: Path, labels: list[int], C: np.ndarray, weighting: str = "fractional"
) -> np.ndarray:
    """m @ C for one lesion, the atlas resampled to the lesion grid with nilearn."""
    lesion = nib.load(str(lesion_path))
    les = np.asarray(lesion.dataobj) > 0
    atlas = atlas_on_connectome(atlas_path, lesion.affine, lesion.shape[:3])
    top = max(int(atlas.max()), max(labels)) + 1
    n_in = np.bincount(atlas[les], minlength=top)[labels]
    size = np.bincount(atlas.ravel(), minlength=top)[labels]
    if weighting in ("fractional", "binary"):
        m = (n_in > 0).astype(float)
    else:  # voxel_count
        m = np.where(size > 0, n_in / np.maximum(size, 1), 0.0)
    if weighting == "fractional" and m.sum():
        m /= m.sum()
    return m @ C


def seed_to_voxel(series: np.ndarray, seed_voxels: np.ndarray) -> dict[str, np.ndarray]:
    """Per subject: seed mean series, Pearson r with every voxel, arctanh; then mean, sd and t."""
    from scipy import stats

    zs, rs = [], []
    for s in series:
        seed = s[:, seed_voxels].mean(axis=1)
        sc = seed - seed.mean()
        xc = s - s.mean(axis=0)
        num = sc @ xc
        den = np.sqrt((sc**2).sum() * (xc**2).sum(axis=0))
        r = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
        rs.append(r)
        zs.append(np.arctanh(np.clip(r, -CLIP, CLIP)))
    z = np.array(zs)
    t = stats.ttest_1samp(z, 0.0, axis=0).statistic
    return {"zmap": z.mean(0), "rmap": np.tanh(z.mean(0)), "tmap": t, "avgr": np.mean(rs, axis=0)}


def seed_voxels_on_grid(
    mask_path: Path, ijk: np.ndarray, affine: np.ndarray, shape: tuple
) -> tuple[np.ndarray, np.ndarray, int]:
    """A lesion/seed mask resampled with nilearn (nearest) onto the connectome grid.

    Returns the connectome voxel columns it covers, their mask values (weights) and how many of
    its grid voxels lie outside the connectome mask.
    """
    img = nib.load(str(mask_path))
    img = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32), img.affine)
    on_grid = np.asarray(
        resample_to_img(
            img,
            nib.Nifti1Image(np.zeros(shape, np.int8), affine),
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        ).dataobj
    )
    in_mask = np.zeros(shape, bool)
    in_mask[tuple(np.asarray(ijk).T)] = True
    values = on_grid[tuple(np.asarray(ijk).T)]
    columns = np.flatnonzero(values != 0)
    dropped = int(np.count_nonzero((on_grid != 0) & ~in_mask))
    return columns, values[columns].astype(np.float64), dropped


def sphere_grid_voxels_nilearn(
    center_mm, radius_mm: float, mask: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """(n, 3) ijk of the voxels of ``mask`` (a 3D grid volume) that ``nilearn.maskers.NiftiSpheresMasker``
    puts in a sphere; empty when nilearn finds none."""
    from nilearn.maskers import nifti_spheres_masker as nsm

    get_affinity = getattr(nsm, "apply_mask_and_get_affinity", None) or nsm._apply_mask_and_get_affinity
    mask = np.asarray(mask).astype(np.int8)
    try:
        _, A = get_affinity([tuple(center_mm)], None, radius_mm, True, mask_img=nib.Nifti1Image(mask, affine))
    except ValueError as exc:  # nilearn refuses empty spheres
        if "empty" in str(exc):
            return np.empty((0, 3), int)
        raise
    # nilearn's columns are the mask voxels in np.nonzero (C) order
    return np.argwhere(mask)[A.tocsr()[0].indices]


def sphere_voxels_nilearn(
    center_mm, radius_mm: float, ijk: np.ndarray, affine: np.ndarray, shape: tuple
) -> tuple[np.ndarray, int]:
    """Connectome voxel columns of a sphere as NiftiSpheresMasker selects them (within the connectome
    mask), and how many grid voxels of the sphere lie outside that mask."""
    ijk = np.asarray(ijk)
    mask = np.zeros(shape, np.int8)
    mask[tuple(ijk.T)] = 1
    inside = sphere_grid_voxels_nilearn(center_mm, radius_mm, mask, affine)
    # every grid voxel near the centre (a box a little larger than the sphere), masked by nothing
    c = np.linalg.solve(affine, np.r_[np.asarray(center_mm, float), 1.0])[:3]
    half = radius_mm / np.abs(np.linalg.eigvals(affine[:3, :3])).min() + 2
    lo = np.clip(np.floor(c - half), 0, np.array(shape) - 1).astype(int)
    hi = np.clip(np.ceil(c + half) + 1, 0, np.array(shape)).astype(int)
    box = np.zeros(shape, np.int8)
    box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    everywhere = sphere_grid_voxels_nilearn(center_mm, radius_mm, box, affine) if box.any() else inside[:0]
    lut = np.full(shape, -1)
    lut[tuple(ijk.T)] = np.arange(len(ijk))
    return np.sort(lut[tuple(inside.T)]), len(everywhere) - len(inside)


def seed_to_voxel_many(
    series: np.ndarray, seeds: list[tuple[np.ndarray, np.ndarray | None]], with_p: bool = True
) -> list[dict[str, np.ndarray]]:
    """:func:`seed_to_voxel` for several (voxel columns, weights or None) seeds, centring each
    subject's voxels once; the seed series is the weighted mean of its voxels' raw series."""
    from scipy import stats

    n_sub = len(series)
    z = np.empty((len(seeds), n_sub, series.shape[2]))
    r_sum = np.zeros((len(seeds), series.shape[2]))
    for k, s in enumerate(series):
        s = np.asarray(s, dtype=np.float64)
        xc = s - s.mean(axis=0)
        xnorm = np.sqrt((xc**2).sum(axis=0))
        for j, (cols, w) in enumerate(seeds):
            w = np.ones(len(cols)) if w is None else np.asarray(w, np.float64)
            seed = s[:, cols] @ w / w.sum()
            sc = seed - seed.mean()
            den = np.sqrt((sc**2).sum()) * xnorm
            rr = np.where(den > 0, (sc @ xc) / np.where(den > 0, den, 1), 0.0)
            r_sum[j] += rr
            z[j, k] = np.arctanh(np.clip(rr, -CLIP, CLIP))
    out = []
    for j in range(len(seeds)):
        t = stats.ttest_1samp(z[j], 0.0, axis=0).statistic
        maps = {
            "zmap": z[j].mean(0),
            "rmap": np.tanh(z[j].mean(0)),
            "tmap": t,
            "avgr": r_sum[j] / n_sub,
            "zsd": z[j].std(axis=0, ddof=1),
            "rmax": np.tanh(np.abs(z[j]).max(axis=0)),  # largest |r| over subjects (for tolerances)
        }
        if with_p:
            maps["pmap"] = 2 * stats.t.sf(np.abs(t), n_sub - 1)
        out.append(maps)
    return out
