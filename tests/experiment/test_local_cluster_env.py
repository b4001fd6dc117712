"""local_cluster starts its workers without MALLOC_TRIM_THRESHOLD_ (setting it at all switches
off glibc's dynamic mmap threshold: 1.7x the CPU per cell, benchmarks/results/grid.md)."""

from __future__ import annotations

import pytest

from neurovar.experiment.executor import local_cluster


def _fake_cluster(monkeypatch) -> dict:
    import distributed
    from distributed.nanny import _get_env_variables

    seen: dict = {}

    class Fake:
        def __init__(self, **kwargs):
            # what a Nanny started now would put into its worker's environment
            seen["env"] = _get_env_variables("distributed.nanny.pre-spawn-environ")

    monkeypatch.setattr(distributed, "LocalCluster", Fake)
    return seen


def test_workers_start_without_malloc_trim_threshold(monkeypatch):
    seen = _fake_cluster(monkeypatch)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    local_cluster(1)
    assert "MALLOC_TRIM_THRESHOLD_" not in seen["env"]
    assert seen["env"].get("OMP_NUM_THREADS") == "1"  # dask's other settings are kept


def test_an_inherited_malloc_trim_threshold_is_warned_about(monkeypatch):
    _fake_cluster(monkeypatch)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with pytest.warns(RuntimeWarning, match="MALLOC_TRIM_THRESHOLD_ is set"):
        local_cluster(1)
