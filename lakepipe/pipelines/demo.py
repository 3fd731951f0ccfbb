"""``demo``: the main job end to end on the built-in example data.

tutorial inputs -> ingest (lesions, connectome, atlas) -> parcellate -> AFNM -> FNM -> collect,
all on one Dask cluster, then a printed summary of where everything is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lakepipe.cluster import dask_client
from lakepipe.lake import Lake

log = logging.getLogger(__name__)

COHORT = "tutorial"
CONNECTOME = "tutorial"
ATLAS = "Seitzman2018"


@dataclass
class DemoResult:
    root: Path
    lake: str
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"lakepipe demo finished; lake: {self.lake}", ""]
        lines += [f"  {name:<12} {what}  ({secs:.1f} s)" for name, what, secs in self.steps]
        lines += ["", "Where things are:"]
        lines += [f"  {k:<22} {v}" for k, v in self.outputs.items()]
        lines += [
            "",
            "Next: `lakepipe catalog ls`, or in Python: lake = lakepipe.open_lake(...); "
            "lake.collect(method='afnm', atlas='Seitzman2018')",
        ]
        return "\n".join(lines)


def run_demo(
    root: str | Path = "lakepipe-demo",
    lake_url: str | None = None,
    *,
    participants: int = 10,
    subjects: int = 12,
    timepoints: int = 60,
    scheduler: str | None = None,
) -> DemoResult:
    from lakepipe.pipelines.afnm import run_afnm
    from lakepipe.pipelines.collect import collect, write_group
    from lakepipe.pipelines.fnm import run_fnm
    from lakepipe.pipelines.ingest import ingest_atlas, ingest_connectome, ingest_lesions
    from lakepipe.pipelines.parcellate import parcellate
    from lakepipe.tutorial import write_tutorial

    root = Path(root).resolve()
    lake = Lake(lake_url or str(root / "lake"))
    res = DemoResult(root, lake.url)

    def step(name: str, fn, describe):
        t0 = time.perf_counter()
        out = fn()
        res.steps.append((name, describe(out), time.perf_counter() - t0))
        log.info("demo: %s done", name)
        return out

    paths = step(
        "tutorial",
        lambda: write_tutorial(
            root / "inputs", participants=participants, subjects=subjects, timepoints=timepoints
        ),
        lambda p: f"example inputs in {p.root}",
    )
    step("lesions", lambda: ingest_lesions(lake, paths.bids, cohort=COHORT), lambda r: r.summary())
    step(
        "connectome",
        lambda: ingest_connectome(lake, paths.connectome, name=CONNECTOME),
        lambda r: r.summary(),
    )
    step(
        "atlas",
        lambda: ingest_atlas(lake, paths.atlas_nifti, labels=paths.atlas_labels, name=ATLAS),
        lambda r: r.summary(),
    )
    bids = root / "bids"
    with dask_client(scheduler, lake_url=lake.url) as client:
        step(
            "parcellate",
            lambda: parcellate(lake, CONNECTOME, ATLAS, out_dir=bids / "group", client=client),
            lambda r: r.summary(),
        )
        step(
            "afnm",
            lambda: run_afnm(lake, COHORT, ATLAS, connectome=CONNECTOME, bids_out=bids, client=client),
            lambda r: r.summary(),
        )
        step(
            "fnm",
            lambda: run_fnm(lake, CONNECTOME, cohort=COHORT, atlas=ATLAS, bids_out=bids, client=client),
            lambda r: r.summary(),
        )
    group = step(
        "collect",
        lambda: write_group(collect(lake, "afnm", atlas=ATLAS), bids / "group"),
        lambda files: f"group table {files[0].name}",
    )
    res.outputs = {
        "tutorial inputs": str(paths.root),
        "lake (Zarr + catalog)": lake.url,
        "BIDS derivatives": str(bids),
        "group AFNM table": str(group[0]),
    }
    return res
