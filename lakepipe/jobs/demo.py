"""``lakepipe demo``: the bundled tutorial job (:file:`jobs/tutorial.yaml`) end to end in one folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakepipe.io.storage import public_url
from lakepipe.jobs.runner import JobResult, job_lake, run_job
from lakepipe.jobs.spec import example_spec, load_job


@dataclass
class DemoResult:
    root: Path
    lake: str
    job: JobResult
    lake_option: str

    def summary(self) -> str:
        lines = [
            f"lakepipe demo finished; lake: {public_url(self.lake)}",
            self.job.summary().splitlines()[0],
            "",
        ]
        lines += [f"  {s.index}. {s.kind:<17} {s.summary}  ({s.seconds:.1f} s)" for s in self.job.steps]
        lines += [
            "",
            "Where things are:",
            f"  example inputs          {self.root / 'tutorial'}",
            f"  lake (Zarr + catalog)   {public_url(self.lake)}",
            f"  BIDS derivatives        {self.root / 'derivatives'}",
            f"  group tables            {self.root / 'derivatives' / 'group'}",
            "",
            "Next:",
            f"  lakepipe {self.lake_option} catalog ls",
            f"  lakepipe {self.lake_option} plot fnm --label acuteinfarct --out fnm.png     (group mean map)",
            f"  python: lake = lakepipe.open_lake({self.lake!r}); lake.collect('afnm', atlas='Seitzman2018')",
        ]
        return "\n".join(lines)


def run_demo(
    root: str | Path = "lakepipe-demo",
    lake_url: str | None = None,
    *,
    scheduler: str | None = None,
    echo: Any = None,
    **tutorial: int,
) -> DemoResult:
    """Run the tutorial job with ``root`` as its base folder (inputs, lake, derivatives all inside).

    ``tutorial`` overrides the example sizes (``participants``, ``subjects``, ``timepoints``).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    job = load_job(example_spec("tutorial"), base=root)
    for step in job.steps:
        if step["kind"] == "tutorial":
            step.update({k: int(v) for k, v in tutorial.items() if v is not None})
    lake = job_lake(job, lake_url)
    result = run_job(job, lake=lake, scheduler=scheduler, echo=echo)
    option = (
        f"--lake {lake.url}"
        if "://" in lake.url
        else f"--lake {Path(lake.url).relative_to(Path.cwd())}"
        if Path(lake.url).is_relative_to(Path.cwd())
        else f"--lake {lake.url}"
    )
    return DemoResult(root, lake.url, result, option)
