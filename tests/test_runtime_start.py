"""Starting a local cluster early (:meth:`Runtime.preload`, :meth:`Runtime.prestart`): workers forked
from a process that imported the method's modules, with the workers' BLAS settings; a failed start
raises where the client is first needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from lakepipe.runtime import Runtime

pytestmark = pytest.mark.integration

#: run in a fresh process: the forkserver that workers fork from is one per process
SCRIPT = textwrap.dedent(
    """
    import json, sys

    def state():  # pickled by value (defined in __main__): unpickling it imports nothing
        import os, sys
        from threadpoolctl import threadpool_info
        blas = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]
        return {"fnm": "lakepipe.methods.fnm" in sys.modules, "blas_threads": blas,
                "coretype": os.environ.get("OPENBLAS_CORETYPE"), "seed": os.environ.get("PYTHONHASHSEED")}

    if __name__ == "__main__":
        from lakepipe.blas import blas_environment
        from lakepipe.runtime import Runtime
        with Runtime(n_workers=2) as runtime:
            if sys.argv[1] == "preload":
                runtime.preload(["lakepipe.methods.fnm"])
            runtime.prestart()
            states = list(runtime.client.run(state).values())
        print(json.dumps({"states": states, "coretype": blas_environment().get("OPENBLAS_CORETYPE")}))
    """
)


def _worker_states(tmp_path, mode: str) -> dict:
    script = tmp_path / "start.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "LAKEPIPE_SCHEDULER": ""},  # a local cluster, not the tests' in-process default
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_preloaded_workers_start_with_the_modules_and_one_blas_thread(tmp_path):
    out = _worker_states(tmp_path, "preload")
    assert len(out["states"]) == 2
    for s in out["states"]:
        assert s["fnm"] is True  # imported in the process they were forked from
        assert s["blas_threads"] and all(n == 1 for n in s["blas_threads"]), s  # one BLAS thread a worker
        assert s["coretype"] == out["coretype"] and s["seed"] == "6640", s


def test_without_preload_workers_start_without_the_modules(tmp_path):
    out = _worker_states(tmp_path, "plain")
    assert [s["fnm"] for s in out["states"]] == [False, False]
    assert all(n == 1 for s in out["states"] for n in s["blas_threads"])


def test_a_failed_start_is_raised_where_the_client_is_needed(monkeypatch):
    monkeypatch.setenv("LAKEPIPE_SCHEDULER", "")
    runtime = Runtime(n_workers=1, memory_limit="a lot")
    runtime.prestart()
    with pytest.raises(ValueError):
        runtime.client  # noqa: B018 - the property starts (here: joins) the cluster
    runtime.close()
