"""Group FC (``parcellate``) against the I/O floor, and its peak memory.

Connectome: the cached tutorial connectome of 50 subjects x 120 time points on the full 2 mm brain
mask (235,375 voxels, 5.6 GB of float32), ingested once into the benchmark lake. Atlases: Seitzman
2018 (300 spheres, 2 mm) and Schaefer 400 (1 mm, resampled to the connectome grid).

In one child process with one Dask LocalCluster (2 single-threaded workers): the floor = reading
every chunk of ``timeseries``, ``scale`` and ``mean`` once with zarr in the same number of worker
tasks; then ``lake.run("parcellate", ...)`` (each repeat on a private copy of the
catalog, so nothing is skipped), alternating, page cache warm for both. Target (issue 14): parcellate <= 1.2x
the floor. Peak memory = largest RSS sum over the process tree (client + workers) while it runs.
Also timed: the same call without a running cluster (it starts its own LocalCluster), as the
command line runs it.

    .venv/bin/python benchmarks/bench_parcellate.py [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_parcellate"
ATLASES = ("Seitzman2018", "Schaefer400")
TARGET = 1.2
FORGET = ("parcellate",)  # the lake keeps group FC for AFNM: every timed run computes it again


def child(spec: dict) -> None:
    from lakepipe.io.layout import connectome_store
    from lakepipe.lake import Lake
    from lakepipe.runtime import Runtime

    lake = Lake(spec["lake"])
    n = lake.catalog.count(kind="connectome", connectome="bench")
    url = connectome_store(lake.url, "bench")
    work = Path(spec["work"])
    out = {
        "floor_s": [],
        "floor_cpu_s": [],
        "floor_mode": [],
        "read_modes": [],
        "floor_peak_rss": [],
        "bytes": 0,
        "atlases": {},
    }
    t0 = time.perf_counter()
    with Runtime(n_workers=spec["workers"]) as runtime:
        client = runtime.client
        out["cluster_start_s"] = time.perf_counter() - t0
        out["worker_blas"] = client.run(lambda: __import__("os").environ.get("OPENBLAS_CORETYPE"))
        B.read_floor(client, url, n)  # warm the page cache and the workers
        for atlas in spec["atlases"]:  # warm-up run per atlas (imports, resampling caches)
            B.catalog_copy(lake, work / "warm.sqlite", FORGET).run(
                "parcellate", connectome="bench", atlas=atlas, client=client
            )
        for rep in range(spec["repeats"]):
            with B.PeakRSS() as m:
                modes = B.read_floor(client, url, n)
            best = min(modes, key=lambda k: modes[k]["wall_s"])
            out["floor_s"].append(modes[best]["wall_s"])
            out["floor_cpu_s"].append(modes[best]["cpu_s"])
            out["floor_mode"].append(best)
            out["read_modes"].append(modes)
            out["floor_peak_rss"].append(m.peak)
            out["bytes"] = modes[best]["bytes"]
            for atlas in spec["atlases"]:
                rec = out["atlases"].setdefault(
                    atlas, {"wall_s": [], "cpu_s": [], "peak_rss": [], "start_rss": []}
                )
                lk = B.catalog_copy(lake, work / f"cat-{rep}-{atlas}.sqlite", FORGET)
                c0 = B.tree_cpu()
                with B.PeakRSS() as m:
                    dt, res = B.timed(
                        lk.run, "parcellate", connectome="bench", atlas=atlas, client=client, outputs=False
                    )
                rec["cpu_s"].append(B.tree_cpu() - c0)
                assert not res.skipped
                rec["wall_s"].append(dt)
                rec["peak_rss"].append(m.peak)
                rec["start_rss"].append(m.start)
                rec["n_regions"] = int(
                    lk.collect("parcellate", connectome="bench", atlas=atlas).sizes["region"]
                )
            print(
                f"  repeat {rep + 1}: floor {out['floor_s'][-1]:.2f} s ({best}), "
                + ", ".join(f"{a} {out['atlases'][a]['wall_s'][-1]:.2f} s" for a in spec["atlases"])
                + f" (load {B.load()})",
                file=sys.stderr,
                flush=True,
            )
    # as the command line runs it: parcellate starts (and stops) its own LocalCluster
    for atlas in spec["atlases"]:
        lk = B.catalog_copy(lake, work / f"cat-cli-{atlas}.sqlite", FORGET)
        dt, _ = B.timed(lk.run, "parcellate", connectome="bench", atlas=atlas, outputs=False)
        out["atlases"][atlas]["wall_own_cluster_s"] = dt
    out["n_subjects"] = n
    B.child_result(out)


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        return child(json.loads(args.child))
    lake = B.bench_lake(args)
    s = B.sizes(args)
    work = Path(args.cache) / "parcellate-work"
    B.remove_tree(work)
    print(
        f"parcellate: {s['subjects']} subjects x {s['timepoints']} time points x 235,375 voxels, "
        f"{args.workers} workers; load {B.load()}",
        flush=True,
    )
    load_before = B.load()
    r = B.run_child(
        "bench_parcellate.py",
        {
            "lake": lake.url,
            "work": str(work),
            "atlases": list(ATLASES),
            "repeats": B.repeats(args),
            "workers": args.workers,
        },
    )
    load_after = B.load()
    B.remove_tree(work)
    floor = B.median(r["floor_s"])
    floor_cpu = B.median(r["floor_cpu_s"])
    rows = [
        {
            "what": "I/O floor (read store once)",
            "wall_s": floor,
            "ratio": 1.0,
            "cpu_s": floor_cpu,
            "cpu_ratio": 1.0,
            "gb_per_s": r["bytes"] / B.GB / floor,
            "peak_rss_mb": max(r["floor_peak_rss"]) / B.MB,
        }
    ]
    for atlas, rec in r["atlases"].items():
        wall = B.median(rec["wall_s"])
        paired = B.median([w / f for w, f in zip(rec["wall_s"], r["floor_s"], strict=True)])
        rows.append(
            {
                "what": f"parcellate {atlas} ({rec['n_regions']} regions)",
                "wall_s": wall,
                "ratio": wall / floor,
                "paired_ratio": paired,
                "cpu_s": B.median(rec["cpu_s"]),
                "cpu_ratio": B.median(rec["cpu_s"]) / floor_cpu,
                "gb_per_s": r["bytes"] / B.GB / wall,
                "peak_rss_mb": max(rec["peak_rss"]) / B.MB,
                "own_cluster_s": rec["wall_own_cluster_s"],
                "target_met": wall / floor <= TARGET,
                "walls_s": rec["wall_s"],
            }
        )
    print(
        B.table(
            rows,
            [
                ("what", "", ""),
                ("wall_s", "wall s (median)", ".2f"),
                ("ratio", "x floor", ".2f"),
                ("paired_ratio", "x floor (paired)", ".2f"),
                ("cpu_s", "CPU s", ".1f"),
                ("cpu_ratio", "CPU x floor", ".2f"),
                ("gb_per_s", "GB/s", ".2f"),
                ("peak_rss_mb", "peak RSS MB (tree)", ".0f"),
                ("own_cluster_s", "incl. own cluster s", ".2f"),
                ("target_met", "<= 1.2x", ""),
            ],
        )
    )
    modes = {m: B.median([rm[m]["wall_s"] for rm in r["read_modes"]]) for m in r["read_modes"][0]}
    print(
        "\nreading the store once, by way of reading (median wall s): "
        + "; ".join(f"{m}: {v:.2f}" for m, v in modes.items())
    )
    print(
        f"store: {r['bytes'] / B.GB:.2f} GB; LocalCluster start {r['cluster_start_s']:.2f} s; "
        f"workers' OPENBLAS_CORETYPE {sorted(set(map(str, r['worker_blas'].values())))}; "
        f"load before {load_before}, after {load_after}; repeats {B.repeats(args)}"
    )
    B.write_results(
        args,
        NAME,
        {
            "subjects": r["n_subjects"],
            "timepoints": s["timepoints"],
            "voxels": 235375,
            "workers": args.workers,
            "repeats": B.repeats(args),
            "target_ratio": TARGET,
            "store_bytes": r["bytes"],
            "floor_s": r["floor_s"],
            "floor_cpu_s": r["floor_cpu_s"],
            "read_modes_median_s": modes,
            "cluster_start_s": r["cluster_start_s"],
            "rows": rows,
            "tree_peak_rss_child_mb": r["tree_peak_rss"] / B.MB,
            "load_before": load_before,
            "load_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
