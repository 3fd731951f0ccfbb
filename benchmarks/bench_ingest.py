"""Connectome ingest: peak memory against connectome size, and throughput.

Ingests the first 10, 20 and 50 subjects (120 time points, full 2 mm brain mask, 235,375 voxels,
113 MB of float32 per subject) of the cached tutorial connectome (GSP1000-style HDF5 batches) into
a fresh lake, each in its own child process, and reports that process's peak RSS (wait4
``ru_maxrss``; ingest runs in one process) and the input throughput (float32 series bytes / s).
The claim checked: peak memory stays flat, bounded by a few copies of one subject, whatever the
number of subjects.

    .venv/bin/python benchmarks/bench_ingest.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_ingest"


def child(spec: dict) -> None:
    import h5py  # noqa: F401 - imported before the baseline: it measures data, not code
    import psutil
    import zarr  # noqa: F401

    from lakepipe.ingest import ingest_connectome
    from lakepipe.io.sources import open_source
    from lakepipe.lake import Lake

    lake = Lake(spec["lake"])
    lake.catalog  # noqa: B018 - open the catalog before timing
    open_source(spec["source"])
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    res = ingest_connectome(lake, spec["source"], name="bench")
    wall = time.perf_counter() - t0
    store = Path(spec["lake"]) / "connectomes" / "bench.zarr"
    stored = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    B.child_result(
        {"wall_s": wall, "n_written": len(res.written), "baseline_rss": base, "stored_bytes": stored}
    )


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        return child(json.loads(args.child))
    tut = B.tutorial(args)
    s = B.sizes(args)
    batches = sorted(Path(tut.connectome).glob("*.h5"))
    per_file = s["subjects"] // len(batches)
    counts = [1, 2, 3] if args.quick else [10, 20, 50]
    work = Path(args.cache) / "ingest-work"
    subject_bytes = s["timepoints"] * 235375 * 4
    rows = []
    print(
        f"ingest: {s['timepoints']} time points x 235,375 voxels = {subject_bytes / B.MB:.0f} MB float32 per "
        f"subject; load {B.load()}"
    )
    for n in counts:
        src = work / f"source-{n}"
        B.remove_tree(src)
        src.mkdir(parents=True)
        for b in batches[: n // per_file]:
            os.symlink(b, src / b.name)
        # warm the page cache for the source (every size then reads it from memory alike)
        for b in src.iterdir():
            with open(b, "rb") as f:
                while f.read(64 << 20):
                    pass
        runs = []
        load_before = B.load()
        for _ in range(B.repeats(args)):
            lake = work / f"lake-{n}"
            B.remove_tree(lake)
            r = B.run_child("bench_ingest.py", {"source": str(src), "lake": str(lake)})
            assert r["n_written"] == n, r
            runs.append(r)
            B.remove_tree(lake)
        B.remove_tree(src)
        wall = B.median([r["wall_s"] for r in runs])
        row = {
            "subjects": n,
            "input_gb": n * subject_bytes / B.GB,
            "wall_s": wall,
            "mb_per_s": n * subject_bytes / B.MB / wall,
            "s_per_subject": wall / n,
            "peak_rss_mb": max(r["maxrss"] for r in runs) / B.MB,
            "baseline_rss_mb": B.median([r["baseline_rss"] for r in runs]) / B.MB,
            "tree_peak_rss_mb": max(r["tree_peak_rss"] for r in runs) / B.MB,
            "stored_gb": runs[0]["stored_bytes"] / B.GB,
            "walls_s": [r["wall_s"] for r in runs],
            "load_before": load_before,
            "load_after": B.load(),
        }
        row["added_rss_mb"] = row["peak_rss_mb"] - row["baseline_rss_mb"]
        row["added_per_subject_size"] = row["added_rss_mb"] / (subject_bytes / B.MB)
        rows.append(row)
        print(
            f"  {n} subjects: {wall:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB (load {row['load_after']})",
            flush=True,
        )
    B.remove_tree(work)
    print()
    print(
        B.table(
            rows,
            [
                ("subjects", "subjects", "d"),
                ("input_gb", "input GB", ".2f"),
                ("wall_s", "wall s (median)", ".1f"),
                ("mb_per_s", "MB/s", ".0f"),
                ("peak_rss_mb", "peak RSS MB", ".0f"),
                ("baseline_rss_mb", "before data MB", ".0f"),
                ("added_rss_mb", "added MB", ".0f"),
                ("added_per_subject_size", "added / one subject", ".2f"),
                ("load_after", "load 1/5/15 min", ""),
            ],
        )
    )
    peaks = [r["peak_rss_mb"] for r in rows]
    flat = max(peaks) / min(peaks)
    print(
        f"\npeak RSS ratio largest/smallest connectome: {flat:.2f} (flat = 1.0) over a "
        f"{counts[-1] / counts[0]:.0f}x range of subjects; one subject = {subject_bytes / B.MB:.0f} MB"
    )
    B.write_results(
        args,
        NAME,
        {
            "subject_mb": subject_bytes / B.MB,
            "timepoints": s["timepoints"],
            "voxels": 235375,
            "repeats": B.repeats(args),
            "rows": rows,
            "peak_ratio_largest_smallest": flat,
        },
    )


if __name__ == "__main__":
    main()
