"""Grids (shape + affine) as store attributes."""

from __future__ import annotations

from typing import Any

import numpy as np

from lakepipe.space import Grid


def grid_attrs(grid: Grid) -> dict[str, Any]:
    """JSON-able attributes of a grid."""
    return {"shape": list(grid.shape), "affine": np.asarray(grid.affine, float).tolist()}


def grid_from_attrs(attrs: dict[str, Any]) -> Grid:
    """The grid described by :func:`grid_attrs`."""
    shape = tuple(int(s) for s in attrs["shape"])
    return Grid((shape[0], shape[1], shape[2]), np.asarray(attrs["affine"], float))
