"""The protocol every analysis method implements, and the types it works with.

A method is one object (``METHOD`` in its module, registered in :mod:`lakepipe.registry`) that
knows:

- its parameters (a :class:`~lakepipe.methods.params.base.Params` class in
  :mod:`lakepipe.methods.params`: fields with their help text and choices, so the command line,
  job specs and the Python API all validate them the same way, and the method's title and
  description);
- its statistics (:class:`Statistic`: name, meaning, the store variable holding it);
- what a run would do (:meth:`Method.plan`: the outputs it covers, which are already published,
  what is to compute), built from the output records it would publish, so the skip keys are built
  in one place;
- how to run (:meth:`Method.run`, inside a :class:`~lakepipe.runtime.RunContext`) and how to write
  its catalogued outputs as BIDS-derivative files (:meth:`Method.export`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lakepipe.errors import InputError
from lakepipe.methods.params.base import Params

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from lakepipe.catalog import OutputRecord
    from lakepipe.lake import Lake
    from lakepipe.runtime import RunContext

#: store URI of records that only describe what a run would publish (plans, skip keys)
PENDING = "derivatives/pending.zarr"


# ---------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Statistic:
    """One quantity a method publishes.

    Attributes
    ----------
    name
        The catalog ``statistic`` (``zmap``, ``afnmap``, ``fcgroupz``...).
    description
        What it is, for help texts and sidecars.
    variable
        The store variable holding it (``{name}`` is replaced; FNM's parcel summaries use
        ``parcel_{name}``).
    dims
        The dimension of each output's values: ``voxel``, ``region`` or ``region_pair``.
    """

    name: str
    description: str
    variable: str = "{name}"
    dims: str = "voxel"

    def store_variable(self) -> str:
        return self.variable.format(name=self.name)


# -------------------------------------------------------------------------------------- plans, results


@dataclass
class PlanItem:
    """One unit of work (a seed, a matrix): the outputs it publishes and whether they all exist."""

    key: str
    records: list[OutputRecord]
    done: bool = False
    payload: Any = None  #: whatever the method needs to compute the item (a seed...)
    participant: str | None = None


@dataclass
class Plan:
    """What a run of a method with given parameters would do, read from the lake (nothing written)."""

    method: str
    params: Params
    items: list[PlanItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recompute: bool = False
    context: dict[str, Any] = field(default_factory=dict)  #: resolved inputs the run reuses

    @property
    def todo(self) -> list[PlanItem]:
        """Items to compute: missing ones, or all of them when recomputing."""
        return list(self.items) if self.recompute else [i for i in self.items if not i.done]

    @property
    def skipped(self) -> list[PlanItem]:
        """Items already in the lake (none when recomputing)."""
        return [] if self.recompute else [i for i in self.items if i.done]

    @property
    def new(self) -> int:
        return sum(not i.done for i in self.items)

    def describe(self) -> str:
        verb = "to recompute" if self.recompute else "to compute"
        text = (
            f"{self.method}: {len(self.items)} item(s), {len(self.skipped)} already in the lake, "
            f"{len(self.todo)} {verb}"
        )
        return text + "".join(f"; {n}" for n in self.notes)


@dataclass
class MethodResult:
    """What a run did.

    Attributes
    ----------
    method
        The method's name.
    computed, skipped
        Keys of the items computed now / found already published.
    store
        URL of the derivative store written by this run (None when nothing was computed).
    files
        BIDS files written into ``bids_out``.
    details
        Method-specific facts (dropped seed voxels, passes over the connectome...).
    message
        One line for the user.
    """

    method: str
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    store: str | None = None
    files: list[Path] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    outputs: Any = None  #: the published outputs as an xarray object, when asked for

    def summary(self) -> str:
        return self.message or (
            f"{self.method}: {len(self.computed)} computed, {len(self.skipped)} already in the lake"
        )


# ---------------------------------------------------------------------------------------------- method


class Method(ABC):
    """An analysis method (see the module docstring)."""

    #: registry name (``fnm``)
    name: ClassVar[str]
    #: command words (``("run", "fnm")``, ``("parcellate",)``)
    command: ClassVar[tuple[str, ...]]
    #: the parameters, which also carry the method's title and description (its ``--help``)
    params_type: ClassVar[type[Params]]
    statistics: ClassVar[tuple[Statistic, ...]]
    default_statistic: ClassVar[str]
    #: one output per seed (participant/session/label or sphere): collected along ``seed``
    per_seed: ClassVar[bool] = True

    @property
    def title(self) -> str:
        """One line for ``--help`` lists (from :attr:`params_type`)."""
        return self.params_type.title

    @property
    def description(self) -> str:
        """A paragraph for the method's ``--help`` (from :attr:`params_type`)."""
        return self.params_type.description

    # ---- parameters and statistics
    def params(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Params:
        """Validated parameters from a mapping and/or keywords."""
        return self.params_type.from_mapping({**(values or {}), **kwargs})

    def statistic(self, name: str | None) -> Statistic:
        """The statistic ``name`` (default :attr:`default_statistic`)."""
        name = name or self.default_statistic
        for s in self.statistics:
            if s.name == name:
                return s
        raise InputError(
            f"{self.name} has no statistic {name!r}; choose one of "
            + ", ".join(s.name for s in self.statistics)
        )

    def variable(self, statistic: str, atlas: str | None = None) -> str:
        """The store variable holding ``statistic`` (``atlas`` for methods that also summarise maps
        over parcels)."""
        return self.statistic(statistic).store_variable()

    def statistic_dims(self, statistic: str, atlas: str | None = None) -> str:
        """``voxel``, ``region`` or ``region_pair``: what one output of ``statistic`` spans."""
        return self.statistic(statistic).dims

    def select(self, rows: pd.DataFrame, atlas: str | None) -> pd.DataFrame:
        """Narrow catalog rows of this method to one kind of output (see FNM: maps vs parcel summaries)."""
        return rows

    # ---- what a job's later steps wait for
    def inputs(self, params: Params) -> set[str]:
        """Names of what the outputs depend on (``cohort:<c>``, ``connectome:<n>``, ``atlas:<a>``, or
        another method's products): a job step waits for earlier steps that change any of them."""
        out = set()
        for name in ("cohort", "connectome", "atlas"):
            value = getattr(params, name, None)
            if value:
                out.add(f"{name}:{value}")
        return out

    def products(self, params: Params) -> set[str]:
        """Names of what a run with work changes (``<method>`` and ``<method>:<inputs>``)."""
        return {self.name} | {f"{self.name}:{i}" for i in self.inputs(params)}

    # ---- work
    @abstractmethod
    def plan(self, lake: Lake, params: Params, *, recompute: bool = False) -> Plan:
        """What a run would compute and what is already in the lake (reads, never writes)."""

    @abstractmethod
    def run(
        self,
        lake: Lake,
        run: RunContext,
        params: Params,
        *,
        plan: Plan | None = None,
        recompute: bool = False,
        bids_out: str | Path | None = None,
    ) -> MethodResult:
        """Compute what the plan says is missing (everything with ``recompute``), publish it under
        ``run``, and, with ``bids_out``, write the BIDS files of every output the parameters cover,
        computed now or before."""

    @abstractmethod
    def export(
        self, lake: Lake, rows: pd.DataFrame, out_dir: str | Path, statistics: Sequence[str] | None = None
    ) -> list[Path]:
        """Write the BIDS-derivative files of the catalogued outputs ``rows`` (catalog query rows of
        this method) into ``out_dir``; returns the files."""

    # ---- helpers shared by the methods
    def skip_keys(self, records: Sequence[OutputRecord]) -> list[tuple[str, str, str]]:
        return [r.skip_key for r in records]

    def mark_done(self, lake: Lake, items: Sequence[PlanItem]) -> None:
        """Set ``item.done`` where every output of the item is already published."""
        keys = [k for item in items for k in self.skip_keys(item.records)]
        have = lake.catalog.existing_keys(self.name, keys)
        for item in items:
            item.done = all(k in have for k in self.skip_keys(item.records))

    def outputs(self, lake: Lake, plan: Plan, statistic: str | None = None) -> xr.DataArray:
        """The published outputs a plan covers, as one xarray object (for notebooks)."""
        from lakepipe.collect import collect_records

        records = [r for item in plan.items for r in item.records]
        return collect_records(lake, self, records, statistic)
