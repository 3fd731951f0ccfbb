"""The steps of a job: one class per kind; analysis steps delegate to the method registry.

Each step plans (what is new, what is already in the lake, what is to compute: reads only) and
runs inside the job's one :class:`~lakepipe.runtime.RunContext`, so a job has one catalog run id
and one Dask cluster, started only if some step computes. A step whose inputs an earlier step of
the job changes is planned again right before it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lakepipe.bids import check_entity
from lakepipe.errors import InputError
from lakepipe.jobs.spec import JobSpec
from lakepipe.lake import Lake
from lakepipe.registry import get_method, method_names
from lakepipe.runtime import RunContext


@dataclass
class JobState:
    """What earlier steps of the job change (planned, or done at run time)."""

    #: cohort -> participants its ingest step adds
    new_participants: dict[str, set[str]] = field(default_factory=dict)
    #: names of what earlier steps with work change (see Method.inputs/products)
    changed: set[str] = field(default_factory=set)


@dataclass
class StepPlan:
    """What one step will do: ``new`` inputs, ``skipped`` (already in the lake), ``to_compute``."""

    index: int
    kind: str
    target: str
    new: int | None = None
    skipped: int | None = None
    to_compute: int | None = 0  #: None: known only once the steps above have run
    note: str = ""

    def row(self) -> tuple[str, ...]:
        def n(v: int | None) -> str:
            return "-" if v is None else str(v)

        to_compute = "?" if self.to_compute is None else str(self.to_compute)
        return (str(self.index), self.kind, self.target, n(self.new), n(self.skipped), to_compute, self.note)


@dataclass
class StepResult:
    index: int
    kind: str
    target: str
    written: int = 0  #: entries ingested, outputs computed or group files written
    skipped: int = 0
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    summary: str = ""


class Step(ABC):
    """One step of a job spec."""

    kind: ClassVar[str]

    def __init__(self, index: int, spec: dict[str, Any], job: JobSpec):
        self.index = index
        self.spec = dict(spec)
        self.job = job

    @property
    def target(self) -> str:
        return self.kind

    def path(self, name: str) -> str | None:
        value = self.spec.get(name)
        return None if value is None else self.job.resolve(str(value))

    def inputs(self) -> set[str]:
        """Names of what this step's work depends on."""
        return set()

    def products(self) -> set[str]:
        """Names of what this step changes when it has work."""
        return set()

    def waits(self, state: JobState) -> bool:
        """Whether an earlier step with work changes this step's inputs (names, or ``path:`` folders
        an earlier step writes into)."""
        if self.inputs() & state.changed:
            return True
        written = [c[5:].rstrip("/") + "/" for c in state.changed if c.startswith("path:")]
        inputs = [i[5:].rstrip("/") + "/" for i in self.inputs() if i.startswith("path:")]
        return any(i.startswith(w) for i in inputs for w in written)

    def waiting(self, state: JobState) -> StepPlan | None:
        """The plan of a step that waits for earlier steps (its inputs change), else None."""
        if not self.waits(state):
            return None
        state.changed |= self.products()
        return StepPlan(
            self.index,
            self.kind,
            self.target,
            None,
            None,
            None,
            "inputs change in this job: planned after the steps above",
        )

    def result(self, written: int, skipped: int, summary: str, files: list[Path] | None = None) -> StepResult:
        return StepResult(
            self.index, self.kind, self.target, written, skipped, list(files or []), summary=summary
        )

    @abstractmethod
    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        """What the step would do (reads the lake, writes nothing); updates ``state``."""

    @abstractmethod
    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        """Do it inside the job's run; updates ``state``."""


# ---------------------------------------------------------------------------------------------- inputs


