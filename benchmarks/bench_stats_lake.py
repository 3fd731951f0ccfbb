"""Specificity and symptom maps as lake methods on a Dask LocalCluster (1 and 2 workers), against
``nilearn.mass_univariate.permuted_ols`` in one process and against the GEMM floor.

Inputs (made once in the ``--cache`` folder): 200 binary 1 mm lesion masks (the first 200 of the
AFNM benchmark cohort, ``bench_afnm.make_cohort``) written as two BIDS cohorts of 100
(``statcases``, ``statcontrols``) whose ``participants.tsv`` carries a numeric ``score`` (2 log of
the lesion's voxel count plus unit noise) and a ``half`` column (1 or 2), ingested into the
benchmark lake and mapped once by FNM on its connectome ``bench`` (50 subjects x 120 time points,
full 2 mm mask: 235,375 voxels). The tested maps are those FNM tmaps.

Tests, each with 5,000 permutations, no covariates (``--quick``: 20 maps, 500 permutations):

- ``lake.run("specificity", cases="cohort=statcases", controls="cohort=statcontrols")``: 100 vs 100
  maps; and 50 vs 50 (``half=1`` of each) to show memory at 100 maps;
- ``lake.run("symptom", cases="cohort=statcases+statcontrols", score="score")``: 200 maps; and the
  100 of ``statcases``.

Each repeat runs one child process with a 1-worker LocalCluster, then one with 2 workers (fresh
catalog copy, so nothing is skipped; ``recompute=True`` between repeats in a child; one warm-up run
first). Per run: wall, CPU of the process tree, peak RSS of the whole tree (this process, the
cluster's nanny and worker processes; polled), and its largest single process. Next to every run,
in the same child: the tile GEMMs of the permutation products alone (``bench_stats.gemm_only``, both
cores), so the ratio survives a load that changes between minutes. The GEMM floor is
``2 n V n_perm`` FLOPs at the best float32 rate measured in the child before the cluster starts
(``bench_stats.gemm_rates``, both cores). ``permuted_ols`` (n_jobs=1, the same float32 maps, as the
lake reads them) is timed in its own child by ``bench_stats.run_nilearn``: with 0 permutations and a
probe count, extrapolated linearly to 5,000, and run in full once only when that predicts at most
``--nilearn-full-max`` seconds.

Targets: 2 workers within 2x the GEMM floor; 2 workers >= 1.8x faster than 1; peak RSS bounded by
the feature blocks (about the same at 100 and 200 maps, far below the maps' size).

    .venv/bin/python benchmarks/bench_stats_lake.py [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_stats_lake"
FULL = {"maps": 200, "n_perm": 5000, "nilearn_perms": 100, "smaller": 100}
QUICK = {"maps": 20, "n_perm": 500, "nilearn_perms": 10, "smaller": 10}
COHORTS = ("statcases", "statcontrols")
TARGET_FLOOR, TARGET_SPEEDUP = 2.0, 1.8
NILEARN_FULL_MAX_S = {"full": 300.0, "quick": 0.0}


# --------------------------------------------------------------------------------------------- data


def write_cohorts(out: Path, source: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Two BIDS lesion datasets of ``n // 2`` masks each (copies of the first ``n`` of ``source``),
    participants.tsv with ``lesion_voxels``, ``score`` and ``half``; written once."""
    import shutil

    import numpy as np
    import pandas as pd

    done = out / ".complete"
    dirs = (out / COHORTS[0], out / COHORTS[1])
    if done.exists() and done.read_text() == str(n):
        return dirs
    B.remove_tree(out)
    table = pd.read_csv(source / "participants.tsv", sep="\t").iloc[:n].reset_index(drop=True)
    if len(table) < n:
        raise RuntimeError(f"{source} holds {len(table)} masks, {n} needed")
    rng = np.random.default_rng(seed)
    table["score"] = np.round(2 * np.log(table["lesion_voxels"].to_numpy(float)) + rng.normal(0, 1, n), 3)
    half = n // 2
    for k, d in enumerate(dirs):
        part = table.iloc[k * half : (k + 1) * half].reset_index(drop=True)
        part["half"] = np.where(np.arange(half) < half // 2, 1, 2)
        d.mkdir(parents=True)
        shutil.copy(source / "dataset_description.json", d / "dataset_description.json")
        for pid in part["participant_id"]:
            shutil.copytree(source / pid, d / pid)
        part.to_csv(d / "participants.tsv", sep="\t", index=False)
    done.write_text(str(n))
    return dirs


def prepare(args, size: dict):
    """The benchmark lake with both cohorts ingested and mapped by FNM (once)."""
    import bench_afnm

    from lakepipe.ingest import ingest_lesions

    lake = B.bench_lake(args)
    tut = B.tutorial(args)
    n_src = bench_afnm.N_QUICK if args.quick else bench_afnm.N_FULL
    n = size["maps"]
    with B.locked(Path(args.cache) / ".lake.lock"):
        source = bench_afnm.make_cohort(Path(args.cache) / f"afnm-cohort-{n_src}", n_src, Path(tut.bids))
        dirs = write_cohorts(Path(args.cache) / f"stats-cohorts-{n}", source, n)
        for cohort, d in zip(COHORTS, dirs, strict=True):
            if lake.catalog.count(kind="lesion", cohort=cohort) < n // 2:
                ingest_lesions(lake, d, cohort=cohort)
            if lake.catalog.count(kind="derivative", method="fnm", cohort=cohort, statistic="tmap") < n // 2:
                t0 = time.perf_counter()
                lake.run("fnm", cohort=cohort, connectome="bench", outputs=False)
                print(f"  FNM of {cohort}: {time.perf_counter() - t0:.1f} s (once)", flush=True)
    return lake


def tests(size: dict) -> list[dict]:
    """The lake runs timed: (label, method, maps, parameters)."""
    a, b = COHORTS
    n, m = size["maps"], size["smaller"]
    return [
        {"test": "specificity", "maps": n, "kw": {"cases": f"cohort={a}", "controls": f"cohort={b}"}},
        {"test": "symptom", "maps": n, "kw": {"cases": f"cohort={a}+{b}", "score": "score"}},
        {
            "test": "specificity",
            "maps": m,
            "kw": {"cases": f"cohort={a},half=1", "controls": f"cohort={b},half=1"},
        },
        {"test": "symptom", "maps": m, "kw": {"cases": f"cohort={a}", "score": "score"}},
    ]


# ------------------------------------------------------------------------------------------ children


def worker_probe(n: int) -> dict:
    """On a Dask worker: its BLAS kernel and threads, and the float32 rate of the permutation tile
    GEMM ``(2048, n) @ (n, 512)`` (median of 3; run on every worker at once), per second of wall
    time and per second of this thread's CPU time (what the other users of a shared machine do not
    change). Self-contained."""
    import statistics
    import time

    import numpy as np
    from threadpoolctl import threadpool_info

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, n)).astype(np.float32)
    b = rng.standard_normal((512, n)).astype(np.float32)
    c = np.empty((2048, 512), np.float32)
    reps = max(1, int(2e9 / (2 * 2048 * n * 512)))
    ts, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(reps):
            np.matmul(a, b.T, out=c)
        ts.append((time.perf_counter() - t0) / reps)
        cpu.append((time.thread_time() - c0) / reps)
    lib = next((x for x in threadpool_info() if x.get("internal_api") == "openblas"), {})
    return {
        "architecture": lib.get("architecture"),
        "threads": lib.get("num_threads"),
        "gflops": 2 * 2048 * n * 512 / statistics.median(ts) / 1e9,
        "cpu_gflops": 2 * 2048 * n * 512 / statistics.median(cpu) / 1e9,
        "coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
    }


