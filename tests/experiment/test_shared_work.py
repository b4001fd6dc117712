"""Shared work (a seed's base network, a seed and layer's structure) as tasks the cells depend
on: computed once per run, in-process and on a dask cluster, results identical (issue 22)."""

from __future__ import annotations

import dataclasses
import importlib
from collections import Counter

import executor_cells as ec
import numpy as np
import pytest
import shared_cells as sc

from neurovar._validation import InvalidParameterError
from neurovar.experiment.executor import local_cluster, run_cells

distributed = pytest.importorskip("distributed")

FUNCS = dict(compute=sc.compute, writer=ec.writer, done=ec.done, shared=sc.shared)


@pytest.fixture(scope="module")
def client():
    cluster = local_cluster(2)
    try:
        c = distributed.Client(cluster)
        try:
            c.run(importlib.import_module, "shared_cells")
            yield c
        finally:
            c.close()
    finally:
        cluster.close()


def _expected(specs) -> Counter:
    out = Counter()
    for s in specs:
        out[f"base-{s.seed}"] = 1
        out[f"structure-{s.seed}-{s.layer}"] = 1
        out[f"cell-{s.cell_id}"] += 1
    return out


def _check_values(specs, out) -> None:
    for s in specs:
        ds = ec.load(out, s.cell_id)
        b = sc.base(s.seed, str(out / "scratch-log"))
        np.testing.assert_array_equal(ds["base"].values, b)
        np.testing.assert_array_equal(ds["structure"].values,
                                      sc.structure(s.seed, s.layer, str(out / "scratch-log"), b))


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_each_shared_task_runs_once_and_cells_get_its_result(where, client, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (tmp_path / "out" / "scratch-log").mkdir(parents=True)
    specs = sc.grid(log)
    outcome = run_cells(specs, tmp_path / "out", progress=False,
                        scheduler=client if where == "cluster" else None, **FUNCS)
    assert outcome.ok and outcome.completed == [s.cell_id for s in specs]
    assert Counter(sc.runs(log)) == _expected(specs)  # once each, not once per cell or worker
    _check_values(specs, tmp_path / "out")


def test_cluster_equals_in_process_with_shared_work(client, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    for out in (here, there):
        (out / "log").mkdir(parents=True)
    a = run_cells(sc.grid(here / "log"), here, progress=False, **FUNCS)
    b = run_cells(sc.grid(there / "log"), there, progress=False, scheduler=client, **FUNCS)
    assert a.ok and b.ok
    for s in sc.grid(here / "log"):
        x, y = ec.load(here, s.cell_id), ec.load(there, s.cell_id)
        for name in x.data_vars:
            assert x[name].values.tobytes() == y[name].values.tobytes(), (s.cell_id, name)


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_failed_shared_task_fails_its_cells_only_once(where, client, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    good = sc.grid(log, seeds=(0,))
    bad = sc.grid(log, seeds=(1,), fail_base=True)
    outcome = run_cells(good + bad, tmp_path / "out", progress=False,
                        scheduler=client if where == "cluster" else None, **FUNCS)
    assert sorted(outcome.failed) == sorted(s.cell_id for s in bad)
    assert outcome.completed == [s.cell_id for s in good]
    assert all("planted failure in the base of seed 1" in tb for tb in outcome.failed.values())
    counts = Counter(sc.runs(log))
    assert counts["base-1"] == 1 and not any(k.startswith("structure-1") for k in counts)
    assert not any(k.startswith("cell-c1") for k in counts)


def test_resume_runs_shared_work_only_for_missing_cells(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    specs = sc.grid(log)
    first = [s for s in specs if s.seed == 0]
    assert run_cells(first, tmp_path / "out", progress=False, **FUNCS).ok
    for p in log.iterdir():
        p.unlink()
    outcome = run_cells(specs, tmp_path / "out", progress=False, **FUNCS)
    assert outcome.skipped == [s.cell_id for s in first]
    assert not any(name.endswith("-0") or "-0-" in name for name in sc.runs(log))


def test_shared_plan_with_unknown_dependency_is_refused(tmp_path):
    def broken(specs):
        tasks, needs = sc.shared(specs)
        return [dataclasses.replace(t, deps=("nope",)) if t.deps else t for t in tasks], needs

    with pytest.raises(InvalidParameterError, match="nope"):
        run_cells(sc.grid(tmp_path), tmp_path / "out", progress=False,
                  **{**FUNCS, "shared": broken})


# ------------------------------------------------------------------ the experiment's shared work
def test_experiment_shared_work_one_base_per_seed_one_structure_per_seed_and_layer():
    from experiment_helpers import tiny_config

    from neurovar.experiment import cell, load_config, plan

    cfg = load_config(tiny_config(seeds=[0, 1], layers=["relu2", "relu3"]))
    specs = plan(cfg)
    tasks, needs = cell.shared_work(specs, cache_dir="/nowhere")
    bases = [t for t in tasks if t.func is cell.prepare_base]
    structures = [t for t in tasks if t.func is cell.prepare_structure]
    assert len(bases) == 2 and len(structures) == 4 and len(tasks) == 6
    by_key = {t.key: t for t in tasks}
    for s in specs:
        kw = needs[s.cell_id]
        assert set(kw) == {"base", "structure"}
        st = by_key[kw["structure"]]
        assert st.deps == (kw["base"],)
        assert (st.args[0].seed, st.args[0].layer) == (s.seed, s.layer)
        assert by_key[kw["base"]].args[0].seed == s.seed


def test_structure_holds_every_rotation_once_for_all_magnitudes_and_regimes():
    """The rotated controls are drawn when the seed and layer's structure is built, each from its
    own stream, so every magnitude and regime reads the same rotation (and nothing mutates the
    shared structure)."""
    from experiment_helpers import tiny_config

    from neurovar.experiment import cell, load_config, plan
    from neurovar.experiment.grid import stream_seed

    cfg = load_config(tiny_config(seeds=[0], conditions=["rotated", "rotated:pgd_ce"],
                                  magnitudes=[0.5, 1.0]))
    cell.clear_caches()
    spec = plan(cfg)[0]
    st = cell.prepare_structure(spec, cell.prepare_base(spec))
    assert set(st.ctx.rotated) == {None, "pgd_ce"}
    want = cell._rotated(st.ctx.sources["pgd_ce"], stream_seed(0, "fit", "rotated", "relu3",
                                                               "pgd_ce"))
    np.testing.assert_array_equal(st.ctx.rotated["pgd_ce"].factors, want.factors)
    shapes = [cell.condition_shape(cfg, s.condition, s.magnitude, st.ctx)
              for s in plan(cfg) if s.condition == "rotated"]
    assert len(shapes) == 4  # 2 regimes x 2 magnitudes
    ref = shapes[0].factors / np.sqrt(shapes[0].trace)
    for sh in shapes[1:]:
        np.testing.assert_allclose(sh.factors / np.sqrt(sh.trace), ref, rtol=1e-12)
    cell.clear_caches()


def test_cached_structure_of_a_config_without_rotations_gains_them():
    """Conditions are not science settings: a structure cached for a config without a rotated
    control is completed (not mutated) for one with it, equal to building it anew."""
    from experiment_helpers import tiny_config

    from neurovar.experiment import cell, load_config, plan

    cell.clear_caches()
    plain = plan(load_config(tiny_config(seeds=[0], conditions=["none", "structured"])))[0]
    rot = plan(load_config(tiny_config(seeds=[0], conditions=["rotated"])))[0]
    base = cell.prepare_base(plain)
    first = cell.prepare_structure(plain, base)
    assert first.ctx.rotated == {}
    completed = cell.prepare_structure(rot, base)
    assert first.ctx.rotated == {} and set(completed.ctx.rotated) == {None}
    cell.clear_caches()
    fresh = cell.prepare_structure(rot, base)
    np.testing.assert_array_equal(completed.ctx.rotated[None].factors,
                                  fresh.ctx.rotated[None].factors)
    cell.clear_caches()
