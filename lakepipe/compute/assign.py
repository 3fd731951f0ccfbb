"""Region assignment of a voxel map, in the manner of siibra's ``assign``: clusters -> atlas regions.

Pure numpy/scipy (and nilearn's resampling for probabilistic atlases on another grid); nothing here
reads files. Two entry points share steps 1-3:

- :func:`assign`: a label atlas, the overlap counts and threshold-free correlation below;
- :func:`assign_maps`: a label atlas (each region as its indicator map) or a probabilistic atlas
  (4D, one map per region), with siibra's metrics (correlation, intersection over union, map and
  input containedness, map- and input-weighted means; definitions in its docstring), per component
  or for the whole supra-threshold map; :func:`validate_probabilistic_atlas` checks such an atlas
  against its label table.

The steps of :func:`assign`, with every convention in one place:

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
    return np.asarray(ndimage.generate_binary_structure(3, rank))


def threshold_components(
    values: np.ndarray,
    threshold: float,
    mode: str = "signed",
    connectivity: int = 26,
    min_voxels: int = 1,
    *,
    split: bool = True,
) -> tuple[np.ndarray, list[int]]:
    """Connected supra-threshold components of a 3D map.

    With ``split=False`` each supra-threshold set is kept whole (one structure per sign in
    ``signed`` mode, one in the other modes), as siibra does with ``split_components=False``.

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
    found: list[tuple[float, int, int, np.ndarray]] = []  # (|peak|, size, sign, flat voxel indices)
    for sign, supra in sets:
        if split:
            lab, n = ndimage.label(supra & finite, structure=structure)
        else:
            lab = (supra & finite).astype(np.int32)
            n = int(lab.any())
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
            found.append((float(peak), int(idx.size), int(s), idx))
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
    if labels_affine is not None and not same_grid(labels.shape, labels_affine, values.shape, affine):
        labels = resample_nearest(labels, np.asarray(labels_affine, float), values.shape, affine, fill=0)
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
    rows: list[dict[str, object]] = []
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


# ----------------------------------------------------------- probabilistic (siibra-style) assignment

#: How a probabilistic atlas on another grid is resampled onto the map's grid (see :func:`assign_maps`).
ATLAS_INTERPOLATIONS = ("linear", "continuous", "nearest")
#: Probabilities may exceed [0, 1] by this much (round-off of whatever wrote them: float32 values
#: just above 1 are 2^-23 ~ 1.2e-7 apart, so 1e-6 allows ~8 ulps) before an atlas is refused.
PROBABILITY_TOLERANCE = 1e-6
#: Grids are the same when the shapes match and the affines agree to this many mm.
GRID_ATOL_MM = 1e-4

MAPS_COMPONENT_COLUMNS = COMPONENT_COLUMNS
MAPS_REGION_COLUMNS = (
    "rank",
    "region",
    "region_name",
    "network",
    "hemisphere",
    "overlap_voxels",
    "map_voxels",
    "map_value_at_peak",
    "map_value_at_centroid",
    "correlation",
    "intersection_over_union",
    "map_weighted_mean",
    "map_containedness",
    "input_weighted_mean",
    "input_containedness",
)
#: Output columns of :func:`assign_maps`, in order.
MAPS_COLUMNS = MAPS_COMPONENT_COLUMNS + MAPS_REGION_COLUMNS

#: :func:`assign_maps` column -> the column of siibra's ``Map.assign`` table with the same definition.
SIIBRA_COLUMN_NAMES = {
    "correlation": "correlation",
    "intersection_over_union": "intersection over union",
    "map_weighted_mean": "map weighted mean",
    "map_containedness": "map containedness",
    "input_weighted_mean": "input weighted mean",
    "input_containedness": "input containedness",
}

