"""The paper's protocol as registry choices: network, magnitude rule, controls, retraining,
prediction rule, paper evaluation, and a tiny grid of the demo's shape end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurovar.experiment import registry
from neurovar.experiment.cell import (
    _alignment,
    _Directions,
    _pooled,
    _rotated,
    _start,
    condition_shape,
    noise_module,
)
from neurovar.experiment.config import parse_config
from neurovar.experiment.registry import Shape, StructureContext
from neurovar.models import PREBLE_LAYERS, MeanLogits, PrebleCNN, layers_after

# ------------------------------------------------------------------------------ the network


def test_preble_cnn_layer_shapes_match_the_paper():
    """Mnist_v2_3C3F._layer_shapes = [(6,14,14), (16,14,14), (16,5,5), (32,), (16,), (10,)]."""
    model = PrebleCNN(rng=0)
    shapes = {}
    hooks = [dict(model.named_modules())[name].register_forward_hook(
        lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name in PREBLE_LAYERS.values()]
    model(torch.zeros(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert [shapes[PREBLE_LAYERS[i]] for i in range(5)] == [
        (6, 14, 14), (16, 14, 14), (16, 5, 5), (32,), (16,)]
    assert np.prod(shapes["tanh1"]) == 3136
    assert isinstance(model.tanh1, nn.Tanh)
    assert isinstance(PrebleCNN(activation="relu", rng=0).tanh1, nn.ReLU)


def test_layers_after_splits_at_the_noise_site():
    before, after = layers_after(PrebleCNN(rng=0), "tanh1")
    assert before == ["conv0", "conv1"]
    assert after == ["conv2", "fc3", "fc4", "fc5"]


# ------------------------------------------------------------------------------ shapes
def _ctx(n: int = 12, seed: int = 0) -> StructureContext:
    gen = np.random.default_rng(seed)
    f1 = gen.standard_normal((n, 3))
    f2 = gen.standard_normal((n, 2))
    sources = {"a": Shape(np.full(n, 1e-4), f1), "b": Shape(np.full(n, 1e-4), f2)}
    ctx = StructureContext(n_units=n, clean_trace=7.0, sources=sources,
                           source_trace={k: v.trace for k, v in sources.items()})
    ctx.pooled = _pooled(sources)
    ctx.rotated = {None: _rotated(ctx.pooled, 1), "a": _rotated(sources["a"], 2)}
    return ctx


def _cfg(**changes):
    from experiment_helpers import TINY, tiny_config

    cfg = tiny_config(**changes)
    cfg["sources"] = [{"id": "a", "family": "attack", "name": "pgd_ce", "strength": 0.1},
                      {"id": "b", "family": "attack", "name": "fgsm", "strength": 0.1}]
    assert TINY["layers"]
    return parse_config(cfg)


@pytest.mark.parametrize("condition", ["isotropic", "structured:a", "diagonal:a", "diagonal",
                                       "rotated", "rotated:a"])
def test_units_rule_gives_trace_tr_times_n(condition):
    """Paper: the trace is normalised to tr x N after the ridge (and the diagonal mask)."""
    ctx = _ctx()
    cfg = _cfg(magnitude_rule="units")
    shape = condition_shape(cfg, condition, 2.0, ctx)
    assert shape.trace == pytest.approx(2.0 * ctx.n_units, rel=1e-10)
    dense = shape.dense()
    if condition.startswith("diagonal") or condition == "isotropic":
        assert np.allclose(dense, np.diag(np.diag(dense)))
    if condition == "diagonal:a":
        full = ctx.sources["a"].dense()
        scale = 2.0 * ctx.n_units / np.trace(full)
        assert np.allclose(np.diag(dense), scale * np.diag(full))
    if condition == "structured:a":
        full = ctx.sources["a"].dense()
        assert np.allclose(dense, full * 2.0 * ctx.n_units / np.trace(full))
        assert np.all(np.diag(full) >= 1e-4)  # the ridge is in


def test_clean_trace_and_source_rules():
    ctx = _ctx()
    assert condition_shape(_cfg(magnitude_rule="clean-trace"), "isotropic", 0.5,
                           ctx).trace == pytest.approx(0.5 * 7.0)
    src = condition_shape(_cfg(magnitude_rule="source"), "structured:b", 3.0, ctx)
    assert src.trace == pytest.approx(3.0 * ctx.source_trace["b"])


def test_mix_is_the_papers_formula_after_scaling():
    """models.py lines 87-90: alpha * (normalised Sigma) + (1 - alpha) * I."""
    ctx = _ctx()
    cfg = _cfg(magnitude_rule="units", conditions=["mix:0.25:a"])
    mixed = condition_shape(cfg, "mix:0.25:a", 2.0, ctx).dense()
    full = condition_shape(cfg, "structured:a", 2.0, ctx).dense()
    assert np.allclose(mixed, 0.25 * full + 0.75 * np.eye(ctx.n_units))


def test_rotated_keeps_the_spectrum_and_changes_the_eigenvectors():
    ctx = _ctx()
    a, r = ctx.sources["a"].dense(), ctx.rotated["a"].dense()
    assert np.allclose(np.linalg.eigvalsh(a), np.linalg.eigvalsh(r))
    assert not np.allclose(a, r)


def test_noise_module_draws_the_shape_exactly():
    ctx = _ctx(n=6)
    cfg = _cfg(magnitude_rule="units")
    shape = condition_shape(cfg, "structured:a", 1.0, ctx)
    noise = noise_module(shape, cfg, seed=0)
    assert np.allclose(noise.dense_covariance().numpy(), shape.dense(), atol=1e-6)
    draws = noise(torch.zeros(40000, 6)).double().numpy()
    assert np.allclose(np.cov(draws.T), shape.dense(), atol=0.06 * shape.trace / 6)


def test_factor_form_alignment_matches_the_dense_statistics():
    import xarray as xr

    from neurovar.stats import alignment_index, top_subspace, variance_along

    gen = np.random.default_rng(3)
    n = 10
    diffs = gen.standard_normal((30, n)) @ gen.standard_normal((n, n))
    d = _Directions.from_differences(diffs)
    shape = Shape(np.full(n, 0.1), gen.standard_normal((n, 4)))
    st = type("S", (), {"targets": {"t": d}})()
    got = _alignment(shape, st)
    coords = {"unit": np.arange(n), "unit_j": np.arange(n)}
    c_t = xr.DataArray(np.cov(diffs.T), dims=("unit", "unit_j"), coords=coords)
    cov = xr.DataArray(shape.dense() * n / shape.trace, dims=("unit", "unit_j"), coords=coords)
    basis = top_subspace(c_t, 3).rename(component="direction")
    assert got["target_alignment"][0] == pytest.approx(float(variance_along(cov, basis).mean()))
    ai = alignment_index(c_t, cov, n_components=3)
    assert got["alignment_index"][0] == pytest.approx(float(ai["alignment_index"]))
    assert got["alignment_vs_chance"][0] == pytest.approx(float(ai["relative_to_chance"]))
    dense = shape.dense()
    assert shape.participation_ratio == pytest.approx(np.trace(dense) ** 2
                                                      / np.trace(dense @ dense))


# ------------------------------------------------------------------------------ regimes
def test_retrain_freezes_the_prefix_and_reinitialises_the_rest():
    from neurovar.datasets import load_mnist_embedded
    from neurovar.experiment.grid import plan
    from neurovar.models import train

    base = PrebleCNN(rng=0)
    cfg = parse_config({
        "seeds": [0], "layers": ["tanh1"], "regimes": ["retrain"], "conditions": ["none"],
        "data": {"name": "mnist_embedded", "n_train": 128, "n_fit": 16, "n_eval": 8},
        "model": {"name": "preble_cnn"},
        "targets": [{"family": "corruption", "name": "gaussian_noise", "strengths": [1]}]})
    spec = plan(cfg)[0]
    model = _start("retrain", base, cfg, spec, rng=5)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    for name in ("conv0", "conv1"):
        assert not getattr(model, name).weight.requires_grad
    for name in ("conv2", "fc3", "fc4", "fc5"):
        assert not torch.equal(getattr(model, name).weight, before[f"{name}.weight"])
    train(model, load_mnist_embedded(), epochs=1, lr=1e-3, rng=0, progress=False)
    after = model.state_dict()
    for key in ("conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias"):
        assert torch.equal(after[key], before[key])
    assert torch.equal(base.state_dict()["fc5.weight"], before["fc5.weight"])  # base untouched


def test_mean_logits_is_the_mean_of_n_noisy_passes():
    class Counter(nn.Module):
        """Adds the row index within the (folded) batch: pass i of sample j gets i*B + j."""

        def forward(self, x):
            return x.flatten(1)[:, :2] + torch.arange(x.shape[0], dtype=x.dtype)[:, None]

    x = torch.zeros(3, 1, 2, 2)
    out = MeanLogits(Counter(), 4)(x)
    # mean over passes i of (i*3 + j) = 4.5 + j
    assert torch.allclose(out[:, 0], torch.tensor([4.5, 5.5, 6.5]))
    det = nn.Linear(4, 2)
    xx = torch.rand(5, 4)
    assert torch.allclose(MeanLogits(det, 7)(xx), det(xx), atol=1e-6)


# ------------------------------------------------------------------------------ registry
def test_a_new_condition_and_magnitude_rule_are_one_registration_each(tmp_path):
    """The recipe of docs/architecture.md: register, then name it in a config."""
    name, rule = "half-identity", "fixed-total"
    registry.register_condition(registry.Condition(
        name, "noise", "identity with half the units silent", "#000000",
        shape=lambda ctx, source, param: Shape(
            np.r_[np.ones(ctx.n_units // 2), np.zeros(ctx.n_units - ctx.n_units // 2)])))
    registry.register_magnitude_rule(registry.MagnitudeRule(
        rule, "m, as it is", lambda m, ctx, s: m))
    try:
        cfg = _cfg(conditions=["none", name], magnitude_rule=rule)
        shape = condition_shape(cfg, name, 3.0, _ctx())
        assert shape.trace == pytest.approx(3.0)
        with pytest.raises(Exception, match="did you mean"):
            _cfg(conditions=["half-identty"])
    finally:
        del registry.CONDITIONS[name]
        del registry.MAGNITUDE_RULES[rule]


def test_config_names_the_unknown_and_suggests():
    from neurovar.experiment import ConfigError

    with pytest.raises(ConfigError) as err:
        _cfg(conditions=["isotropc"], regimes=["retrian"], magnitude_rule="unit")
    text = str(err.value)
    assert "did you mean 'isotropic'" in text
    assert "did you mean 'retrain'" in text
    assert "did you mean 'units'" in text


def test_positive_controls_need_a_training_regime():
    from neurovar.experiment import ConfigError

    with pytest.raises(ConfigError, match="positive control"):
        _cfg(conditions=["none", "augment-gaussian"], regimes=["test-time"])


# ------------------------------------------------------------------------------ end to end
PAPER_TINY = {
    "name": "paper-tiny", "seeds": [0, 1], "layers": ["tanh1"], "regimes": ["retrain"],
    "conditions": ["none", "isotropic", "structured", "diagonal:*", "augment-gaussian"],
    "magnitudes": [0.5, 2.0], "magnitude_rule": "units", "device": "cpu", "threads": 1,
    "data": {"name": "mnist_embedded", "n_train": 256, "n_fit": 24, "n_eval": 16},
    "model": {"name": "preble_cnn"},
    "training": {"epochs": 1, "retrain_epochs": 1, "batch_size": 64},
    "fit": {"ridge": 1e-4},
    "evaluation": {"attacks": ["apgd_ce", "pgd_dlr_targeted", "square"], "steps": 2,
                   "n_queries": 4, "n_target_classes": 1, "eot_samples": 2,
                   "n_evaluations": 2, "prediction_passes": 3, "attack_passes": 2,
                   "noise_off": False, "diagnostics": False, "paper_steps": 3,
                   "paper_restarts": 1, "paper_queries": 4, "n_record_trials": 3,
                   "n_record_stimuli": 4, "n_bootstrap": 99, "n_permutations": 99},
    "sources": [{"family": "attack", "name": "pgd_ce", "strength": 0.1, "magnitudes": [2.0]},
                {"family": "paper_corruption", "name": "motion_blur", "strength": 5,
                 "magnitudes": [0.5]}],
    "targets": [
        {"family": "attack", "protocol": "paper", "attacks": ["apgd"], "strengths": [0.05, 0.1]},
        {"family": "attack", "protocol": "paper", "attacks": ["square"],
         "strengths": [0.05, 0.1]},
        {"family": "attack", "protocol": "adaptive", "strengths": [0.05, 0.1]},
        {"family": "paper_corruption", "name": "motion_blur", "protocol": "paper",
         "strengths": [3, 5]},
        {"family": "modification", "name": "pixel_noise", "protocol": "paper",
         "strengths": [0.3, 0.5]},
    ],
}


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """The demo's shape (both protocols, both kinds of source, two magnitudes, a positive
    control) on tiny data, run and reported through the CLI."""
    from experiment_helpers import to_toml

    from neurovar.cli import main

    root = tmp_path_factory.mktemp("paper_run")
    path = root / "paper.toml"
    path.write_text(to_toml(PAPER_TINY))
    out = root / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return out


def test_paper_run_writes_both_protocols_and_the_comparison(paper_run):
    import pandas as pd
    import xarray as xr

    out = paper_run
    for name in ("results.nc", "results.csv", "report.md", "accuracy.csv",
                 "paper_comparison.csv", "claims_reproduction.csv"):
        assert (out / name).is_file(), name
    for fig in ("paper_attacks.png", "naturalistic_targets.png", "source_target_heatmap.png",
                "positive_controls.png", "magnitude_layer_sweep.png", "robustness_vs_clean.png"):
        assert (out / "figures" / fig).stat().st_size > 5000, fig
    res = xr.open_dataset(out / "results.nc")
    protocols = dict(zip(res["target"].values.tolist(), res["target_protocol"].values.tolist()))
    assert protocols == {"apgd@paper": "paper", "square@paper": "paper",
                         "adversarial_linf": "adaptive", "motion_blur@paper": "paper",
                         "pixel_noise@paper": "paper"}
    # one evaluation per image is kept beside the adaptive worst case over evaluations; for the
    # paper protocol (one evaluation) the two are the same, for adaptive it is never lower
    single, worst = res["correct_single"], res["correct"]
    paper_t = [t for t, p in protocols.items() if p == "paper"]
    assert np.array_equal(np.isnan(single.sel(target=paper_t)), np.isnan(worst.sel(target=paper_t)))
    assert (single.sel(target=paper_t).fillna(-1) == worst.sel(target=paper_t).fillna(-1)).all()
    assert (single.sel(target="adversarial_linf").fillna(1)
            >= worst.sel(target="adversarial_linf").fillna(1)).all()
    table = pd.read_csv(out / "results.csv")
    assert set(table["target_protocol"]) == {"paper", "adaptive"}
    # a source's conditions only at its own magnitude; none / positive control at both
    mags = table.groupby("condition")["magnitude"].unique().map(sorted).to_dict()
    assert mags["structured:pgd_ce"] == [2.0] and mags["structured:motion_blur"] == [0.5]
    assert mags["none"] == [0.5, 2.0] and mags["augment-gaussian"] == [0.5, 2.0]
    # noise_to_signal is the paper's tr x N over the layer's clean trace: tr N / tr(Sigma_h)
    nts = table.drop_duplicates(["seed", "condition", "magnitude"]).set_index(
        ["seed", "condition", "magnitude"])["noise_to_signal"]
    assert nts.loc[(0, "none", 0.5)] == 0
    assert nts.loc[(0, "isotropic", 2.0)] == pytest.approx(4 * nts.loc[(0, "isotropic", 0.5)],
                                                           rel=1e-6)
    comp = pd.read_csv(out / "paper_comparison.csv")
    # the published table joined: AutoPGD at eps 0.1, full (0.54), none (0.00)
    hit = comp[(comp["target"] == "apgd@paper") & np.isclose(comp["strength"], 0.1)]
    theirs = dict(zip(hit["paper_condition"], hit["theirs"]))
    assert theirs["full"] == pytest.approx(0.54) and theirs["none"] == pytest.approx(0.0)
    assert hit["ours_adaptive"].notna().all()
    # attack networks are compared on attacks only, naturalistic ones on their modification
    assert not comp[(comp["source"] == "pgd_ce")]["target"].str.contains("motion").any()
    report = (out / "report.md").read_text()
    assert "Positive controls (read first)" in report
    assert "under the paper protocol" in report and "adaptive protocol" in report


def test_positive_control_rows_carry_their_targets_protocol(paper_run):
    """The report's positive-control table names each target's protocol from the config (it
    printed 'paper' for every row, the adaptive worst case included, by default)."""
    import pandas as pd
    import xarray as xr

    res = xr.open_dataset(paper_run / "results.nc")
    protocols = dict(zip(res["target"].values.tolist(), res["target_protocol"].values.tolist()))
    claims = pd.read_csv(paper_run / "claims_reproduction.csv")
    rows = claims[claims["claim"] == "positive_control"]
    assert len(rows) > 0
    assert rows["protocol"].tolist() == [protocols[t] for t in rows["target"]]


def test_stats_command_runs_on_the_paper_run(paper_run, capsys):
    from neurovar.cli import main

    code = main(["stats", str(paper_run / "results.csv"), "--out", str(paper_run / "s.csv"),
                 "--compare", "structured:pgd_ce",
                 "isotropic", "--value", "accuracy", "--by", "regime", "target", "magnitude",
                 "--pair-on", "seed", "strength"])
    assert code == 0, capsys.readouterr()


def test_report_rebuilds_from_cells(paper_run):
    from neurovar.cli import main

    (paper_run / "report.md").unlink()
    assert main(["report", str(paper_run)]) == 0
    assert "Our numbers beside the paper's" in (paper_run / "report.md").read_text()
