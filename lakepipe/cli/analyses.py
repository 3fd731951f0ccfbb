"""``lakepipe parcellate`` and ``lakepipe run afnm|fnm``."""

from __future__ import annotations

import argparse
import re

from lakepipe.cli.main import add_global_options, lake_from_args
from lakepipe.errors import InputError


def register(sub) -> None:
    p = sub.add_parser(
        "parcellate",
        help="group FC matrix (fcgroupz, fcgroupr) of a connectome under an atlas",
        description="Parcel-mean time series per connectome subject, Pearson r, Fisher z, "
        "mean over subjects (float64): fcgroupz (diagonal 0) and fcgroupr = "
        "tanh(mean z) (diagonal 1). Streams subject groups through Dask; "
        "memory stays bounded. Already computed matrices are reused.",
    )
    p.add_argument("--connectome", required=True, help="connectome name in the lake")
    p.add_argument("--atlas", help="atlas name in the lake (optional for parcel-level connectomes)")
    p.add_argument("--out", help="also write BIDS connmatrix TSV + JSON files into this folder")
    add_global_options(p)
    p.set_defaults(func=_parcellate)

    run = sub.add_parser(
        "run",
        help="lesion network mapping: afnm or fnm",
        description="Map lesions (or spheres) onto brain networks.",
    )
    methods = run.add_subparsers(dest="method", metavar="METHOD", required=True)

    a = methods.add_parser(
        "afnm",
        help="accelerated FNM: score = m @ C for every lesion of a cohort",
        description="Accelerated functional network mapping. For every lesion, a weight "
        "vector m over atlas regions (see --lesion-weighting) times the group "
        "FC matrix C (fcgroupz by default): one matrix product for the whole "
        "cohort. Lesions already mapped with the same inputs are skipped.",
    )
    a.add_argument("--cohort", required=True, help="lesion cohort in the lake")
    a.add_argument("--atlas", required=True, help="atlas name in the lake")
    a.add_argument("--connectome", help="connectome whose group FC to use (parcellate runs first if needed)")
    a.add_argument(
        "--matrix",
        help="fcgroupz (default) or fcgroupr from the lake, or a file: .mat, .npy "
        "(with --matrix-labels) or labelled .tsv",
    )
    a.add_argument("--matrix-variable", help="variable name inside a .mat file")
    a.add_argument("--matrix-labels", help="region names of a .npy/.mat matrix in its own order")
    a.add_argument(
        "--matrix-order",
        help="file listing the matrix's region order (names or label indices), mapped onto the atlas order",
    )
    a.add_argument(
        "--lesion-weighting",
        default="fractional",
        choices=("fractional", "binary", "voxel_count", "coverage"),
        help="fractional: 1/n_touched per touched parcel (default); binary: 1 per touched parcel; "
        "voxel_count: fraction of the parcel covered; coverage: van den Heuvel et al. 2026",
    )
    a.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
    a.add_argument(
        "--on-empty",
        default="warn",
        choices=("warn", "error", "skip"),
        help="a lesion touching no parcel: zeros and a warning (default), error, or skip",
    )
    a.add_argument("--with-weights", action="store_true", help="also store and export the weight vectors")
    a.add_argument("--bids-out", help="write per-lesion BIDS parcelstats TSV + JSON into this folder")
    add_global_options(a)
    a.set_defaults(func=_afnm)

    f = methods.add_parser(
        "fnm",
        help="classic seed-to-voxel FNM over every connectome subject",
        description="Classic functional network mapping: for every connectome subject, "
        "the seed's mean series correlated with every voxel, Fisher z, then "
        "zmap (mean z), rmap (tanh), tmap and pmap over subjects. All seeds "
        "of a batch share one pass over the connectome.",
    )
    f.add_argument("--connectome", required=True, help="voxel connectome in the lake")
    f.add_argument("--cohort", help="use the lesions of this cohort as seeds")
    f.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
    f.add_argument(
        "--sphere",
        action="append",
        metavar="X,Y,Z",
        help="sphere seed at MNI mm, e.g. --sphere -40,-20,50 (repeatable)",
    )
    f.add_argument("--radius", type=float, help="sphere radius in mm")
    f.add_argument("--sphere-name", action="append", help="names of the --sphere seeds, in order")
    f.add_argument("--spheres", metavar="TSV", help="table of sphere seeds: x, y, z[, radius][, name]")
    f.add_argument("--atlas", help="also summarise every map over this atlas's regions")
    f.add_argument("--avgr", action="store_true", help="also compute avgr, the plain mean r")
    f.add_argument("--batch-size", type=int, help="seeds per pass (default: from available memory)")
    f.add_argument("--bids-out", help="write NIfTI maps + JSON (and parcel TSVs) into this folder")
    add_global_options(f)
    f.set_defaults(func=_fnm)
    # let "--sphere -40,-20,50" read the coordinates as a value, not as an unknown option
    f._negative_number_matcher = re.compile(r"^-\d[\d.,\-]*$")


def _parcellate(args: argparse.Namespace) -> int:
    from lakepipe.pipelines.parcellate import parcellate

    res = parcellate(
        lake_from_args(args), args.connectome, args.atlas, out_dir=args.out, scheduler=args.scheduler
    )
    print(res.summary())
    for path in res.files:
        print(f"  {path}")
    return 0


def _afnm(args: argparse.Namespace) -> int:
    from lakepipe.pipelines.afnm import run_afnm

    res = run_afnm(
        lake_from_args(args),
        args.cohort,
        args.atlas,
        matrix=args.matrix,
        connectome=args.connectome,
        weighting=args.lesion_weighting,
        participants=args.participant_label,
        on_empty=args.on_empty,
        bids_out=args.bids_out,
        with_weights=args.with_weights,
        matrix_variable=args.matrix_variable,
        matrix_labels=args.matrix_labels,
        matrix_order=args.matrix_order,
        scheduler=args.scheduler,
    )
    print(res.summary())
    if res.files:
        print(f"  {len(res.files)} BIDS file(s) in {args.bids_out}")
    return 0


def parse_spheres(args: argparse.Namespace) -> list:
    from lakepipe.pipelines.seeds import sphere_seed, spheres_from_table

    seeds = []
    names = args.sphere_name or []
    for k, text in enumerate(args.sphere or []):
        try:
            x, y, z = (float(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"--sphere expects X,Y,Z in mm, got {text!r}") from None
        if args.radius is None:
            raise InputError("--sphere needs --radius MM")
        seeds.append(sphere_seed(x, y, z, args.radius, names[k] if k < len(names) else None))
    if args.spheres:
        seeds += spheres_from_table(args.spheres, args.radius)
    return seeds


def _fnm(args: argparse.Namespace) -> int:
    from lakepipe.pipelines.fnm import run_fnm

    spheres = parse_spheres(args)
    res = run_fnm(
        lake_from_args(args),
        args.connectome,
        cohort=args.cohort,
        participants=args.participant_label,
        spheres=spheres,
        atlas=args.atlas,
        bids_out=args.bids_out,
        with_avgr=args.avgr,
        batch_size=args.batch_size,
        scheduler=args.scheduler,
    )
    print(res.summary())
    if res.files:
        print(f"  {len(res.files)} BIDS file(s) in {args.bids_out}")
    return 0
