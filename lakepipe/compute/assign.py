"""Region assignment of a voxel map, in the manner of siibra's ``assign``: clusters -> atlas regions.

Pure numpy/scipy; nothing here reads files. The steps, with every convention in one place:

1. **Threshold.** ``mode="signed"`` (default): voxels with ``value > threshold`` form positive
   clusters and voxels with ``value < -threshold`` negative clusters, labelled separately so a
   positive and a negative blob that touch stay two clusters. ``"absolute"``: ``|value| > threshold``,
   one set (touching blobs of opposite sign merge). ``"positive"`` / ``"negative"``: one sign only.
   Comparisons are strict, as in nilearn's display thresholds. NaN voxels are never supra-threshold.
2. **Components.** :func:`scipy.ndimage.label` with 26-connectivity (faces, edges and corners;
   ``connectivity=18`` or ``6`` on request). Components smaller than ``min_voxels`` are dropped.
   Components are numbered 1..K by decreasing ``|peak value|`` (ties: larger first).
3. **Per component.** ``n_voxels``; ``volume_mm3 = n_voxels * |det(affine[:3, :3])|``; the
   centroid: unweighted mean of the voxel centres in mm (``centroid_x/y/z``); the peak: the voxel
   with the largest ``sign * value`` (``|value|`` in absolute mode), its value (signed) and its
   centre in mm (``peak_x/y/z``); ``unlabelled_fraction``: share of the component outside every
   atlas region (label 0).
4. **Per (component, region) overlap**, one row each, ranked by overlap (``rank`` 1 = largest):
   ``overlap_voxels``; ``overlap_fraction`` = overlap / component voxels (the share of the
   component inside the region, siibra's "input containedness"); ``region_coverage`` = overlap /
   region voxels on the map grid (siibra's "map containedness"); ``mean_value``: mean map value over
   the overlap; and ``correlation`` (below). A component overlapping no region gets a single row
   with ``rank`` 0 and empty region columns.
5. **Correlation.** Pearson r between ``x = sign * value`` (``|value|`` in absolute mode) and the
   region's indicator ``1[label == region]`` over the brain: every voxel with a finite map value,
   or the voxels of ``mask`` when given. This is the point-biserial correlation
   ``(mean_in - mean_out) / sd(x) * sqrt(p (1 - p))`` with ``p`` the region's share of the brain:
   how much higher the (signed) map is inside the region than elsewhere. It uses the unthresholded
   map, so it does not depend on the threshold, and it is defined for any region that is neither
   empty nor the whole brain (NaN otherwise, or for a constant map). For a given sign it is a
   property of the (map, region) pair, the same for every cluster of that sign.

The atlas is resampled to the map's grid by nearest neighbour when the grids differ (see
:func:`lakepipe.compute.resample.resample_nearest`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from lakepipe.compute.resample import resample_nearest, voxel_to_world

ASSIGN_MODES = ("signed", "absolute", "positive", "negative")

#: Output columns, in order (component-level first, then region-level).
COMPONENT_COLUMNS = (
    "component",
    "sign",
    "n_voxels",
    "volume_mm3",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "peak_value",
    "peak_x",
    "peak_y",
    "peak_z",
    "unlabelled_fraction",
)
REGION_COLUMNS = (
    "rank",
    "region",
    "region_name",
    "network",
    "hemisphere",
    "overlap_voxels",
    "overlap_fraction",
    "region_coverage",
    "mean_value",
    "correlation",
)
COLUMNS = COMPONENT_COLUMNS + REGION_COLUMNS

#: What each column means (written into TSV sidecars).
COLUMN_DESCRIPTIONS = {
    "component": "cluster number, 1 = largest |peak value|",
    "sign": "+1 positive cluster, -1 negative cluster (absolute mode: sign of the peak)",
    "n_voxels": "voxels in the cluster",
    "volume_mm3": "n_voxels times the voxel volume",
    "centroid_x": "unweighted mean of the cluster's voxel centres, mm (also _y, _z)",
    "peak_value": "map value at the cluster's most extreme voxel",
    "peak_x": "centre of the peak voxel, mm (also _y, _z)",
    "unlabelled_fraction": "share of the cluster outside every atlas region",
    "rank": "overlap rank of the region within the cluster (1 = largest; 0 = no region)",
    "region": "atlas label value",
    "overlap_voxels": "cluster voxels inside the region",
    "overlap_fraction": "overlap_voxels / n_voxels (share of the cluster in the region)",
    "region_coverage": "overlap_voxels / region voxels on the map grid (share of the region covered)",
    "mean_value": "mean map value over the overlap",
    "correlation": "Pearson r between sign*value (|value| in absolute mode) and the region's indicator over "
    "the brain (finite map voxels or the given mask): point-biserial, threshold-free",
}


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def threshold_components(
    values: np.ndarray, threshold: float, mode: str = "signed", connectivity: int = 26, min_voxels: int = 1
) -> tuple[np.ndarray, list[int]]:
    """Connected supra-threshold components of a 3D map.

    Returns
    -------
    labels
        int32 array of ``values.shape``: 0 outside every component, ``k`` in component ``k``
        (numbered by decreasing ``|peak|``, see the module notes).
    signs
        ``signs[k - 1]`` is the sign of component ``k`` (+1 or -1).
    """
    if mode not in ASSIGN_MODES:
        raise ValueError(f"mode must be one of {ASSIGN_MODES}, got {mode!r}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"a 3D map is needed, got shape {values.shape}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    structure = _structure(connectivity)
    sets = {
        "signed": [(1, v > threshold), (-1, v < -threshold)],
        "positive": [(1, v > threshold)],
        "negative": [(-1, v < -threshold)],
        "absolute": [(0, np.abs(v) > threshold)],
    }[mode]
    found = []  # (key for sorting, sign, flat voxel indices)
    for sign, supra in sets:
        lab, n = ndimage.label(supra & finite, structure=structure)
        if n == 0:
            continue
        flat = lab.reshape(-1)
        order = np.argsort(flat, kind="stable")
        counts = np.bincount(flat, minlength=n + 1)
        bounds = np.cumsum(counts)
        for k in range(1, n + 1):
            idx = order[bounds[k - 1] : bounds[k]]
            if idx.size < min_voxels:
                continue
            vals = v.reshape(-1)[idx]
            peak = np.max(np.abs(vals)) if sign == 0 else np.max(sign * vals)
            s = sign if sign else (1 if vals[np.argmax(np.abs(vals))] >= 0 else -1)
            found.append((peak, idx.size, s, idx))
    found.sort(key=lambda f: (-f[0], -f[1]))
    out = np.zeros(values.shape, np.int32)
    flat_out = out.reshape(-1)
    for k, (_, _, _, idx) in enumerate(found, start=1):
        flat_out[idx] = k
    return out, [f[2] for f in found]


def assign(
    values: np.ndarray,
    affine: np.ndarray,
    labels: np.ndarray,
    table: pd.DataFrame | None = None,
    *,
    threshold: float,
    mode: str = "signed",
    labels_affine: np.ndarray | None = None,
    connectivity: int = 26,
    min_voxels: int = 1,
    max_regions: int | None = None,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Clusters of a thresholded voxel map and the atlas regions they overlap (see module notes).

    Parameters
    ----------
    values
        3D map (NaN = no data).
    affine
        Its 4x4 voxel-to-mm affine.
    labels
        3D integer atlas label volume (0 = background), on the map's grid or on ``labels_affine``.
    table
        Region table with ``index`` and ``name`` (and optionally ``network``, ``hemisphere``)
        columns; labels missing from it are named ``label-<value>``.
    threshold, mode
        Cluster-forming threshold (>= 0) and which side(s): ``signed`` (default), ``absolute``,
        ``positive`` or ``negative``.
    labels_affine
        Affine of ``labels`` when it is on another grid (resampled by nearest neighbour).
    connectivity
        26 (default), 18 or 6.
    min_voxels
        Smallest component kept.
    max_regions
        Keep only the first ``max_regions`` regions of each component.
    mask
        Brain mask on the map's grid: the domain of the correlation (default: finite map voxels).

    Returns
    -------
    pandas.DataFrame
        One row per (component, overlapping region), columns :data:`COLUMNS`.
    """
    values = np.asarray(values, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    labels = np.asarray(labels)
    other_grid = labels_affine is not None and (
        labels.shape != values.shape or not np.allclose(np.asarray(labels_affine, float), affine, atol=1e-4)
    )
    if other_grid:
        labels = resample_nearest(labels, labels_affine, values.shape, affine, fill=0)
    if labels.shape != values.shape:
        raise ValueError(f"labels {labels.shape} and map {values.shape} differ in shape; pass labels_affine")
    labels = labels.astype(np.int64, copy=False)
    comp, signs = threshold_components(values, threshold, mode, connectivity, min_voxels)
    names, networks, hemis = _lookup(table, int(labels.max(initial=0)))
    region_size = np.bincount(labels.reshape(-1), minlength=names.size)
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    domain = finite if mask is None else (np.asarray(mask, bool) & finite)
    correlations: dict[int, np.ndarray] = {}
    rows: list[dict] = []
    objects = ndimage.find_objects(comp)
    for k, box in enumerate(objects, start=1):
        if box is None:
            continue
        sign = signs[k - 1]
        in_box = comp[box] == k
        ijk = np.argwhere(in_box) + np.array([s.start for s in box])
        vals = v[box][in_box]
        lab = labels[box][in_box]
        x_c = np.abs(vals) if mode == "absolute" else sign * vals
        peak_i = int(np.argmax(x_c))
        centroid = voxel_to_world(affine, ijk.mean(axis=0))
        peak_mm = voxel_to_world(affine, ijk[peak_i])
        n = int(ijk.shape[0])
        base = {
            "component": k,
            "sign": int(sign),
            "n_voxels": n,
            "volume_mm3": n * voxel_volume,
            "centroid_x": centroid[0],
            "centroid_y": centroid[1],
            "centroid_z": centroid[2],
            "peak_value": float(vals[peak_i]),
            "peak_x": peak_mm[0],
            "peak_y": peak_mm[1],
            "peak_z": peak_mm[2],
            "unlabelled_fraction": float(np.mean(lab == 0)),
        }
        overlap = np.bincount(lab, minlength=names.size)
        sums = np.bincount(lab, weights=vals, minlength=names.size)
        touched = np.flatnonzero(overlap[1:]) + 1
        if touched.size == 0:
            rows.append({**base, "rank": 0})
            continue
        key = 0 if mode == "absolute" else sign
        if key not in correlations:
            x = np.abs(v[domain]) if mode == "absolute" else sign * v[domain]
            correlations[key] = _indicator_correlation(x, labels[domain], names.size)
        corr = correlations[key]
        order = touched[np.lexsort((touched, -overlap[touched]))]
        if max_regions is not None:
            order = order[:max_regions]
        for rank, r in enumerate(order, start=1):
            rows.append(
                {
                    **base,
                    "rank": rank,
                    "region": int(r),
                    "region_name": names[r],
                    "network": networks[r],
                    "hemisphere": hemis[r],
                    "overlap_voxels": int(overlap[r]),
                    "overlap_fraction": overlap[r] / n,
                    "region_coverage": overlap[r] / max(region_size[r], 1),
                    "mean_value": sums[r] / overlap[r],
                    "correlation": corr[r],
                }
            )
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"component": int, "sign": int, "n_voxels": int, "rank": int}) if len(df) else df