def lake_child(spec: dict) -> None:
    """One LocalCluster of ``workers`` workers: the GEMM rate first (no cluster yet), then a warm-up
    run and every test once, each next to its tile GEMMs alone."""
    import logging

    import bench_stats as S

    from lakepipe.blas import tune_blas_for_this_process

    tune_blas_for_this_process()
    from lakepipe.lake import Lake
    from lakepipe.runtime import Runtime

    logging.getLogger("lakepipe").setLevel(logging.ERROR)
    work = Path(spec["work"])
    lake = B.catalog_copy(Lake(spec["lake"]), work / f"cat-{spec['tag']}.sqlite")
    n_vox, n_perm = spec["voxels"], spec["n_perm"]
    quick = spec["quick"]
    out: dict = {"runs": [], "load_start": B.load()}
    out["gemm_gflops"] = S.gemm_rates(
        spec["maps"], (0,), square=1024 if quick else 3072, work=1e9 if quick else 2e10
    )
    t0 = time.perf_counter()
    with Runtime(n_workers=spec["workers"]) as runtime:
        client = runtime.client
        out["cluster_start_s"] = time.perf_counter() - t0
        out["workers"] = list(client.run(worker_probe, spec["maps"]).values())  # __main__: by value
        warm = spec["tests"][-1]
        lake.run(warm["test"], n_permutations=n_perm, client=client, outputs=False, **warm["kw"])
        for t in spec["tests"]:
            gemm = S.gemm_only(t["maps"], n_vox, n_perm, 0)
            c0, m0 = B.tree_cpu(), sum(os.times()[:2])
            with B.PeakRSS() as mem:
                wall, res = B.timed(
                    lake.run,
                    t["test"],
                    n_permutations=n_perm,
                    recompute=True,
                    client=client,
                    outputs=False,
                    **t["kw"],
                )
            assert res.computed and not res.skipped, res.summary()
            out["runs"].append(
                {
                    "test": t["test"],
                    "maps": t["maps"],
                    "wall_s": wall,
                    "cpu_s": B.tree_cpu() - c0,
                    "main_cpu_s": sum(os.times()[:2]) - m0,
                    "tile_gemm_s": gemm,
                    "peak_rss": mem.peak,
                    "start_rss": mem.start,
                    "peak_single_rss": mem.peak_single,
                    "message": res.message,
                    "load": B.load(),
                }
            )
    B.child_result(out)


