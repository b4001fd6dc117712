"""RobustBench ``model_info`` export of a finished run (``neurovar report DIR --robustbench``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from neurovar._validation import InvalidParameterError
from neurovar.cli import main
from neurovar.experiment.robustbench import (
    CIFAR10C_CORRUPTIONS,
    SEVERITIES,
    cifar10c_mean,
    export_robustbench,
    format_eps,
)

# RobustBench's ModelInfo fields (robustbench/utils.py), in its order
MODEL_INFO = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset",
              "venue", "architecture", "eps", "clean_acc", "reported")


def test_format_eps_and_the_cifar10c_mean():
    assert format_eps(8 / 255) == "8/255" and format_eps(0.5) == "0.5"
    assert format_eps(0.1) == "0.1" and format_eps(0.031) == "0.031"
    rng = np.random.default_rng(0)
    full = {(c, s): float(rng.uniform()) for c in CIFAR10C_CORRUPTIONS for s in SEVERITIES}
    mean, partial, n = cifar10c_mean(full)
    assert n == 75 and mean == pytest.approx(np.mean(list(full.values()))) and mean == partial
    # per-corruption means averaged = the plain mean (equal severities): RobustBench's number
    per_corruption = [np.mean([full[(c, s)] for s in SEVERITIES]) for c in CIFAR10C_CORRUPTIONS]
    assert mean == pytest.approx(np.mean(per_corruption))
    some = {k: v for k, v in full.items() if k[0] == "gaussian_noise"}
    some[("rotation", 1)] = 0.0  # not a CIFAR-10-C pair: ignored
    mean, partial, n = cifar10c_mean(some)
    assert mean is None and n == 5
    assert partial == pytest.approx(np.mean([full[("gaussian_noise", s)] for s in SEVERITIES]))


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    dest = tmp_path_factory.mktemp("rb")
    assert main(["report", str(out), "--robustbench", str(dest)]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        results = ds.load()
    return out, dest, results


def _load(path):
    return json.loads(path.read_text())


def test_layout_and_schema(exported):
    _, dest, results = exported
    linf = sorted((dest / "digits" / "Linf").glob("*.json"))
    corr = sorted((dest / "digits" / "corruptions").glob("*.json"))
    assert linf and corr and not (dest / "digits" / "L2").exists()
    # one model per (regime, condition, magnitude, layer, noise_at_test) that was evaluated
    # (finite clean accuracy; 'none' once, not per magnitude); the tiny config has 2 Linf eps
    models = {p.stem for p in corr}
    assert len(linf) == 2 * len(models)
    clean = results["clean_accuracy"].mean("seed", skipna=True).to_dataframe().reset_index()
    clean = clean[np.isfinite(clean["clean_accuracy"])]
    first_mag = float(results["magnitude"].values[0])
    clean = clean[(clean["condition"] != "none") | (clean["magnitude"] == first_mag)]
    expected = {(r.regime, r.condition, float(r.magnitude), r.layer, bool(r.noise_at_test))
                for r in clean.itertuples()}
    exported = set()
    for path in corr:
        nv = _load(path)["neurovar"]
        exported.add((nv["regime"], nv["condition"], nv["magnitude"], nv["layer"],
                      nv["noise_at_test"]))
    assert exported == expected
    for path in linf + corr:
        data = _load(path)
        assert list(data)[: len(MODEL_INFO)] == list(MODEL_INFO)
        assert data["dataset"] == "digits" and data["additional_data"] is False
        assert data["number_forward_passes"] == 1 and data["architecture"] == "SmallCNN"
        assert float(data["clean_acc"]) == pytest.approx(
            100 * np.mean(list(data["neurovar"]["clean_acc_per_seed"].values())), abs=0.006)
        assert "neurovar evaluation" in data["footnote"]
        nv = data["neurovar"]
        assert nv["randomized"] == (nv["noise_at_test"] and nv["condition"] != "none")
        assert ("randomised model" in data["footnote"]) == nv["randomized"]


def test_robust_accuracy_and_attacks_match_the_results(exported):
    _, dest, results = exported
    for path in sorted((dest / "digits" / "Linf").glob("*.json")):
        data = _load(path)
        nv = data["neurovar"]
        assert data["autoattack_acc"] is None  # the ensemble is not AutoAttack
        assert data["eps"] == format_eps(nv["eps_value"]) and nv["eps_value"] in (0.05, 0.1)
        sel = dict(regime=nv["regime"], condition=nv["condition"], magnitude=nv["magnitude"],
                   layer=nv["layer"], noise_at_test=nv["noise_at_test"], target=nv["target"])
        acc = results["accuracy"].sel(sel)
        k = int(np.flatnonzero(np.isclose(
            results["strength_value"].sel(target=nv["target"]).values, nv["eps_value"]))[0])
        expect = float(np.nanmean(acc.isel(strength=k).values))
        assert nv["robust_acc"] == pytest.approx(expect)
        assert data["external"] == f"{100 * expect:.2f}"
        assert nv["attacks"] == ["pgd_ce", "pgd_dlr_targeted", "square"]
        assert nv["attacks"][0] in data["footnote"]
        # the ensemble's per-image worst case is at most every single attack's accuracy
        for a in nv["attacks"]:
            assert nv["robust_acc"] <= nv["attack_acc"][a] + 1e-12
        if nv["randomized"]:
            assert nv["eot_samples"] == 2 and nv["n_evaluations"] == 2


def test_corruptions_are_incomplete_here_and_summarised_as_robustbench(exported):
    _, dest, results = exported
    table = pd.read_csv(dest / "digits" / "corruptions" / "unaggregated_results.csv",
                        header=[0, 1], index_col=0)  # as RobustBench reads it
    assert list(dict.fromkeys(table.columns.get_level_values(0))) == list(CIFAR10C_CORRUPTIONS)
    assert table.shape[1] == 75
    for path in sorted((dest / "digits" / "corruptions").glob("*.json")):
        data = _load(path)
        nv = data["neurovar"]
        assert data["eps"] is None and data["corruptions_acc"] is None  # 2 of 75 pairs
        assert nv["n_pairs"] == 2 and not nv["complete"] and "only 2 of the 75" in data["footnote"]
        row = table.loc[path.stem]
        got = {(c, int(s)): v for (c, s), v in row.items() if math.isfinite(v)}
        assert set(got) == {("gaussian_noise", 1), ("gaussian_noise", 3)}
        sel = dict(regime=nv["regime"], condition=nv["condition"], magnitude=nv["magnitude"],
                   layer=nv["layer"], noise_at_test=nv["noise_at_test"],
                   target="gaussian_noise")
        acc = results["accuracy"].sel(sel)
        for k, sev in enumerate((1, 3)):
            expect = float(np.nanmean(acc.isel(strength=k).values))
            assert got[("gaussian_noise", sev)] == pytest.approx(expect)
            assert nv["accuracy"][f"gaussian_noise/{sev}"] == pytest.approx(expect)
        assert nv["corruptions_acc_partial"] == pytest.approx(np.mean(list(got.values())))


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    with pytest.raises(InvalidParameterError, match="'run_dir' parameter of export_robustbench"):
        export_robustbench(tmp_path)
    assert main(["report", str(tmp_path), "--robustbench"]) == 2
    assert "finished run folder" in capsys.readouterr().err
    assert not (tmp_path / "robustbench").exists()
