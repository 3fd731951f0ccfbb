"""Pieces of a group decomposition (nilearn's CanICA / DictLearning) that stream a subject at a time,
and turning extracted regions into a label atlas.

nilearn's decomposition estimators (``nilearn.decomposition._BaseDecomposition.fit``) run in two
stages, and only the second needs the whole group:

1. **Per-subject reduction** (``_mask_and_reduce_single``): a subject's cleaned series ``X`` (time x
   voxel) is replaced by its ``k`` leading principal maps scaled by their singular values,
   ``U_k.T * S_k`` from the SVD of ``X.T`` (``k = n_components``, or all ``T`` frames when fewer);
   the reduced subjects are stacked into one ``(sum of k, voxel)`` array.
2. **Group decomposition** (``_raw_fit`` of the estimator): a randomized SVD of the stack, then
   FastICA (CanICA) or online dictionary learning (DictLearning).

:func:`reduce_subject` is stage 1 for one subject, so a method can read the subjects one at a time
(from any store, on any worker) and feed the stack to the estimator's stage 2: memory is one subject's
series plus the stack, which is ``T / k`` times smaller than the data.

:func:`reduce_subject` computes the SVD exactly through the small ``T x T`` Gram matrix ``X X.T``
(eigenvectors ``W``, eigenvalues ``S^2``; then ``U_k.T * S_k = W_k.T X``) in float64. nilearn's
``_fast_svd`` uses LAPACK's full SVD for small problems (``max(V, T) <= 500`` or ``k >= 0.8 T``) and
scikit-learn's randomized SVD otherwise: the result is the full-SVD one (to float32 rounding, signs by
the same rule: the largest ``|value|`` of each map positive, ``sklearn.utils.extmath.svd_flip``), and
the randomized one agrees with it to the accuracy of the randomized approximation. The Gram route
costs ``T^2 V`` flops, about 0.03 s for 40 frames x 235,000 voxels, where the randomized SVD takes
seconds.

:func:`lasso_code` is DictLearning's last step, the sparse code of every voxel on the learned
dictionary (scikit-learn's ``sparse_encode``, which fits one Lasso per voxel in a Python loop:
about 0.2 ms a voxel, 50 s for the 235,375 voxels of the 2 mm mask on a 2-core Xeon). It solves the
same problems by coordinate descent on all voxels at once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lasso_code", "reduce_subject", "regions_to_labels", "spatial_correlation"]


def reduce_subject(series: np.ndarray, n_components: int) -> np.ndarray:
    """One subject's reduction for a group decomposition (stage 1 of the module notes).

    Parameters
    ----------
    series
        Cleaned series, shape (T, V): time points x voxels (what nilearn's masker gives).
    n_components
        ``k``; ``min(k, T)`` maps are returned (nilearn's rule for short runs).

    Returns
    -------
    numpy.ndarray
        float32 (min(k, T), V): the leading principal maps ``U_k.T * S_k`` of ``series.T``, in order of
        decreasing singular value, each signed so that its largest ``|value|`` is positive.

    Raises
    ------
    ValueError
        ``series`` is not 2D, or ``n_components < 1``.
    """
    x = np.asarray(series)
    if x.ndim != 2:
        raise ValueError(f"series must be (time, voxel), got shape {x.shape}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    k = min(int(n_components), x.shape[0])
    x64 = x.astype(np.float64, copy=False)
    gram = x64 @ x64.T
    _, vecs = np.linalg.eigh(gram)  # ascending eigenvalues
    w = vecs[:, ::-1][:, :k]
    maps = w.T @ x64  # = S_k * U_k.T
    # svd_flip(U, V) with u_based_decision: the largest |entry| of each column of U (a voxel map) > 0
    peak = np.argmax(np.abs(maps), axis=1)
    signs = np.sign(maps[np.arange(k), peak])
    signs[signs == 0] = 1.0
    out: np.ndarray = (maps * signs[:, None]).astype(np.float32)
    return out


def regions_to_labels(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A label volume from region maps (nilearn's ``RegionExtractor.regions_img_``): each voxel takes the
    region whose map is largest there (positive values only; ties: the lower region number).

    Parameters
    ----------
    regions
        (X, Y, Z, R) region maps; 0 outside each region.

    Returns
    -------
    labels
        int32 (X, Y, Z): ``r + 1`` where region ``r`` wins, 0 where no map is positive.
    counts
        int64 (R,): voxels each region kept (0: every voxel of it lies where another region's map is
        larger).

    Raises
    ------
    ValueError
        ``regions`` is not 4D.
    """
    maps = np.asarray(regions)
    if maps.ndim != 4:
        raise ValueError(f"region maps must be 4D (x, y, z, region), got shape {maps.shape}")
    n = maps.shape[3]
    labels = np.zeros(maps.shape[:3], np.int32)
    if n == 0:
        return labels, np.zeros(0, np.int64)
    best = np.argmax(maps, axis=3)  # first maximum: the lower region number on ties
    top = np.take_along_axis(maps, best[..., None], axis=3)[..., 0]
    inside = top > 0
    labels[inside] = best[inside].astype(np.int32) + 1
    counts = np.bincount(labels.reshape(-1), minlength=n + 1)[1:].astype(np.int64)
    return labels, counts


def spatial_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation over voxels between every map of ``a`` (m, V) and every map of ``b`` (n, V).

    Returns an (m, n) float64 array; a constant map has correlation NaN with everything.
    """
    x = np.atleast_2d(np.asarray(a, dtype=np.float64))
    y = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"maps of {x.shape[1]} and {y.shape[1]} voxels cannot be correlated")
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    nx = np.linalg.norm(x, axis=1)
    ny = np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = (x @ y.T) / np.outer(nx, ny)
    out[~np.isfinite(out)] = np.nan
    return out


def lasso_code(
    x: np.ndarray, dictionary: np.ndarray, alpha: float, *, max_iter: int = 1000, tol: float = 1e-10
) -> np.ndarray:
    """Lasso codes of the rows of ``x`` on the atoms of ``dictionary``, all rows at once.

    Each row's code is ``argmin_c 0.5 ||x_i - c D||^2 + alpha ||c||_1``, the problem of scikit-learn's
    ``sparse_encode(x, D, algorithm="lasso_cd" or "lasso_lars", alpha=alpha)``, unique when the atoms
    are linearly independent. Cyclic coordinate descent on the Gram matrix (``D D.T``) and the
    correlations (``x D.T``), in float64, a coordinate of every row per step; rows stop once their
    largest change in a sweep is at most ``tol`` times their largest coefficient.

    Parameters
    ----------
    x
        (N, F) signals, one per row.
    dictionary
        (K, F) atoms.
    alpha
        The l1 penalty.
    max_iter, tol
        Sweeps at most; the convergence threshold (relative).

    Returns
    -------
    numpy.ndarray
        (N, K) float64 codes.
    """
    d = np.asarray(dictionary, np.float64)
    gram = d @ d.T
    diag = np.diag(gram).copy()
    x = np.asarray(x)
    q = np.empty((x.shape[0], d.shape[0]))  # correlations minus code @ gram (code = 0 so far)
    for a in range(0, x.shape[0], 65536):  # float64 a block at a time
        q[a : a + 65536] = np.asarray(x[a : a + 65536], np.float64) @ d.T
    code = np.zeros_like(q)
    active = np.arange(q.shape[0])
    for _ in range(max_iter):
        c, r = code[active], q[active]
        change = np.zeros(len(active))
        for k in range(d.shape[0]):
            if diag[k] <= 0:
                continue
            z = r[:, k] + diag[k] * c[:, k]
            new = np.sign(z) * np.maximum(np.abs(z) - alpha, 0.0) / diag[k]
            delta = new - c[:, k]
            r -= delta[:, None] * gram[k][None, :]
            c[:, k] = new
            np.maximum(change, np.abs(delta), out=change)
        code[active], q[active] = c, r
        done = change <= tol * np.maximum(np.abs(c).max(axis=1), np.finfo(np.float64).tiny)
        active = active[~done]
        if not len(active):
            break
    return code