def nilearn_child(spec: dict) -> None:
    """permuted_ols on the maps the lake method reads, in this one process (bench_stats.run_nilearn)."""
    import bench_stats as S
    import numpy as np

    from lakepipe.lake import Lake
    from lakepipe.registry import get_method

    S.MAX_NILEARN_S = spec["full_max_s"]  # run_nilearn runs the full count only below this
    lake = Lake(spec["lake"])
    t = spec["test"]
    m = get_method(t["test"])
    p = m.params({**t["kw"], "n_permutations": spec["n_perm"]})
    maps = m.resolve(lake, p)
    t0 = time.perf_counter()
    x = m.source(lake, maps).read().astype(np.float32)  # FNM tmaps are float32 in the lake
    read_s = time.perf_counter() - t0
    if t["test"] == "specificity":
        tested = maps.is_case.astype(float)
    else:
        tested = maps.values([t["kw"]["score"]], "score")[0][:, 0]
    nl = S.run_nilearn(x, tested, None, spec["probe"], spec["n_perm"], spec["repeats"])
    B.child_result({**nl, "read_s": read_s, "maps_bytes": x.nbytes, "voxels": x.shape[1], "load": B.load()})


def child(spec: dict) -> None:
    {"lake": lake_child, "nilearn": nilearn_child}[spec["what"]](spec)


# --------------------------------------------------------------------------------------------- main


def running() -> float:
    """Mean number of runnable threads on the machine over ~1 s (``procs_running`` of /proc/stat,
    this sampler included)."""
    xs = []
    for _ in range(10):
        with open("/proc/stat") as f:
            xs += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
        time.sleep(0.1)
    return sum(xs) / max(len(xs), 1)


def wait_quiet(max_s: float, cores: int) -> dict:
    """Wait up to ``max_s`` seconds until the other users of the machine leave a core free (mean
    runnable threads, the sampler included, at most ``cores``, three samples in a row)."""
    t0, calm = time.perf_counter(), 0
    r = running()
    while max_s > 0 and time.perf_counter() - t0 < max_s:
        calm = calm + 1 if r <= cores else 0
        if calm >= 3:
            break
        r = running()
    return {"waited_s": round(time.perf_counter() - t0, 1), "running": r, "load": B.load()}


