"""Atlas stores (``atlases/<name>.zarr``): label volume, region table, space, and optional 4D maps.

Three kinds (attribute ``atlas_kind``):

- ``label``: a discrete atlas (``dseg``: int32 label volume; ``region*``: the region table);
- ``probabilistic``: one probability map per region (``maps``: float32 (i, j, k, region), one chunk
  per map, in the order of the region table), plus its maximum-probability label volume as ``dseg``
  (each voxel labelled with its most probable region, 0 where every map is 0), so every method that
  works on label atlases works on it too;
- ``derived``: regions extracted from a decomposition of a connectome (``lakepipe atlas derive``): the
  label volume and table as any atlas, plus the component maps the regions came from
  (``components``: float32 (i, j, k, component), ``component_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lakepipe.errors import NotFoundError
from lakepipe.io import layout
from lakepipe.io.storage import exists, get_array, join, open_group, read_array
from lakepipe.io.stores.grids import grid_attrs, grid_from_attrs
from lakepipe.space import Grid

if TYPE_CHECKING:
    import zarr

ATLAS_KINDS = ("label", "probabilistic", "derived")
#: the 4D variable of each kind that has one
MAPS_VARIABLE = {"probabilistic": "maps", "derived": "components"}


@dataclass(frozen=True)
class Atlas:
    """An atlas read from the lake: label volume, its grid, the region table and the space.

    ``kind`` is one of :data:`ATLAS_KINDS`; the 4D maps of probabilistic and derived atlases are read
    on demand (:func:`atlas_maps`), not with the atlas.
    """

    name: str
    labels: np.ndarray  #: int32 (i, j, k)
    grid: Grid
    table: pd.DataFrame  #: index, name, network, hemisphere
    space: str | None
    sha256: str
    kind: str = "label"
    attrs: dict[str, Any] | None = None  #: the store's attributes (source, derivation, ...)

    @property
    def n_regions(self) -> int:
        return len(self.table)

    @property
    def probabilistic(self) -> bool:
        return self.kind == "probabilistic"

    def dense_index(self) -> np.ndarray:
        """Map from label value to 1..N position in the table (0 = background/unnamed)."""
        lut = np.zeros(int(max(self.table["index"].max(), self.labels.max())) + 1, np.int32)
        lut[self.table["index"].to_numpy()] = np.arange(1, self.n_regions + 1, dtype=np.int32)
        return lut


def _write_maps(g: zarr.Group, name: str, maps: np.ndarray) -> None:
    """A 4D float32 array, one chunk per map (a map is what readers take at a time)."""
    arr = g.create_array(
        name,
        shape=maps.shape,
        chunks=(*maps.shape[:3], 1),
        dtype="float32",
        dimension_names=["i", "j", "k", "region" if name == "maps" else "component"],
    )
    for j in range(maps.shape[3]):
        arr[..., j] = np.asarray(maps[..., j], np.float32)


def write_atlas(
    lake: str,
    name: str,
    labels: np.ndarray,
    grid: Grid,
    table: pd.DataFrame,
    space: str | None,
    meta: dict,
    *,
    kind: str = "label",
    maps: np.ndarray | None = None,
    component_names: list[str] | None = None,
) -> str:
    """Write an atlas store (see the module notes); ``maps`` are the probabilities (``probabilistic``,
    one map per table row) or the component maps (``derived``, named by ``component_names``)."""
    if kind not in ATLAS_KINDS:
        raise ValueError(f"atlas kind must be one of {ATLAS_KINDS}, got {kind!r}")
    if (maps is not None) != (kind in MAPS_VARIABLE):
        raise ValueError(f"a {kind} atlas {'needs' if kind in MAPS_VARIABLE else 'has no'} 4D maps")
    url = layout.atlas_store(lake, name)
    g = open_group(url, mode="w")
    g.create_array(
        "dseg", shape=labels.shape, chunks=(64, 64, 64), dtype="int32", dimension_names=["i", "j", "k"]
    )[:] = labels
    g.create_array("region", shape=(len(table),), dtype="int32", dimension_names=["region"])[:] = table[
        "index"
    ].to_numpy(np.int32)
    for col in ("name", "network", "hemisphere"):
        g.create_array(f"region_{col}", shape=(len(table),), dtype=str, dimension_names=["region"])[:] = (
            table[col].fillna("").astype(str).to_numpy()
        )
    extra: dict[str, Any] = {}
    if maps is not None:
        _write_maps(g, MAPS_VARIABLE[kind], maps)
        extra["n_maps"] = int(maps.shape[3])
        if kind == "derived":
            names = component_names or [f"C{j + 1:02d}" for j in range(maps.shape[3])]
            g.create_array("component_name", shape=(len(names),), dtype=str, dimension_names=["component"])[
                :
            ] = np.asarray(names, dtype=str)
    g.attrs.update(
        {
            **meta,
            **extra,
            "space": space,
            "grid": grid_attrs(grid),
            "n_regions": len(table),
            "atlas_kind": kind,
            "lakepipe_store": "atlas",
        }
    )
    return url


def _open(lake: str, name: str) -> zarr.Group:
    url = layout.atlas_store(lake, name)
    if not exists(join(url, "zarr.json")):
        raise NotFoundError(
            f"unknown atlas '{name}': not in the lake (ingest it with `lakepipe ingest atlas`)"
        )
    return open_group(url)


def read_atlas(lake: str, name: str) -> Atlas:
    g = _open(lake, name)
    attrs: dict[str, Any] = dict(g.attrs)
    table = pd.DataFrame(
        {
            "index": read_array(g, "region").astype(int),
            **{
                col: [str(v) or None for v in read_array(g, f"region_{col}")]
                for col in ("name", "network", "hemisphere")
            },
        }
    )
    table = table.replace({"": None})
    return Atlas(
        name,
        read_array(g, "dseg"),
        grid_from_attrs(attrs["grid"]),
        table,
        attrs.get("space"),
        attrs.get("sha256", ""),
        str(attrs.get("atlas_kind", "label")),
        attrs,
    )


def atlas_maps(lake: str, name: str) -> zarr.Array[Any] | None:
    """The 4D maps of a probabilistic atlas (probabilities) or a derived atlas (component maps) as a
    lazy Zarr array (``maps[..., j]`` reads map ``j``); None for a label atlas."""
    g = _open(lake, name)
    kind = str(g.attrs.get("atlas_kind", "label"))
    var = MAPS_VARIABLE.get(kind)
    return None if var is None else get_array(g, var)


def component_names(lake: str, name: str) -> list[str]:
    """The component names of a derived atlas (empty for other kinds)."""
    g = _open(lake, name)
    return [str(v) for v in read_array(g, "component_name")] if "component_name" in g else []
