"""Starting a local cluster early (:meth:`Runtime.preload`, :meth:`Runtime.prestart`): workers forked
from a process that imported the method's modules (and chose the Fisher z kernel), with the workers'
BLAS settings; a failed start raises where the client is first needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: run in a fresh process: the forkserver that workers fork from is one per process
SCRIPT = textwrap.dedent(
    """
    import json, sys

    def state():  # pickled by value (defined in __main__): unpickling it imports nothing
        import sys
        from threadpoolctl import threadpool_info
        blas = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]
        fisher = sys.modules.get("lakepipe.compute.fisher")
        chosen = sorted(k or "" for k in fisher._CHOSEN) if fisher is not None else None
        # the machine code loaded before the fork runs in the worker, exactly
        ok = [fisher.self_check(k) <= k.bound for k in fisher._CHOSEN.values()] if chosen else None
        fnm = "lakepipe.methods.fnm_tasks" in sys.modules
        return {"fnm": fnm, "blas_threads": blas, "kernel": chosen, "ok": ok}

    if __name__ == "__main__":
        from lakepipe.runtime import Runtime
        if sys.argv[1] == "fail":  # a start that fails in the background thread
            runtime = Runtime(n_workers=1, memory_limit="a lot")
            runtime.prestart()
            try:
                runtime.client
            except ValueError as exc:
                print(json.dumps({"raised": type(exc).__name__}))
            finally:
                runtime.close()
            sys.exit(0)
        with Runtime(n_workers=2) as runtime:
            if sys.argv[1] == "preload":
                runtime.preload(["lakepipe.methods.fnm_tasks", "lakepipe.compute.fisher_warm"])
            runtime.prestart()
            states = list(runtime.client.run(state).values())
        print(json.dumps({"states": states}))
    """
)


def _worker_states(tmp_path, mode: str) -> dict:
    script = tmp_path / "start.py"
    script.write_text(SCRIPT)
    # a local cluster, not the tests' in-process default; no BLAS thread count of its own (a cluster
    # started in this process may have left distributed's in os.environ)
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREADS} | {"LAKEPIPE_SCHEDULER": ""}
    proc = subprocess.run(
        [sys.executable, str(script), mode],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_preloaded_workers_start_with_the_modules_and_one_blas_thread(tmp_path):
    """The forkserver imported numpy (OpenBLAS) before any worker existed: only the environment it was
    started with gives each worker one BLAS thread (the nanny's own settings come after the fork)."""
    out = _worker_states(tmp_path, "preload")
    assert len(out["states"]) == 2
    for s in out["states"]:
        assert s["fnm"] is True  # imported in the process they were forked from
        assert s["kernel"] == [""] and s["ok"] == [True], s  # the Fisher z kernel chosen there, and it runs
        assert s["blas_threads"] and all(n == 1 for n in s["blas_threads"]), s


def test_without_preload_workers_start_without_the_modules(tmp_path):
    out = _worker_states(tmp_path, "plain")
    assert [s["fnm"] for s in out["states"]] == [False, False]
    assert [s["kernel"] for s in out["states"]] == [None, None]
    assert all(s["blas_threads"] and all(n == 1 for n in s["blas_threads"]) for s in out["states"])


def test_a_failed_start_is_raised_where_the_client_is_needed(tmp_path):
    assert _worker_states(tmp_path, "fail") == {"raised": "ValueError"}
