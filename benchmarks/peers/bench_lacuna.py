"""lakepipe against lacuna (m-petersen/lacuna, commit 134a88f), classic FNM of 1, 10 and 100 lesions
on the same connectome: wall time and peak RSS of the whole process tree.

lacuna is the most complete Python LNM tool; it is not a dependency of lakepipe. It runs here when
it is installed, from its public source, into a separate virtual environment whose interpreter is
given by ``--peer-python`` or ``$LAKEPIPE_PEER_PYTHON``; otherwise this script says so and stops::

    git clone https://github.com/m-petersen/lacuna && git -C lacuna checkout 134a88f
    python -m venv /work/peer-venv
    SETUPTOOLS_SCM_PRETEND_VERSION=0.0.0+g134a88f /work/peer-venv/bin/pip install ./lacuna psutil
    .venv/bin/python benchmarks/peers/bench_lacuna.py --peer-python /work/peer-venv/bin/python

Inputs: the benchmark connectome (``_bench``: 50 subjects x 120 time points on the full 2 mm mask,
235,375 voxels) in its GSP1000 HDF5 layout (batches of 10 subjects: ``timeseries``,
``mask_indices``, ``mask_affine``, ``mask_shape``), which lacuna reads, and as lakepipe ingested it
(once, not timed here: see bench_ingest.py); lesions: 2 mm binary spheres of radius 4-10 mm
(uniform) centred on random voxels of the MNI152 2 mm brain mask (seed 14), written as a BIDS
dataset, which lakepipe ingested once and lacuna reads as NIfTI.

Each run is a fresh process, measured from its start (interpreter, imports) to its end, peak RSS
polled over its process tree (lakepipe's Dask workers included): ``lake.run("fnm", ...)`` starting
its own LocalCluster (2 workers) on a private copy of the catalog (nothing skipped), as the command
line runs it; lacuna's ``batch_process`` with its vectorised strategy, all its outputs in memory
(both tools compute zmap, rmap, tmap, pmap and a BH FDR map). Medians of 3 runs, interleaved:
(lakepipe, lacuna) for 1, 10, 100 lesions, then again. On the first 1-lesion pair both zmaps are
compared outside the lesion (the tools clip r = 1 differently inside it).

Targets: >= 10x faster at 100 lesions and >= 3x less peak RSS.

    .venv/bin/python benchmarks/peers/bench_lacuna.py [--quick] [--peer-python PATH]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _bench as B  # noqa: E402

NAME = "bench_lacuna"
LESIONS_FULL, LESIONS_QUICK = (1, 10, 100), (1, 2)
RADIUS_MM = (4.0, 10.0)
SPACE = "MNI152NLin6Asym"
TARGET_SPEEDUP, TARGET_RSS = 10.0, 3.0
PEER = "m-petersen/lacuna@134a88f"


def peer_version(python: str | None) -> str | None:
    """lacuna's version in the peer interpreter, None when it cannot import lacuna."""
    if not python or not Path(python).exists():
        return None
    proc = subprocess.run(
        [python, "-c", "import lacuna, sys; sys.stdout.write(lacuna.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def make_lesions(out: Path, n: int, seed: int = 14) -> Path:
    """``n`` 2 mm sphere masks (radius 4-10 mm, centres on random brain voxels) as a BIDS dataset."""
    import nibabel as nib
    import numpy as np

    from lakepipe.space import mni152_brain_mask_2mm, mni152_grid

    done = out / ".complete"
    if done.exists() and done.read_text() == str(n):
        return out
    B.remove_tree(out)
    grid = mni152_grid(2)
    brain = mni152_brain_mask_2mm()
    rng = np.random.default_rng(seed)
    inside = np.argwhere(brain)
    ijk = np.indices(grid.shape).reshape(3, -1).T
    xyz = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    rows = []
    for k in range(1, n + 1):
        centre = inside[rng.integers(len(inside))] @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        radius = rng.uniform(*RADIUS_MM)
        vol = (np.linalg.norm(xyz - centre, axis=1) <= radius).reshape(grid.shape).astype(np.uint8)
        sub = f"p{k:04d}"
        d = out / f"sub-{sub}" / "anat"
        d.mkdir(parents=True)
        nib.save(
            nib.Nifti1Image(vol, grid.affine),
            str(d / f"sub-{sub}_space-{SPACE}_res-2_label-sphere_mask.nii.gz"),
        )
        rows.append(f"sub-{sub}\t{radius:.2f}\t{int(vol.sum())}")
    (out / "dataset_description.json").write_text(
        json.dumps(
            {"Name": "lakepipe peer benchmark spheres", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}
        )
    )
    (out / "participants.tsv").write_text("participant_id\tradius_mm\tvoxels\n" + "\n".join(rows) + "\n")
    done.write_text(str(n))
    return out


def prepare(args, n: int):
    from lakepipe.ingest import ingest_lesions
    from lakepipe.io.bidsfind import find_lesion_files

    lake = B.bench_lake(args)
    tut = B.tutorial(args)
    cohort = f"peer{n}"
    bids = make_lesions(Path(args.cache) / f"peer-lesions-{n}", n)
    with B.locked(Path(args.cache) / ".lake.lock"):
        if lake.catalog.count(kind="lesion", cohort=cohort) < n:
            ingest_lesions(lake, bids, cohort=cohort)
    files = sorted(find_lesion_files(bids), key=lambda f: f.key)
    return lake, Path(tut.connectome), cohort, [str(f.path) for f in files]


# ------------------------------------------------------------------------------------------- child


def lakepipe_child(spec: dict) -> None:
    """lakepipe's FNM of the first n lesions as the command line runs it (its own LocalCluster)."""
    import time

    t0 = time.perf_counter()
    import logging

    from lakepipe.lake import Lake

    logging.getLogger("lakepipe").setLevel(logging.ERROR)
    lake = Lake(spec["lake"], catalog=f"sqlite:///{spec['catalog']}")
    res = lake.run(
        "fnm", connectome="bench", cohort=spec["cohort"], participants=spec["participants"], outputs=False
    )
    assert len(res.computed) == len(spec["participants"]) and not res.skipped
    run_s = time.perf_counter() - t0
    if spec.get("save_zmap"):
        import numpy as np

        from lakepipe.io.stores import open_derivative

        np.save(spec["save_zmap"], open_derivative(res.store)["zmap"][0].values)
    B.child_result({"wall_s": run_s, "store": res.store})


def child(spec: dict) -> None:
    lakepipe_child(spec)


# -------------------------------------------------------------------------------------------- main


def compare_zmaps(lake, lakepipe_npy: Path, peer_npy: Path, mask_path: str) -> dict:
    """max |dz| between the tools' zmaps outside the lesion, over the connectome's voxels."""
    import nibabel as nib
    import numpy as np

    from lakepipe.methods.common import connectome_info

    con = connectome_info(lake, "bench")
    ours = np.load(lakepipe_npy).astype(np.float64)
    theirs = np.load(peer_npy)[tuple(con.ijk.T)].astype(np.float64)
    lesion = np.asarray(nib.load(mask_path).dataobj)[tuple(con.ijk.T)] > 0
    d = np.abs(ours - theirs)[~lesion]
    return {"max_abs_dz_outside_lesion": float(d.max()), "rms_dz": float(np.sqrt(np.mean(d**2)))}


def main() -> None:
    p = B.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--peer-python",
        default=os.environ.get("LAKEPIPE_PEER_PYTHON"),
        help="interpreter of the environment lacuna is installed in (default $LAKEPIPE_PEER_PYTHON)",
    )
    args = p.parse_args()
    if args.child:
        return child(json.loads(args.child))
    version = peer_version(args.peer_python)
    if version is None:
        print(
            f"peer comparison skipped: lacuna ({PEER}) is not installed in "
            f"{args.peer_python or '(no --peer-python / $LAKEPIPE_PEER_PYTHON given)'}; install it from its "
            "public source into a separate virtual environment (see this script's docstring)"
        )
        return None
    counts = LESIONS_QUICK if args.quick else LESIONS_FULL
    lake, connectome, cohort, masks = prepare(args, max(counts))
    s = B.sizes(args)
    work = Path(args.cache) / "peer-work"
    B.remove_tree(work)
    work.mkdir(parents=True)
    m = B.machine()
    load_before = B.load()
    print(
        f"FNM, lakepipe vs lacuna {version} ({PEER}): {m['cpu']} ({m['cores']} cores); connectome "
        f"{s['subjects']} subjects x {s['timepoints']} time points x 235,375 voxels; lesions {counts} "
        f"(2 mm spheres, radius {RADIUS_MM[0]:g}-{RADIUS_MM[1]:g} mm); load {load_before}",
        flush=True,
    )
    participants = [Path(x).name.split("_")[0][4:] for x in masks]
    runs: dict[str, dict[int, list[dict]]] = {"lakepipe": {}, "lacuna": {}}
    accuracy = None
    env_lp = {"LAKEPIPE_SCHEDULER": None, "DASK_SCHEDULER_ADDRESS": None}
    for rep in range(B.repeats(args)):
        for n in counts:
            save = rep == 0 and n == counts[0]
            ours = work / "lakepipe-zmap.npy" if save else None
            theirs = work / "lacuna-zmap.npy" if save else None
            catalog = work / f"cat-{rep}-{n}.sqlite"
            B.catalog_copy(lake, catalog)
            r = B.run_child(
                "peers/bench_lacuna.py",
                {
                    "lake": lake.url,
                    "catalog": str(catalog),
                    "cohort": cohort,
                    "participants": participants[:n],
                    "save_zmap": str(ours) if ours else None,
                },
                env=env_lp,
            )
            B.remove_tree(r["store"])
            runs["lakepipe"].setdefault(n, []).append(r)
            q = B.run_child(
                "peers/lacuna_child.py",
                {
                    "connectome": str(connectome),
                    "subjects": s["subjects"],
                    "space": SPACE,
                    "masks": masks[:n],
                    "save_zmap": str(theirs) if theirs else None,
                },
                python=args.peer_python,
                env={"PYTHONPATH": None},
            )
            runs["lacuna"].setdefault(n, []).append(q)
            if save:
                accuracy = compare_zmaps(lake, ours, theirs, masks[0])
            print(
                f"  repeat {rep + 1}, {n} lesion(s): lakepipe {r['child_wall_s']:.1f} s "
                f"{r['tree_peak_rss'] / B.GB:.2f} GB, lacuna {q['child_wall_s']:.1f} s "
                f"{q['tree_peak_rss'] / B.GB:.2f} GB (load {B.load()})",
                file=sys.stderr,
                flush=True,
            )
    load_after = B.load()
    rows = []
    for n in counts:
        a, b = runs["lakepipe"][n], runs["lacuna"][n]
        wa, wb = B.median([x["child_wall_s"] for x in a]), B.median([x["child_wall_s"] for x in b])
        ra, rb = max(x["tree_peak_rss"] for x in a), max(x["tree_peak_rss"] for x in b)
        rows.append(
            {
                "lesions": n,
                "lakepipe_s": wa,
                "lacuna_s": wb,
                "speedup": wb / wa,
                "lakepipe_rss_gb": ra / B.GB,
                "lacuna_rss_gb": rb / B.GB,
                "rss_ratio": rb / ra,
                "lakepipe_walls_s": [x["child_wall_s"] for x in a],
                "lacuna_walls_s": [x["child_wall_s"] for x in b],
                "lacuna_import_s": B.median([x["import_s"] for x in b]),
            }
        )
    print(
        B.table(
            rows,
            [
                ("lesions", "lesions", "d"),
                ("lakepipe_s", "lakepipe s", ".1f"),
                ("lacuna_s", "lacuna s", ".1f"),
                ("speedup", "lakepipe faster by", ".1f"),
                ("lakepipe_rss_gb", "peak RSS lakepipe GB", ".2f"),
                ("lacuna_rss_gb", "peak RSS lacuna GB", ".2f"),
                ("rss_ratio", "RSS lacuna / lakepipe", ".1f"),
            ],
        )
    )
    last = rows[-1]
    targets = {
        f"speedup_ge_{TARGET_SPEEDUP:g}x_at_{last['lesions']}": last["speedup"] >= TARGET_SPEEDUP,
        f"rss_ratio_ge_{TARGET_RSS:g}x_at_{last['lesions']}": last["rss_ratio"] >= TARGET_RSS,
    }
    print(f"\ntargets: {targets}")
    if accuracy:
        print(
            f"zmaps of the first lesion, lakepipe vs lacuna, outside the lesion: max |dz| "
            f"{accuracy['max_abs_dz_outside_lesion']:.2e} (rms {accuracy['rms_dz']:.1e})"
        )
    print(f"load before {load_before}, after {load_after}; repeats {B.repeats(args)} (medians)")
    B.remove_tree(work)
    B.write_results(
        args,
        NAME,
        {
            "peer": PEER,
            "peer_version": version,
            "subjects": s["subjects"],
            "timepoints": s["timepoints"],
            "rows": rows,
            "targets": targets,
            "zmap_agreement": accuracy,
            "load_before": load_before,
            "load_after": load_after,
        },
    )
    return None


if __name__ == "__main__":
    main()
