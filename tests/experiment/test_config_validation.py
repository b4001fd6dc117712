"""The experiment config through the one validation layer: strict types, rules stated as data,
combinations checked before any work, "did you mean", and the same checks for objects built in
Python (ExperimentConfig, its sections, CellSpec)."""

from __future__ import annotations

import dataclasses

import pytest
from experiment_helpers import tiny_config

from neurovar._validation import InvalidParameterError
from neurovar.experiment import ConfigError, load_config, plan
from neurovar.experiment.config import (
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    parse_config,
)
from neurovar.experiment.grid import CellSpec


def problems_of(**change):
    with pytest.raises(ConfigError) as info:
        parse_config(tiny_config(**change))
    return info.value.problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [  # issue 21: each refused before any work, naming its key
        ({"model": {"name": "resnet18_cifar"}},
         "key 'model.name': 'resnet18_cifar' takes 3x32x32 images; data 'digits' has 1x8x8"),
        ({"data": {"n_fit": 100000}}, "key 'data.n_fit': 100000 images asked for"),
        ({"data": {"n_eval": 100000}}, "key 'data.n_eval': 100000 images asked for"),
        ({"data": {"n_eval": 20}, "evaluation": {**tiny_config()["evaluation"],
                                                 "n_record_stimuli": 21}},
         "key 'evaluation.n_record_stimuli': 21 stimuli asked for"),
        ({"evaluation": {**tiny_config()["evaluation"], "n_target_classes": 20}},
         "key 'evaluation.n_target_classes': at most 9 wrong classes exist for 10 classes"),
        ({"magnitudes": [0.5, 0.5]}, "key 'magnitudes': entries must be distinct; repeated: 0.5"),
        ({"regimes": ["test-time", "test-time"]}, "key 'regimes': entries must be distinct"),
        ({"magnitudes": ["0.5"]}, "key 'magnitudes[0]': Input should be a valid number; got "
                                  "'0.5' (a number in quotes is a string"),
        ({"data": {"n_eval": "90"}}, "key 'data.n_eval': Input should be a valid integer; got "
                                     "'90'"),
        ({"data": {"n_eval": True}}, "key 'data.n_eval': Input should be a valid integer; got "
                                     "True (true/false is not a number)"),
        ({"training": {"follow_layer": 1}}, "key 'training.follow_layer': Input should be a "
                                            "valid boolean"),
        ({"magnitude": [0.5]}, "unknown key 'magnitude' (did you mean 'magnitudes'?)"),
        ({"data": {"n_evl": 5}}, "unknown key 'data.n_evl' (did you mean 'n_eval'?)"),
        ({"regimes": ["test_time"]},
         "key 'regimes[0]': unknown regime 'test_time' (did you mean 'test-time'?)"),
        ({"magnitude_rule": "unit"}, "unknown rule 'unit' (did you mean 'units'?)"),
        ({"device": "gpu"}, "key 'device': 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' is expected"),
        ({"seeds": [-1]}, "key 'seeds[0]': a non-negative int seed is expected"),
        ({"data": {"name": "mnist", "root": ".", "limit": 30, "n_fit": 100, "n_eval": 20}},
         "key 'data.n_fit': 100 images asked for; data 'mnist' (limit 30) has 30"),
    ],
)
def test_each_bad_setting_is_refused_with_its_key(change, expected):
    problems = problems_of(**change)
    assert any(expected in p for p in problems), problems


def test_numbers_are_not_coerced_but_an_int_is_a_float():
    cfg = parse_config(tiny_config(training={"epochs": 3, "finetune_epochs": 1, "lr": 1}))
    assert cfg.training.lr == 1.0 and isinstance(cfg.training.lr, float)
    with pytest.raises(ConfigError, match="'training.epochs'"):
        parse_config(tiny_config(training={"epochs": 3.0}))


def test_every_problem_is_reported_in_one_pass():
    problems = problems_of(regimes=["bogus"], magnitudes=[0.5, 0.5], layers=["nope"],
                           data={"n_eval": "90"}, bogus_key=1,
                           evaluation={**tiny_config()["evaluation"], "n_target_classes": 20})
    for key in ("regimes[0]", "'magnitudes'", "layers[0]", "data.n_eval", "bogus_key"):
        assert any(key in p for p in problems), (key, problems)
    # n_target_classes sits in the section beside a type error? no: its own section is valid
    assert any("n_target_classes" in p for p in problems), problems


def test_default_counts_are_capped_to_the_data_but_explicit_ones_refused():
    cfg = parse_config(tiny_config(data={"n_eval": 6}, evaluation={
        k: v for k, v in tiny_config()["evaluation"].items() if k != "n_record_stimuli"}))
    assert cfg.evaluation.n_record_stimuli == 50  # default: the cell records min(50, 6)
    with pytest.raises(ConfigError, match="n_record_stimuli"):
        parse_config(tiny_config(data={"n_eval": 6}))  # tiny sets 8 explicitly


def test_a_config_built_in_python_is_validated_like_toml():
    good = ExperimentConfig(**tiny_config())
    assert good == load_config(tiny_config())
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**tiny_config(regimes=("bogus",)))
    assert any("key 'regimes[0]': unknown regime 'bogus'" in p for p in info.value.problems)
    assert str(info.value).startswith("ExperimentConfig: ")
    with pytest.raises(ConfigError, match="key 'n_eval': Input should be a valid integer"):
        DataConfig(n_eval="90")
    with pytest.raises(ConfigError, match="unknown key 'stepz' \\(did you mean 'steps'\\?\\)"):
        EvaluationConfig(stepz=3)
    with pytest.raises(ConfigError, match="key 'data.n_eval'"):
        ExperimentConfig(**tiny_config(data={"n_eval": "90"}))
    # pydantic's own entry point keeps checking the types only (what CellSpec.config uses)
    assert ExperimentConfig.model_validate(good.to_dict()) == good


def test_cell_specs_are_checked_when_made():
    spec = plan(tiny_config(seeds=[0], regimes=["test-time"], conditions=["none"]))[0]
    assert spec.config().name == "tiny"
    for field, bad, expected in (
        ("cell_id", "../../etc", "a plain cell folder name"),
        ("seed", -1, "an int in \\[0, inf\\)"),
        ("regime", "bogus", "one of \\["),
        ("condition", "zz", "a registered condition"),
        ("magnitude", float("nan"), "a float in \\[0.0, 100.0\\]"),
        ("settings", "not json", "the JSON object of a resolved config"),
        ("layer", 3, "a non-empty str"),
    ):
        with pytest.raises(InvalidParameterError, match=f"'{field}' parameter of CellSpec must "
                           f"be {expected}"):
            dataclasses.replace(spec, **{field: bad})
    with pytest.raises(InvalidParameterError, match="'regime' parameter of CellSpec"):
        CellSpec(cell_id="a", seed=0, regime="bogus", condition="none", magnitude=0.0,
                 layer="relu3", settings="{}")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path):
    from neurovar.experiment import run

    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="key 'device': 'cuda' is asked for but this machine "
                       "has no CUDA device"):
        run(tiny_config(device="cuda"), out, progress=False)
    assert not out.exists()
