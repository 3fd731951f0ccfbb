"""``lakepipe tutorial DIR`` and ``lakepipe demo``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lakepipe.cli.main import add_global_options


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    if name == "tutorial":
        t = sub.add_parser(
            name,
            help="write realistic example inputs (no download)",
            description="Write deterministic example inputs: a BIDS lesion dataset (1 and 2 mm "
            "masks), a GSP1000-style HDF5 connectome with real network structure on the "
            "MNI152 2 mm brain mask, parcel time series, and the Seitzman 2018 300-ROI "
            "atlas. Small by default; larger for benchmarks.",
        )
        t.add_argument("dir", metavar="DIR")
        t.add_argument("--participants", type=int, default=10, help="lesion participants (default 10)")
        t.add_argument("--subjects", type=int, default=12, help="connectome subjects (default 12)")
        t.add_argument("--timepoints", type=int, default=60, help="time points per subject (default 60)")
        t.add_argument("--batch-size", type=int, default=4, help="subjects per HDF5 batch file (default 4)")
        t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        t.add_argument(
            "--nifti", action="store_true", help="also write a small per-subject 4D NIfTI connectome"
        )
        t.add_argument(
            "--fmriprep",
            action="store_true",
            help="also write fMRIPrep-style resting-state derivatives that need cleaning (fmriprep/: "
            "two runs per subject, confounds, drift and motion; `ingest connectome --from fmriprep`)",
        )
        t.add_argument(
            "--fmriprep-subjects", type=int, default=3, help="subjects of the fMRIPrep folder (default 3)"
        )
        t.add_argument(
            "--fmriprep-timepoints", type=int, default=120, help="volumes per fMRIPrep run (default 120)"
        )
        t.add_argument(
            "--hcp",
            action="store_true",
            help="also write a small HCP-style parcellated release with task contrasts (hcp/)",
        )
        add_global_options(t)
        t.set_defaults(func=_tutorial)
        return
    d = sub.add_parser(
        name,
        help="run the main job end to end on the example data",
        description="Run the bundled tutorial job (`lakepipe jobs example tutorial`) in DIR: example "
        "inputs in DIR/tutorial, the lake in DIR/lake (or --lake), BIDS files and group "
        "tables in DIR/derivatives. A second run does nothing.",
    )
    d.add_argument(
        "dir",
        nargs="?",
        default="lakepipe-demo",
        metavar="DIR",
        help="folder for inputs, lake and outputs (default ./lakepipe-demo)",
    )
    d.add_argument("--participants", type=int, help="lesion participants of the example data")
    d.add_argument("--subjects", type=int, help="connectome subjects of the example data")
    d.add_argument("--timepoints", type=int, help="time points per connectome subject")
    add_global_options(d)
    d.set_defaults(func=_demo)


def _tutorial(args: argparse.Namespace) -> int:
    from lakepipe.tutorial import write_tutorial

    paths = write_tutorial(
        args.dir,
        participants=args.participants,
        subjects=args.subjects,
        timepoints=args.timepoints,
        batch_size=args.batch_size,
        seed=args.seed,
        nifti_connectome=args.nifti,
        fmriprep=args.fmriprep,
        fmriprep_subjects=args.fmriprep_subjects,
        fmriprep_timepoints=args.fmriprep_timepoints,
        hcp=args.hcp,
    )
    print(f"tutorial inputs in {paths.root}:")
    for name in (
        "bids",
        "connectome",
        "atlas_nifti",
        "atlas_labels",
        "parcel_timeseries",
        "nifti_connectome",
        "fmriprep",
        "hcp",
    ):
        value = getattr(paths, name, None)
        if value is not None:
            print(f"  {name:<18} {value}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lakepipe.jobs.demo import run_demo

    res = run_demo(
        args.dir,
        args.lake,
        scheduler=args.scheduler,
        participants=args.participants,
        subjects=args.subjects,
        timepoints=args.timepoints,
    )
    print(res.summary())
    return 0
