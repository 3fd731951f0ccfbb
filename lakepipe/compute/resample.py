"""Nearest-neighbour and linear resampling through affines, sphere seeds and sparse lesion moves.

Nearest neighbour follows ``scipy.ndimage`` order 0, which ``nilearn.image.resample_img(...,
interpolation="nearest")`` uses: a destination voxel centre at source voxel coordinate ``x`` takes
source voxel ``floor(x + 0.5)`` (ties go up) when ``0 <= x <= n - 1`` on every axis, else ``fill``.
A tolerance of 1e-6 voxel keeps centres that coincide with the outermost source centres (up to
floating-point rounding) inside. Affines are always applied: a left-right flipped grid of the same
shape is a different image.

Linear resampling follows ``scipy.ndimage.affine_transform(..., order=1, mode="constant")``, which
``nilearn.image.resample_img(..., interpolation="linear")`` runs volume by volume: a destination
voxel whose source coordinate ``x`` lies in ``[0, n - 1]`` on every axis is the trilinear
interpolation of its 8 neighbours, any other is ``fill``. Here the interpolation is one sparse
matrix (8 weights a destination voxel) built once for a pair of grids, so a run of T volumes costs
one sparse product instead of T interpolations (:func:`linear_operator`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EDGE_TOL = 1e-6
# destination voxels mapped at once (bounds the coordinate temporaries to ~100 MB)
_POINTS_PER_SLAB = 2**20
# volumes interpolated in one sparse product (bounds the float64 temporaries of a long run)
_VOLUMES_PER_PRODUCT = 32


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """World (mm) coordinates (..., 3) to fractional voxel coordinates (..., 3)."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Voxel coordinates (..., 3) to world (mm) coordinates (..., 3)."""
    a = np.asarray(affine, dtype=np.float64)
    return np.asarray(ijk, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]


def _voxel_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """4x4 map from destination voxel coordinates to source voxel coordinates."""
    src = np.asarray(src_affine, dtype=np.float64)
    dst = np.asarray(dst_affine, dtype=np.float64)
    if np.array_equal(src, dst):
        return np.eye(4)
    return np.linalg.inv(src) @ dst


def _nearest_flat(coords: np.ndarray, src_shape: tuple[int, ...]) -> np.ndarray:
    """Flat C-order source index of each (3, ...) fractional voxel coordinate, -1 outside."""
    shape = np.asarray(src_shape[:3]).reshape((3,) + (1,) * (coords.ndim - 1))
    inside = np.all((coords >= -_EDGE_TOL) & (coords <= shape - 1 + _EDGE_TOL), axis=0)
    idx = np.clip(np.floor(coords + 0.5).astype(np.int64), 0, shape - 1)
    flat = np.ravel_multi_index(tuple(idx), tuple(src_shape[:3]))
    return np.where(inside, flat, -1)


def nearest_indices(
    src_affine: np.ndarray, src_shape: tuple[int, ...], dst_affine: np.ndarray, dst_ijk: np.ndarray
) -> np.ndarray:
    """Flat (C order) index of the nearest source voxel of each destination voxel.

    Parameters
    ----------
    src_affine, src_shape
        Source grid.
    dst_affine
        Destination affine.
    dst_ijk
        (K, 3) integer voxel coordinates on the destination grid.

    Returns
    -------
    numpy.ndarray
        (K,) int64 flat source index, -1 where the centre falls outside the source grid.
    """
    m = _voxel_map(src_affine, dst_affine)
    ijk = np.asarray(dst_ijk, dtype=np.float64).reshape(-1, 3)
    coords = m[:3, :3] @ ijk.T + m[:3, 3:4]
    return _nearest_flat(coords, tuple(src_shape))


