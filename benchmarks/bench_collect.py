"""Benchmark: ``collect`` over 10,000 catalogued AFNM outputs (target: under 5 s).

Builds a local lake whose catalog holds N AFNM outputs spread over several derivative stores (as many
runs would leave them), then times the catalog query, the notebook call ``lake.collect(...)`` and the
group TSV written by ``write_group``. Prints a table and writes benchmarks/results/bench_collect.json.

    python benchmarks/bench_collect.py [--outputs 10000] [--regions 400] [--runs 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from lakepipe.catalog import OutputRecord
from lakepipe.collect import collect, write_group
from lakepipe.io import layout
from lakepipe.io.stores import write_derivative
from lakepipe.lake import Lake

RESULTS = Path(__file__).resolve().parent / "results"


def build(lake: Lake, n: int, n_regions: int, n_runs: int) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "index": np.arange(1, n_regions + 1),
            "name": [f"R{i}" for i in range(n_regions)],
            "network": [f"N{i % 7}" for i in range(n_regions)],
            "hemisphere": "L",
        }
    )
    from lakepipe.methods.common import region_coords

    params = {"weighting": "fractional", "matrix": {"kind": "parcellate", "statistic": "fcgroupz"}}
    per_run = int(np.ceil(n / n_runs))
    for r in range(n_runs):
        ids = range(r * per_run, min(n, (r + 1) * per_run))
        if not len(ids):
            break
        seeds = [f"sub-{i:05d}_ses-01_label-acuteinfarct" for i in ids]
        ds = xr.Dataset(
            {"score": (("seed", "region"), rng.standard_normal((len(ids), n_regions), np.float32))},
            coords={
                "seed": seeds,
                "participant": ("seed", [f"{i:05d}" for i in ids]),
                "session": ("seed", ["01"] * len(ids)),
                "label": ("seed", ["acuteinfarct"] * len(ids)),
                **region_coords(table),
            },
            attrs={"method": "afnm", "atlas": "Bench", "cohort": "bench", "parameters": params},
        )
        name = f"afnm-bench{r:03d}"
        url = write_derivative(layout.derivative_store(lake.url, "afnm", name), ds)
        lake.catalog.register(
            [
                OutputRecord(
                    kind="derivative",
                    method="afnm",
                    statistic="afnmap",
                    cohort="bench",
                    participant=f"{i:05d}",
                    session="01",
                    label="acuteinfarct",
                    atlas="Bench",
                    params=params,
                    inputs={"lesion": f"{i:064x}", "atlas": "a", "matrix": "m"},
                    store_uri=layout.relative(lake.url, url),
                    store_index=str(k),
                )
                for k, i in enumerate(ids)
            ]
        )


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outputs", type=int, default=10_000)
    ap.add_argument("--regions", type=int, default=400)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1,000 outputs, 2 repeats")
    args = ap.parse_args()
    if args.quick:
        args.outputs, args.runs, args.repeat = 1000, 4, 2
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(os.path.join(tmp, "lake"))
        t0 = time.perf_counter()
        build(lake, args.outputs, args.regions, args.runs)
        t_build = time.perf_counter() - t0
        t_query, rows = timed(lambda: lake.catalog.query(method="afnm", atlas="Bench"), args.repeat)
        t_collect, da = timed(lambda: collect(lake, "afnm", atlas="Bench").load(), args.repeat)
        t_tsv, files = timed(
            lambda: write_group(collect(lake, "afnm", atlas="Bench"), Path(tmp) / "group"), args.repeat
        )
        assert da.sizes["seed"] == args.outputs == len(rows)
    load = os.getloadavg()[0]
    result = {
        "outputs": args.outputs,
        "regions": args.regions,
        "stores": args.runs,
        "repeat": args.repeat,
        "build_s": round(t_build, 2),
        "catalog_query_s": round(t_query, 3),
        "collect_dataarray_s": round(t_collect, 3),
        "collect_group_tsv_s": round(t_tsv, 3),
        "target_s": 5.0,
        "met": t_collect < 5.0 and t_tsv < 5.0,
        "load_avg_1min": round(load, 1),
    }
    print(
        f"collect over {args.outputs:,} AFNM outputs x {args.regions} regions in {args.runs} stores "
        f"(medians of {args.repeat}; load {load:.1f})"
    )
    for k in ("catalog_query_s", "collect_dataarray_s", "collect_group_tsv_s"):
        print(f"  {k:<22} {result[k]:>8.3f} s")
    print(f"  target < 5 s: {'met' if result['met'] else 'NOT met'}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("bench_collect_quick.json" if args.quick else "bench_collect.json")).write_text(
        json.dumps(result, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
