"""The analysis commands, built from the method registry: ``lakepipe parcellate``, ``lakepipe run
afnm|fnm``, ... Each method's options come from its parameter spec; every method command also has
``--bids-out``, ``--recompute`` and ``--dry-run``.

Folders work as inputs too (:func:`lakepipe.ingest.resolve.resolve_inputs`): methods that map a cohort
take a BIDS folder of lesion masks as their first argument (ingested first, as ``--cohort`` or a
cohort named from the folder), and ``--connectome`` takes a folder of HDF5 batches, registered in
place on first use and reused after: ``lakepipe run fnm BIDS_DIR --connectome H5_DIR``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lakepipe.cli.common import (
    NEGATIVE_NUMBERS,
    add_param_options,
    command_line,
    lake_from_args,
    params_from_args,
    run_params,
)
from lakepipe.cli.main import add_global_options
from lakepipe.registry import get_method, get_params, method_command, method_names


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    """The parsers of command ``name``'s methods, built from their parameter classes (no method is
    imported until one runs). ``rest`` (the words after the command) names the method, if any: the
    others get placeholder parsers (``lakepipe run --help`` reads them all, for their titles)."""
    names = [n for n in method_names() if method_command(n)[0] == name]
    if len(names) == 1 and len(method_command(names[0])) == 1:
        _method_parser(sub, names[0], name)
        return
    word = rest[0] if rest else None
    chosen = [n for n in names if method_command(n)[-1] == word]
    p = sub.add_parser(name, help=", ".join(method_command(n)[-1] for n in names))
    inner = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    if chosen:
        for n in names:
            if n in chosen:
                _method_parser(inner, n, method_command(n)[-1])
            else:
                inner.add_parser(method_command(n)[-1], add_help=False)
        return
    p.description = "Methods: " + "; ".join(f"{method_command(n)[-1]}: {get_params(n).title}" for n in names)
    for n in names:
        _method_parser(inner, n, method_command(n)[-1])


def _method_parser(sub: Any, method: str, name: str) -> None:
    params_type = get_params(method)
    p = sub.add_parser(name, help=params_type.title, description=params_type.description)
    fields = {s.name for s in params_type.specs()} if _takes_folders(method) else set()
    if "cohort" in fields:
        p.add_argument(
            "bids_dir",
            nargs="?",
            metavar="BIDS_DIR",
            help="a BIDS folder of lesion masks: ingested first (into --cohort, default a cohort named "
            "from the folder; unchanged masks are not written again), then mapped",
        )
    add_param_options(p, params_type)
    for action in p._actions:
        if action.dest == "cohort" and action.required:  # a BIDS_DIR names the cohort as well
            action.required = False
            action.help = (action.help or "").replace(" (required)", "") + " (or a BIDS_DIR)"
        if action.dest == "connectome":
            base = action.help or ""
            action.help = base.replace(" (required)", "") + (
                ", or a folder of HDF5 batches (registered in place on first use, reused after)"
                + (" (required)" if base.endswith(" (required)") else "")
            )
    g = p.add_argument_group("outputs")
    g.add_argument(
        "--bids-out",
        metavar="DIR",
        help="also write the BIDS-derivative files of every output these options cover (computed "
        "now or before) into DIR",
    )
    if name == "parcellate":
        g.add_argument("--out", dest="bids_out", metavar="DIR", help="the same as --bids-out")
    g.add_argument(
        "--recompute",
        action="store_true",
        help="compute again what the lake already holds and replace it (atomically, like a first publish)",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be computed and what is already in the lake; write nothing",
    )
    add_global_options(p)
    p._negative_number_matcher = NEGATIVE_NUMBERS
    p.set_defaults(func=_run, _method=method)


def _takes_folders(method: str) -> bool:
    """Methods computed from a connectome and seeds take folders as inputs (not the group statistics,
    whose ``--connectome`` only selects maps)."""
    return method_command(method)[0] in ("run", "parcellate")


def _run(args: argparse.Namespace) -> int:
    from lakepipe.ingest.resolve import resolve_inputs

    method = get_method(args._method)
    values = params_from_args(args, method.params_type)
    bids_dir = getattr(args, "bids_dir", None)
    folders = _takes_folders(method.name)
    # every option checked before anything is registered (a BIDS_DIR gives the cohort its name later)
    method.params({**values, **({"cohort": "fromfolder"} if bids_dir and not values.get("cohort") else {})})
    if args.dry_run:
        lake = lake_from_args(args)
        resolved = resolve_inputs(lake, values, bids_dir=bids_dir, dry_run=True) if folders else None
        for note in resolved.notes if resolved else ():
            print(note)
        if resolved is None or not resolved.pending:
            params = method.params(resolved.values if resolved else values)
            print(method.plan(lake, params, recompute=args.recompute).describe())
        return 0
    lake = lake_from_args(args, create=True)
    with lake.run_context(command_line(args), run_params(args), scheduler=args.scheduler) as run:
        if folders:
            resolved = resolve_inputs(lake, values, bids_dir=bids_dir, run=run)
            for note in resolved.notes:
                print(note)
            values = resolved.values
        params = method.params(values)
        result = method.run(lake, run, params, recompute=args.recompute, bids_out=args.bids_out)
    print(result.summary())
    if result.files:
        print(f"  {len(result.files)} BIDS file(s) in {args.bids_out}")
    return 0
