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

#: built-in methods: name -> "module:attribute"
BUILTIN: dict[str, str] = {
    "parcellate": "lakepipe.methods.parcellate:METHOD",
    "afnm": "lakepipe.methods.afnm:METHOD",
    "fnm": "lakepipe.methods.fnm:METHOD",
    "sensitivity": "lakepipe.methods.stats.sensitivity:METHOD",
    "specificity": "lakepipe.methods.stats.specificity:METHOD",
    "conjunction": "lakepipe.methods.stats.conjunction:METHOD",
    "symptom": "lakepipe.methods.stats.symptom:METHOD",
    "predict": "lakepipe.methods.stats.predict:METHOD",
    "derive-atlas": "lakepipe.methods.derive_atlas:METHOD",
    "task-contrast": "lakepipe.methods.task_contrast:METHOD",
}
ENTRY_POINT_GROUP = "lakepipe.methods"


@cache
def _targets() -> dict[str, str]:
    found = dict(BUILTIN)
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