def main() -> None:
    p = B.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--nilearn-full-max",
        type=float,
        default=None,
        help="run permuted_ols with all permutations only when predicted to take at most this many "
        f"seconds (default {NILEARN_FULL_MAX_S['full']:.0f}, quick {NILEARN_FULL_MAX_S['quick']:.0f}; "
        "otherwise the extrapolation is quoted)",
    )
    p.add_argument(
        "--quiet",
        type=float,
        default=0.0,
        help="before each timed child, wait up to this many seconds for the machine's other users to "
        "leave a core free (default 0: no wait); the runnable threads seen are printed with the figures",
    )
    args = p.parse_args()
    if args.child:
        return child(json.loads(args.child))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the results on kill
    from lakepipe.blas import tune_blas_for_this_process

    tune_blas_for_this_process()
    import bench_stats as S
    import numpy as np

    size = QUICK if args.quick else FULL
    reps = B.repeats(args)
    mach, blas, features = B.machine(), B.blas_info(), S.simd()
    load_before = B.load()
    print(
        f"stats on the lake: {size['maps']} FNM tmaps, {size['n_perm']:,} permutations, LocalCluster of 1 "
        f"and 2 workers; CPU {mach['cpu']} ({mach['cores']} cores), numpy {np.__version__} SIMD "
        f"baseline {' '.join(features['baseline'])}, found {' '.join(features['found'])}; OpenBLAS "
        f"kernel {blas.get('architecture')} ({blas.get('threads')} threads, OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE')}); load {load_before}",
        flush=True,
    )
    lake = prepare(args, size)
    n_vox = 235375
    work = Path(args.cache) / "stats-lake-work"
    B.remove_tree(work)
    derivs = [Path(lake.url) / "derivatives" / m for m in ("specificity", "symptom")]
    before = {d: set(d.iterdir()) if d.exists() else set() for d in derivs}
    todo = tests(size)
    runs: dict[int, list[list[dict]]] = {1: [], 2: []}
    children: dict[int, list[dict]] = {1: [], 2: []}
    try:
        for rep in range(reps):  # interleaved: 1 worker, then 2, per repeat
            for w in (1, 2):
                quiet = wait_quiet(args.quiet, mach["cores"] or 2)
                r = B.run_child(
                    "bench_stats_lake.py",
                    {
                        "what": "lake",
                        "lake": lake.url,
                        "work": str(work),
                        "tag": f"{rep}-{w}",
                        "workers": w,
                        "tests": todo,
                        "maps": size["maps"],
                        "voxels": n_vox,
                        "n_perm": size["n_perm"],
                        "quick": bool(args.quick),
                    },
                )
                r["quiet"] = quiet
                runs[w].append(r["runs"])
                children[w].append(r)
                print(
                    f"  repeat {rep + 1}, {w} worker(s): "
                    + ", ".join(f"{x['test']} {x['maps']} maps {x['wall_s']:.2f} s" for x in r["runs"])
                    + f" (runnable threads before {quiet['running']:.1f} after {quiet['waited_s']:.0f} s "
                    f"wait; load {B.load()})",
                    flush=True,
                )
    finally:
        for d in derivs:  # this benchmark's results (registered only in the catalog copies)
            for x in (set(d.iterdir()) if d.exists() else set()) - before[d]:
                B.remove_tree(x)
        B.remove_tree(work)

    nilearn = {}
    for t in todo[:2]:
        quiet = wait_quiet(args.quiet, mach["cores"] or 2)
        nilearn[t["test"]] = B.run_child(
            "bench_stats_lake.py",
            {
                "what": "nilearn",
                "lake": lake.url,
                "test": t,
                "n_perm": size["n_perm"],
                "probe": size["nilearn_perms"],
                "repeats": min(reps, 2),
                "full_max_s": (
                    args.nilearn_full_max
                    if args.nilearn_full_max is not None
                    else NILEARN_FULL_MAX_S["quick" if args.quick else "full"]
                ),
            },
        )
        nl = nilearn[t["test"]]
        nl["quiet"] = quiet
        print(
            f"  permuted_ols {t['test']}: ~{nl['measured_s'] or nl['extrapolated_s']:.0f} s "
            f"({'measured' if nl['measured_s'] else 'extrapolated'}; load {nl['load']})",
            flush=True,
        )

    from lakepipe.methods.stats.tasks import MAX_BLOCK_BYTES, feature_blocks

    rates = [max(c["gemm_gflops"].values()) for cs in children.values() for c in cs]
    rate = max(rates) * 1e9  # the best float32 rate measured in the run (both cores)
    # one core's rate per second of CPU time (the workers', single-threaded): the CPU floor
    cpu_rates = [w_["cpu_gflops"] for cs in children.values() for c in cs for w_ in c["workers"]]
    cpu_rate = max(cpu_rates) * 1e9
    rows = []
    for i, t in enumerate(todo):
        n = t["maps"]
        flops = 2.0 * n * n_vox * size["n_perm"]
        per_w = {w: [rr[i] for rr in runs[w]] for w in (1, 2)}
        walls = {w: B.median([x["wall_s"] for x in per_w[w]]) for w in (1, 2)}
        nl = nilearn.get(t["test"]) if n == size["maps"] else None
        nl_s = (nl["measured_s"] or nl["extrapolated_s"]) if nl else None
        for w in (1, 2):
            x = per_w[w]
            blocks = feature_blocks(n_vox, w, 2, n)  # as permutation_test splits the maps
            row = {
                "test": t["test"],
                "maps": n,
                "workers": w,
                "wall_s": walls[w],
                "cpu_s": B.median([y["cpu_s"] for y in x]),
                "tile_gemm_s": B.median([y["tile_gemm_s"] for y in x]),
                "x_tile_gemm": B.median([y["wall_s"] / y["tile_gemm_s"] for y in x]),
                "flop_floor_s": flops / rate,
                "x_flop_floor": walls[w] / (flops / rate),
                "main_cpu_s": B.median([y["main_cpu_s"] for y in x]),
                "cpu_floor_s": flops / cpu_rate,
                "x_cpu_floor": B.median([y["cpu_s"] for y in x]) / (flops / cpu_rate),
                "blocks": len(blocks),
                "block_width": blocks[0][1] - blocks[0][0],
                "block_mb": 8 * n * (blocks[0][1] - blocks[0][0]) / B.MB,
                "speedup_vs_1": (
                    B.median([a["wall_s"] / b["wall_s"] for a, b in zip(per_w[1], x, strict=True)])
                    if w == 2
                    else None
                ),
                "peak_rss_mb": max(y["peak_rss"] for y in x) / B.MB,
                "added_rss_mb": max(y["peak_rss"] - y["start_rss"] for y in x) / B.MB,
                "peak_single_mb": max(y["peak_single_rss"] for y in x) / B.MB,
                "nilearn_s": nl_s,
                "nilearn_measured": bool(nl and nl["measured_s"]),
                "speedup_vs_nilearn": nl_s / walls[w] if nl_s else None,
                "walls_s": [y["wall_s"] for y in x],
                "message": x[0]["message"],
                "load": [y["load"] for y in x],
            }
            rows.append(row)
    print()
    print(
        B.table(
            rows,
            [
                ("test", "test", "s"),
                ("maps", "maps", "d"),
                ("workers", "workers", "d"),
                ("wall_s", "wall s (median)", ".2f"),
                ("cpu_s", "CPU s", ".1f"),
                ("main_cpu_s", "(main)", ".1f"),
                ("x_cpu_floor", "x CPU floor", ".2f"),
                ("speedup_vs_1", "x vs 1 worker", ".2f"),
                ("tile_gemm_s", "GEMMs alone s", ".2f"),
                ("x_tile_gemm", "x GEMMs", ".2f"),
                ("flop_floor_s", "GEMM floor s", ".2f"),
                ("x_flop_floor", "x floor", ".2f"),
                ("blocks", "blocks", "d"),
                ("block_mb", "MB/block", ".0f"),
                ("peak_rss_mb", "peak RSS MB (tree)", ".0f"),
                ("added_rss_mb", "(added)", ".0f"),
                ("peak_single_mb", "largest process MB", ".0f"),
                ("nilearn_s", "permuted_ols s", ".0f"),
                ("speedup_vs_nilearn", "x vs permuted_ols", ".0f"),
            ],
        )
    )
    full = [r for r in rows if r["maps"] == size["maps"]]
    two = [r for r in full if r["workers"] == 2]
    targets = {
        "within_2x_floor": all(r["x_flop_floor"] <= TARGET_FLOOR for r in two),
        "within_2x_tile_gemms": all(r["x_tile_gemm"] <= TARGET_FLOOR for r in two),
        "within_2x_cpu_floor": all(r["x_cpu_floor"] <= TARGET_FLOOR for r in two),
        "speedup_2_workers_ge_1.8": all(r["speedup_vs_1"] >= TARGET_SPEEDUP for r in two),
    }
    maps_mb = size["maps"] * n_vox * 4 / B.MB
    nl_how = ", ".join(
        f"{k} {'measured in full' if v['measured_s'] else 'extrapolated'} (fixed part {v['fixed_s']:.1f} s "
        f"+ {v['per_perm_s'] * 1e3:.0f} ms per permutation, probe {size['nilearn_perms']}; peak RSS "
        f"{v['tree_peak_rss'] / B.MB:.0f} MB)"
        for k, v in nilearn.items()
    )
    print(
        f"\ntargets (2 workers, {size['maps']} maps): <= {TARGET_FLOOR}x GEMM floor "
        f"{targets['within_2x_floor']} (GEMMs alone {targets['within_2x_tile_gemms']}, CPU floor "
        f"{targets['within_2x_cpu_floor']}); >= {TARGET_SPEEDUP}x vs 1 worker "
        f"{targets['speedup_2_workers_ge_1.8']}"
    )
    print(
        f"GEMM floor: 2 n V n_perm FLOPs at {rate / 1e9:.0f} GFLOP/s (best float32 rate of the children, "
        f"both cores, before their cluster started; per child: {', '.join(f'{x:.0f}' for x in rates)}). "
        f"GEMMs alone: the tile products of the permutations, nothing else, both cores, timed next to "
        f"each run (median of per-run ratios). CPU floor: the same FLOPs at {cpu_rate / 1e9:.0f} GFLOP/s "
        f"per CPU second (best single-thread rate of the workers by thread CPU time); x CPU floor = CPU "
        f"of the whole tree / CPU floor (insensitive to other users of the cores). Workers: "
        + "; ".join(
            f"{x.get('architecture')} {x.get('threads')} thread(s) {x['gflops']:.0f} GFLOP/s "
            f"({x['cpu_gflops']:.0f} per CPU s)"
            for x in children[2][0]["workers"]
        )
    )
    print(
        f"memory: all {size['maps']} maps would be {maps_mb:.0f} MB in float32 ({2 * maps_mb:.0f} MB "
        f"float64); a task holds one block of every map (MB/block: float32 maps and residuals, 8 bytes "
        f"a value; at most {MAX_BLOCK_BYTES / 2**20:.0f} MiB whatever the number of maps), one task per "
        f"worker at a time; peak RSS of the tree at {size['smaller']} and {size['maps']} maps above. "
        f"permuted_ols (n_jobs=1, float32 maps): {nl_how}"
    )
    print(
        f"cluster start {B.median([c['cluster_start_s'] for cs in children.values() for c in cs]):.2f} s "
        f"(not in the walls); repeats {reps}; load before {load_before}, after {B.load()}"
    )
    B.write_results(
        args,
        NAME,
        {
            "size": size,
            "voxels": n_vox,
            "blas": blas,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "simd": features,
            "gemm_rate_gflops": rate / 1e9,
            "cpu_gemm_rate_gflops": cpu_rate / 1e9,
            "rows": rows,
            "targets": targets,
            "nilearn": nilearn,
            "children": children,
            "load_before": load_before,
            "load_after": B.load(),
        },
    )


if __name__ == "__main__":
    main()
