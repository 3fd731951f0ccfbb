"""Planning and running a job: every step in one run context (one run id, one cluster at most)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lakepipe.errors import InputError, NotFoundError
from lakepipe.jobs.spec import JobSpec
from lakepipe.jobs.steps import JobState, Step, StepPlan, StepResult, make_step
from lakepipe.lake import Lake

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """Outcome of :func:`run_job`: the plan and, unless a dry run, what each step did."""

    name: str
    lake: str
    plan: list[StepPlan]
    steps: list[StepResult] = field(default_factory=list)
    dry_run: bool = False
    run_id: str | None = None

    @property
    def written(self) -> int:
        return sum(s.written for s in self.steps)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.steps)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{"1:ingest-lesions": (written, skipped), ...}``."""
        return {f"{s.index}:{s.kind}": (s.written, s.skipped) for s in self.steps}

    def summary(self) -> str:
        if self.dry_run:
            return f"job '{self.name}': dry run, nothing written"
        lines = [f"job '{self.name}' finished: {self.written} new, {self.skipped} skipped"]
        lines += [f"  {s.index}. {s.kind:<17} {s.summary}  ({s.seconds:.1f} s)" for s in self.steps]
        return "\n".join(lines)


def job_steps(job: JobSpec) -> list[Step]:
    """The job's steps as step objects (parameters validated)."""
    steps = []
    for i, spec in enumerate(job.steps, 1):
        try:
            steps.append(make_step(i, spec, job))
        except InputError as exc:
            raise InputError(f"step {i} ({spec.get('kind')}): {exc}") from None
    return steps


def _named(step: Step, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except InputError as exc:
        raise type(exc)(f"step {step.index} ({step.kind}): {exc}") from None


def plan_job(job: JobSpec, lake: Lake) -> list[StepPlan]:
    """Per step: what is new, what is skipped, what is to compute. Reads the lake, writes nothing."""
    state = JobState()
    steps = job_steps(job)
    return [_named(step, partial(step.plan, lake, state)) for step in steps]


def format_plan(job: JobSpec, lake: Lake, plan: list[StepPlan]) -> str:
    """The plan as a table (what ``lakepipe jobs run`` prints first)."""
    from lakepipe.io.storage import public_url

    head = ("step", "kind", "target", "new", "skipped", "to compute", "")
    rows = [head] + [p.row() for p in plan]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    where = f" ({job.path})" if job.path else ""
    lines = [f"job '{job.name}'{where} on lake {public_url(lake.url)}"]
    for r in rows:
        cells = [
            c.rjust(w) if i in (0, 3, 4, 5) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        lines.append("  " + "  ".join(cells) + (f"  {r[-1]}" if r[-1] else ""))
    unknown = any(p.to_compute is None for p in plan)
    total = sum(p.to_compute or 0 for p in plan)
    if total or unknown:
        lines.append(
            f"  {total} item(s) to compute" + (", more once the steps above have run" if unknown else "")
        )
    else:
        lines.append("  nothing to do: everything is in the lake")
    return "\n".join(lines)


def planning_lake(lake: Lake) -> Lake:
    """``lake`` with its catalog opened read-only: a lake not created yet plans against an empty one."""
    from lakepipe.catalog import Catalog
    from lakepipe.catalog.urls import catalog_url_for_lake

    url = catalog_url_for_lake(lake.url, lake._catalog_url)
    try:
        catalog = Catalog(url, create=False)
    except NotFoundError:  # no catalog yet: plan against an empty one, create nothing
        quiet = logging.getLogger("lakepipe.catalog")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            catalog = Catalog("sqlite://")
        finally:
            quiet.setLevel(level)
    view = Lake(lake.url, catalog=lake._catalog_url)
    view.__dict__["catalog"] = catalog  # the cached property, set to the read-only view
    return view


def job_lake(job: JobSpec, lake: str | None = None, catalog: str | None = None) -> Lake:
    """The lake a job runs on: command-line values first, then the spec, then the environment."""
    return Lake(lake or job.lake, catalog=catalog or job.catalog)


def run_job(
    job: JobSpec,
    *,
    lake: Lake | None = None,
    scheduler: str | None = None,
    client: Any = None,
    dry_run: bool = False,
    echo: Callable[[str], None] | None = None,
) -> JobResult:
    """Plan ``job`` and (unless ``dry_run``) run its steps in one run context.

    ``echo`` receives the plan table (the CLI prints it); progress is logged. All steps share one
    catalog run id and one runtime: the Dask client (``client``, else ``scheduler``/the spec's
    scheduler/the environment, else a local cluster) is started only when a step computes.
    """
    echo = echo or (lambda text: log.info("%s", text))
    lake = lake or job_lake(job)
    plan = plan_job(job, planning_lake(lake))
    echo(format_plan(job, lake, plan))
    result = JobResult(job.name, lake.url, plan, dry_run=dry_run)
    if dry_run:
        return result
    steps = job_steps(job)
    params = {
        "job": job.name,
        "spec": str(job.path) if job.path else None,
        "base": str(job.base),
        "steps": [s.kind for s in steps],
    }
    with lake.run_context(
        f"lakepipe jobs run {job.path or job.name}",
        params,
        scheduler=scheduler or job.scheduler,
        client=client,
    ) as run:
        run.start()  # a job's run is recorded even when it has nothing to do (monitoring)
        state = JobState()
        for step in steps:
            log.info("job %s: step %d/%d %s: %s", job.name, step.index, len(steps), step.kind, step.target)
            t0 = time.perf_counter()
            res = _named(step, partial(step.run, lake, run, state))
            res.seconds = time.perf_counter() - t0
            result.steps.append(res)
            log.info(
                "job %s: step %d/%d %s done in %.1f s: %s",
                job.name,
                step.index,
                len(steps),
                step.kind,
                res.seconds,
                res.summary,
            )
        result.run_id = run.run_id
    return result