class TutorialStep(Step):
    """``tutorial``: write the built-in example inputs into ``out`` (a no-op when they are there)."""

    kind = "tutorial"
    SIZES = ("participants", "subjects", "timepoints", "batch_size", "seed")

    @property
    def target(self) -> str:
        return f"example inputs -> {self.spec['out']}"

    def _kwargs(self) -> dict[str, Any]:
        return {k: self.spec[k] for k in self.SIZES if k in self.spec}

    def products(self) -> set[str]:
        return {f"path:{self.path('out')}"}

    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        from lakepipe.tutorial import tutorial_is_current

        current = tutorial_is_current(self.path("out") or "", **self._kwargs())
        if not current:
            state.changed |= self.products()
        return StepPlan(
            self.index,
            self.kind,
            self.target,
            int(not current),
            int(current),
            int(not current),
            "" if not current else "already written",
        )

    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        from lakepipe.tutorial import tutorial_is_current, write_tutorial

        out = self.path("out")
        assert out is not None
        current = tutorial_is_current(out, **self._kwargs())
        paths = write_tutorial(out, **self._kwargs())
        return self.result(int(not current), int(current), f"example inputs in {paths.root}")


class IngestLesionsStep(Step):
    """``ingest-lesions``: a BIDS folder or URL into a cohort (incremental by default)."""

    kind = "ingest-lesions"

    @property
    def cohort(self) -> str:
        return check_entity(self.spec["cohort"], "cohort")

    @property
    def target(self) -> str:
        return f"cohort {self.spec['cohort']} <- {self.spec['source']}"

    def products(self) -> set[str]:
        return {f"cohort:{self.cohort}"}

    def inputs(self) -> set[str]:
        return {f"path:{self.path('source')}"}

    def _new(self, lake: Lake) -> tuple[list[Any], list[Any]]:
        from lakepipe.io.bidsfind import find_lesion_files

        files = find_lesion_files(
            self.path("source") or "",
            self.spec.get("participants"),
            self.spec.get("space", "MNI152NLin6Asym"),
        )
        known = set(lake.catalog.query(kind="lesion", cohort=self.cohort)["store_index"])
        return files, [f for f in files if f.key not in known]

    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        waiting = self.waiting(state)
        if waiting is not None:
            return waiting
        files, new = self._new(lake)
        incremental = self.spec.get("incremental", True)
        plan = StepPlan(self.index, self.kind, self.target, len(new), len(files) - len(new), len(new))
        plan.note = "nothing new" if not new else ""
        if not incremental:
            plan.note = "full re-validation (incremental: false)"
        state.new_participants.setdefault(self.cohort, set()).update(f.participant for f in new)
        if new:
            state.changed |= self.products()
        return plan

    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        from lakepipe.ingest import ingest_lesions

        res = ingest_lesions(
            lake,
            self.path("source") or "",
            cohort=self.cohort,
            participants=self.spec.get("participants"),
            weighted=bool(self.spec.get("weighted")),
            space=self.spec.get("space", "MNI152NLin6Asym"),
            incremental=self.spec.get("incremental", True),
            run=run,
        )
        written = {k.split("_")[0][4:] for k in res.written}
        state.new_participants.setdefault(self.cohort, set()).update(written)
        if res.written:
            state.changed |= self.products()
        return self.result(len(res.written), len(res.skipped), res.summary())


class IngestConnectomeStep(Step):
    """``ingest-connectome``: a source folder into (or extending) a connectome."""

    kind = "ingest-connectome"

    @property
    def target(self) -> str:
        return f"connectome {self.spec['name']} <- {self.spec['source']}"

    def products(self) -> set[str]:
        return {f"connectome:{self.spec['name']}"}

    def inputs(self) -> set[str]:
        return {f"path:{self.path('source')}"}

    def _options(self) -> dict[str, Any]:
        return {"mask": self.path("mask"), "regions": self.path("regions")}

    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        from lakepipe.io.sources import open_source

        waiting = self.waiting(state)
        if waiting is not None:
            return waiting
        source = self.spec["source"]
        if "://" in source:
            raise InputError(
                "connectome sources must be local folders (HDF5 batches, 4D NIfTI, parcel series)", source
            )
        src = open_source(self.path("source") or "", source_format=self.spec.get("format"), **self._options())
        ids = [r.subject_id for r in src.subjects]
        known = set(lake.catalog.query(kind="connectome", connectome=self.spec["name"])["store_index"])
        new = [s for s in ids if s not in known]
        if new:
            state.changed |= self.products()
        return StepPlan(self.index, self.kind, self.target, len(new), len(ids) - len(new), len(new))

    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        from lakepipe.ingest import ingest_connectome

        res = ingest_connectome(
            lake,
            self.path("source") or "",
            name=self.spec["name"],
            source_format=self.spec.get("format"),
            space=self.spec.get("space", "MNI152NLin6Asym"),
            run=run,
            **self._options(),
        )
        if res.written:
            state.changed |= self.products()
        return self.result(len(res.written), len(res.skipped), res.summary())


