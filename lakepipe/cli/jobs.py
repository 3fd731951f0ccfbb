"""``lakepipe jobs run|validate|example``: job specs (YAML) for scheduled, incremental runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from lakepipe.cli.main import add_global_options
from lakepipe.errors import InputError


def register(sub: Any, name: str, rest: Sequence[str] = ()) -> None:
    p = sub.add_parser(
        name,
        help="run or check a job spec (YAML): ingest + follow-on runs, incremental",
        description="A job spec lists steps (tutorial inputs, ingest-lesions from a BIDS folder or "
        "s3:// URL, ingest-connectome, ingest-atlas, any method: parcellate, afnm, fnm, "
        "..., collect) run in one run (one catalog run id, one Dask cluster at most). "
        "Steps skip what the lake already holds, so a second run does nothing; only_new: "
        "true restricts a follow-on step to the participants just ingested. Relative "
        "paths resolve against the working folder (or the spec's base, or --base). "
        "Format: schemas/job.schema.json; examples: `lakepipe jobs example`.",
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = acts.add_parser(
        "run",
        help="print the plan (new / skipped / to compute per step), then run it",
        description="Load and validate FILE, print per step what is new, what is skipped and what "
        "is to compute, then run the steps (unless --dry-run). --lake, --catalog and "
        "--scheduler override the spec's values.",
    )
    r.add_argument("file", metavar="FILE", help="job spec (YAML or JSON)")
    r.add_argument("--dry-run", action="store_true", help="print the plan only; write nothing")
    r.add_argument(
        "--base",
        metavar="DIR",
        help="folder relative paths of the spec resolve against "
        "(default: the spec's base field, else the working folder)",
    )
    add_global_options(r)
    r.set_defaults(func=_run)
    v = acts.add_parser(
        "validate",
        help="check job specs against the schema",
        description="Validate each FILE against schemas/job.schema.json; errors name the failing "
        "field (e.g. steps[1].kind). Unset ${VAR}s are listed, not errors.",
    )
    v.add_argument("files", nargs="+", metavar="FILE")
    add_global_options(v)
    v.set_defaults(func=_validate)
    e = acts.add_parser(
        "example",
        help="print a bundled example spec (or list them)",
        description="Print an example job spec shipped with lakepipe, e.g. "
        "`lakepipe jobs example tutorial > tutorial.yaml`; without NAME, list them.",
    )
    e.add_argument("name", nargs="?", metavar="NAME")
    add_global_options(e)
    e.set_defaults(func=_example)


def _run(args: argparse.Namespace) -> int:
    from lakepipe.jobs import job_lake, load_job, run_job

    job = load_job(args.file, base=args.base)
    lake = job_lake(job, args.lake, args.catalog)
    result = run_job(
        job,
        lake=lake,
        scheduler=args.scheduler,
        dry_run=args.dry_run,
        echo=lambda text: print(text, flush=True),
    )
    print(result.summary())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from lakepipe.jobs import check_spec_file

    bad = 0
    for path in args.files:
        try:
            notes = check_spec_file(path)
        except InputError as exc:
            bad += 1
            print(f"lakepipe: error: {exc}", file=sys.stderr)
            continue
        print(f"{path}: valid" + (f" ({'; '.join(notes)})" if notes else ""))
    return 2 if bad else 0


def _example(args: argparse.Namespace) -> int:
    from lakepipe.jobs import example_spec, example_specs

    if not args.name:
        for name, path in example_specs().items():
            print(f"{name:<20} {path}")
        return 0
    sys.stdout.write(example_spec(args.name).read_text())
    return 0
