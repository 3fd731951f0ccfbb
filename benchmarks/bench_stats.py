"""Group-statistics kernels: max-statistic permutation tests against their GEMM floor and nilearn.

Kernel level, in one process (the Dask method layer is not involved). Inputs: random float32 maps
(200 maps x 235,375 voxels, smooth along the voxel axis, a planted effect in 2,000 voxels), and

- specificity (cases vs controls, 100 + 100 maps), 5,000 permutations, without covariates and with
  two covariates (Freedman-Lane: 3 GEMM rows per permutation);
- symptom map (Pearson r with a score over 200 patients), 5,000 permutations.

Each is timed as a scheduler would run it (``prepare_maps`` per voxel block of 65,536 voxels, then
``null_max_block`` per block of 1,024 permutations, maxima reduced over voxel blocks), against:

- the GEMM floor: the FLOPs of the permutation products, ``2 n V n_perm (1 + k)``, at the float32
  GEMM rate measured in this run (the best of a square 3072^3 product, 1024^3 quick, and the
  kernel's tile shape ``(2048, n) @ (n, 512 (1 + k))``), with the same BLAS kernel and threads;
- the same tile GEMMs alone (no residualising, no reductions), timed next to each kernel run: on a
  shared machine the load changes between minutes, so the ratio is taken repeat by repeat;
- ``nilearn.mass_univariate.permuted_ols`` on the same inputs (all voxels, n_jobs=1): timed with 0
  permutations (its fixed part) and 500, extrapolated linearly to 5,000 (it loops over
  permutations), and run in full once if that predicts at most 10 minutes. Both are printed.

Peak RSS is that of the process (the polled RSS of the process tree, minus that before the phase).
``--quick``: 40 maps x 5,000 voxels, 200 permutations, seconds.

    .venv/bin/python benchmarks/bench_stats.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_stats"
FULL = {"n": 200, "voxels": 235375, "n_perm": 5000, "nilearn_perms": 500}
QUICK = {"n": 40, "voxels": 5000, "n_perm": 200, "nilearn_perms": 20}
VOXEL_BLOCK, PERM_BLOCK = 65536, 1024
TARGET_FLOOR = 2.0
MAX_NILEARN_S = 600.0  # run permuted_ols in full only when it is predicted to take at most this


def simd() -> dict:
    """numpy's SIMD baseline and the extensions found on this CPU (as ``numpy.show_runtime``)."""
    try:
        from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
    found = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    return {
        "baseline": list(__cpu_baseline__),
        "found": found,
        "not_found": sorted(set(__cpu_dispatch__) - set(found)),
    }