class IngestAtlasStep(Step):
    """``ingest-atlas``: a label NIfTI and its label table."""

    kind = "ingest-atlas"

    @property
    def target(self) -> str:
        return f"atlas {self.spec['name']} <- {Path(self.spec['nifti']).name}"

    def products(self) -> set[str]:
        return {f"atlas:{self.spec['name']}"}

    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        there = lake.catalog.count(kind="atlas", atlas=self.spec["name"]) > 0
        if not there:
            state.changed |= self.products()
        return StepPlan(self.index, self.kind, self.target, int(not there), int(there), int(not there))

    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        from lakepipe.ingest import ingest_atlas

        res = ingest_atlas(
            lake,
            self.path("nifti") or "",
            labels=self.path("labels") or "",
            name=self.spec["name"],
            space=self.spec.get("space"),
            run=run,
        )
        if res.written:
            state.changed |= self.products()
        return self.result(len(res.written), len(res.skipped), res.summary())


# -------------------------------------------------------------------------------------------- analyses


class MethodStep(Step):
    """A registered method (``parcellate``, ``afnm``, ``fnm``, ...) with its parameters.

    Besides the method's parameters: ``bids_out`` (BIDS files of every output the step covers),
    ``recompute`` (replace what the lake holds) and ``only_new`` (only the participants the
    job's ingest step of the cohort just added, plus any of the cohort the method never mapped).
    """

    EXTRA = ("kind", "id", "bids_out", "recompute", "only_new")

    def __init__(self, index: int, spec: dict[str, Any], job: JobSpec):
        super().__init__(index, spec, job)
        self.method = get_method(spec["kind"])
        self.kind = self.method.name  # type: ignore[misc]
        values = {k: v for k, v in spec.items() if k not in self.EXTRA}
        for s in self.method.params_type.specs():
            if s.path and values.get(s.name) is not None and self._is_path(s.name, values[s.name]):
                values[s.name] = job.resolve(str(values[s.name]))
        self.params = self.method.params(values)

    def _is_path(self, name: str, value: Any) -> bool:
        from lakepipe.methods.afnm import is_matrix_file

        return name != "matrix" or is_matrix_file(str(value))  # fcgroupz/fcgroupr name a lake output

    @property
    def target(self) -> str:
        p = self.params.to_dict()
        parts = [f"{k} {p[k]}" for k in ("cohort", "cases", "controls", "connectome", "atlas") if p.get(k)]
        return ", ".join(parts) + (" (only new)" if self.spec.get("only_new") else "")

    def inputs(self) -> set[str]:
        return self.method.inputs(self.params)

    def products(self) -> set[str]:
        return self.method.products(self.params)

    def _params(self, lake: Lake, state: JobState) -> Any:
        """The parameters, restricted to the new participants with ``only_new``."""
        if not self.spec.get("only_new"):
            return self.params
        cohort = check_entity(self.params.cohort, "cohort")  # type: ignore[attr-defined]
        chosen = set(state.new_participants.get(cohort, ())) | self._never_mapped(lake, cohort)
        return self.params.replace(participants=sorted(chosen)) if chosen else None

    def _never_mapped(self, lake: Lake, cohort: str) -> set[str]:
        """Participants of ``cohort`` with a lesion entry the method never mapped (any parameters)."""
        lesions = lake.catalog.query(kind="lesion", cohort=cohort)
        if lesions.empty:
            return set()
        m = self.method
        stat = m.default_statistic
        rows = lake.catalog.query(kind="derivative", method=m.name, cohort=cohort, statistic=stat)
        atlas = getattr(self.params, "atlas", None)
        if m.statistic_dims(stat, None) == "region":
            rows = rows[rows["atlas"] == atlas]
        else:
            rows = rows[rows["atlas"].isna()]
        mapped = {(r.participant, r.session, r.label) for r in rows.itertuples()}
        return {
            r.participant for r in lesions.itertuples() if (r.participant, r.session, r.label) not in mapped
        }

    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        waiting = self.waiting(state)
        if waiting is not None:
            return waiting
        sp = StepPlan(self.index, self.kind, self.target)
        params = self._params(lake, state)
        if params is None:
            sp.new = sp.skipped = 0
            sp.note = "nothing new"
            return sp
        plan = self.method.plan(lake, params, recompute=bool(self.spec.get("recompute")))
        sp.new, sp.skipped, sp.to_compute = plan.new, len(plan.skipped), len(plan.todo)
        sp.note = "; ".join(plan.notes)
        if plan.todo:
            state.changed |= self.products()
        return sp

    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        params = self._params(lake, state)
        if params is None:
            return self.result(0, 0, "nothing new to map")
        res = self.method.run(
            lake, run, params, recompute=bool(self.spec.get("recompute")), bids_out=self.path("bids_out")
        )
        if res.computed:
            state.changed |= self.products()
        return self.result(len(res.computed), len(res.skipped), res.summary(), res.files)


