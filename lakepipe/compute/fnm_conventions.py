"""The conventions of FNM maps (what each statistic is, how edge cases are set), recorded in every
FNM store's metadata and described in the method's statistics; apart from the kernels of
:mod:`lakepipe.compute.fnm`, so describing a method imports no scipy."""

from __future__ import annotations

from lakepipe.compute.correlation import R_CLIP
from lakepipe.compute.fisher import Z_TOL

#: |t| is capped at this value; it is also the t of a voxel whose z has zero variance and
#: non-zero mean (all subjects agree exactly).
T_MAX = 1e6

#: The conventions of these maps, for output metadata.
FNM_CONVENTIONS: dict[str, object] = {
    "correlation": "pearson, each series centred over time",
    "constant_series_r": 0.0,
    "fisher_z": "arctanh(clip(r, -r_clip, r_clip)); float32 r clipped just above r_clip, then z "
    "clipped at arctanh(r_clip), so clipped cells have exactly that z",
    "r_clip": R_CLIP,
    "fisher_z_tolerance": f"|z - arctanh(float64(r))| <= {Z_TOL:g} for every float32 r",
    "seed_series": "(weighted) mean of the seed voxels' raw series",
    "zmap": "mean z over subjects",
    "rmap": "tanh(mean z)",
    "tmap": "mean z / (sd z / sqrt(n)), sd with ddof=1",
    "ddof": 1,
    "pmap": "two-sided, Student t with n-1 degrees of freedom",
    "pfdrmap": "Benjamini-Hochberg q of each seed's pmap over its in-brain voxels "
    "(scipy.stats.false_discovery_control, method bh, of the float32 pmap)",
    "avgr": "mean r over subjects (Lead-DBS convention)",
    "zmap_subjects": "each subject's z map (the mean of its runs' z when runs were kept apart)",
    "rmap_subjects": "tanh of each subject's z map",
    "zero_variance_t": f"0 where mean z == 0, else sign(mean z) * {T_MAX:g}; |t| capped at {T_MAX:g}",
    "n_below_2": "tmap 0 and pmap 1 (no variance estimate)",
    "accumulation": "float32 seed series and correlations (float32 unit series), float64 sums of z, "
    "z^2 and r",
}
