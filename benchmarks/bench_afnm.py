"""AFNM on a cohort of 500 lesions at 1 mm: lesions per second, including reading the masks.

Cohort: 500 binary 1 mm MNI152NLin6Asym masks made deterministically from the tutorial's 1 mm
masks and the three example masks in ``../shared/data/lesions``: each one moved by up to +-20 mm,
mirrored left-right or not, dilated or eroded by 0-2 voxels, and kept inside the brain. Written
once as a BIDS dataset and ingested once (cohort ``bench500``) into the benchmark lake, whose
connectome ``bench`` (50 subjects x 120 time points) gives the group FC matrices.

Timed, in one child process with one Dask LocalCluster (2 workers), median of repeats, each on a
private copy of the catalog so nothing is skipped: ``lake.run("afnm", ...)`` for the
whole cohort with Schaefer 400 (1 mm) and with Schaefer 400 + Tian S3 (one combined 1 mm atlas),
from the lake: catalog query, reading the 500 masks from the lesion store, the atlas, C, counts,
weights, ``M @ C``, writing the derivative and registering 500 outputs. Target (issue 14): >= 1,000 lesions/s
on 2 cores. Also timed once: the same call without a running cluster (it starts its own, as the
command line does).

    .venv/bin/python benchmarks/bench_afnm.py [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench as B  # noqa: E402

NAME = "bench_afnm"
ATLASES = ("Schaefer400", "Schaefer400TianS3")
TARGET = 1000.0
COHORT = "bench500"
N_FULL, N_QUICK = 500, 20
SPACE = "MNI152NLin6Asym"


# ------------------------------------------------------------------------------------------- cohort


def _sources(tutorial_bids: Path) -> list[Path]:
    """The 1 mm example masks: tutorial masks on the 1 mm grid and the shared ones."""
    import nibabel as nib

    paths = sorted(tutorial_bids.glob("sub-*/**/*_mask.nii.gz")) + sorted(
        B.SHARED_LESIONS.glob("sub-*/**/*_mask.nii.gz")
    )
    return [p for p in paths if nib.load(str(p)).shape[:3] == (182, 218, 182)]


def make_cohort(out: Path, n: int, tutorial_bids: Path, seed: int = 0) -> Path:
    """Write ``n`` perturbed 1 mm lesion masks as a BIDS dataset (deterministic; once)."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    from lakepipe.compute.resample import resample_nearest
    from lakepipe.space import mni152_brain_mask_2mm, mni152_grid

    done = out / ".complete"
    if done.exists() and done.read_text() == str(n):
        return out
    B.remove_tree(out)
    out.mkdir(parents=True)
    g2 = mni152_grid(2)
    g1 = mni152_grid(1)
    brain = resample_nearest(mni152_brain_mask_2mm().astype(np.uint8), g2.affine, g1.shape, g1.affine) > 0
    sources = []
    for p in _sources(tutorial_bids):
        img = nib.load(str(p))
        assert np.allclose(img.affine, g1.affine), p
        sources.append(np.argwhere(np.asarray(img.dataobj) > 0))
    rng = np.random.default_rng(seed)
    shape = np.array(g1.shape)
    rows = []
    k = 0
    while k < n:
        ijk = sources[k % len(sources)].copy()
        if rng.random() < 0.5:
            ijk[:, 0] = shape[0] - 1 - ijk[:, 0]  # mirror left-right (the 1 mm grid is symmetric)
        ijk += rng.integers(-20, 21, 3)
        lo = np.maximum(ijk.min(0) - 3, 0)
        hi = np.minimum(ijk.max(0) + 4, shape)
        ok = np.all((ijk >= 0) & (ijk < shape), axis=1)
        box = np.zeros(hi - lo, bool)
        box[tuple((ijk[ok] - lo).T)] = True
        op = rng.integers(-1, 3)  # -1 erode, 0 none, 1-2 dilate
        if op > 0:
            box = ndimage.binary_dilation(box, iterations=int(op))
        elif op < 0 and box.sum() > 2000:
            box = ndimage.binary_erosion(box)
        vol = np.zeros(g1.shape, np.uint8)
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = box
        vol &= brain
        if vol.sum() < 10:  # moved out of the brain: draw again
            continue
        k += 1
        sub = f"b{k:04d}"
        d = out / f"sub-{sub}" / "anat"
        d.mkdir(parents=True)
        nib.save(
            nib.Nifti1Image(vol, g1.affine), str(d / f"sub-{sub}_space-{SPACE}_label-lesion_mask.nii.gz")
        )
        rows.append(f"sub-{sub}\t{int(vol.sum())}")
    (out / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "lakepipe AFNM benchmark cohort",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "lakepipe benchmarks/bench_afnm.py"}],
            },
            indent=1,
        )
    )
    (out / "participants.tsv").write_text("participant_id\tlesion_voxels\n" + "\n".join(rows) + "\n")
    done.write_text(str(n))
    return out


def prepare(args) -> tuple[object, int]:
    """Benchmark lake with the cohort ingested and group FC for both atlases (once)."""
    from lakepipe.ingest import ingest_lesions

    lake = B.bench_lake(args)
    n = N_QUICK if args.quick else N_FULL
    tut = B.tutorial(args)
    with B.locked(Path(args.cache) / ".lake.lock"):
        if lake.catalog.count(kind="lesion", cohort=COHORT) < n:
            bids = make_cohort(Path(args.cache) / f"afnm-cohort-{n}", n, Path(tut.bids))
            ingest_lesions(lake, bids, cohort=COHORT)
        for atlas in ATLASES:
            if lake.catalog.count(method="parcellate", atlas=atlas, connectome="bench") == 0:
                lake.run("parcellate", connectome="bench", atlas=atlas, scheduler="threads")
    return lake, n