def _source_coordinates(m: np.ndarray, dst_shape: tuple[int, int, int]) -> np.ndarray:
    """(3, N) source voxel coordinates of the destination voxel centres (C order), computed as
    scipy's ``affine_transform`` computes them: ``(o + b / a) * a`` per axis for a diagonal map (its
    ``zoom_shift``), else ``M @ o + b`` summed in axis order, so edge voxels fall on the same side."""
    axes = [np.arange(n, dtype=np.float64) for n in dst_shape]
    a, b = m[:3, :3], m[:3, 3]
    if np.array_equal(np.diag(np.diag(a)), a):
        per_axis = [(axes[d] + b[d] / a[d, d]) * a[d, d] for d in range(3)]
        grids = np.meshgrid(*per_axis, indexing="ij")
        return np.stack([g.reshape(-1) for g in grids])
    o = np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")])
    out = np.empty_like(o)
    for d in range(3):
        out[d] = a[d, 0] * o[0]
        out[d] += a[d, 1] * o[1]
        out[d] += a[d, 2] * o[2]
        out[d] += b[d]
    return out


def linear_operator(
    src_affine: np.ndarray,
    src_shape: tuple[int, ...],
    dst_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
) -> Any:
    """Trilinear resampling from one grid to another as a sparse matrix.

    Parameters
    ----------
    src_affine, src_shape
        Source grid (only the first 3 dimensions of the shape are used).
    dst_affine, dst_shape
        Destination grid.

    Returns
    -------
    scipy.sparse.csr_matrix
        (destination voxels, source voxels), both flat in C order, float64: ``W @ x`` is
        ``scipy.ndimage.affine_transform(x, ..., order=1)`` of the volume ``x`` with fill 0 (see
        the module notes); rows of destination voxels outside the source grid are empty.
    """
    from scipy import sparse

    src = tuple(int(n) for n in src_shape[:3])
    dst = tuple(int(n) for n in dst_shape[:3])
    coords = _source_coordinates(_voxel_map(src_affine, dst_affine), dst)  # type: ignore[arg-type]
    upper = np.asarray(src, dtype=np.float64)[:, None] - 1
    inside = np.all((coords >= 0) & (coords <= upper), axis=0)
    rows = np.flatnonzero(inside)
    c = coords[:, inside]
    del coords
    start = np.floor(c)
    frac = c - start
    lo = start.astype(np.int64)
    hi = np.minimum(lo + 1, np.asarray(src, dtype=np.int64)[:, None] - 1)  # weight 0 at the last centre
    strides = np.array([src[1] * src[2], src[2], 1], dtype=np.int64)
    cols = np.empty((rows.size, 8), dtype=np.int64)
    vals = np.empty((rows.size, 8), dtype=np.float64)
    for corner in range(8):
        bits = [(corner >> (2 - d)) & 1 for d in range(3)]
        idx = np.zeros(rows.size, dtype=np.int64)
        w = np.ones(rows.size, dtype=np.float64)
        for d, bit in enumerate(bits):
            idx += (hi[d] if bit else lo[d]) * strides[d]
            w *= frac[d] if bit else 1.0 - frac[d]
        cols[:, corner] = idx
        vals[:, corner] = w
    indptr = np.zeros(int(np.prod(dst)) + 1, dtype=np.int64)
    indptr[rows + 1] = 8
    np.cumsum(indptr, out=indptr)
    return sparse.csr_matrix(
        (vals.reshape(-1), cols.reshape(-1), indptr), shape=(int(np.prod(dst)), int(np.prod(src)))
    )


def resample_linear(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    operator: Any | None = None,
) -> np.ndarray:
    """Resample a 3D volume or a 4D series of volumes onto another grid by trilinear interpolation.

    Parameters
    ----------
    data
        (X, Y, Z) or (X, Y, Z, T) source array, finite (a NaN would spread over its neighbours).
    src_affine
        Its 4x4 voxel-to-mm affine.
    dst_shape, dst_affine
        Destination grid.
    operator
        :func:`linear_operator` of these grids, when already built (a run of many volumes).

    Returns
    -------
    numpy.ndarray
        ``dst_shape`` (+ T) array, float32 for float32 data and float64 otherwise, summed in
        float64: ``nilearn.image.resample_img(..., interpolation="linear")`` of a float image, to
        its last bit but the order of eight float64 products.
    """
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"resample_linear needs a 3D or 4D array, got shape {data.shape}")
    w = operator if operator is not None else linear_operator(src_affine, data.shape, dst_affine, dst_shape)
    n_src = int(np.prod(data.shape[:3]))
    flat = data.reshape(n_src, -1)
    out = np.empty((w.shape[0], flat.shape[1]), dtype=np.float32 if data.dtype == np.float32 else np.float64)
    lo, hi = min(float(flat.min(initial=0)), 0.0), max(float(flat.max(initial=0)), 0.0)
    for t0 in range(0, flat.shape[1], _VOLUMES_PER_PRODUCT):  # float64 copies of a few volumes at a time
        part = np.asarray(w @ flat[:, t0 : t0 + _VOLUMES_PER_PRODUCT].astype(np.float64))
        np.clip(part, lo, hi, out=part)  # as resample_img's clip (a sum of weights may pass 1 by an ulp)
        out[:, t0 : t0 + _VOLUMES_PER_PRODUCT] = part
    return out.reshape(tuple(dst_shape) + data.shape[3:])


