"""fMRIPrep ingest with cleaning: lakepipe on 1 and 2 Dask workers against nilearn in one process.

The tutorial's fMRIPrep-style folder at 2 mm (``fmriprep_voxel_mm=2.0``: the template's grid, so no
resampling; 20 subjects x 2 runs x 150 volumes, int16 BOLD; written once into the cache) is cleaned
as the nilearn seed-to-voxel recipe cleans it (``load_confounds_strategy`` ``simple``: motion,
cosine high-pass, WM/CSF; detrend, z-score, 6 mm smoothing; nilearn's Butterworth filter is left out:
it filters voxel by voxel, ~90 s per 2 mm run) and:

- ingested with ``ingest_connectome`` into a fresh lake on a LocalCluster of 1 and of 2
  single-threaded workers (each run in its own child process; the cluster is started before the
  clock, its start time reported apart; each repeat ingests into a new lake on the same cluster);
- cleaned by nilearn's ``NiftiMasker`` (the same options, the same target mask) run after run in
  one process, the series kept in memory and dropped (the floor: what the cleaning itself costs).

Reported: median wall time of the repeats, CPU seconds of the whole process tree, peak RSS of the
whole process tree (the child, its Dask workers; psutil, sampled), the ratios (1 worker / nilearn,
2 workers / nilearn, 1 worker / 2 workers) from one run, the machine load, the CPU model and
numpy's SIMD extensions.

    .venv/bin/python benchmarks/bench_ingest_fmriprep.py [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_ingest_fmriprep"
#: the folder: subjects (2 runs each), volumes per run, voxel size (mm)
FULL = {"subjects": 20, "timepoints": 150, "voxel_mm": 2.0}
#: quick: 4 mm BOLD onto its own brain mask (no resampling), for the smoke test
QUICK = {"subjects": 2, "timepoints": 40, "voxel_mm": 4.0}
CLEANING = {"confounds_strategy": "simple", "smoothing_fwhm": 6.0}  # detrend, zscore_sample: defaults


def folder(args) -> Path:
    """The fMRIPrep-style derivatives at the benchmark size (written once, then reused)."""
    from lakepipe.tutorial import write_tutorial

    s = FULL if not args.quick else QUICK
    root = Path(args.cache) / f"fmriprep-s{s['subjects']}-t{s['timepoints']}-{s['voxel_mm']:g}mm"
    with B.locked(Path(args.cache) / ".fmriprep.lock"):
        tut = write_tutorial(
            root,
            participants=1,
            subjects=1,
            timepoints=5,
            batch_size=1,
            lnm=False,
            parcel_timeseries=False,
            fmriprep=True,
            fmriprep_subjects=s["subjects"],
            fmriprep_timepoints=s["timepoints"],
            fmriprep_voxel_mm=s["voxel_mm"],
        )
    assert tut.fmriprep is not None
    return tut.fmriprep


def target_mask(source: Path, quick: bool) -> str | None:
    """The target brain mask: the lake's default (MNI152NLin6Asym 2 mm), or in the quick mode the runs'
    own 4 mm fMRIPrep mask."""
    if not quick:
        return None
    return str(next(source.glob("sub-*/func/*_desc-brain_mask.nii.gz")))


def simd() -> dict:
    import numpy as np
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__

    return {
        "numpy": np.__version__,
        "simd_baseline": list(__cpu_baseline__),
        "simd_found": [k for k in __cpu_dispatch__ if __cpu_features__.get(k)],
    }


# ------------------------------------------------------------------------------------------ children


def lakepipe_child(spec: dict) -> None:
    from lakepipe.ingest import ingest_connectome
    from lakepipe.lake import Lake
    from lakepipe.runtime import Runtime

    work = Path(spec["work"])
    out: dict = {"wall_s": [], "cpu_s": [], "load": []}
    t0 = time.perf_counter()
    with Runtime(n_workers=spec["workers"]) as runtime:
        assert runtime.client is not None
        out["cluster_start_s"] = time.perf_counter() - t0
        for rep in range(spec["repeats"]):
            url = work / f"lake-{spec['workers']}w-{rep}"
            B.remove_tree(url)
            lake = Lake(str(url))
            lake.catalog  # noqa: B018 - the catalog exists before the clock starts
            c0, t0 = B.tree_cpu(), time.perf_counter()
            with lake.run_context("bench", runtime=runtime) as run:
                mask = {"mask": spec["mask"]} if spec["mask"] else {}
                res = ingest_connectome(lake, spec["source"], name="bench", run=run, **CLEANING, **mask)
            out["wall_s"].append(time.perf_counter() - t0)
            out["cpu_s"].append(B.tree_cpu() - c0)
            out["load"].append(B.load())
            out["n_subjects"] = len(res.written)
            store = url / "connectomes" / "bench.zarr"
            out["stored_bytes"] = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
            print(
                f"  {spec['workers']} worker(s), repeat {rep + 1}: {out['wall_s'][-1]:.1f} s "
                f"(load {B.load()})",
                file=sys.stderr,
                flush=True,
            )
            B.remove_tree(url)
    B.child_result(out)


def nilearn_child(spec: dict) -> None:
    import nibabel as nib
    import numpy as np
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiMasker

    from lakepipe.space import mni152_brain_mask_2mm, mni152_grid

    if spec["mask"]:
        mask_img = nib.load(spec["mask"])
        mask_img = nib.Nifti1Image(np.asarray(mask_img.dataobj).astype(np.uint8), mask_img.affine)
    else:
        mask_img = nib.Nifti1Image(mni152_brain_mask_2mm().astype(np.uint8), mni152_grid(2).affine)
    runs = sorted(Path(spec["source"]).glob("sub-*/func/*_desc-preproc_bold.nii.gz"))
    out: dict = {"wall_s": [], "cpu_s": [], "load": [], "n_runs": len(runs)}
    for rep in range(spec["repeats"]):
        c0, t0 = B.tree_cpu(), time.perf_counter()
        volumes = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's notes on its future defaults
            for bold in runs:
                conf, sample_mask = load_confounds_strategy(str(bold), denoise_strategy="simple")
                masker = NiftiMasker(
                    mask_img=mask_img,
                    smoothing_fwhm=CLEANING["smoothing_fwhm"],
                    detrend=True,
                    standardize="zscore_sample",
                    t_r=2.0,
                    target_affine=mask_img.affine,
                    target_shape=mask_img.shape,
                )
                x = masker.fit_transform(str(bold), confounds=conf, sample_mask=sample_mask)
                volumes += x.shape[0]
                del x
        out["wall_s"].append(time.perf_counter() - t0)
        out["cpu_s"].append(B.tree_cpu() - c0)
        out["load"].append(B.load())
        out["volumes"] = volumes
        print(
            f"  nilearn, repeat {rep + 1}: {out['wall_s'][-1]:.1f} s (load {B.load()})",
            file=sys.stderr,
            flush=True,
        )
    B.child_result(out)


def child(spec: dict) -> None:
    {"lakepipe": lakepipe_child, "nilearn": nilearn_child}[spec["what"]](spec)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        return child(json.loads(args.child))
    s = FULL if not args.quick else QUICK
    t0 = time.perf_counter()
    source = folder(args)
    prepared = time.perf_counter() - t0
    runs = sorted(source.glob("sub-*/func/*_desc-preproc_bold.nii.gz"))
    input_bytes = sum(p.stat().st_size for p in runs)
    for p in runs:  # warm the page cache: every contender reads the files from memory alike
        p.read_bytes()
    reps = B.repeats(args)
    m, info = B.machine(), simd()
    print(
        f"ingest fmriprep: {s['subjects']} subjects x 2 runs x {s['timepoints']} volumes at "
        f"{s['voxel_mm']:g} mm "
        f"({len(runs)} runs, {input_bytes / B.MB:.0f} MB gz int16; folder ready in {prepared:.0f} s); "
        f"cleaning {CLEANING} + detrend, zscore_sample; {reps} repeat(s)\n"
        f"CPU {m['cpu']} ({m['cores']} cores, AVX-512 {m['avx512']}); numpy {info['numpy']} SIMD baseline "
        f"{info['simd_baseline']}, found {info['simd_found']}; load {B.load()}",
        flush=True,
    )
    work = Path(args.cache) / "ingest-fmriprep-work"
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for what, workers in (("nilearn", 0), ("lakepipe", 1), ("lakepipe", 2)):
        spec = {
            "what": what,
            "workers": workers,
            "source": str(source),
            "mask": target_mask(source, args.quick),
            "work": str(work),
            "repeats": reps,
        }
        r = B.run_child(f"{NAME}.py", spec)
        key = "nilearn" if what == "nilearn" else f"{workers}w"
        results[key] = r
    rows = []
    base = B.median(results["nilearn"]["wall_s"])
    for key, label in (("nilearn", "nilearn NiftiMasker, 1 process"), ("1w", "lakepipe, 1 worker"),
                       ("2w", "lakepipe, 2 workers")):  # fmt: skip
        r = results[key]
        wall = B.median(r["wall_s"])
        rows.append(
            {
                "what": label,
                "wall_s": wall,
                "cpu_s": B.median(r["cpu_s"]),
                "vs_nilearn": wall / base,
                "runs_per_s": len(runs) / wall,
                "peak_rss_gb": r["tree_peak_rss"] / B.GB,
                "largest_process_gb": r["tree_peak_single_rss"] / B.GB,
                "cluster_start_s": r.get("cluster_start_s"),
                "walls": [round(x, 2) for x in r["wall_s"]],
            }
        )
    print()
    print(
        B.table(
            rows,
            [
                ("what", "", "s"),
                ("wall_s", "wall s (median)", ".1f"),
                ("cpu_s", "CPU s (tree)", ".1f"),
                ("vs_nilearn", "/ nilearn", ".2f"),
                ("runs_per_s", "runs/s", ".2f"),
                ("peak_rss_gb", "peak RSS tree GB", ".2f"),
                ("largest_process_gb", "largest process GB", ".2f"),
                ("cluster_start_s", "cluster start s", ".1f"),
            ],
        )
    )
    speedup = B.median(results["1w"]["wall_s"]) / B.median(results["2w"]["wall_s"])
    print(
        f"\n1 worker / 2 workers: {speedup:.2f}x; 2 workers / nilearn {rows[2]['vs_nilearn']:.2f}; "
        f"walls {[r['walls'] for r in rows]}; load after {B.load()}"
    )
    B.write_results(
        args,
        NAME,
        {
            "sizes": s,
            "runs": len(runs),
            "input_bytes": input_bytes,
            "cleaning": CLEANING,
            "simd": info,
            "rows": rows,
            "speedup_2_workers": speedup,
            "stored_bytes": results["2w"].get("stored_bytes"),
            "load_after": B.load(),
        },
    )


if __name__ == "__main__":
    main()
