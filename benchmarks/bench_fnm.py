"""Classic FNM for 1, 10 and 100 seeds in one pass over the connectome, against its floor and
against the per-seed loop of a straightforward implementation; and the float32 GEMM rate.

Connectome: the benchmark lake's ``bench`` (50 subjects x 120 time points, full 2 mm mask, 235,375
voxels). Seeds: the first 1, 10 and 100 lesions (1 mm masks, resampled to the connectome grid) of
the AFNM benchmark cohort ``bench500``.

In one child process with one Dask LocalCluster (2 single-threaded workers):

- GEMM rate of the workers (float32, one thread each, both at once) and their BLAS environment
  (``OPENBLAS_CORETYPE``, OpenBLAS' kernel as threadpoolctl reports it, threads);
- the read floor: every chunk of the store read once on the workers (fastest of four ways);
- ``lake.run("fnm", ...)`` for each seed count, each repeat on a private copy of the
  catalog (nothing skipped), maps written to the lake as in real use: wall, CPU, peak RSS of the
  process tree.

Floor for L seeds = max(read floor, 2 L T V S flops / GEMM rate), with the rate measured here for the
whole machine (both cores). Reference: ``tests/reference.py::seed_to_voxel`` (raw float64 series,
per subject: seed mean, centring, r with every voxel, arctanh; then mean, sd, t) timed on a few
seeds over a few subjects and extrapolated per seed to all subjects; its reading of the connectome
(other tools read it once per lesion) is not counted, so the speed-up is a lower bound.
Separately, in fresh processes: float32 GEMM with ``OPENBLAS_CORETYPE`` unset, ``SkylakeX`` and
``Haswell`` (it has to be set before numpy loads).

Targets: 100 seeds within 2x the floor; >= 50x faster per seed than the per-seed loop at 100
seeds; peak RSS < 4 GB.

    .venv/bin/python benchmarks/bench_fnm.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_fnm"
SEEDS_FULL, SEEDS_QUICK = (1, 10, 100), (1, 3)
TARGET_FLOOR, TARGET_SPEEDUP, TARGET_RSS_GB = 2.0, 50.0, 4.0
GEMM_N = 3072


# --------------------------------------------------------------------------------------------- GEMM


def gemm_rate(n: int = GEMM_N, repeats: int = 5) -> dict:
    """float32 (n x n) @ (n x n) in this process with its BLAS threads: median GFLOP/s, and the
    OpenBLAS kernel and threads threadpoolctl reports. Self-contained: it also runs on workers."""
    import statistics
    import time

    import numpy as np
    from threadpoolctl import threadpool_info

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        ts.append(time.perf_counter() - t0)
    lib = next((x for x in threadpool_info() if x.get("internal_api") == "openblas"), {})
    return {
        "gflops": 2 * n**3 / statistics.median(ts) / 1e9,
        "best_gflops": 2 * n**3 / min(ts) / 1e9,
        "architecture": lib.get("architecture"),
        "threads": lib.get("num_threads"),
        "version": lib.get("version"),
        "coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
    }


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
        for line in lines:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def worker_probe() -> dict:
    """On a Dask worker: its BLAS environment and single-thread float32 GEMM rate."""

    out = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out.update(gemm_rate(2048, 3))
    return out


def blas_child(spec: dict) -> None:
    B.child_result(gemm_rate(spec.get("n", GEMM_N), spec.get("repeats", 5)))


# ------------------------------------------------------------------------------------------ reference


def reference_child(spec: dict) -> None:
    """Per-seed loop of the tests' reference implementation, timed on a few subjects and seeds."""
    import numpy as np

    from lakepipe.lake import Lake
    from lakepipe.methods.common import connectome_info
    from lakepipe.methods.fnm import METHOD as FNM
    from lakepipe.methods.seeds import cohort_seeds
    from tests import reference

    lake = Lake(spec["lake"])
    con = connectome_info(lake, "bench")
    seeds = cohort_seeds(lake, "bench500", spec["participants"])
    g = con.dataset
    k = spec["subjects"]
    t0 = time.perf_counter()
    # raw series of k subjects (the reference works on raw float64 series, as read from the source)
    raw = np.stack(
        [
            (g["timeseries"][s].values.astype(np.float64) * g["scale"][s].values + g["mean"][s].values)
            for s in range(k)
        ]
    )
    load_s = time.perf_counter() - t0
    per_seed = []
    for seed in seeds:
        pos = FNM.seed_voxels([seed], con)[0].positions
        t0 = time.perf_counter()
        reference.seed_to_voxel(raw, pos)
        per_seed.append(time.perf_counter() - t0)
    B.child_result({"subjects": k, "seconds": per_seed, "load_s": load_s})