# -------------------------------------------------------------------------------------------- timing


def child(spec: dict) -> None:
    import logging

    from lakepipe.lake import Lake
    from lakepipe.runtime import Runtime

    logging.getLogger("lakepipe").setLevel(logging.ERROR)  # lesions touching no region: expected here
    lake = Lake(spec["lake"])
    work = Path(spec["work"])
    deriv = Path(lake.url) / "derivatives" / "afnm"
    before = set(deriv.iterdir()) if deriv.exists() else set()
    out = {"atlases": {}}

    def one(atlas, tag, **kw):
        lk = B.catalog_copy(lake, work / f"cat-{tag}-{atlas}.sqlite")
        c0 = B.tree_cpu()
        with B.PeakRSS() as m:
            dt, res = B.timed(
                lk.run, "afnm", cohort=COHORT, atlas=atlas, connectome="bench", outputs=False, **kw
            )
        assert len(res.computed) == spec["n"] and not res.skipped, (len(res.computed), len(res.skipped))
        return dt, B.tree_cpu() - c0, m.peak, len(res.details.get("empty", []))

    t0 = time.perf_counter()
    with Runtime(n_workers=spec["workers"]) as runtime:
        client = runtime.client
        out["cluster_start_s"] = time.perf_counter() - t0
        for atlas in spec["atlases"]:
            one(atlas, "warm", client=client)  # warm: page cache, worker imports
        for rep in range(spec["repeats"]):
            for atlas in spec["atlases"]:
                rec = out["atlases"].setdefault(atlas, {"wall_s": [], "cpu_s": [], "peak_rss": []})
                dt, cpu, peak, empty = one(atlas, str(rep), client=client)
                rec["wall_s"].append(dt)
                rec["cpu_s"].append(cpu)
                rec["peak_rss"].append(peak)
                rec["empty"] = empty
            print(
                f"  repeat {rep + 1}: "
                + ", ".join(
                    f"{a} {spec['n'] / out['atlases'][a]['wall_s'][-1]:.0f} lesions/s"
                    for a in spec["atlases"]
                )
                + f" (load {B.load()})",
                file=sys.stderr,
                flush=True,
            )
    for atlas in spec["atlases"]:  # as the command line runs it: its own LocalCluster
        dt, _, peak, _ = one(atlas, "own")
        out["atlases"][atlas]["wall_own_cluster_s"] = dt
        out["atlases"][atlas]["peak_rss_own_cluster"] = peak
    for d in set(deriv.iterdir()) - before:  # the runs' outputs (registered only in the copies)
        B.remove_tree(d)
    B.child_result(out)


def main() -> None:
    args = B.parser(__doc__.splitlines()[0]).parse_args()
    if args.child:
        return child(json.loads(args.child))
    lake, n = prepare(args)
    work = Path(args.cache) / "afnm-work"
    B.remove_tree(work)
    print(f"afnm: {n} lesions (1 mm), {args.workers} workers; load {B.load()}", flush=True)
    load_before = B.load()
    r = B.run_child(
        "bench_afnm.py",
        {
            "lake": lake.url,
            "work": str(work),
            "atlases": list(ATLASES),
            "n": n,
            "repeats": B.repeats(args),
            "workers": args.workers,
        },
    )
    load_after = B.load()
    B.remove_tree(work)
    rows = []
    for atlas, rec in r["atlases"].items():
        wall = B.median(rec["wall_s"])
        rows.append(
            {
                "atlas": atlas,
                "lesions": n,
                "wall_s": wall,
                "lesions_per_s": n / wall,
                "cpu_s": B.median(rec["cpu_s"]),
                "peak_rss_mb": max(rec["peak_rss"]) / B.MB,
                "own_cluster_s": rec["wall_own_cluster_s"],
                "own_cluster_lesions_per_s": n / rec["wall_own_cluster_s"],
                "target_met": n / wall >= TARGET,
                "walls_s": rec["wall_s"],
                "empty": rec["empty"],
            }
        )
    print(
        B.table(
            rows,
            [
                ("atlas", "atlas", ""),
                ("lesions", "lesions", "d"),
                ("wall_s", "wall s (median)", ".2f"),
                ("lesions_per_s", "lesions/s", ".0f"),
                ("cpu_s", "CPU s", ".2f"),
                ("peak_rss_mb", "peak RSS MB (tree)", ".0f"),
                ("own_cluster_s", "incl. own cluster s", ".2f"),
                ("own_cluster_lesions_per_s", "lesions/s incl. cluster", ".0f"),
                ("target_met", ">= 1000/s", ""),
            ],
        )
    )
    print(
        f"\nLocalCluster start {r['cluster_start_s']:.2f} s; load before {load_before}, after {load_after}; "
        f"repeats {B.repeats(args)}"
    )
    B.write_results(
        args,
        NAME,
        {
            "lesions": n,
            "workers": args.workers,
            "repeats": B.repeats(args),
            "target_lesions_per_s": TARGET,
            "cluster_start_s": r["cluster_start_s"],
            "rows": rows,
            "load_before": load_before,
            "load_after": load_after,
        },
    )


if __name__ == "__main__":
    main()
