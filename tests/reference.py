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


def load_h5_connectome(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(S, T, V) raw series of every subject, the (V, 3) ijk, affine and grid shape."""
    series, ijk, affine, shape = [], None, None, None
    for path in sorted(Path(folder).glob("*.h5")):
        with h5py.File(path) as f:
            series.append(f["timeseries"][()])
            idx = f["mask_indices"][()]
            ijk = idx if idx.shape[1] == 3 else idx.T
            affine, shape = f["mask_affine"][()], tuple(int(s) for s in f.attrs["mask_shape"])
    return np.concatenate(series).astype(np.float64), ijk, affine, shape


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

    parcel_ts = np.stack([np.stack([s[:, voxel_labels == lab].mean(axis=1) for lab in labels], axis=1)
                          for s in series])
    measure = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance(), standardize=False)
    r = measure.fit_transform(list(parcel_ts))
    z = np.arctanh(np.clip(r, -CLIP, CLIP))
    for zi in z:
        np.fill_diagonal(zi, 0)
    return z.mean(axis=0)


def afnm_fractional(lesion_path: Path, atlas_path: Path, labels: list[int], C: np.ndarray,
                    weighting: str = "fractional") -> np.ndarray:
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
        den = np.sqrt((sc ** 2).sum() * (xc ** 2).sum(axis=0))
        r = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
        rs.append(r)
        zs.append(np.arctanh(np.clip(r, -CLIP, CLIP)))
    z = np.array(zs)
    t = stats.ttest_1samp(z, 0.0, axis=0).statistic
    return {"zmap": z.mean(0), "rmap": np.tanh(z.mean(0)), "tmap": t, "avgr": np.mean(rs, axis=0)}