# ---------------------------------------------------------------------------------------------- FNM


def fnm_child(spec: dict) -> None:
    import logging

    from lakepipe.io.layout import connectome_store
    from lakepipe.lake import Lake
    from lakepipe.runtime import Runtime

    logging.getLogger("lakepipe").setLevel(logging.ERROR)
    lake = Lake(spec["lake"])
    work = Path(spec["work"])
    n_sub = lake.catalog.count(kind="connectome", connectome="bench")
    deriv = Path(lake.url) / "derivatives" / "fnm"
    before = set(deriv.iterdir()) if deriv.exists() else set()
    participants = spec["participants"]
    out = {"runs": {}, "floor_s": [], "floor_cpu_s": [], "floor_mode": []}

    def one(n_seeds, tag, client):
        lk = B.catalog_copy(lake, work / f"cat-{tag}-{n_seeds}.sqlite")
        c0 = B.tree_cpu()
        with B.PeakRSS() as m:
            dt, res = B.timed(
                lk.run,
                "fnm",
                connectome="bench",
                cohort="bench500",
                participants=participants[:n_seeds],
                client=client,
                outputs=False,
            )
        assert len(res.computed) == n_seeds and not res.skipped, (len(res.computed), len(res.skipped))
        for d in set(deriv.iterdir()) - before:  # this run's maps (registered only in the copy)
            B.remove_tree(d)
        return dt, B.tree_cpu() - c0, m.peak, res.details["passes"]

    t0 = time.perf_counter()
    with Runtime(n_workers=spec["workers"]) as runtime:
        client = runtime.client
        out["cluster_start_s"] = time.perf_counter() - t0
        # the workers' BLAS: environment, kernel, and GEMM rate (one thread each, both at once)
        out["workers"] = client.run(worker_probe)
        url = connectome_store(lake.url, "bench")
        B.read_floor(client, url, n_sub)  # warm page cache and workers
        one(spec["seeds"][0], "warm", client)
        for rep in range(spec["repeats"]):
            modes = B.read_floor(client, url, n_sub)
            best = min(modes, key=lambda k: modes[k]["wall_s"])
            out["floor_s"].append(modes[best]["wall_s"])
            out["floor_cpu_s"].append(modes[best]["cpu_s"])
            out["floor_mode"].append(best)
            out["bytes"] = modes[best]["bytes"]
            for n in spec["seeds"]:
                rec = out["runs"].setdefault(str(n), {"wall_s": [], "cpu_s": [], "peak_rss": []})
                dt, cpu, peak, batches = one(n, str(rep), client)
                rec["wall_s"].append(dt)
                rec["cpu_s"].append(cpu)
                rec["peak_rss"].append(peak)
                rec["passes"] = batches
            print(
                f"  repeat {rep + 1}: floor {out['floor_s'][-1]:.2f} s, "
                + ", ".join(f"{n} seeds {out['runs'][str(n)]['wall_s'][-1]:.2f} s" for n in spec["seeds"])
                + f" (load {B.load()})",
                file=sys.stderr,
                flush=True,
            )
    n = spec["seeds"][-1]  # as the command line runs it: its own LocalCluster
    dt, _, peak, _ = one(n, "own", None)
    out["runs"][str(n)]["wall_own_cluster_s"] = dt
    out["runs"][str(n)]["peak_rss_own_cluster"] = peak
    out["n_subjects"] = n_sub
    B.child_result(out)


