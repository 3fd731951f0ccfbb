"""HDF5 batches read in place against a copied ingest: the first map from nothing, disk use, read speed.

On the cached benchmark connectome (tutorial GSP1000-style HDF5 batches, 50 subjects x 120 time
points on the full 2 mm MNI152 brain mask, 235,375 voxels; ``--quick``: 3 x 20, without the FNM
passes alone), every figure a
median over ``--repeats`` fresh runs, each command a process of its own as a user runs it:

- **first map from nothing** (empty lake) of 1 and 10 lesions: the one command
  ``lakepipe run fnm BIDS_DIR --connectome H5_DIR`` (lesions ingested, batches registered in place,
  FNM) against the separate steps ``ingest lesions`` + ``ingest connectome`` (copy) + ``run fnm``;
  and the one command again for another lesion (the registration reused);
- **one FNM pass** (``run fnm --recompute``, one lesion) on the in-place and on the copied connectome,
  and the connectome ingest alone: ``ingest connectome --in-place`` against the copy;
- **disk**: bytes the lake holds for each connectome, and the batches themselves;
- **read speed**: one full pass over every subject in one process, as a method task reads it
  (:func:`lakepipe.io.stores.rows.open_rows`, one reused buffer): the copied Zarr store, the batches
  in place (read + centring on the fly), and the bare HDF5 read (h5py ``read_direct``) for the floor.
  Page cache warm (every file read once before).

Peak memory is the RSS of the whole process tree (the command, its Dask workers), polled.

    .venv/bin/python benchmarks/bench_inplace.py [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_inplace"
CLI = [sys.executable, "-m", "lakepipe.cli.main"]


# ------------------------------------------------------------------------------------------ children


def child(spec: dict) -> None:
    if "steps" in spec:
        times = []
        for argv in spec["steps"]:
            t0 = time.perf_counter()
            proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, cwd=str(B.ROOT))
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"step failed: {' '.join(argv)}")
        B.child_result({"step_s": times, "wall_s": sum(times)})
        return
    import numpy as np

    from lakepipe.io import layout
    from lakepipe.io.storage import StoreRef
    from lakepipe.io.stores.rows import open_rows

    if spec["read"] == "hdf5":
        import h5py

        files = sorted(Path(spec["source"]).glob("*.h5"))
        t0 = time.perf_counter()
        n = 0
        buf = None
        for path in files:
            with h5py.File(path, "r") as f:
                ds = f["timeseries"]
                buf = np.empty(ds.shape[1:], np.float32) if buf is None else buf
                for r in range(ds.shape[0]):
                    ds.read_direct(buf, np.s_[r])
                    n += buf.nbytes
        B.child_result({"wall_s": time.perf_counter() - t0, "bytes": n})
        return
    rows = open_rows(StoreRef.here(layout.connectome_store(spec["lake"], spec["name"])))
    buf = np.empty(rows.shape[1:], np.float32)
    t0 = time.perf_counter()
    n = 0
    for r in range(rows.shape[0]):
        rows.read_into(r, buf)
        n += buf.nbytes + rows.scale(r).nbytes
    B.child_result({"wall_s": time.perf_counter() - t0, "bytes": n})


# ------------------------------------------------------------------------------------------ helpers


def simd() -> dict:
    """numpy's SIMD baseline and the extensions it found on this CPU (as ``numpy.show_runtime``)."""
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__

    return {
        "baseline": list(__cpu_baseline__),
        "found": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
    }