#: What each column of :func:`assign_maps` means (written into TSV sidecars).
MAPS_COLUMN_DESCRIPTIONS = {
    **{k: v for k, v in COLUMN_DESCRIPTIONS.items() if k in MAPS_COMPONENT_COLUMNS},
    "unlabelled_fraction": "share of the cluster outside the support (p > map_threshold) of every region",
    "rank": "rank of the region within the cluster by map_weighted_mean (1 = highest; 0 = no region)",
    "region": "region id: label value, or the table's index of the map (4D atlases; 1-based map number "
    "without a table)",
    "overlap_voxels": "|C & S|: cluster voxels in the region's support S = {p > map_threshold}",
    "map_voxels": "|S|: voxels of the region's support on the map grid",
    "map_value_at_peak": "p at the cluster's peak voxel",
    "map_value_at_centroid": "p at the map-grid voxel nearest the cluster's centroid",
    "correlation": "Pearson r over the brain between p and x (x = sign*value in the cluster, 0 elsewhere)",
    "intersection_over_union": "|C & S| / |C | S|",
    "map_weighted_mean": "sum_C p x / sum_C x: the region's probability averaged with the input as weights",
    "map_containedness": "|C & S| / |S|: share of the region's support inside the cluster",
    "input_weighted_mean": "sum_C p x / sum p: the input averaged with the region's probability as weights",
    "input_containedness": "|C & S| / |C|: share of the cluster inside the region's support",
}


def same_grid(
    shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...], affine_b: np.ndarray
) -> bool:
    """Whether two grids are the same: equal (spatial) shapes AND affines equal to :data:`GRID_ATOL_MM`."""
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and bool(
        np.allclose(np.asarray(affine_a, float), np.asarray(affine_b, float), rtol=0.0, atol=GRID_ATOL_MM)
    )


def validate_probabilistic_atlas(
    maps: np.ndarray, table: pd.DataFrame | list[str] | None = None, *, check_values: bool = True
) -> int:
    """Check a probabilistic atlas (one map per region along the 4th axis) against its label table.

    Works on anything with a ``shape`` (a numpy array, a nibabel array proxy): reader-agnostic.

    Parameters
    ----------
    maps
        (X, Y, Z, N) probabilities.
    table
        Label table (DataFrame) or list of names: one row per map, in map order.
    check_values
        Also require every value to be finite and in [0, 1] (to :data:`PROBABILITY_TOLERANCE`);
        this reads the data, one map at a time.

    Returns
    -------
    int
        N, the number of maps.

    Raises
    ------
    ValueError
        Not 4D; the table's row count differs from N (both counts are named); bad values.
    """
    shape = tuple(int(s) for s in np.shape(maps))
    if len(shape) != 4:
        raise ValueError(f"a probabilistic atlas is 4D (x, y, z, region), got shape {shape}")
    n_maps = shape[3]
    if table is not None and len(table) != n_maps:
        raise ValueError(
            f"the label table has {len(table)} rows but the probabilistic atlas has {n_maps} maps "
            f"(4th dimension of {shape}): one row per map, in map order"
        )
    if check_values:
        for j in range(n_maps):
            _check_probabilities(np.asarray(maps[..., j]), j)
    return n_maps


def _check_probabilities(p: np.ndarray, j: int) -> None:
    if not np.all(np.isfinite(p)):
        raise ValueError(f"probabilistic atlas map {j} has non-finite values")
    lo, hi = float(p.min(initial=0.0)), float(p.max(initial=0.0))
    if lo < -PROBABILITY_TOLERANCE or hi > 1.0 + PROBABILITY_TOLERANCE:
        raise ValueError(
            f"probabilistic atlas map {j} has values in [{lo:g}, {hi:g}]; probabilities lie in [0, 1]"
        )


def _map_on_grid(
    p: np.ndarray,
    src_affine: np.ndarray | None,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    interpolation: str,
) -> np.ndarray:
    """One region's probability map on the input map's grid, float64 clipped to [0, 1]."""
    p = np.asarray(p, dtype=np.float64)
    if src_affine is None or same_grid(p.shape, src_affine, shape, affine):
        if p.shape != shape:
            raise ValueError(f"atlas {p.shape} and map {shape} differ in shape; pass atlas_affine")
        return np.asarray(np.clip(p, 0.0, 1.0))
    if interpolation == "nearest":
        out = resample_nearest(p, np.asarray(src_affine, float), shape, affine, fill=0.0)
    else:
        import nibabel as nib
        from nilearn.image import resample_img

        img = resample_img(
            nib.Nifti1Image(p, np.asarray(src_affine, float)),  # type: ignore[no-untyped-call]
            target_affine=affine,
            target_shape=shape,
            interpolation=interpolation,
            fill_value=0.0,
            force_resample=True,
            copy_header=True,
        )
        out = np.asarray(img.dataobj, dtype=np.float64)
    # linear interpolation stays in [0, 1]; the cubic spline ("continuous") over/undershoots at edges
    return np.asarray(np.clip(out, 0.0, 1.0))