def child(spec: dict) -> None:
    {"blas": blas_child, "reference": reference_child, "fnm": fnm_child}[spec["what"]](spec)


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        return child(json.loads(args.child))
    sys.path.insert(0, str(B.HERE))
    import bench_afnm

    lake, _ = bench_afnm.prepare(args)  # the connectome, and the lesion cohort for seeds
    s = B.sizes(args)
    seeds = SEEDS_QUICK if args.quick else SEEDS_FULL
    participants = [f"b{k:04d}" for k in range(1, max(seeds) + 1)]
    work = Path(args.cache) / "fnm-work"
    B.remove_tree(work)
    load_before = B.load()
    print(
        f"fnm: {s['subjects']} subjects x {s['timepoints']} time points x 235,375 voxels, seeds {seeds}, "
        f"{args.workers} workers; load {load_before}",
        flush=True,
    )

    # float32 GEMM in fresh processes: the kernel is chosen when numpy loads
    blas = {}
    flags = cpu_flags()
    kernels = [("unset", None)] + [
        (k, k) for k, need in (("SkylakeX", "avx512f"), ("Haswell", "avx2")) if need in flags
    ]  # forcing a kernel the CPU lacks kills the process
    for label, value in kernels:
        runs = [
            B.run_child(
                "bench_fnm.py",
                {"what": "blas", "repeats": 3 if args.quick else 5},
                env={"OPENBLAS_CORETYPE": value, "LAKEPIPE_BLAS_TUNING": "0"},
            )
            for _ in range(1 if args.quick else 2)
        ]
        blas[label] = {
            "gflops": B.median([r["gflops"] for r in runs]),
            "architecture": runs[0]["architecture"],
            "threads": runs[0]["threads"],
            "openblas": runs[0]["version"],
        }
        print(
            f"  float32 GEMM {GEMM_N}^2, OPENBLAS_CORETYPE {label}: {blas[label]['gflops']:.0f} GFLOP/s "
            f"(kernel {blas[label]['architecture']}, {blas[label]['threads']} threads)",
            flush=True,
        )

    r = B.run_child(
        "bench_fnm.py",
        {
            "what": "fnm",
            "lake": lake.url,
            "work": str(work),
            "seeds": list(seeds),
            "participants": participants,
            "repeats": B.repeats(args),
            "workers": args.workers,
        },
    )
    ref_seeds = 2 if args.quick else 3
    ref_subjects = 2 if args.quick else 4
    ref = B.run_child(
        "bench_fnm.py",
        {
            "what": "reference",
            "lake": lake.url,
            "participants": participants[:ref_seeds],
            "subjects": ref_subjects,
        },
    )
    load_after = B.load()
    B.remove_tree(work)

    n_sub, t, v = r["n_subjects"], s["timepoints"], 235375
    rate = max(b["gflops"] for b in blas.values()) * 1e9  # the machine's best measured float32 GEMM rate
    read_floor = B.median(r["floor_s"])
    ref_per_seed = B.median(ref["seconds"]) * n_sub / ref["subjects"]
    ref_load_per_seed = ref["load_s"] * n_sub / ref["subjects"]
    rows = []
    for n in seeds:
        rec = r["runs"][str(n)]
        wall = B.median(rec["wall_s"])
        flops = 2.0 * n * t * v * n_sub
        floor = max(read_floor, flops / rate)
        row = {
            "seeds": n,
            "wall_s": wall,
            "s_per_seed": wall / n,
            "cpu_s": B.median(rec["cpu_s"]),
            "floor_s": floor,
            "gemm_floor_s": flops / rate,
            "x_floor": wall / floor,
            "peak_rss_gb": max(rec["peak_rss"]) / B.GB,
            "passes": rec["passes"],
            "ref_s_per_seed": ref_per_seed,
            "speedup_per_seed": ref_per_seed / (wall / n),
            "walls_s": rec["wall_s"],
        }
        if "wall_own_cluster_s" in rec:
            row["own_cluster_s"] = rec["wall_own_cluster_s"]
        rows.append(row)
    last = rows[-1]
    targets = {
        "within_2x_floor": last["x_floor"] <= TARGET_FLOOR,
        "speedup_ge_50x": last["speedup_per_seed"] >= TARGET_SPEEDUP,
        "peak_rss_lt_4gb": max(r_["peak_rss_gb"] for r_ in rows) < TARGET_RSS_GB,
    }
    print(
        B.table(
            rows,
            [
                ("seeds", "seeds", "d"),
                ("wall_s", "wall s (median)", ".2f"),
                ("s_per_seed", "s/seed", ".3f"),
                ("cpu_s", "CPU s", ".1f"),
                ("floor_s", "floor s", ".2f"),
                ("gemm_floor_s", "GEMM s", ".2f"),
                ("x_floor", "x floor", ".2f"),
                ("peak_rss_gb", "peak RSS GB (tree)", ".2f"),
                ("ref_s_per_seed", "per-seed loop s/seed", ".1f"),
                ("speedup_per_seed", "speed-up per seed", ".0f"),
                ("own_cluster_s", "incl. own cluster s", ".2f"),
            ],
        )
    )
    w = list(r["workers"].values())
    print(
        f"\ntargets at {last['seeds']} seeds: <= {TARGET_FLOOR}x floor {targets['within_2x_floor']}, "
        f">= {TARGET_SPEEDUP:.0f}x per seed {targets['speedup_ge_50x']}, peak RSS < {TARGET_RSS_GB} GB "
        f"{targets['peak_rss_lt_4gb']}"
    )
    print(
        f"read floor {read_floor:.2f} s ({r['bytes'] / B.GB:.2f} GB, "
        f"{B.median(r['floor_cpu_s']):.1f} CPU s); GEMM rate used {rate / 1e9:.0f} GFLOP/s; "
        f"per-seed loop: {B.median(ref['seconds']):.2f} s per seed over {ref['subjects']} subjects -> "
        f"{ref_per_seed:.1f} s per seed over {n_sub} (+ {ref_load_per_seed:.1f} s to load the raw series, "
        "not counted)"
    )
    ratios = "".join(
        f"; SkylakeX / {k} = {blas['SkylakeX']['gflops'] / blas[k]['gflops']:.2f}"
        for k in ("unset", "Haswell")
        if "SkylakeX" in blas and k in blas
    )
    print(
        "float32 GEMM (GFLOP/s, 2 threads): "
        + ", ".join(f"{k} {b['gflops']:.0f} ({b['architecture']})" for k, b in blas.items())
        + ratios
    )
    print(
        "Dask workers: "
        + "; ".join(
            f"OPENBLAS_CORETYPE={x['OPENBLAS_CORETYPE']} kernel {x.get('architecture')} "
            f"threads {x.get('threads')} "
            f"{x['gflops']:.0f} GFLOP/s"
            for x in w
        )
    )
    print(
        f"LocalCluster start {r['cluster_start_s']:.2f} s; load before {load_before}, after {load_after}; "
        f"repeats {B.repeats(args)}"
    )
    B.write_results(
        args,
        NAME,
        {
            "subjects": n_sub,
            "timepoints": t,
            "voxels": v,
            "workers": args.workers,
            "repeats": B.repeats(args),
            "rows": rows,
            "targets": targets,
            "read_floor_s": read_floor,
            "read_floor_all_s": r["floor_s"],
            "floor_modes": r["floor_mode"],
            "gemm_rate_gflops": rate / 1e9,
            "blas": blas,
            "dask_workers": w,
            "reference": {
                **ref,
                "per_seed_extrapolated_s": ref_per_seed,
                "load_per_seed_extrapolated_s": ref_load_per_seed,
            },
            "cluster_start_s": r["cluster_start_s"],
            "load_before": load_before,
            "load_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