def make_data(size: dict, seed: int = 0):
    """(n, V) float32 maps: noise smoothed along the voxel axis, a planted case effect and score
    relation in voxels 1000..2999 (half of them each), 2 covariates that load on the maps."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n, v = size["n"], size["voxels"]
    maps = np.empty((n, v), dtype=np.float32)
    for i in range(n):
        maps[i] = ndimage.gaussian_filter1d(rng.standard_normal(v).astype(np.float32), 2.0) * 2.5
    is_case = np.arange(n) < n // 2
    score = rng.normal(0, 1, n)
    cov = rng.standard_normal((n, 2)) + 0.3 * is_case[:, None]
    lo, mid, hi = min(1000, v // 4), min(2000, v // 2), min(3000, 3 * v // 4)
    maps[:, lo:mid] += (0.6 * is_case)[:, None]
    maps[:, mid:hi] += (0.3 * score)[:, None]
    maps += (cov @ rng.uniform(-0.1, 0.1, (2, v))).astype(np.float32)
    return maps, is_case, score, cov


def gemm_rates(n: int, ks: tuple[int, ...], square: int = 3072, work: float = 2e10) -> dict:
    """float32 GFLOP/s (median of 3) of a square product and of the kernel's tile GEMM per k, each
    figure timed over >= ``work`` FLOPs."""
    import numpy as np

    rng = np.random.default_rng(1)

    def rate(m: int, kk: int, nn: int) -> float:
        a = rng.standard_normal((m, kk)).astype(np.float32)
        b = rng.standard_normal((nn, kk)).astype(np.float32)
        c = np.empty((m, nn), dtype=np.float32)
        reps = max(1, int(work / (2 * m * kk * nn)))
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                np.matmul(a, b.T, out=c)
            ts.append((time.perf_counter() - t0) / reps)
        return 2 * m * kk * nn / B.median(ts) / 1e9

    out = {"square": rate(square, square, square)}
    for k in ks:
        out[f"tile_k{k}"] = rate(2048, n, 512 * (1 + k))
    return out


def gemm_only(n: int, v: int, n_perm: int, k: int) -> float:
    """Seconds for the permutation products alone: the same tile GEMMs :func:`run_kernel` runs (one
    ``(2048, n) @ (n, 512 (1 + k))`` float32 product per voxel tile and permutation tile, padding
    included), on random buffers, nothing else. Timed right next to each kernel run, so the ratio
    survives a load that changes from minute to minute on a shared machine."""
    import numpy as np

    from lakepipe.compute.stats.glm import _NULL_PERM_TILE, _NULL_VOXEL_TILE

    rng = np.random.default_rng(2)
    y = rng.standard_normal((_NULL_VOXEL_TILE, n)).astype(np.float32)
    a = rng.standard_normal((_NULL_PERM_TILE * (1 + k), n)).astype(np.float32)
    c = np.empty((_NULL_VOXEL_TILE, a.shape[0]), dtype=np.float32)
    voxel_tiles = sum(-(-min(VOXEL_BLOCK, v - lo) // _NULL_VOXEL_TILE) for lo in range(0, v, VOXEL_BLOCK))
    perm_tiles = sum(
        -(-min(PERM_BLOCK, n_perm - lo) // _NULL_PERM_TILE) for lo in range(0, n_perm, PERM_BLOCK)
    )
    t0 = time.perf_counter()
    for _ in range(voxel_tiles * perm_tiles):
        np.matmul(y, a.T, out=c)
    return time.perf_counter() - t0


def run_kernel(maps, tested, cov, n_perm: int, seed: int, cases=None) -> dict:
    """One permutation test through the block kernels; wall, CPU, peak RSS and the result."""
    import numpy as np

    from lakepipe.compute.stats import (
        combine_voxel_blocks,
        linear_design,
        max_statistic_pvalues,
        null_max_block,
        null_tie_tol,
        permutation_plan,
        prepare_maps,
    )

    k = 0 if cov is None else cov.shape[1]
    c0 = B.tree_cpu()
    with B.PeakRSS() as mem:
        t0 = time.perf_counter()
        design = linear_design(tested, cov)
        plan = permutation_plan(design.n, n_perm, seed, cases=cases, covariates=k > 0)
        pblocks = plan.blocks(PERM_BLOCK)
        parts: list[list] = [[] for _ in pblocks]
        u = []
        t_prep = 0.0
        for lo in range(0, maps.shape[1], VOXEL_BLOCK):
            tp = time.perf_counter()
            prep = prepare_maps(design, maps[:, lo : lo + VOXEL_BLOCK], np.float32, offset=lo)
            t_prep += time.perf_counter() - tp
            u.append(prep.u)
            for j, (a, b) in enumerate(pblocks):
                parts[j].append(null_max_block(design, prep, plan.block(a, b), perm_offset=a).max_u)
        null = np.concatenate([combine_voxel_blocks(p) for p in parts])
        p_fwe = max_statistic_pvalues(np.concatenate(u), null, tie_tol=null_tie_tol(design, np.float32))
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "prepare_s": t_prep,
        "cpu_s": B.tree_cpu() - c0,
        "peak_rss_mb": (mem.peak - mem.start) / B.MB,
        "p_fwe": p_fwe,
        "k": k,
    }


def _permuted_ols_s(maps, tested, cov, n_perm: int) -> float:
    from nilearn.mass_univariate import permuted_ols

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        permuted_ols(
            tested[:, None].astype(float), maps, confounding_vars=cov, n_perm=n_perm, random_state=0, n_jobs=1
        )
        return time.perf_counter() - t0


def run_nilearn(maps, tested, cov, probe: int, n_perm: int, repeats: int) -> dict:
    """permuted_ols with 0 permutations (its fixed part: residualising, the observed t) and with
    ``probe`` permutations, ``repeats`` times each (medians), extrapolated linearly to ``n_perm``
    (it loops over permutations); if that predicts at most 10 minutes, also the full run, once."""
    times: dict[int, list[float]] = {0: [], probe: []}
    for _ in range(repeats):
        for p in (0, probe):
            times[p].append(_permuted_ols_s(maps, tested, cov, p))
    fixed = B.median(times[0])
    per_perm = max(B.median(times[probe]) - fixed, 0.0) / probe
    extrapolated = fixed + per_perm * n_perm
    measured = _permuted_ols_s(maps, tested, cov, n_perm) if extrapolated <= MAX_NILEARN_S else None
    return {
        "times_s": times,
        "per_perm_s": per_perm,
        "fixed_s": fixed,
        "extrapolated_s": extrapolated,
        "measured_s": measured,
    }


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    from lakepipe.blas import tune_blas_for_this_process

    tune_blas_for_this_process()  # before numpy loads: OPENBLAS_CORETYPE=SkylakeX on AVX-512 unless set
    import numpy as np

    size = QUICK if args.quick else FULL
    reps = B.repeats(args)
    mach = B.machine()
    blas = B.blas_info()
    features = simd()
    print(
        f"stats: {size['n']} maps x {size['voxels']:,} voxels, {size['n_perm']:,} permutations; "
        f"CPU {mach['cpu']} ({mach['cores']} cores), numpy {np.__version__} SIMD baseline "
        f"{' '.join(features['baseline'])}, found {' '.join(features['found'])}; OpenBLAS kernel "
        f"{blas.get('architecture')} ({blas.get('threads')} threads, OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE')}); load {B.load()}",
        flush=True,
    )
    maps, is_case, score, cov = make_data(size)
    n, v, n_perm = size["n"], size["voxels"], size["n_perm"]
    rates = gemm_rates(n, (0, 2), square=1024 if args.quick else 3072, work=1e9 if args.quick else 2e10)
    print("  float32 GEMM GFLOP/s: " + ", ".join(f"{k} {r:.0f}" for k, r in rates.items()), flush=True)

    tests = [
        ("specificity", "no covariates", is_case.astype(float), None, is_case),
        ("specificity", "2 covariates", is_case.astype(float), cov, is_case),
        ("symptom", "Pearson r", score, None, None),
    ]
    rows = []
    for name, what, tested, z, cases in tests:
        k = 0 if z is None else z.shape[1]
        runs, gemms = [], []
        for _ in range(reps):  # interleaved: GEMMs alone, then the kernel
            gemms.append(gemm_only(n, v, n_perm, k))
            runs.append(run_kernel(maps, tested, z, n_perm, seed=0, cases=cases))
        flops = 2.0 * n * v * n_perm * (1 + k)
        rate = max(rates["square"], rates[f"tile_k{k}"]) * 1e9
        wall = B.median([r["wall_s"] for r in runs])
        nl = run_nilearn(maps, tested, z, size["nilearn_perms"], n_perm, min(reps, 2))
        nl_full = nl["measured_s"] if nl["measured_s"] is not None else nl["extrapolated_s"]
        row = {
            "test": f"{name} ({what})",
            "wall_s": wall,
            "cpu_s": B.median([r["cpu_s"] for r in runs]),
            "prepare_s": B.median([r["prepare_s"] for r in runs]),
            "flop_floor_s": flops / rate,
            "x_flop_floor": wall / (flops / rate),
            "tile_gemm_s": B.median(gemms),
            "x_tile_gemm": B.median([r["wall_s"] / g for r, g in zip(runs, gemms, strict=True)]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "nilearn_s": nl_full,
            "nilearn_measured": nl["measured_s"] is not None,
            "nilearn_s_extrapolated": nl["extrapolated_s"],
            "nilearn_s_per_perm": nl["per_perm_s"],
            "nilearn_runs_s": nl["times_s"],
            "speedup_vs_nilearn": nl_full / wall,
            "significant_voxels": int((runs[0]["p_fwe"] < 0.05).sum()),
            "walls_s": [r["wall_s"] for r in runs],
            "tile_gemm_walls_s": gemms,
            "load": B.load(),
        }
        rows.append(row)
        print(
            f"  {row['test']}: {wall:.2f} s; GEMMs alone {row['tile_gemm_s']:.2f} s "
            f"(x{row['x_tile_gemm']:.2f}); FLOP floor {row['flop_floor_s']:.2f} s "
            f"(x{row['x_flop_floor']:.2f}); permuted_ols ~{nl_full:.0f} s; load {row['load']}",
            flush=True,
        )
    print()
    print(
        B.table(
            rows,
            [
                ("test", "test", "s"),
                ("wall_s", "kernel s (median)", ".2f"),
                ("cpu_s", "CPU s", ".1f"),
                ("prepare_s", "of which prepare s", ".2f"),
                ("tile_gemm_s", "GEMMs alone s", ".2f"),
                ("x_tile_gemm", "x GEMMs", ".2f"),
                ("flop_floor_s", "FLOP floor s", ".2f"),
                ("x_flop_floor", "x FLOP floor", ".2f"),
                ("nilearn_s", "permuted_ols s", ".1f"),
                ("nilearn_s_extrapolated", "(extrapolated)", ".1f"),
                ("speedup_vs_nilearn", "speed-up", ".0f"),
                ("peak_rss_mb", "peak RSS MB (added)", ".0f"),
                ("significant_voxels", "p_fwe < .05", "d"),
            ],
        )
    )
    p1 = size["nilearn_perms"]
    how = (
        "measured in full (once)"
        if all(r["nilearn_measured"] for r in rows)
        else f"extrapolated where a full run was predicted over {MAX_NILEARN_S:.0f} s"
    )
    print(
        f"\npermuted_ols (n_jobs=1, all {v:,} voxels): timed with 0 and {p1} permutations (medians), "
        f"extrapolated linearly to {n_perm:,} (fixed part + {n_perm:,} x per-permutation time), and "
        f"{how}. GEMMs alone: the kernel's tile products without anything else, timed next to "
        f"each kernel run (median of per-repeat ratios). FLOP floor: 2 n V n_perm (1 + k) FLOPs at the best "
        f"float32 rate measured at the start. Target <= {TARGET_FLOOR}x: "
        f"{all(r['x_tile_gemm'] <= TARGET_FLOOR for r in rows)} (GEMMs alone), "
        f"{all(r['x_flop_floor'] <= TARGET_FLOOR for r in rows)} (FLOP floor). "
        f"Repeats {reps}; load {B.load()}"
    )
    B.write_results(
        args,
        NAME,
        {
            "size": size,
            "voxel_block": VOXEL_BLOCK,
            "perm_block": PERM_BLOCK,
            "blas": blas,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "simd": features,
            "gemm_gflops": rates,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