def bids_subset(src: Path, dst: Path, n: int, skip: int = 0) -> Path:
    """A BIDS folder holding masks ``skip .. skip + n`` (in name order) of ``src``."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("dataset_description.json", "participants.tsv", "participants.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    for mask in sorted(src.rglob("*_mask.nii.gz"))[skip : skip + n]:
        rel = mask.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mask, dst / rel)
        side = mask.with_name(mask.name.replace(".nii.gz", ".json"))
        if side.exists():
            shutil.copy(side, dst / rel.with_name(side.name))
    return dst


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def warm(folder: Path) -> None:
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass


def steps(spec_steps: list[list[str]]) -> dict:
    return B.run_child("bench_inplace.py", {"steps": spec_steps})


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        return child(json.loads(args.child))
    from lakepipe.ingest.inplace import inplace_name
    from lakepipe.ingest.resolve import name_from_folder

    tut = B.tutorial(args)
    s = B.sizes(args)
    h5 = Path(tut.connectome)
    work = Path(args.cache) / "inplace-work"
    B.remove_tree(work)
    work.mkdir(parents=True)
    counts = [1] if args.quick else [1, 10]
    bids = {n: bids_subset(Path(tut.bids), work / f"bids-{n}", n) for n in counts}
    other = bids_subset(Path(tut.bids), work / "bids-other", 1, skip=2)  # another participant's lesion
    con = inplace_name(h5)
    info = B.machine()
    print(
        f"in place vs copied: {s['subjects']} subjects x {s['timepoints']} time points x 235,375 voxels "
        f"({du(h5) / B.GB:.2f} GB of HDF5 batches); CPU {info['cpu']}; numpy SIMD {simd()['found']}; "
        f"load {B.load()}",
        flush=True,
    )
    warm(h5)
    raw: dict[str, list[dict]] = {}

    def add(key: str, r: dict) -> None:
        raw.setdefault(key, []).append(r)

    disk = {}
    for rep in range(B.repeats(args)):
        for n in counts:
            one, sep = work / f"one-{n}", work / f"sep-{n}"
            B.remove_tree(one)
            B.remove_tree(sep)
            add(
                f"one:{n}", steps([["run", "fnm", str(bids[n]), "--connectome", str(h5), "--lake", str(one)]])
            )
            cohort = name_from_folder(bids[n])
            add(
                f"sep:{n}",
                steps(
                    [
                        ["ingest", "lesions", str(bids[n]), "--cohort", cohort, "--lake", str(sep)],
                        ["ingest", "connectome", str(h5), "--name", "copied", "--lake", str(sep)],
                        ["run", "fnm", "--cohort", cohort, "--connectome", "copied", "--lake", str(sep)],
                    ]
                ),
            )
            if n != 1:
                B.remove_tree(one)
                B.remove_tree(sep)
                continue
            add("reuse:1", steps([["run", "fnm", str(other), "--connectome", str(h5), "--lake", str(one)]]))
            ip = work / "ingest-inplace"
            B.remove_tree(ip)
            add(
                "ingest:inplace",
                steps([["ingest", "connectome", str(h5), "--in-place", "--name", "ip", "--lake", str(ip)]]),
            )
            B.remove_tree(ip)
            # quick: the FNM passes alone are left out (the same commands as the steps above)
            for key, lake, name in () if args.quick else (("inplace", one, con), ("copied", sep, "copied")):
                fnm = [
                    "run",
                    "fnm",
                    "--cohort",
                    cohort,
                    "--connectome",
                    name,
                    "--recompute",
                    "--lake",
                    str(lake),
                ]
                add(f"fnm:{key}", steps([fnm]))
            disk = {
                "inplace_bytes": du(one / "connectomes" / f"{con}.zarr"),
                "copied_bytes": du(sep / "connectomes" / "copied.zarr"),
                "source_bytes": du(h5),
            }
            warm(sep / "connectomes" / "copied.zarr")
            for key, spec in (
                ("read:copied", {"read": "rows", "lake": str(sep), "name": "copied"}),
                ("read:inplace", {"read": "rows", "lake": str(one), "name": con}),
                ("read:hdf5", {"read": "hdf5", "source": str(h5)}),
            ):
                add(key, B.run_child("bench_inplace.py", spec))
            B.remove_tree(one)
            B.remove_tree(sep)
        print(f"  repeat {rep + 1}: done (load {B.load()})", flush=True)

    def med(key: str, field: str = "wall_s") -> float:
        return B.median([r[field] for r in raw[key]])

    def peak(key: str) -> float:
        return max(r["tree_peak_rss"] for r in raw[key]) / B.MB

    rows = []
    for n in counts:
        sep_steps = [B.median([r["step_s"][i] for r in raw[f"sep:{n}"]]) for i in range(3)]
        rows.append(
            {"case": "one command", "lesions": n, "wall_s": med(f"one:{n}"), "peak_rss_mb": peak(f"one:{n}")}
        )
        rows.append(
            {
                "case": "separate steps",
                "lesions": n,
                "wall_s": med(f"sep:{n}"),
                "steps_s": sep_steps,
                "steps": " + ".join(f"{t:.1f}" for t in sep_steps),
                "peak_rss_mb": peak(f"sep:{n}"),
            }
        )
    rows.append(
        {
            "case": "one command, reused",
            "lesions": 1,
            "wall_s": med("reuse:1"),
            "peak_rss_mb": peak("reuse:1"),
        }
    )
    for key in () if args.quick else ("inplace", "copied"):
        rows.append(
            {
                "case": f"fnm pass, {key}",
                "lesions": 1,
                "wall_s": med(f"fnm:{key}"),
                "peak_rss_mb": peak(f"fnm:{key}"),
            }
        )
    rows.append(
        {
            "case": "ingest connectome --in-place",
            "lesions": None,
            "wall_s": med("ingest:inplace"),
            "peak_rss_mb": peak("ingest:inplace"),
        }
    )
    rows.append(
        {
            "case": "ingest connectome (copy)",
            "lesions": None,
            "wall_s": B.median([r["step_s"][1] for r in raw["sep:1"]]),
            "peak_rss_mb": peak("sep:1"),
        }
    )
    reads = []
    for key, what in (
        ("read:copied", "copied Zarr store (open_rows)"),
        ("read:inplace", "in place: HDF5 + centring (open_rows)"),
        ("read:hdf5", "bare HDF5 read_direct (floor)"),
    ):
        wall = med(key)
        gb = raw[key][0]["bytes"] / B.GB
        reads.append(
            {"read": what, "wall_s": wall, "gb": gb, "gb_per_s": gb / wall, "peak_rss_mb": peak(key)}
        )
    print()
    print(
        B.table(
            rows,
            [
                ("case", "first map of", ""),
                ("lesions", "lesions", "d"),
                ("wall_s", "wall s (median)", ".1f"),
                ("steps", "steps s: lesions + connectome + fnm", ""),
                ("peak_rss_mb", "peak RSS MB (tree)", ".0f"),
            ],
        )
    )
    for n in counts:
        ratio = med(f"sep:{n}") / med(f"one:{n}")
        print(f"  {n} lesion(s): separate steps / one command = {ratio:.2f}")
    print()
    print(
        B.table(
            reads,
            [
                ("read", "one full pass (warm page cache)", ""),
                ("wall_s", "wall s", ".2f"),
                ("gb", "GB", ".2f"),
                ("gb_per_s", "GB/s", ".2f"),
                ("peak_rss_mb", "peak RSS MB", ".0f"),
            ],
        )
    )
    inplace, copied, source = (disk[k] for k in ("inplace_bytes", "copied_bytes", "source_bytes"))
    print(
        f"\ndisk: in place {inplace / B.MB:.1f} MB in the lake (the batches, {source / B.GB:.2f} GB, stay "
        f"where they are); copied {copied / B.GB:.2f} GB in the lake (besides the batches, if kept); "
        f"in place / copied = {inplace / copied:.4f}; load {B.load()}"
    )
    B.write_results(
        args,
        NAME,
        {
            "subjects": s["subjects"],
            "timepoints": s["timepoints"],
            "voxels": 235375,
            "repeats": B.repeats(args),
            "simd": simd(),
            "rows": rows,
            "reads": reads,
            "disk": disk,
            "raw": raw,
            "load_after": B.load(),
        },
    )
    B.remove_tree(work)


if __name__ == "__main__":
    main()
