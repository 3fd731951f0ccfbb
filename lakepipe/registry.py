"""The registry of analysis methods: names to method objects, imported on first use.

Every analysis (``parcellate``, ``afnm``, ``fnm``, the group statistics, ...) is one object
implementing :class:`lakepipe.methods.base.Method`, defined in its own module as ``METHOD``. This
module knows the built-in methods by module path only, as xarray knows its backends, so the layers
that dispatch to methods (the lake, collect, export, jobs, the command line) never import them
statically; other packages can add methods through the ``lakepipe.methods`` entry-point group
(``name = "package.module:OBJECT"``).
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from lakepipe.errors import InputError

if TYPE_CHECKING:
    from lakepipe.methods.base import Method

#: built-in methods: name -> ("module:attribute", the command words that run it); the words let the
#: command line build one method's parser without importing the others (each method's
#: ``Method.command`` says the same: tests/test_methods.py checks it)
BUILTIN: dict[str, tuple[str, tuple[str, ...]]] = {
    "parcellate": ("lakepipe.methods.parcellate:METHOD", ("parcellate",)),
    "afnm": ("lakepipe.methods.afnm:METHOD", ("run", "afnm")),
    "fnm": ("lakepipe.methods.fnm:METHOD", ("run", "fnm")),
    "sensitivity": ("lakepipe.methods.stats.sensitivity:METHOD", ("stats", "sensitivity")),
    "specificity": ("lakepipe.methods.stats.specificity:METHOD", ("stats", "specificity")),
    "conjunction": ("lakepipe.methods.stats.conjunction:METHOD", ("stats", "conjunction")),
    "symptom": ("lakepipe.methods.stats.symptom:METHOD", ("stats", "symptom")),
    "predict": ("lakepipe.methods.stats.predict:METHOD", ("stats", "predict")),
    "derive-atlas": ("lakepipe.methods.derive_atlas:METHOD", ("atlas", "derive")),
    "task-contrast": ("lakepipe.methods.task_contrast:METHOD", ("task", "contrast")),
}
ENTRY_POINT_GROUP = "lakepipe.methods"


@cache
def _targets() -> dict[str, str]:
    found = {name: target for name, (target, _) in BUILTIN.items()}
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
    module, _, attr = target.partition(":")
    method: Method = getattr(importlib.import_module(module), attr or "METHOD")
    return method


def method_command(name: str) -> tuple[str, ...]:
    """The command words of method ``name`` (``("run", "fnm")``); only a method added through the
    entry points is imported to tell."""
    if name in BUILTIN:
        return BUILTIN[name][1]
    return tuple(get_method(name).command)