def resample_nearest(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    fill: float = 0,
) -> np.ndarray:
    """Resample a 3D volume onto another grid by nearest neighbour.

    Parameters
    ----------
    data
        3D source volume (labels, mask or values).
    src_affine
        Its 4x4 voxel-to-mm affine.
    dst_shape, dst_affine
        Destination grid.
    fill
        Value of destination voxels outside the source grid.

    Returns
    -------
    numpy.ndarray
        ``dst_shape`` array of ``data``'s dtype; equal to ``nilearn.image.resample_img(...,
        interpolation="nearest")`` (see the module notes for the edge rule).
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"resample_nearest needs a 3D volume, got shape {data.shape}")
    shape = tuple(int(s) for s in dst_shape)
    m = _voxel_map(src_affine, dst_affine)
    flat_src = data.reshape(-1)
    out = np.empty(shape, dtype=data.dtype)
    ni, nj, nk = shape
    j = np.arange(nj, dtype=np.float64)
    k = np.arange(nk, dtype=np.float64)
    # coordinates are affine in (i, j, k): build the (j, k) plane once, shift it per slice of i
    plane = (
        m[:3, 1, None, None] * j[None, :, None]
        + m[:3, 2, None, None] * k[None, None, :]
        + m[:3, 3, None, None]
    )
    slab = max(1, _POINTS_PER_SLAB // max(nj * nk, 1))
    for i0 in range(0, ni, slab):
        i = np.arange(i0, min(i0 + slab, ni), dtype=np.float64)
        coords = plane[:, None] + m[:3, 0, None, None, None] * i[None, :, None, None]
        flat = _nearest_flat(coords, data.shape)
        vals = flat_src[np.maximum(flat, 0)]
        out[i0 : i0 + slab] = np.where(flat >= 0, vals, np.asarray(fill).astype(data.dtype))
    return out


def sphere_voxels(
    center_mm: np.ndarray,
    radius_mm: float,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    include_nearest: bool = False,
) -> np.ndarray:
    """Flat (C order) indices of the grid voxels whose centres lie within a sphere.

    Parameters
    ----------
    center_mm
        (3,) sphere centre in world coordinates (mm).
    radius_mm
        Radius in mm (> 0); a centre at exactly the radius is inside.
    shape, affine
        The grid.
    include_nearest
        Also include the voxel nearest the centre (``round`` of its voxel coordinates, when on the
        grid) even if it is farther than the radius, as ``nilearn.maskers.NiftiSpheresMasker``
        does. Off by default: the sphere is exactly the centres within the radius (DESIGN).

    Returns
    -------
    numpy.ndarray
        Sorted int64 flat indices; may be empty (the caller decides whether that is an error).
    """
    if not np.isfinite(radius_mm) or radius_mm <= 0:
        raise ValueError(f"sphere radius must be a positive number of mm, got {radius_mm}")
    center = np.asarray(center_mm, dtype=np.float64).reshape(3)
    affine = np.asarray(affine, dtype=np.float64)
    grid_shape = tuple(int(s) for s in shape[:3])
    inv = np.linalg.inv(affine)
    c_vox = inv[:3, :3] @ center + inv[:3, 3]
    # |ijk_d - c_d| <= radius * ||row d of inv(A)|| bounds the sphere on each axis
    half = radius_mm * np.linalg.norm(inv[:3, :3], axis=1)
    lo = np.maximum(np.floor(c_vox - half).astype(np.int64), 0)
    hi = np.minimum(np.ceil(c_vox + half).astype(np.int64), np.array(grid_shape) - 1)
    found = np.empty(0, np.int64)
    if np.all(hi >= lo):
        ijk = np.stack(
            np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)], indexing="ij"), axis=-1
        ).reshape(-1, 3)
        d2 = np.sum((voxel_to_world(affine, ijk) - center) ** 2, axis=1)
        ijk = ijk[d2 <= radius_mm**2]
        found = np.ravel_multi_index(tuple(ijk.T), grid_shape).astype(np.int64)
    if include_nearest:
        near = np.rint(c_vox).astype(np.int64)
        if np.all((near >= 0) & (near < np.array(grid_shape))):
            found = np.union1d(found, [np.ravel_multi_index(tuple(near), grid_shape)])
    return np.sort(found)


def lesion_to_grid(
    flat_idx: np.ndarray,
    values: np.ndarray | None,
    src_shape: tuple[int, int, int],
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Move a sparse mask to another grid by nearest neighbour.

    A destination voxel belongs to the mask when the source voxel nearest its centre does (the
    same as :func:`resample_nearest` of the dense mask, with fill 0); it takes that voxel's value.
    Only the destination voxels in the mask's bounding box are visited, and the source volume is
    never densified.

    Parameters
    ----------
    flat_idx
        Flat (C order) source indices of the mask voxels (unique).
    values
        Their weights, or None for a binary mask.
    src_shape, src_affine
        Source grid.
    dst_shape, dst_affine
        Destination grid.

    Returns
    -------
    dst_flat_idx : numpy.ndarray
        Sorted int64 flat (C order) destination indices.
    dst_values : numpy.ndarray
        Their values (float32 ones for a binary mask; the source dtype otherwise).
    """
    flat_idx = np.asarray(flat_idx, dtype=np.int64).ravel()
    src_grid = tuple(int(s) for s in src_shape[:3])
    dst_grid = tuple(int(s) for s in dst_shape[:3])
    vals = np.ones(flat_idx.size, np.float32) if values is None else np.asarray(values).ravel()
    if vals.shape != flat_idx.shape:
        raise ValueError("values must have one entry per mask index")
    if flat_idx.size == 0:
        return np.empty(0, np.int64), vals[:0]
    order = np.argsort(flat_idx, kind="stable")
    sorted_idx = flat_idx[order]
    if np.any(np.diff(sorted_idx) == 0):
        raise ValueError("mask indices must be unique")
    # bounding box of the mask in source voxels, widened by the half voxel that rounds into it
    src_ijk = np.array(np.unravel_index(sorted_idx, src_grid))
    lo, hi = src_ijk.min(axis=1) - 0.5, src_ijk.max(axis=1) + 0.5
    corners = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T
    dst_corners = world_to_voxel(dst_affine, voxel_to_world(src_affine, corners))
    dlo = np.maximum(np.floor(dst_corners.min(axis=0)).astype(np.int64) - 1, 0)
    dhi = np.minimum(np.ceil(dst_corners.max(axis=0)).astype(np.int64) + 1, np.array(dst_grid) - 1)
    if np.any(dhi < dlo):
        return np.empty(0, np.int64), vals[:0]
    box = np.stack(
        np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(dlo, dhi, strict=True)], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    src_of_dst = nearest_indices(src_affine, src_grid, dst_affine, box)
    pos = np.clip(np.searchsorted(sorted_idx, src_of_dst), 0, sorted_idx.size - 1)
    hit = (src_of_dst >= 0) & (sorted_idx[pos] == src_of_dst)
    dst_flat = np.ravel_multi_index(tuple(box[hit].T), dst_grid).astype(np.int64)
    dst_vals = vals[order][pos[hit]]
    keep = np.argsort(dst_flat, kind="stable")
    return dst_flat[keep], dst_vals[keep]
