"""Jobs: scheduled, incremental runs of several steps described by one YAML spec (``jobs/*.yaml``).

A spec (validated by ``schemas/job.schema.json``) lists steps: ``tutorial`` (example inputs),
``ingest-lesions`` (a BIDS folder or ``s3://`` URL, incremental), ``ingest-connectome``,
``ingest-atlas``, any registered method (``parcellate``, ``afnm``, ``fnm``, ...) with its parameters,
and ``collect``. :func:`load_job` reads and checks a spec, :func:`plan_job` says per step what is new,
skipped and to compute (writing nothing), :func:`run_job` runs the steps in one run context. Every
step is idempotent, so a second run of the same job does nothing.
"""

from lakepipe.jobs.runner import JobResult, format_plan, job_lake, job_steps, plan_job, planning_lake, run_job
from lakepipe.jobs.spec import (
    JobSpec,
    check_spec_file,
    example_spec,
    example_specs,
    examples_dir,
    load_job,
    load_schema,
    schema_dir,
    schema_errors,
    validate_spec,
)
from lakepipe.jobs.steps import JobState, StepPlan, StepResult

__all__ = [
    "JobResult",
    "JobSpec",
    "JobState",
    "StepPlan",
    "StepResult",
    "check_spec_file",
    "example_spec",
    "example_specs",
    "examples_dir",
    "format_plan",
    "job_lake",
    "job_steps",
    "load_job",
    "load_schema",
    "plan_job",
    "planning_lake",
    "run_job",
    "schema_dir",
    "schema_errors",
    "validate_spec",
]
