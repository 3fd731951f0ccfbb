"""The documentation's notebook pages run as written on the tutorial lake."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def run_page(name: str, ns: dict) -> dict:
    blocks = python_blocks(DOCS / name)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, str(DOCS / name), "exec"), ns)
    return ns


def test_group_questions_page_runs(ingested, dask_client):
    ingested.run("afnm", cohort="tutorial", atlas="Seitzman2018", connectome="tutorial", client=dask_client)
    ingested.run("fnm", connectome="tutorial", cohort="tutorial", client=dask_client)
    ns = run_page("group-questions.md", {"LAKE": ingested.url})
    scores, r, zmaps = ns["scores"], ns["r"], ns["zmaps"]
    assert scores.dims == ("seed", "region") and set(scores["session"].values) == {"01"}
    assert set(scores["label"].values) == {"acuteinfarct"}
    assert scores.attrs["parameters"]["weighting"] == "fractional"
    assert r.sizes["region"] == scores.sizes["region"] and np.isfinite(r.values).any()
    assert type(zmaps.data).__module__.startswith("dask")
    assert ns["group_mean"].shape == (zmaps.sizes["voxel"],)


@pytest.mark.integration
def test_running_analyses_page_runs(tmp_path, tutorial):
    """On a lake of its own (whatever other tests computed elsewhere): everything is computed here."""
    from lakepipe.ingest import ingest_atlas, ingest_connectome, ingest_lesions
    from lakepipe.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    ingest_lesions(lake, tutorial.bids, cohort="tutorial")
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    ingest_atlas(lake, tutorial.atlas_nifti, labels=tutorial.atlas_labels, name="Seitzman2018")
    ns = run_page("running-analyses.md", {"LAKE": lake.url, "SCHEDULER": "synchronous"})
    assert "to compute" in ns["plan"].describe()
    assert ns["result"].computed and ns["scores"].dims == ("seed", "region")
    assert ns["scores"].attrs["parameters"]["weighting"] == "binary"
    assert ns["again"].computed == []
    assert ns["motor"].outputs.sizes["seed"] == 1 and ns["zmap"].dims == ("voxel",)
    assert ns["redone"].computed and set(ns["fc"].data_vars) == {"fcgroupz", "fcgroupr"}
    runs = lake.catalog.runs()
    notebook = runs[runs["command"] == "notebook: AFNM with two weightings"]
    assert len(notebook) == 1 and notebook["status"].iloc[0] == "finished"
    # both AFNM weightings of the run context carry its one run id
    rows = lake.catalog.query(method="afnm", run_id=notebook["run_id"].iloc[0])
    assert {p["weighting"] for p in rows["params"]} == {"fractional", "voxel_count"}


@pytest.mark.integration
def test_group_statistics_page_runs(tmp_path, tutorial):
    """The LNM question of the tutorial, answered as the page answers it (the lake next to the
    tutorial folder, as `lakepipe demo` lays them out)."""
    from lakepipe.ingest import ingest_connectome, ingest_lesions
    from lakepipe.lake import Lake

    (tmp_path / "tutorial").symlink_to(tutorial.root)
    lake = Lake(str(tmp_path / "lake"))
    ingest_lesions(lake, tutorial.lnm_cases, cohort="neglect")
    ingest_lesions(lake, tutorial.lnm_controls, cohort="controls")
    ingest_connectome(lake, tutorial.connectome, name="tutorial")
    for cohort in ("neglect", "controls"):
        lake.run("fnm", cohort=cohort, connectome="tutorial")
    ns = run_page("group-statistics.md", {"LAKE": lake.url, "SCHEDULER": "synchronous"})
    assert ns["network"] == ns["truth"]["target_network"]
    assert ns["sensitive"].sum() > 0 and ns["significant"].sum() > 0 and ns["shared"].sum() > 0
    assert ns["r"] > 0.4 and ns["p"] < 0.05
