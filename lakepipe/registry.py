"""The registry of analysis methods: names to method objects, imported on first use.

Every analysis (``parcellate``, ``afnm``, ``fnm``, the group statistics, ...) is one object
implementing :class:`lakepipe.methods.base.Method`, defined in its own module as ``METHOD``, with
its parameters in :mod:`lakepipe.methods.params`. This module knows the built-in methods by module
path only, as xarray knows its backends, so the layers that dispatch to methods (the lake, collect,
export, jobs, the command line) never import them statically, and the command line builds a
method's parser from its parameters alone (:func:`get_params`: no pandas, xarray, Zarr or catalog
to import for ``--help``). Other packages can add methods through the ``lakepipe.methods``
entry-point group (``name = "package.module:OBJECT"``).
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from lakepipe.errors import InputError

if TYPE_CHECKING:
    from lakepipe.methods.base import Method
    from lakepipe.methods.params.base import Params

_STATS = "lakepipe.methods.params.stats"
#: built-in methods: name -> ("module:METHOD", "module:ParamsClass", the command words that run
#: it); the parameters and words let the command line build one method's parser without importing
#: any method (each method's ``params_type`` and ``command`` say the same: tests/test_methods.py
#: checks it)
BUILTIN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "parcellate": (
        "lakepipe.methods.parcellate:METHOD",
        "lakepipe.methods.params.parcellate:ParcellateParams",
        ("parcellate",),
    ),
    "afnm": ("lakepipe.methods.afnm:METHOD", "lakepipe.methods.params.afnm:AfnmParams", ("run", "afnm")),
    "fnm": ("lakepipe.methods.fnm:METHOD", "lakepipe.methods.params.fnm:FnmParams", ("run", "fnm")),
    "sensitivity": (
        "lakepipe.methods.stats.sensitivity:METHOD",
        f"{_STATS}:SensitivityParams",
        ("stats", "sensitivity"),
    ),
    "specificity": (
        "lakepipe.methods.stats.specificity:METHOD",
        f"{_STATS}:SpecificityParams",
        ("stats", "specificity"),
    ),
    "conjunction": (
        "lakepipe.methods.stats.conjunction:METHOD",
        f"{_STATS}:ConjunctionParams",
        ("stats", "conjunction"),
    ),
    "symptom": ("lakepipe.methods.stats.symptom:METHOD", f"{_STATS}:SymptomParams", ("stats", "symptom")),
    "predict": ("lakepipe.methods.stats.predict:METHOD", f"{_STATS}:PredictParams", ("stats", "predict")),
    "derive-atlas": (
        "lakepipe.methods.derive_atlas:METHOD",
        "lakepipe.methods.params.derive_atlas:DeriveAtlasParams",
        ("atlas", "derive"),
    ),
    "task-contrast": (
        "lakepipe.methods.task_contrast:METHOD",
        "lakepipe.methods.params.task_contrast:TaskContrastParams",
        ("task", "contrast"),
    ),
}
ENTRY_POINT_GROUP = "lakepipe.methods"


@cache
def _targets() -> dict[str, str]:
    found = {name: target for name, (target, _, _) in BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def method_names() -> tuple[str, ...]:
    """Names of every registered method, built-in first."""
    return tuple(_targets())


@cache
def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises
    ------
    InputError
        No method has that name (the message lists the known ones).
    """
    target = _targets().get(name)
    if target is None:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
    method: Method = _load(target, "METHOD")
    return method


def get_params(name: str) -> type[Params]:
    """The parameter class of method ``name`` (its options, title and description), without
    importing a built-in method itself.

    Raises
    ------
    InputError
        No method has that name.
    """
    if name in BUILTIN:
        params: type[Params] = _load(BUILTIN[name][1], "")
        return params
    return get_method(name).params_type


def _load(target: str, default_attr: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr or default_attr)


def method_command(name: str) -> tuple[str, ...]:
    """The command words of method ``name`` (``("run", "fnm")``); only a method added through the
    entry points is imported to tell."""
    if name in BUILTIN:
        return BUILTIN[name][2]
    return tuple(get_method(name).command)
