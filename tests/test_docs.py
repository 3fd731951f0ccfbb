"""The documentation's notebook page runs as written on the tutorial lake."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lakepipe.pipelines.afnm import run_afnm
from lakepipe.pipelines.fnm import run_fnm

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_group_questions_page_runs(ingested, dask_client):
    run_afnm(ingested, "tutorial", "Seitzman2018", connectome="tutorial", client=dask_client)
    run_fnm(ingested, "tutorial", cohort="tutorial", client=dask_client)
    blocks = python_blocks(DOCS / "group-questions.md")
    assert len(blocks) >= 5
    ns: dict = {"LAKE": ingested.url}
    for block in blocks:
        exec(compile(block, str(DOCS / "group-questions.md"), "exec"), ns)
    scores, r, zmaps = ns["scores"], ns["r"], ns["zmaps"]
    assert scores.dims == ("seed", "region") and set(scores["session"].values) == {"01"}
    assert set(scores["label"].values) == {"acuteinfarct"}
    assert scores.attrs["parameters"]["weighting"] == "fractional"
    assert r.sizes["region"] == scores.sizes["region"] and np.isfinite(r.values).any()
    assert type(zmaps.data).__module__.startswith("dask")
    assert ns["group_mean"].shape == (zmaps.sizes["voxel"],)
