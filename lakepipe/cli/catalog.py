"""``lakepipe collect``, ``lakepipe export`` and ``lakepipe catalog ls|show|runs|gc``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from lakepipe.cli.common import lake_from_args, parse_key_values
from lakepipe.cli.main import add_global_options
from lakepipe.errors import InputError


def _query_options(p: argparse.ArgumentParser) -> None:
    from lakepipe.registry import method_names

    p.add_argument("--method", required=True, choices=method_names())
    p.add_argument("--atlas", help="atlas (FNM: parcel summaries instead of voxel maps)")
    p.add_argument("--label", nargs="+", help="lesion label(s), e.g. acuteinfarct")
    p.add_argument("--session", nargs="+", help="session(s)")
    p.add_argument("--participant-label", nargs="+", metavar="ID", help="only these participants")
    p.add_argument("--cohort", nargs="+", help="only these cohorts")
    p.add_argument("--connectome", help="only outputs computed from this connectome")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="only outputs with this parameter value (e.g. weighting=binary)",
    )


def _query(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "atlas": args.atlas,
        "label": args.label,
        "session": args.session,
        "participants": args.participant_label,
        "cohort": args.cohort,
        "connectome": args.connectome,
        "params": parse_key_values(args.param),
    }


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    if name == "collect":
        c = sub.add_parser(
            name,
            help="one group table (TSV + JSON) for a group question",
            description="Gather published outputs into one group file: "
            "group_<entities>_parcelstats.tsv with participant_id, session_id, label and "
            "one column per region (voxel maps: a 4D NIfTI plus a row table). Without "
            "--out the TSV goes to standard output.",
        )
        _query_options(c)
        c.add_argument("--statistic", help="afnmap (afnm), zmap|rmap|tmap|pmap|avgr (fnm), fcgroupz|fcgroupr")
        c.add_argument("--out", help="folder for the group files")
        add_global_options(c)
        c.set_defaults(func=_collect)
    elif name == "export":
        e = sub.add_parser(
            name,
            help="BIDS-derivative files of outputs already in the lake",
            description="Write the BIDS-derivative files (TSV/NIfTI + JSON sidecars, named with their "
            "space, per participant in sub-<p>/[ses-<s>/]anat/) of published outputs "
            "chosen like `collect` chooses them.",
        )
        _query_options(e)
        e.add_argument("--statistic", nargs="+", help="statistics to export (default: all of the method's)")
        e.add_argument("--out", required=True, help="output folder (a BIDS derivatives dataset)")
        add_global_options(e)
        e.set_defaults(func=_export)
    else:
        _register_catalog(sub, name)


def _register_catalog(sub: Any, name: str) -> None:
    cat = sub.add_parser(
        name,
        help="browse and maintain the catalog",
        description="What the lake holds (ls), one output's provenance (show), the runs that "
        "wrote it (runs), and removal of data no catalog row registers (gc).",
    )
    acts = cat.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = acts.add_parser("ls", help="counts by kind, method, cohort/atlas/connectome and statistic")
    ls.add_argument("--rows", action="store_true", help="list individual outputs instead of counts")
    for opt in ("kind", "method", "cohort", "atlas", "connectome", "statistic", "label", "run-id"):
        ls.add_argument(f"--{opt}")
    add_global_options(ls)
    ls.set_defaults(func=_ls)
    show = acts.add_parser("show", help="one output's full record (provenance) as JSON")
    show.add_argument("id", type=int)
    add_global_options(show)
    show.set_defaults(func=_show)
    runs = acts.add_parser("runs", help="the recorded runs (command, status, counts)")
    runs.add_argument("--limit", type=int, default=20, help="newest runs shown (default 20)")
    add_global_options(runs)
    runs.set_defaults(func=_runs)
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


def _collect(args: argparse.Namespace) -> int:
    from lakepipe.collect import collect, write_group
    from lakepipe.registry import get_method

    lake = lake_from_args(args)
    if not get_method(args.method).per_seed:  # one output answers the question: its files are the group files
        from lakepipe.export import export

        if not args.out:
            raise InputError(f"{args.method} results are written as files: pass --out DIR")
        for path in export(lake, args.method, args.out, statistic=args.statistic, **_query(args)):
            print(path)
        return 0
    da = collect(lake, args.method, statistic=args.statistic, **_query(args))
    if args.out:
        for path in write_group(da, args.out):
            print(path)
        return 0
    if "region" not in da.dims or "seed" not in da.dims:
        raise InputError("only parcel tables can go to standard output: pass --out DIR")
    import pandas as pd

    table = pd.DataFrame(da.values, columns=[str(n) for n in da["region_name"].values])
    table.insert(0, "label", da["label"].values)
    table.insert(0, "session_id", [f"ses-{s}" if s else "n/a" for s in da["session"].values])
    table.insert(0, "participant_id", [f"sub-{p}" if p else "n/a" for p in da["participant"].values])
    table.to_csv(sys.stdout, sep="\t", index=False, float_format="%.6g")
    return 0


def _export(args: argparse.Namespace) -> int:
    from lakepipe.export import export

    files = export(lake_from_args(args), args.method, args.out, statistic=args.statistic, **_query(args))
    print(f"{len(files)} file(s) in {args.out}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    import pandas as pd

    lake = lake_from_args(args)
    names = ("kind", "method", "cohort", "atlas", "connectome", "statistic", "label", "run_id")
    filters = {k: getattr(args, k) for k in names if getattr(args, k)}
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
        filters.pop("label", None)
        df = lake.catalog.summary(**filters)
    if df.empty:
        print(f"nothing in the catalog of {lake.url} matches")
        return 0
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 20):
        print(df.astype(object).where(df.notna(), "").to_string(index=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    rec = lake_from_args(args).catalog.get(args.id)
    print(json.dumps(rec, indent=2, sort_keys=True, default=str))
    return 0


def _runs(args: argparse.Namespace) -> int:
    import pandas as pd

    df = lake_from_args(args).catalog.runs()
    if df.empty:
        print("no runs recorded")
        return 0
    df = df.sort_values("started", ascending=False).head(args.limit)
    cols = ["run_id", "started", "status", "n_outputs", "n_skipped", "command"]
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_colwidth", 80):
        print(df[cols].to_string(index=False))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from lakepipe.gc import collect_garbage

    res = collect_garbage(lake_from_args(args), dry_run=args.dry_run, grace_s=args.grace * 60)
    for url in res.removed:
        print(url)
    print(res.summary(args.dry_run))
    return 0
