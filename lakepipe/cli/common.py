"""What the command modules share: the lake of the global options, run contexts, parameter options."""

from __future__ import annotations

import argparse
import re
import shlex
from typing import TYPE_CHECKING, Any

from lakepipe.errors import InputError

if TYPE_CHECKING:
    from lakepipe.lake import Lake
    from lakepipe.methods.params.base import Params

#: lets "--sphere -40,-20,50" read the coordinates as a value, not as an unknown option
NEGATIVE_NUMBERS = re.compile(r"^-\d[\d.,\-]*$")


def lake_from_args(args: argparse.Namespace, *, create: bool = False) -> Lake:
    """The lake of ``--lake``/``--catalog``. Commands that only read refuse a lake that does not
    exist (a mistyped ``--lake`` must not quietly open a new, empty lake); commands that write
    create it."""
    from lakepipe.lake import Lake

    return Lake(args.lake, catalog=args.catalog, create=create)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (recorded with the run)."""
    return "lakepipe " + " ".join(shlex.quote(str(a)) for a in args._argv)


def run_params(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options, as recorded with the run (no functions, no private fields)."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "catalog") and not k.startswith("_")}


def add_param_options(parser: argparse.ArgumentParser, params_type: type[Params]) -> None:
    """One option per parameter of a method (help, choices and defaults from the parameter spec)."""
    for spec in params_type.specs():
        kwargs: dict[str, Any] = {
            "dest": spec.name,
            "help": spec.help + ("" if not spec.required else " (required)"),
        }
        if spec.kind == "bool":
            parser.add_argument(spec.flag, action="store_true", default=None, **kwargs)
            continue
        if spec.kind == "list":
            kwargs["action"] = "append" if spec.name in ("sphere", "sphere_name") else None
            if kwargs["action"] is None:
                kwargs.pop("action")
                kwargs["nargs"] = "+"
        elif spec.kind in ("int", "float"):
            kwargs["type"] = int if spec.kind == "int" else float
        if spec.choices:
            kwargs["choices"] = spec.choices
        if spec.metavar:
            kwargs["metavar"] = spec.metavar
        parser.add_argument(spec.flag, required=spec.required, **kwargs)


def params_from_args(args: argparse.Namespace, params_type: type[Params]) -> dict[str, Any]:
    """The parameter values given on the command line (defaults left to the parameter spec)."""
    out = {}
    for spec in params_type.specs():
        value = getattr(args, spec.name, None)
        if value is not None:
            out[spec.name] = value
    return out


def parse_key_values(items: list[str] | None, option: str = "--param") -> dict[str, str]:
    """``KEY=VALUE`` options as a dict."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"{option} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out
