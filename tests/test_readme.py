"""Every command of the README's "Using it" block works as written, in order, from a fresh work folder
(with `lakepipe` on the PATH, as the README says to set up)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands, current = [], ""
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line)  # the README's comments
        if not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


@pytest.mark.timeout(1800)  # 44 fresh processes, one after another, beside the other test stream
def test_readme_commands_work_as_written(tmp_path, dask_client):
    commands = readme_commands()
    assert len(commands) >= 20 and all(c.startswith("lakepipe ") for c in commands)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # the session's cluster instead of one local cluster per command (the README's --scheduler default)
        "LAKEPIPE_SCHEDULER": dask_client.scheduler.address,
    }
    for cmd in commands:
        proc = subprocess.run(cmd, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])
    for name in (
        "fc.png",
        "afnm.pdf",
        "fnm.svg",
        "nets.png",
        "nets.tsv",
        "clusters.tsv",
        "report.html",
        "tutorial.yaml",
    ):
        assert (work / name).stat().st_size > 0, name
    assert list((work / "derivatives").glob("sub-*/ses-*/anat/*_space-MNI152NLin6Asym_*_statmap.nii.gz"))
    assert list((work / "exported").glob("sub-*/ses-*/anat/*_desc-tmap_statmap.nii.gz"))
    assert list((work / "group").glob("group_space-*_parcelstats.tsv"))
    # nothing of the README's commands wrote outside the work folder
    assert not (ROOT / "tutorial-derivatives").exists() and not (ROOT / "jobs" / "derivatives").exists()
