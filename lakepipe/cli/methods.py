"""The analysis commands, built from the method registry: ``lakepipe parcellate``, ``lakepipe run
afnm|fnm``, ... Each method's options come from its parameter spec; every method command also has
``--bids-out``, ``--recompute`` and ``--dry-run``."""

from __future__ import annotations

import argparse
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
from lakepipe.registry import get_method, method_names


def _methods_of(command: str) -> list[Any]:
    return [m for m in (get_method(n) for n in method_names()) if m.command[0] == command]


def register(sub: Any, name: str) -> None:
    methods = _methods_of(name)
    if len(methods) == 1 and len(methods[0].command) == 1:
        _method_parser(sub, methods[0], name)
        return
    p = sub.add_parser(
        name,
        help=", ".join(m.command[-1] for m in methods),
        description="Methods: " + "; ".join(f"{m.command[-1]}: {m.title}" for m in methods),
    )
    inner = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    for m in methods:
        _method_parser(inner, m, m.command[-1])


def _method_parser(sub: Any, method: Any, name: str) -> None:
    p = sub.add_parser(name, help=method.title, description=method.description)
    add_param_options(p, method.params_type)
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
    p.set_defaults(func=_run, _method=method.name)


def _run(args: argparse.Namespace) -> int:
    method = get_method(args._method)
    params = method.params(params_from_args(args, method.params_type))
    if args.dry_run:
        lake = lake_from_args(args)
        print(method.plan(lake, params, recompute=args.recompute).describe())
        return 0
    lake = lake_from_args(args, create=True)
    with lake.run_context(command_line(args), run_params(args), scheduler=args.scheduler) as run:
        result = method.run(lake, run, params, recompute=args.recompute, bids_out=args.bids_out)
    print(result.summary())
    if result.files:
        print(f"  {len(result.files)} BIDS file(s) in {args.bids_out}")
    return 0