class _Structure:
    """One supra-threshold structure (a component, or a whole sign set) on the map grid.

    ``idx``: flat (C order) voxel indices; ``x``: the weights ``sign * value`` (> 0) there;
    ``in_domain``: which of them are in the correlation domain D.
    """

    def __init__(
        self,
        k: int,
        sign: int,
        idx: np.ndarray,
        x: np.ndarray,
        in_domain: np.ndarray,
        value: np.ndarray,
        shape: tuple[int, int, int],
    ) -> None:
        self.k, self.sign, self.idx, self.x, self.in_domain = k, sign, idx, x, in_domain
        self.peak = int(np.argmax(x))
        self.peak_value = float(value[self.peak])
        ijk = np.array(np.unravel_index(idx, shape), dtype=np.float64).T
        self.centroid_ijk = ijk.mean(axis=0)
        self.peak_ijk = ijk[self.peak]
        near = np.floor(self.centroid_ijk + 0.5).astype(np.int64)  # nearest voxel (ties up, as resampling)
        self.centroid_flat = int(np.ravel_multi_index(tuple(near), shape))
        self.x_sum = float(x.sum())
        xd = x[in_domain]
        self.xd_sum, self.xd_sq = float(xd.sum()), float(np.dot(xd, xd))


def assign_maps(
    values: np.ndarray,
    affine: np.ndarray,
    atlas: np.ndarray,
    table: pd.DataFrame | None = None,
    *,
    threshold: float,
    mode: str = "signed",
    atlas_affine: np.ndarray | None = None,
    split_components: bool = True,
    connectivity: int = 26,
    min_voxels: int = 1,
    map_threshold: float = 0.0,
    interpolation: str = "linear",
    mask: np.ndarray | None = None,
    max_regions: int | None = None,
) -> pd.DataFrame:
    """siibra-style assignment of a voxel map's clusters to the regions of a label or probabilistic atlas.

    The structures are the components of the thresholded map (steps 1-3 of the module notes, same
    numbering, centroid, volume and peak), or with ``split_components=False`` each supra-threshold set
    whole. For structure ``C`` with weights ``x(v) = sign * value(v) > 0`` on ``C`` (``|value|`` in
    absolute mode; ``x = 0`` off ``C``) and region map ``p`` on the map's grid (a label region is
    its indicator ``1[label == r]``; a probabilistic map is set to 0 where ``p <= map_threshold``),
    with support ``S = {p > 0}`` and sums over the whole map grid unless marked:

    - ``overlap_voxels = |C & S|``, ``map_voxels = |S|``;
    - ``intersection_over_union = |C & S| / |C | S|``;
    - ``map_containedness = |C & S| / |S|`` (how much of the region the cluster contains);
    - ``input_containedness = |C & S| / |C|`` (how much of the cluster the region contains);
    - ``map_weighted_mean = sum_C p x / sum_C x`` (the region's probability averaged over the
      cluster, weighted by the input);
    - ``input_weighted_mean = sum p x / sum p`` (the input averaged over the region, weighted by its
      probability);
    - ``correlation``: Pearson r of ``p`` and ``x`` over the brain domain D (finite map voxels, and
      ``mask`` when given): ``cov_D(p, x) / sqrt(var_D(p) var_D(x))``, NaN when either is constant;
    - ``map_value_at_peak``: ``p`` at the cluster's peak voxel; ``map_value_at_centroid``: ``p`` at
      the map-grid voxel nearest the centroid (which may lie outside a non-convex cluster).

    These follow siibra's ``SparseMap._assign_volume`` (siibra-python ``siibra/volumes/sparsemap.py``;
    column names in ``parcellationmap.Map.assign``, :data:`SIIBRA_COLUMN_NAMES`), where "first" is
    the region map and "second" the input, with three documented differences: siibra's correlation
    is taken over the union of the two bounding boxes (it changes with the boxes; D here is fixed);
    siibra's "map value" for images is the largest ``p`` in that box (here: ``p`` at the peak and at
    the centroid); and siibra's components are of ``value > 0`` (here: any threshold, both signs).
    Rows: one per (structure, region) with ``|C & S| > 0`` (as siibra keeps only intersecting
    pairs), ranked by ``map_weighted_mean``, then ``input_containedness``, then region id; a
    structure meeting no region gets one ``rank`` 0 row.

    Grids: everything is measured on the map's grid. The atlas is resampled onto it through the two
    affines when the grids differ (equal shapes with different affines are different grids): label
    volumes by nearest neighbour (:func:`lakepipe.compute.resample.resample_nearest`, equal to
    nilearn's ``"nearest"``); probability maps with ``nilearn.image.resample_img`` using
    ``interpolation`` (default ``"linear"``: trilinear, stays in [0, 1] and does not spread a map's
    support by more than one source voxel; ``"continuous"``, nilearn's cubic spline, rings at sharp
    edges and gives small non-zero values outside the support, inflating ``|S|``; results are
    clipped to [0, 1]; ``"nearest"`` makes an indicator 4D atlas equal to its label volume). Atlas
    parts outside the map's grid are not counted.

    Parameters
    ----------
    values, affine
        3D map (NaN = no data) and its 4x4 voxel-to-mm affine.
    atlas
        3D integer label volume (0 = background) or 4D probabilities (X, Y, Z, N) in [0, 1].
    table
        Region table (``index``, ``name``, optional ``network``, ``hemisphere``). For a 4D atlas,
        row j describes map j (:func:`validate_probabilistic_atlas`), and its ``index`` is the
        region id (default ``j + 1``).
    threshold, mode, connectivity, min_voxels
        Cluster forming, as in :func:`assign`.
    atlas_affine
        The atlas's affine, when it may be on another grid (default: the map's grid).
    split_components
        False: one structure per supra-threshold set (siibra's ``split_components=False``).
    map_threshold
        Probabilities ``<= map_threshold`` count as 0 (siibra's ``lower_threshold`` on sparse maps).
    interpolation
        ``linear``, ``continuous`` or ``nearest``, for 4D atlases on another grid.
    mask
        Brain mask on the map's grid: restricts the correlation's domain D.
    max_regions
        Keep only the first ``max_regions`` regions of each structure.

    Returns
    -------
    pandas.DataFrame
        One row per (structure, region), columns :data:`MAPS_COLUMNS`.
    """
    if interpolation not in ATLAS_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {ATLAS_INTERPOLATIONS}, got {interpolation!r}")
    if not np.isfinite(map_threshold) or not 0.0 <= map_threshold < 1.0:
        raise ValueError(f"map_threshold must be in [0, 1), got {map_threshold}")
    values = np.asarray(values, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError(f"a 3D map is needed, got shape {values.shape}")
    shape = (int(values.shape[0]), int(values.shape[1]), int(values.shape[2]))
    finite = np.isfinite(values)
    domain = finite if mask is None else (np.asarray(mask, dtype=bool) & finite)
    if domain.shape != shape:
        raise ValueError(f"mask {domain.shape} and map {shape} differ in shape")
    atlas = atlas if hasattr(atlas, "ndim") else np.asarray(atlas)  # arrays and array proxies
    if atlas.ndim not in (3, 4):
        raise ValueError(
            f"the atlas must be 3D (labels) or 4D (one probability map per region), got {atlas.shape}"
        )
    comp, signs = threshold_components(
        values, threshold, mode, connectivity, min_voxels, split=split_components
    )
    v = np.where(finite, values, 0.0).reshape(-1)
    flat_domain = domain.reshape(-1)
    structures = []
    flat_comp = comp.reshape(-1)
    order = np.argsort(flat_comp, kind="stable")
    bounds = np.cumsum(np.bincount(flat_comp, minlength=len(signs) + 1))
    for k, sign in enumerate(signs, start=1):
        idx = order[bounds[k - 1] : bounds[k]]
        x = np.abs(v[idx]) if mode == "absolute" else sign * v[idx]
        structures.append(_Structure(k, sign, idx, x, flat_domain[idx], v[idx], shape))
    if atlas.ndim == 3:
        stats = _label_stats(np.asarray(atlas), atlas_affine, shape, affine, structures, flat_domain)
        names, networks, hemis = _lookup(table, int(stats.ids.max(initial=0)))
    else:
        validate_probabilistic_atlas(atlas, table, check_values=False)  # values: map by map below
        if table is not None and "index" in table:
            ids = table["index"].to_numpy(dtype=np.int64)
        else:
            ids = np.arange(1, atlas.shape[3] + 1, dtype=np.int64)
            table = None if table is None else table.assign(index=ids)
        if np.unique(ids).size != ids.size or (ids.size and ids.min() < 1):
            raise ValueError(
                "region ids of a probabilistic atlas (the table's index) must be unique and >= 1"
            )
        stats = _map_stats(
            atlas, ids, atlas_affine, shape, affine, structures, flat_domain, interpolation, map_threshold
        )
        names, networks, hemis = _lookup(table, int(ids.max(initial=0)))
    return _maps_table(structures, stats, affine, int(flat_domain.sum()), names, networks, hemis, max_regions)


def assign_maps_images(
    img: object, atlas_img: object, table: pd.DataFrame | None = None, **kwargs: object
) -> pd.DataFrame:
    """:func:`assign_maps` on nibabel images (a 3D map; a 3D label or 4D probabilistic atlas)."""
    data = np.asanyarray(img.dataobj)  # type: ignore[attr-defined]
    atlas = np.asanyarray(atlas_img.dataobj)  # type: ignore[attr-defined]
    return assign_maps(
        data,
        np.asarray(img.affine),  # type: ignore[attr-defined]
        atlas,
        table,
        atlas_affine=np.asarray(atlas_img.affine),  # type: ignore[attr-defined]
        **kwargs,  # type: ignore[arg-type]
    )


class _Stats:
    """Sufficient statistics of every (structure, region) pair: region j, structure k."""

    def __init__(self, n_structures: int, ids: np.ndarray) -> None:
        r = ids.size
        self.ids = ids
        self.support = np.zeros(r)  # |S|
        self.mass = np.zeros(r)  # sum p over the grid
        self.p_d = np.zeros(r)  # sum_D p
        self.p_dd = np.zeros(r)  # sum_D p^2
        self.overlap = np.zeros((n_structures, r))  # |C & S|
        self.cross = np.zeros((n_structures, r))  # sum_C p x
        self.cross_d = np.zeros((n_structures, r))  # sum_{C & D} p x
        self.at_peak = np.zeros((n_structures, r))
        self.at_centroid = np.zeros((n_structures, r))
        self.unlabelled = np.zeros(n_structures)  # share of C outside every support


def _label_stats(
    labels: np.ndarray,
    labels_affine: np.ndarray | None,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    structures: list[_Structure],
    flat_domain: np.ndarray,
) -> _Stats:
    """Label regions as indicator maps, by counting (one pass per structure, not per region)."""
    if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
        raise ValueError("a 3D atlas holds integer labels; a probabilistic atlas is 4D (one map per region)")
    if labels_affine is not None and not same_grid(labels.shape, labels_affine, shape, affine):
        labels = resample_nearest(labels, np.asarray(labels_affine, float), shape, affine, fill=0)
    if labels.shape != shape:
        raise ValueError(f"labels {labels.shape} and map {shape} differ in shape; pass atlas_affine")
    lab = labels.astype(np.int64).reshape(-1)
    if lab.size and lab.min() < 0:
        raise ValueError("atlas labels must be >= 0 (0 = background)")
    size = int(lab.max(initial=0)) + 1
    count = np.bincount(lab, minlength=size).astype(np.float64)
    ids = np.flatnonzero(count[1:]) + 1
    st = _Stats(len(structures), ids)
    st.support = st.mass = count[ids]
    st.p_d = st.p_dd = np.bincount(lab[flat_domain], minlength=size).astype(np.float64)[ids]
    for k, s in enumerate(structures):
        sl = lab[s.idx]
        st.overlap[k] = np.bincount(sl, minlength=size)[ids]
        st.cross[k] = np.bincount(sl, weights=s.x, minlength=size)[ids]
        st.cross_d[k] = np.bincount(sl[s.in_domain], weights=s.x[s.in_domain], minlength=size)[ids]
        st.at_peak[k] = ids == sl[s.peak]
        st.at_centroid[k] = ids == lab[s.centroid_flat]
        st.unlabelled[k] = float(np.mean(sl == 0))
    return st


def _map_stats(
    maps: np.ndarray,
    ids: np.ndarray,
    maps_affine: np.ndarray | None,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    structures: list[_Structure],
    flat_domain: np.ndarray,
    interpolation: str,
    map_threshold: float,
) -> _Stats:
    """Probability maps, one region at a time (memory: a few volumes of the map grid)."""
    st = _Stats(len(structures), ids)
    anywhere = np.zeros(int(np.prod(shape)), dtype=bool)
    for j in range(ids.size):
        source = np.asarray(maps[..., j])
        _check_probabilities(source, j)
        p = _map_on_grid(source, maps_affine, shape, affine, interpolation).reshape(-1)
        if map_threshold > 0:
            p = np.where(p > map_threshold, p, 0.0)
        inside = p > 0
        anywhere |= inside
        pd_ = p[flat_domain]
        st.support[j], st.mass[j] = np.count_nonzero(inside), p.sum()
        st.p_d[j], st.p_dd[j] = pd_.sum(), np.dot(pd_, pd_)
        for k, s in enumerate(structures):
            pk = p[s.idx]
            st.overlap[k, j] = np.count_nonzero(pk)
            st.cross[k, j] = np.dot(pk, s.x)
            st.cross_d[k, j] = np.dot(pk[s.in_domain], s.x[s.in_domain])
            st.at_peak[k, j] = pk[s.peak]
            st.at_centroid[k, j] = p[s.centroid_flat]
    for k, s in enumerate(structures):
        st.unlabelled[k] = float(np.mean(~anywhere[s.idx]))
    return st


def _maps_table(
    structures: list[_Structure],
    st: _Stats,
    affine: np.ndarray,
    n_domain: int,
    names: np.ndarray,
    networks: np.ndarray,
    hemis: np.ndarray,
    max_regions: int | None,
) -> pd.DataFrame:
    """Rows of :func:`assign_maps` from the sufficient statistics (definitions in its docstring)."""
    voxel_volume = float(abs(np.linalg.det(affine[:3, :3])))
    n = float(n_domain)
    rows: list[dict[str, object]] = []
    for k, s in enumerate(structures):
        size = int(s.idx.size)
        centroid = voxel_to_world(affine, s.centroid_ijk)
        peak_mm = voxel_to_world(affine, s.peak_ijk)
        base: dict[str, object] = {
            "component": s.k,
            "sign": int(s.sign),
            "n_voxels": size,
            "volume_mm3": size * voxel_volume,
            "centroid_x": centroid[0],
            "centroid_y": centroid[1],
            "centroid_z": centroid[2],
            "peak_value": s.peak_value,
            "peak_x": peak_mm[0],
            "peak_y": peak_mm[1],
            "peak_z": peak_mm[2],
            "unlabelled_fraction": float(st.unlabelled[k]),
        }
        overlap = st.overlap[k]
        touched = np.flatnonzero(overlap > 0)
        if touched.size == 0:
            rows.append({**base, "rank": 0})
            continue
        inter = overlap[touched]
        support = st.support[touched]
        cross = st.cross[k, touched]
        mwm = cross / s.x_sum
        icont = inter / size
        order = np.lexsort((st.ids[touched], -icont, -mwm))
        if max_regions is not None:
            order = order[:max_regions]
        # Pearson r over D from sums: cov = E[p x] - E[p] E[x], var = E[.^2] - E[.]^2 (float64; the
        # terms are bounded (p in [0, 1]) so the cancellation costs at most a few digits of 16)
        mean_x = s.xd_sum / n if n else np.nan
        var_x = s.xd_sq / n - mean_x**2 if n else np.nan
        for rank, t in enumerate(order, start=1):
            j = touched[t]
            mean_p = st.p_d[j] / n if n else np.nan
            var_p = st.p_dd[j] / n - mean_p**2 if n else np.nan
            cov = st.cross_d[k, j] / n - mean_p * mean_x if n else np.nan
            ok = var_x > 0 and var_p > 0
            r = float(np.clip(cov / np.sqrt(var_x * var_p), -1.0, 1.0)) if ok else np.nan
            region = int(st.ids[j])
            rows.append(
                {
                    **base,
                    "rank": rank,
                    "region": region,
                    "region_name": names[region],
                    "network": networks[region],
                    "hemisphere": hemis[region],
                    "overlap_voxels": int(inter[t]),
                    "map_voxels": int(support[t]),
                    "map_value_at_peak": float(st.at_peak[k, j]),
                    "map_value_at_centroid": float(st.at_centroid[k, j]),
                    "correlation": r,
                    "intersection_over_union": float(inter[t] / (support[t] + size - inter[t])),
                    "map_weighted_mean": float(mwm[t]),
                    "map_containedness": float(inter[t] / support[t]),
                    "input_weighted_mean": float(cross[t] / st.mass[j]),
                    "input_containedness": float(icont[t]),
                }
            )
    df = pd.DataFrame(rows, columns=list(MAPS_COLUMNS))
    return df.astype({"component": int, "sign": int, "n_voxels": int, "rank": int}) if len(df) else df