def _indicator_correlation(x: np.ndarray, lab: np.ndarray, n_labels: int) -> np.ndarray:
    """Pearson r of ``x`` with the indicator of every label value (point-biserial), NaN where undefined."""
    n = x.size
    r = np.full(n_labels, np.nan)
    if n < 2:
        return r
    mx = x.mean()
    var_x = np.mean((x - mx) ** 2)
    k = np.bincount(lab, minlength=n_labels).astype(np.float64)
    sxy = np.bincount(lab, weights=x - mx, minlength=n_labels)  # sum over the region of (x - mean)
    p = k / n
    var_y = p * (1.0 - p)
    cov = sxy / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where((var_y > 0) & (var_x > 0), cov / np.sqrt(var_x * var_y), np.nan)
    return r


def _lookup(table: pd.DataFrame | None, max_label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Name, network and hemisphere arrays indexed by label value."""
    size = max_label + 1
    if table is not None and len(table):
        size = max(size, int(table["index"].max()) + 1)
    names = np.array([f"label-{i}" for i in range(size)], dtype=object)
    networks = np.full(size, None, dtype=object)
    hemis = np.full(size, None, dtype=object)
    if table is not None:
        idx = table["index"].to_numpy(int)
        names[idx] = table["name"].astype(str).to_numpy()
        for col, arr in (("network", networks), ("hemisphere", hemis)):
            if col in table:
                arr[idx] = [
                    None if (x is None or (isinstance(x, float) and np.isnan(x)) or x == "") else str(x)
                    for x in table[col]
                ]
    return names, networks, hemis


def component_summary(assignment: pd.DataFrame) -> pd.DataFrame:
    """One row per component with its best region (the rank-1 row, or the rank-0 row when none)."""
    if assignment.empty:
        return assignment.copy()
    best = assignment.sort_values(["component", "rank"], kind="stable").drop_duplicates("component")
    return best.reset_index(drop=True)
