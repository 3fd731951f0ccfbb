"""``lakepipe ingest lesions|connectome|atlas``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lakepipe.cli.common import command_line, lake_from_args, run_params
from lakepipe.cli.main import add_global_options

#: options of the connectome sources (``mask``/``regions`` for NIfTI folders/parcel series, the rest
#: for fMRIPrep derivatives); only those given are passed on, and a source refuses what it does not take
SOURCE_OPTIONS = (
    "mask",
    "regions",
    "task",
    "res",
    "confounds_strategy",
    "detrend",
    "standardize",
    "low_pass",
    "high_pass",
    "t_r",
    "smoothing_fwhm",
    "fd_threshold",
    "std_dvars_threshold",
    "min_volumes",
    "interpolation",
    "runs",
)


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    p = sub.add_parser(
        name,
        help="bring lesion masks, connectomes and atlases into the lake",
        description="Validate inputs and write them into the lake's Zarr stores, registering each "
        "entry in the catalog. Re-ingesting unchanged inputs does nothing; new "
        "subjects/participants are added.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    les = kinds.add_parser(
        "lesions",
        help="a BIDS folder (or URL) of lesion masks",
        description="Ingest sub-*/[ses-*/]anat/*_mask.nii.gz files of a BIDS dataset (one entry "
        "per participant/session/label), from a folder or an s3:// URL.",
    )
    les.add_argument("bids_dir", metavar="BIDS_DIR")
    les.add_argument("--cohort", default="default", help="cohort name (letters and digits; default: default)")
    les.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
    les.add_argument("--weighted", action="store_true", help="accept weighted (non-binary) masks")
    les.add_argument(
        "--space",
        default="MNI152NLin6Asym",
        help="space of masks whose file name has no space- entity (default MNI152NLin6Asym)",
    )
    les.add_argument(
        "--incremental",
        action="store_true",
        help="read only entries not yet in the lake (default: validate every mask and refuse one "
        "that changed)",
    )
    add_global_options(les)
    les.set_defaults(func=_lesions)

    con = kinds.add_parser(
        "connectome",
        help="HDF5 batches, 4D NIfTI, or parcel time series",
        description="Stream a normative connectome into the lake, one subject at a time (bounded "
        "memory). The format is detected from the folder: *.h5 GSP1000-style batches; "
        "4D *.nii.gz per subject plus a brain mask; *.npy/*.tsv parcels x time arrays "
        "plus regions.tsv.",
    )
    con.add_argument("source", metavar="SOURCE")
    con.add_argument("--name", required=True, help="connectome name in the lake (letters and digits)")
    con.add_argument(
        "--from",
        dest="source_format",
        metavar="FORMAT",
        help="source format (hdf5, nifti, parcels; default: detected)",
    )
    con.add_argument("--mask", help="brain mask for a 4D NIfTI folder (default: the *mask* file in it)")
    con.add_argument("--regions", help="region table for parcel time series (default SOURCE/regions.tsv)")
    con.add_argument("--space", default="MNI152NLin6Asym", help="template space (default MNI152NLin6Asym)")
    con.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16"),
        help="stored precision: float16 halves what every pass reads (its accuracy cost is "
        "measured in benchmarks/; default float32)",
    )
    con.add_argument(
        "--in-place",
        action="store_true",
        help="HDF5 batches: register them without copying the series (the lake keeps each subject's "
        "per-voxel mean and norm and the mask; methods read the batches, which must stay unchanged)",
    )
    fp = con.add_argument_group("fMRIPrep derivatives (--from fmriprep; options named as nilearn names them)")
    fp.add_argument("--task", help="only runs of this task (e.g. rest)")
    fp.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
    fp.add_argument("--res", help="only runs with this res- entity")
    fp.add_argument(
        "--confounds-strategy",
        choices=("simple", "scrubbing", "compcor", "ica_aroma", "none"),
        help="nilearn.interfaces.fmriprep.load_confounds_strategy denoise strategy (default simple)",
    )
    fp.add_argument(
        "--no-detrend",
        dest="detrend",
        action="store_false",
        default=None,
        help="do not remove linear trends (default: detrend)",
    )
    fp.add_argument(
        "--standardize", help="nilearn's standardize: zscore_sample (default), zscore, psc or false"
    )
    fp.add_argument("--low-pass", type=float, metavar="HZ", help="low-pass cutoff (Hz)")
    fp.add_argument("--high-pass", type=float, metavar="HZ", help="high-pass cutoff (Hz)")
    fp.add_argument("--t-r", type=float, metavar="S", help="repetition time (default: the sidecar's)")
    fp.add_argument("--smoothing-fwhm", type=float, metavar="MM", help="spatial smoothing (FWHM, mm)")
    fp.add_argument(
        "--interpolation",
        choices=("linear", "continuous", "nearest"),
        help="resampling of runs not on the target grid (nilearn resample_img): linear (default), "
        "continuous (cubic spline, NiftiMasker's) or nearest",
    )
    fp.add_argument(
        "--fd-threshold", type=float, metavar="MM", help="scrubbing: framewise displacement threshold"
    )
    fp.add_argument("--std-dvars-threshold", type=float, help="scrubbing: standardised DVARS threshold")
    fp.add_argument("--min-volumes", type=int, help="refuse a run with fewer volumes left (default 30)")
    fp.add_argument(
        "--runs",
        choices=("concat", "average"),
        help="a subject's runs concatenated after cleaning (default) or kept apart, their maps "
        "averaged per subject (the Lead-DBS convention)",
    )
    add_global_options(con)
    con.set_defaults(func=_connectome)

    atl = kinds.add_parser(
        "atlas",
        help="a label NIfTI plus its label file",
        description="Ingest a discrete atlas. Label files: BIDS _dseg.txt (line k names label k) "
        "or a TSV with index/name[/network] columns. Schaefer and Tian names yield "
        "network and hemisphere labels.",
    )
    atl.add_argument("nifti", metavar="NIFTI")
    atl.add_argument("--labels", required=True, help="label file (.txt or .tsv)")
    atl.add_argument("--name", required=True, help="atlas name in the lake (letters and digits)")
    atl.add_argument("--space", help="template space (default: from the tpl-/space- entity)")
    add_global_options(atl)
    atl.set_defaults(func=_atlas)


def _lesions(args: argparse.Namespace) -> int:
    from lakepipe.ingest import ingest_lesions

    lake = lake_from_args(args, create=True)
    with lake.run_context(command_line(args), run_params(args)) as run:
        res = ingest_lesions(
            lake,
            args.bids_dir,
            cohort=args.cohort,
            participants=args.participant_label,
            weighted=args.weighted,
            space=args.space,
            incremental=args.incremental,
            run=run,
        )
    print(res.summary())
    return 0


def _connectome(args: argparse.Namespace) -> int:
    from lakepipe.ingest import ingest_connectome

    lake = lake_from_args(args, create=True)
    options = {k: getattr(args, k) for k in SOURCE_OPTIONS if getattr(args, k, None) is not None}
    if args.participant_label:
        options["participant_label"] = args.participant_label
    with lake.run_context(command_line(args), run_params(args), scheduler=args.scheduler) as run:
        res = ingest_connectome(
            lake,
            args.source,
            name=args.name,
            source_format=args.source_format,
            space=args.space,
            dtype=args.dtype,
            run=run,
            in_place=args.in_place,
            **options,
        )
    print(res.summary())
    return 0


def _atlas(args: argparse.Namespace) -> int:
    from lakepipe.ingest import ingest_atlas

    lake = lake_from_args(args, create=True)
    with lake.run_context(command_line(args), run_params(args)) as run:
        res = ingest_atlas(lake, args.nifti, labels=args.labels, name=args.name, space=args.space, run=run)
    print(res.summary())
    return 0
