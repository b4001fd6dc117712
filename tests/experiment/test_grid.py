"""Cell identity and seeds: stable, order-free, changed only by what changes the numbers."""

from __future__ import annotations

import numpy as np
import xarray as xr
from experiment_helpers import tiny_config

from neurovar.experiment import compute_cell, load_config, plan, stream_seed


def test_cell_ids_stable_and_sensitive_to_science_only():
    a = plan(load_config(tiny_config()))
    b = plan(load_config(tiny_config(name="other", device="cpu", threads=2)))
    assert [s.cell_id for s in a] == [s.cell_id for s in b]
    c = plan(load_config(tiny_config(training={"epochs": 4, "finetune_epochs": 1})))
    assert not {s.cell_id for s in a} & {s.cell_id for s in c}
    assert len({s.cell_id for s in a}) == len(a)


def test_none_condition_has_one_cell_for_all_magnitudes():
    cells = plan(load_config(tiny_config(magnitudes=[0.1, 0.5, 1.0])))
    none = [s for s in cells if s.condition == "none"]
    assert len(none) == 2 * 2  # seeds x regimes
    assert {s.magnitude for s in none} == {0.0}
    iso = [s for s in cells if s.condition == "isotropic"]
    assert len(iso) == 2 * 2 * 3


def test_stream_seeds_depend_on_keys_not_order():
    s1 = stream_seed(0, "cell", "train-time", "isotropic", 0.5, "relu3")
    s2 = stream_seed(0, "cell", "train-time", "isotropic", 0.5, "relu3")
    assert s1 == s2
    assert s1 != stream_seed(1, "cell", "train-time", "isotropic", 0.5, "relu3")
    assert s1 != stream_seed(0, "cell", "train-time", "rotated", 0.5, "relu3")
    assert stream_seed(0, "base") != stream_seed(0, "evaluation")


def test_compute_cell_reproducible_with_cold_caches(global_rng_guard):
    from neurovar.experiment import cell as cell_module

    spec = next(s for s in plan(load_config(tiny_config(seeds=[3])))
                if s.condition == "structured:pgd_ce" and s.regime == "train-time")
    first = compute_cell(spec).dataset
    cell_module._BASE.clear()
    cell_module._STRUCTURE.clear()
    second = compute_cell(spec).dataset
    xr.testing.assert_identical(first.drop_attrs(), second.drop_attrs())
    # noise on and off are both evaluated in a train-time cell, and they differ
    acc = first["accuracy"]
    assert np.isfinite(acc.sel(noise_at_test=False)).all()
    assert np.isfinite(acc.sel(noise_at_test=True)).all()


def test_cell_spec_refuses_bad_fields_naming_them():
    import dataclasses

    import pytest

    from neurovar._validation import InvalidParameterError

    spec = plan(load_config(tiny_config(seeds=[0])))[0]
    for field, value, expected in [
        ("cell_id", "", "plain cell folder name"),
        ("seed", -1, "int in"),
        ("seed", 1.5, "int"),
        ("regime", "sometimes", "one of"),
        ("condition", "structured:a:b:c", "registered condition"),
        ("condition", 3, "registered condition"),
        ("magnitude", float("nan"), "float in"),
        ("magnitude", -0.5, "float in"),
        ("layer", "", "non-empty str"),
        ("settings", None, "JSON object"),
        ("resources", {"GPU": -1}, "resource name -> amount"),
    ]:
        with pytest.raises(InvalidParameterError, match=rf"'{field}' parameter of CellSpec "
                           rf"must be .*{expected}"):
            dataclasses.replace(spec, **{field: value})
    assert dataclasses.replace(spec, magnitude=0.0).magnitude == 0.0  # 'none' cells
