"""``lakepipe collect`` and ``lakepipe catalog ls|show|gc``."""

from __future__ import annotations

import argparse
import json
import sys

from lakepipe.cli.main import add_global_options, lake_from_args
from lakepipe.errors import InputError


def register(sub) -> None:
    c = sub.add_parser(
        "collect",
        help="one group table (TSV + JSON) for a group question",
        description="Gather published outputs into one group file: "
        "group_<entities>_parcelstats.tsv with participant_id, session_id, "
        "label and one column per region (voxel maps: a 4D NIfTI plus a row "
        "table). Without --out the TSV goes to standard output.",
    )
    c.add_argument("--method", required=True, choices=("afnm", "fnm", "parcellate"))
    c.add_argument("--atlas", help="atlas (FNM: parcel summaries instead of voxel maps)")
    c.add_argument("--label", nargs="+", help="lesion label(s), e.g. acuteinfarct")
    c.add_argument("--statistic", help="afnmap (afnm), zmap|rmap|tmap|pmap|avgr (fnm)")
    c.add_argument("--session", nargs="+", help="session(s)")
    c.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
    c.add_argument("--cohort", help="only this cohort")
    c.add_argument("--connectome", help="only outputs computed from this connectome")
    c.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="only outputs with this parameter value (e.g. weighting=binary)",
    )
    c.add_argument("--out", help="folder for the group files")
    add_global_options(c)
    c.set_defaults(func=_collect)

    cat = sub.add_parser(
        "catalog",
        help="browse and maintain the catalog",
        description="What the lake holds (ls), one output's provenance (show), and "
        "removal of data no catalog row registers (gc).",
    )
    acts = cat.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = acts.add_parser("ls", help="counts by kind, method, cohort/atlas/connectome and statistic")
    ls.add_argument("--rows", action="store_true", help="list individual outputs instead of counts")
    for opt in ("kind", "method", "cohort", "atlas", "connectome", "statistic", "label"):
        ls.add_argument(f"--{opt}")
    add_global_options(ls)
    ls.set_defaults(func=_ls)
    show = acts.add_parser("show", help="one output's full record (provenance) as JSON")
    show.add_argument("id", type=int)
    add_global_options(show)
    show.set_defaults(func=_show)
    gc = acts.add_parser("gc", help="delete unregistered data (left by failed or killed runs)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="keep stores younger than this many minutes (a job may still register them; default 60)",
    )
    add_global_options(gc)
    gc.set_defaults(func=_gc)


def parse_params(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--param expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _collect(args: argparse.Namespace) -> int:
    from lakepipe.pipelines.collect import collect, write_group

    da = collect(
        lake_from_args(args),
        args.method,
        atlas=args.atlas,
        label=args.label,
        statistic=args.statistic,
        session=args.session,
        participants=args.participant_label,
        cohort=args.cohort,
        connectome=args.connectome,
        params=parse_params(args.param),
    )
    if args.out:
        for path in write_group(da, args.out):
            print(path)
        return 0
    if "region" not in da.dims:
        raise InputError("voxel maps cannot go to standard output: pass --out DIR (or --atlas for parcels)")
    import pandas as pd

    table = pd.DataFrame(da.values, columns=[str(n) for n in da["region_name"].values])
    table.insert(0, "label", da["label"].values)
    table.insert(0, "session_id", [f"ses-{s}" if s else "n/a" for s in da["session"].values])
    table.insert(0, "participant_id", [f"sub-{p}" if p else "n/a" for p in da["participant"].values])
    table.to_csv(sys.stdout, sep="\t", index=False, float_format="%.6g")
    return 0


def _ls(args: argparse.Namespace) -> int:
    import pandas as pd

    lake = lake_from_args(args)
    filters = {
        k: getattr(args, k)
        for k in ("kind", "method", "cohort", "atlas", "connectome", "statistic", "label")
        if getattr(args, k)
    }
    if args.rows:
        df = lake.catalog.query(**filters)
        cols = [
            "id",
            "kind",
            "method",
            "cohort",
            "participant",
            "session",
            "label",
            "atlas",
            "connectome",
            "statistic",
            "store_uri",
            "store_index",
            "created",
        ]
        df = df[cols]
    else:
        df = lake.catalog.summary(**filters)
    if df.empty:
        print(f"nothing in the catalog of {lake.url} matches")
        return 0
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    rec = lake_from_args(args).catalog.get(args.id)
    print(json.dumps(rec, indent=2, sort_keys=True, default=str))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from lakepipe.pipelines.gc import collect_garbage

    res = collect_garbage(lake_from_args(args), dry_run=args.dry_run, grace_s=args.grace * 60)
    for url in res.removed:
        print(url)
    print(res.summary(args.dry_run))
    return 0
