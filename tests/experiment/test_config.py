"""Config validation: every problem named with its key, before any work, nothing written."""

from __future__ import annotations

import pytest
from experiment_helpers import tiny_config, to_toml

from neurovar.cli import main
from neurovar.experiment import ConfigError, load_config, shipped_configs


def test_shipped_demo_config_validates_and_covers_the_required_grid():
    assert "demo" in shipped_configs()
    cfg = load_config("demo")
    assert set(cfg.regimes) == {"test-time", "train-time", "train-time-adaptive"}
    conds = cfg.expanded_conditions()
    for c in ("none", "isotropic", "diagonal", "rotated"):
        assert c in conds
    kinds = [cfg.source(s).kind for s in cfg.source_ids]
    assert kinds.count("adversarial") >= 2 and kinds.count("naturalistic") >= 2
    assert len(cfg.seeds) >= 3
    assert [c for c in conds if c.startswith("structured:")] == [
        f"structured:{s}" for s in cfg.source_ids]


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
        ({"conditions": ["structured:nothing"]}, "key 'conditions[0]': unknown condition"),
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