class CollectStep(Step):
    """``collect``: the group table of one group question, rewritten only when it changed."""

    kind = "collect"
    QUERY = ("atlas", "label", "statistic", "cohort", "connectome", "params")

    @property
    def target(self) -> str:
        atlas = f" {self.spec['atlas']}" if self.spec.get("atlas") else ""
        return f"{self.spec['method']}{atlas} -> {self.spec['out']}"

    def inputs(self) -> set[str]:
        return {self.spec["method"]}

    def _collection(self, lake: Lake) -> Any:
        from lakepipe.collect import collect

        return collect(lake, self.spec["method"], **{k: self.spec.get(k) for k in self.QUERY})

    def plan(self, lake: Lake, state: JobState) -> StepPlan:
        from lakepipe.collect import group_is_current

        waiting = self.waiting(state)
        if waiting is not None:
            return waiting
        sp = StepPlan(self.index, self.kind, self.target)
        da = self._collection(lake)
        current = group_is_current(da, self.path("out") or "")
        sp.skipped, sp.to_compute = int(current), int(not current)
        sp.note = f"{da.sizes['seed']} row(s)" + (" unchanged" if current else "")
        return sp

    def run(self, lake: Lake, run: RunContext, state: JobState) -> StepResult:
        from lakepipe.collect import group_is_current, write_group

        da = self._collection(lake)
        out = self.path("out") or ""
        if group_is_current(da, out):
            return self.result(0, 1, f"group file up to date ({da.sizes['seed']} row(s))")
        files = write_group(da, out)
        return self.result(1, 0, f"{da.sizes['seed']} row(s) -> {files[0]}", files)


STEP_TYPES: dict[str, type[Step]] = {
    cls.kind: cls
    for cls in (TutorialStep, IngestLesionsStep, IngestConnectomeStep, IngestAtlasStep, CollectStep)
}


def make_step(index: int, spec: dict[str, Any], job: JobSpec) -> Step:
    """The step object of one entry of a spec's ``steps``."""
    kind = spec["kind"]
    if kind in STEP_TYPES:
        return STEP_TYPES[kind](index, spec, job)
    if kind in method_names():
        return MethodStep(index, spec, job)
    raise InputError(f"unknown step kind {kind!r}", job.path)
