"""Config validation: every problem named with its key, before any work, nothing written."""

from __future__ import annotations

import pytest
from experiment_helpers import tiny_config, to_toml

from neurovar.cli import main
from neurovar.experiment import ConfigError, load_config, shipped_configs


def test_shipped_demo_config_is_the_paper_protocol_at_a_small_budget():
    assert "demo" in shipped_configs()
    cfg = load_config("demo")
    assert set(cfg.regimes) == {"retrain"} and cfg.model.name == "preble_cnn"
    assert cfg.magnitude_rule == "units" and cfg.fit.ridge == 1e-4
    assert cfg.evaluation.prediction_passes == 10 and cfg.layers == ("tanh1",)
    conds = cfg.expanded_conditions()
    kinds = [cfg.source(s).kind for s in cfg.source_ids]
    assert kinds.count("adversarial") >= 1 and kinds.count("naturalistic") >= 1
    for s in cfg.source_ids:  # full and diagonal of every source, identity and none
        assert f"structured:{s}" in conds and f"diagonal:{s}" in conds
    assert "none" in conds and "isotropic" in conds
    assert any(c.startswith("augment-") for c in conds)  # a positive control
    assert {t.protocol for t in cfg.targets} == {"paper", "adaptive"}
    assert len(cfg.seeds) >= 3


def test_shipped_digits_config_keeps_the_first_grid():
    cfg = load_config("digits")
    assert set(cfg.regimes) == {"test-time", "train-time", "train-time-adaptive"}
    conds = cfg.expanded_conditions()
    for c in ("none", "isotropic", "diagonal", "rotated"):
        assert c in conds
    kinds = [cfg.source(s).kind for s in cfg.source_ids]
    assert kinds.count("adversarial") >= 2 and kinds.count("naturalistic") >= 2
    assert [c for c in conds if c.startswith("structured:")] == [
        f"structured:{s}" for s in cfg.source_ids]


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_every_shipped_grid_carries_a_positive_control(name):
    """A null result is only worth reporting from a run that can show a gain: every shipped
    grid trains at least one positive control (augment-*) with a target it should help."""
    import tomllib

    raw = tomllib.loads(shipped_configs()[name].read_text())
    controls = [c for c in raw["conditions"] if c.startswith("augment-")]
    assert controls, name
    targets = {(t["family"], t.get("name")) for t in raw["targets"]}
    for c in controls:
        if c == "augment-gaussian":
            assert {("corruption", "gaussian_noise"), ("modification", "pixel_noise")} & targets
        else:
            assert any(f == "attack" for f, _ in targets)


def test_shipped_preble2026_config_validates_with_a_data_root(tmp_path):
    import sys

    from neurovar.experiment.config import CONFIG_DIR, parse_config

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads((CONFIG_DIR / "preble2026.toml").read_text())
    data["data"]["root"] = str(tmp_path)
    cfg = parse_config(data)
    assert cfg.data.name == "fashion_mnist" and len(cfg.seeds) == 10
    assert cfg.evaluation.paper_steps == 100 and cfg.evaluation.paper_restarts == 5
    assert {s.magnitudes for s in cfg.sources} == {(2.0,), (0.5,)}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"evaluation": {"steps": "ten"}}, "key 'evaluation.steps'"),
        ({"layers": ["nope"]}, "key 'layers[0]': the model has no layer 'nope'"),
        ({"sources": [{"family": "attack", "name": "pgdx", "strength": 0.1}]},
         "key 'sources[0].name': unknown attack 'pgdx'"),
        ({"targets": [{"family": "corruption", "name": "fogg", "strengths": [1]}]},
         "key 'targets[0].name': unknown corruption 'fogg'"),
        ({"targets": [{"family": "corruption", "name": "fog", "strengths": [7]}]},
         "key 'targets[0].strengths[0]': a severity"),
        ({"regimes": ["sometimes"]}, "key 'regimes[0]': unknown regime 'sometimes'"),
        ({"conditions": ["structured:nothing"]}, "key 'conditions[0]': unknown source 'nothing'"),
        ({"conditions": ["isotropc"]}, "did you mean 'isotropic'"),
        ({"magnitudes": [-1.0]}, "key 'magnitudes'"),
        ({"data": {"name": "cifar10"}}, "key 'data.root'"),
        ({"seeds": [0, 0]}, "key 'seeds'"),
    ],
)
def test_config_errors_name_the_key(change, key):
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config(**change))
    assert any(key in p for p in info.value.problems), info.value.problems


def test_all_problems_reported_at_once():
    bad = tiny_config(bogus=1, layers=["nope"], regimes=["sometimes"])
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert len(info.value.problems) >= 3


def test_cli_config_error_exit_2_one_line_each_nothing_written(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(tiny_config(layers=["nope"], bogus=3)))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("neurovar run: ") for line in err)
    assert any("'bogus'" in line for line in err) and any("'nope'" in line for line in err)
    assert not out.exists()


def test_malformed_toml_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("seeds = [0, 1\nname = 'x'\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "malformed TOML" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_config_name_lists_shipped(tmp_path, capsys):
    assert main(["run", "no-such-config", "--out", str(tmp_path / "o")]) == 2
    assert "demo" in capsys.readouterr().err


def test_a_folder_or_file_named_like_a_shipped_config_does_not_hijack_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "digits").write_text("")  # an empty file, not a TOML config
    assert load_config("demo").name == "demo"
    assert load_config("digits").name == "digits"
    mine = tmp_path / "demo.toml"
    mine.write_text('name = "mine"\nconditions = ["none", "isotropic"]\n[[targets]]\n'
                    'family = "corruption"\nname = "fog"\nstrengths = [1]\n')
    assert load_config(str(mine)).name == "mine"
