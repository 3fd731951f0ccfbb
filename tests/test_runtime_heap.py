"""The worker heap settings (:mod:`lakepipe.runtime.heap`): applied by glibc, and loaded by every
worker of the local clusters lakepipe starts."""

from __future__ import annotations

import platform

import pytest

from lakepipe.runtime import Runtime
from lakepipe.runtime.cluster import HEAP_PRELOAD
from lakepipe.runtime.heap import tune_heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_settings():
    assert tune_heap() is True


def _preloads(dask_worker):
    return [p.name for p in dask_worker.preloads]


@pytest.mark.integration
def test_local_cluster_workers_load_the_preload(monkeypatch):
    monkeypatch.setenv("LAKEPIPE_SCHEDULER", "")  # the tests' default runs in-process
    with Runtime(n_workers=2) as runtime:
        loaded = runtime.client.run(_preloads)
    assert len(loaded) == 2
    assert all(HEAP_PRELOAD in names for names in loaded.values()), loaded
