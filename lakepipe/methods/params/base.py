"""Method parameters: a frozen dataclass per method whose fields carry their help text, choices and
command-line flag, so the command line, job specs and the Python API validate them the same way.

A method's parameter class also carries its ``title`` and ``description``: everything the command
line needs to build the method's parser and ``--help``. Parameter modules import nothing heavier
than numpy, so ``lakepipe run fnm --help`` starts in a fraction of a second; the method itself
(:mod:`lakepipe.methods.fnm`, with pandas, xarray, Zarr and the catalog) is imported when it runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from lakepipe.errors import InputError

P = TypeVar("P", bound="Params")

# ---------------------------------------------------------------------------------------- parameters


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    flag: str | None = None,
    positive: bool = False,
    path: bool = False,
) -> Any:
    """A parameter field: its default, help text, allowed values, command-line flag.

    ``flag`` defaults to the field name with dashes (``lesion_weighting`` -> ``--lesion-weighting``);
    fields without a default are required; ``path`` marks local paths (job specs resolve them
    against their base folder; URLs and lake names are left alone).
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "metavar": metavar,
        "flag": flag,
        "positive": positive,
        "path": path,
    }
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple or None as the default of a sequence parameter")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter as the command line and job specs see it."""

    name: str
    kind: str  #: "str", "int", "float", "bool", "list"
    help: str
    required: bool
    default: Any
    choices: tuple[Any, ...] | None
    metavar: str | None
    flag: str
    positive: bool
    path: bool


def _kind(tp: Any) -> tuple[str, bool]:
    """(basic kind, optional) of a parameter annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else tp
        origin = typing.get_origin(tp)
    if origin in (list, tuple) or tp in (list, tuple):
        return "list", optional
    for kind in (bool, int, float, str):
        if tp is kind:
            return kind.__name__, optional
    return "str", optional


@dataclass(frozen=True)
class Params:
    """Base of every method's parameters (a frozen dataclass per method).

    A method's own class sets :attr:`title` and :attr:`description` (its ``--help``).
    """

    #: one line for ``--help`` lists
    title: ClassVar[str] = ""
    #: a paragraph for the method's ``--help``
    description: ClassVar[str] = ""

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        """The parameters, in declaration order."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            kind, _ = _kind(hints[f.name])
            meta = f.metadata
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append(
                ParamSpec(
                    f.name,
                    kind,
                    meta.get("help", ""),
                    required,
                    None if required else f.default,
                    meta.get("choices"),
                    meta.get("metavar"),
                    meta.get("flag") or "--" + f.name.replace("_", "-"),
                    bool(meta.get("positive")),
                    bool(meta.get("path")),
                )
            )
        return tuple(out)

    @classmethod
    def from_mapping(cls: type[P], values: Mapping[str, Any], source: str | None = None) -> P:
        """Validated parameters from ``values`` (a job step, keyword arguments, parsed options).

        Unknown names, missing required values, wrong types and values outside the allowed
        choices raise :class:`InputError` naming the parameter.
        """
        specs = {s.name: s for s in cls.specs()}
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise InputError(f"unknown parameter {unknown[0]!r}; known: {', '.join(specs)}", source)
        kwargs = {}
        for name, spec in specs.items():
            value = values.get(name)
            if value is None:
                if spec.required:
                    raise InputError(f"parameter {name!r} ({spec.flag}) is required", source)
                continue
            kwargs[name] = _coerce(spec, value, source)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self: P, **changes: Any) -> P:
        """A copy with some parameters changed (validated like the originals)."""
        return type(self).from_mapping({**self.to_dict(), **changes})


def _coerce(spec: ParamSpec, value: Any, source: str | None) -> Any:
    def bad(what: str) -> InputError:
        return InputError(f"parameter {spec.name!r} ({spec.flag}) {what}, got {value!r}", source)

    if spec.kind == "list":
        items = [value] if isinstance(value, str | int | float) else list(value)
        out: Any = tuple(str(v) if not isinstance(v, int | float) else v for v in items)
        values = out
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad("must be true or false")
        out = value
        values = (out,)
    elif spec.kind in ("int", "float"):
        try:
            out = int(value) if spec.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise bad(f"must be a number ({spec.kind})") from None
        if isinstance(value, bool) or (spec.kind == "int" and float(value) != out):
            raise bad("must be an integer")
        if spec.positive and not out > 0:
            raise bad("must be positive")
        values = (out,)
    else:
        out = str(value)
        values = (out,)
    if spec.choices is not None:
        wrong = [v for v in values if v not in spec.choices]
        if wrong:
            raise bad(f"must be one of {', '.join(map(str, spec.choices))}")
    return out
