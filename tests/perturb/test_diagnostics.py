"""Tests for neurovar.perturb.diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from neurovar.perturb import (
    FrozenNoiseTwin,
    NoiseFreeTwin,
    check_robustness_result,
    eot_check,
    gradient_snr,
    is_stochastic,
    randomness_check,
    twin_transfer,
)


def test_randomness_check(det_model, noisy_model, dropout_model, test_batch, rng_guard):
    x, _ = test_batch
    with rng_guard:
        assert not is_stochastic(det_model, x)
        res = randomness_check(noisy_model, x, n_repeats=3, rng=0)
    assert bool(res.is_stochastic) and float(res.max_abs_diff) > 0
    assert 0 < float(res.prediction_flip_rate) <= 1
    assert is_stochastic(dropout_model, x)
    assert float(randomness_check(det_model, x).mean_logit_std) == 0.0


def test_gradient_snr_grows_with_eot(noisy_model, det_model, test_batch, rng_guard):
    x, y = test_batch
    with rng_guard:
        res = gradient_snr(noisy_model, x[:16], y[:16], eot_samples=(1, 16), n_repeats=12, rng=0)
    snr = res.snr.values
    assert snr[1] > 4 * snr[0]  # variance falls like 1/k: expected ratio about 16
    assert res.cosine.sel(eot_samples=16) > res.cosine.sel(eot_samples=1)
    det = gradient_snr(det_model, x[:4], y[:4], eot_samples=(1,), n_repeats=2)
    assert np.isinf(det.snr.values).all()


def test_twins_are_deterministic_and_restore_state(noisy_model, test_batch):
    x, y = test_batch
    free, frozen = NoiseFreeTwin(noisy_model), FrozenNoiseTwin(noisy_model, rng=3)
    assert not is_stochastic(free, x)
    assert not is_stochastic(frozen, x)
    assert is_stochastic(noisy_model, x)  # the original is untouched
    assert all(m.training for m in noisy_model.modules())
    res = twin_transfer(
        noisy_model,
        {"noise_free": free, "frozen": frozen},
        x[:32],
        y[:32],
        eps=0.1,
        steps=3,
        eot_samples=2,
        n_evaluations=2,
        rng=0,
    )
    assert list(res.source.values) == ["direct", "noise_free", "frozen"]
    assert bool(((res.accuracy >= 0) & (res.accuracy <= 1)).all())
    assert bool(res.direct_is_strongest) == bool(
        res.accuracy.values[0] <= res.accuracy.values[1:].min()
    )


def _fake(acc_pgd, acc_square, wc):
    eps = [0.0, 0.1, 0.3]
    return xr.Dataset(
        {
            "accuracy": (("eps", "attack"), np.array([acc_pgd, acc_square]).T),
            "worst_case_accuracy": (("eps",), np.array(wc)),
        },
        coords={"eps": eps, "attack": ["pgd_ce", "square"]},
    )


def test_check_robustness_result_flags():
    good = _fake([0.9, 0.5, 0.05], [0.9, 0.6, 0.1], [0.9, 0.5, 0.05])
    assert check_robustness_result(good, n_classes=10).flags == {
        "monotone_in_eps": True,
        "reaches_chance": True,
        "black_box_not_stronger": True,
    }
    masked = _fake([0.9, 0.8, 0.5], [0.9, 0.3, 0.0], [0.9, 0.3, 0.6])
    with pytest.warns(UserWarning, match="gradient masking"):
        flags = check_robustness_result(masked, n_classes=10).flags
    assert flags == {
        "monotone_in_eps": False,
        "reaches_chance": False,
        "black_box_not_stronger": False,
    }
    with pytest.raises(ValueError, match="'result' parameter of check_robustness_result"):
        check_robustness_result(xr.Dataset(), n_classes=10)


def test_check_judges_every_attack_on_fake_result():
    """The issue-13 case: the worst case reaches chance, CE-PGD does not and Square beats it.
    The old worst-case flags all pass; the per-attack checks name pgd_ce."""
    res = _fake([0.9, 0.845, 0.63], [0.9, 0.465, 0.27], [0.9, 0.465, 0.0])
    diag = check_robustness_result(res, n_classes=10, warn=False)
    assert diag.flags == {
        "monotone_in_eps": True,
        "reaches_chance": True,
        "black_box_not_stronger": False,
    }
    c = diag.checks
    assert diag.masked_attacks == ["pgd_ce"]
    assert not bool(c.reaches_chance.sel(attack="pgd_ce"))
    assert not bool(c.not_beaten_by_black_box.sel(attack="pgd_ce"))
    assert float(c.black_box_advantage.sel(attack="pgd_ce", eps=0.3)) == pytest.approx(0.36)
    assert float(c.max_gap.sel(attack="pgd_ce")) == pytest.approx(0.63)
    # square is weaker than the worst case too, but a black-box attack is not "masked"
    assert not bool(c.masking_suspected.sel(attack="square"))
    assert set(diag.flagged_attacks) == {"pgd_ce", "square"}
    msg = next(m for m in diag.messages if m.startswith("pgd_ce:"))
    assert "accuracy 0.63 at eps 0.3 does not reach chance (0.10)" in msg
    assert "square beats it by 0.38 at eps 0.1" in msg  # the largest advantage
    assert "gradient masking suspected" in msg
    assert not diag.ok
    with pytest.warns(UserWarning, match="pgd_ce"):
        check_robustness_result(res, n_classes=10)
    healthy = _fake([0.9, 0.5, 0.06], [0.9, 0.52, 0.08], [0.9, 0.48, 0.05])
    ok = check_robustness_result(healthy, n_classes=10)
    assert ok.ok and ok.messages == [] and ok.flagged_attacks == []


@pytest.fixture
def masked_result(det_model, saturated, test_batch):
    """The planted gradient-masking model (logits x 1e4) under the default ensemble."""
    x, y = test_batch
    from neurovar.perturb import evaluate_robustness

    model = saturated(det_model).eval()
    return evaluate_robustness(model, x, y, eps=[0.1, 0.5], rng=0, steps=10, n_queries=200)


def test_planted_masking_model_is_flagged_by_name(masked_result):
    res = masked_result
    with pytest.warns(UserWarning, match="pgd_ce"):
        diag = check_robustness_result(res, n_classes=10)
    assert "pgd_ce" in diag.masked_attacks
    assert "pgd_dlr_targeted" not in diag.masked_attacks  # the margin loss sees through it
    c = diag.checks
    assert not bool(c.near_worst_case.sel(attack="pgd_ce"))
    # the gap is a proportion of stimuli with a Wilson CI that excludes 0
    i = float(c.eps_of_max_gap.sel(attack="pgd_ce"))
    gap = c.gap_to_worst_case.sel(attack="pgd_ce", eps=i)
    assert float(c.gap_ci_low.sel(attack="pgd_ce", eps=i)) > 0
    assert float(c.gap_ci_low.sel(attack="pgd_ce", eps=i)) < float(gap)
    expected = float(res.accuracy.sel(attack="pgd_ce", eps=i) - res.worst_case_accuracy.sel(eps=i))
    assert float(gap) == pytest.approx(expected)
    assert any(m.startswith("pgd_ce:") and "gradient masking" in m for m in diag.messages)


def test_check_errors():
    with pytest.raises(ValueError, match="'n_classes' parameter of check_robustness_result"):
        check_robustness_result(_fake([1, 1, 1], [1, 1, 1], [1, 1, 1]), n_classes=1)
    with pytest.raises(ValueError, match="'result' parameter of check_robustness_result"):
        check_robustness_result("not a dataset", n_classes=10)


def test_eot_check(noisy_model, det_model, test_batch, rng_guard):
    x, y = test_batch
    kw = dict(eps=0.1, steps=5, n_evaluations=2, rng=0)
    with rng_guard:
        res = eot_check(noisy_model, x[:32], y[:32], eot_samples=(1, 4), **kw)
    assert list(res.eot_samples.values) == [1, 4] and bool(res.stochastic)
    acc = res.accuracy.values
    assert bool(res.eot_helps) == bool(acc[0] - acc[1] > 0.05)
    assert bool(res.eot_converged) == bool(acc[0] - acc[1] <= 0.05)
    assert bool((res.ci_low <= res.accuracy).all() and (res.accuracy <= res.ci_high).all())
    det = eot_check(det_model, x[:16], y[:16], eot_samples=(1, 2), **kw)
    assert not bool(det.stochastic) and "deterministic" in det.attrs["messages"]
    with pytest.raises(ValueError, match="'eot_samples' parameter of eot_check"):
        eot_check(det_model, x, y, eot_samples=(4, 2), **kw)


def test_one_definition_of_each_masking_check():
    """check_robustness_result, eot_check and the experiment's masking_diagnostics share the
    checks of perturb.masking (one definition each)."""
    from neurovar.experiment import analysis
    from neurovar.perturb import diagnostics
    from neurovar.perturb import masking as d

    for name in (
        "reaches_chance",
        "near_worst_case",
        "black_box_beats_every_gradient_attack",
        "eot_helps",
    ):
        assert getattr(analysis, name) is getattr(d, name), name
    assert diagnostics.eot_helps is d.eot_helps
    chance, tol = 0.1, 0.05
    np.testing.assert_array_equal(
        d.reaches_chance([0.1, 0.15, 0.16, np.nan], chance, tol), [True, True, False, False]
    )
    np.testing.assert_array_equal(
        d.near_worst_case([0.0, 0.05, 0.06, np.nan], tol), [True, True, False, False]
    )
    np.testing.assert_array_equal(d.eot_helps([0.0, 0.06, np.nan], tol), [False, True, False])
    # per eps (rows): gradient attacks (columns) vs the strongest black box
    grad = np.array([[0.9, 0.8], [0.5, 0.3], [0.5, np.nan]])
    bb = np.array([[0.9, 0.95], [0.2, 0.4], [0.1, 0.3]])
    np.testing.assert_allclose(d._black_box_advantage(grad, bb)[:2], [[0.0, -0.1], [0.3, 0.1]])
    np.testing.assert_array_equal(
        d.black_box_beats_every_gradient_attack(grad, bb, tol), [False, True, False]
    )


class _Quantised(torch.nn.Module):
    """Input quantised to 5 grey levels before the model: ``torch.round`` has a zero gradient
    almost everywhere, the shattered gradient of quantisation defences (Athalye et al. 2018)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


@pytest.fixture
def shattered_and_honest(det_model, test_batch):
    """The deterministic MLP with and without the planted shattered gradient, same budget."""
    from neurovar.perturb import evaluate_robustness

    x, y = test_batch
    kw = dict(eps=[0.1, 0.2, 0.5], rng=0, steps=10, n_queries=300, progress=False)
    return (evaluate_robustness(_Quantised(det_model).eval(), x, y, **kw),
            evaluate_robustness(det_model, x, y, **kw))


def test_planted_shattered_gradient_is_flagged_and_honest_network_is_not(shattered_and_honest):
    shattered, honest = shattered_and_honest
    diag = check_robustness_result(shattered, n_classes=10, warn=False)
    # every gradient attack is blind: none reaches chance and Square beats them
    assert set(diag.masked_attacks) == {"pgd_ce", "pgd_dlr_targeted"}
    c = diag.checks
    assert not bool(c.not_beaten_by_black_box.sel(attack="pgd_ce"))
    assert bool(c.black_box_beats_every_gradient_attack.any())
    assert any("beats every gradient attack" in m for m in diag.messages)
    ok = check_robustness_result(honest, n_classes=10, warn=False)
    assert ok.masked_attacks == [] and ok.ok, ok.messages


def test_reference_network_calibrates_the_gap_to_the_worst_case():
    """A gap to the worst case that an honest network evaluated the same way shows too is not
    a masking sign; the same gap without the reference is."""
    eps = [0.0, 0.1, 0.3]

    def fake(acc_pgd, wc, n=200):
        # per-stimulus outcomes with exactly these accuracies; the square attack is the
        # worst case, and pgd survives on a superset of its stimuli
        correct = np.zeros((3, 2, n), dtype=bool)
        for i in range(3):
            correct[i, 0, : round(acc_pgd[i] * n)] = True
            correct[i, 1, : round(wc[i] * n)] = True
        worst = correct.all(axis=1)
        return xr.Dataset(
            {"accuracy": (("eps", "attack"), correct.mean(-1)),
             "worst_case_accuracy": (("eps",), worst.mean(-1)),
             "correct": (("eps", "attack", "stimulus"), correct),
             "worst_case_correct": (("eps", "stimulus"), worst)},
            coords={"eps": eps, "attack": ["pgd_ce", "square"]})

    res = fake([0.9, 0.6, 0.05], [0.9, 0.45, 0.05])
    plain = check_robustness_result(res, n_classes=10, warn=False, black_box=())
    assert plain.masked_attacks == ["pgd_ce"]  # gap 0.15, CI lower bound above 0.05
    assert float(plain.checks.gap_ci_low.sel(attack="pgd_ce", eps=0.1)) > 0.05
    honest = fake([0.9, 0.58, 0.04], [0.9, 0.45, 0.04])  # the same evaluation leaves 0.13
    calibrated = check_robustness_result(res, n_classes=10, warn=False, black_box=(),
                                         reference=honest)
    assert calibrated.masked_attacks == []
    assert float(calibrated.checks.reference_gap.sel(attack="pgd_ce", eps=0.1)) == pytest.approx(
        0.13)
    with pytest.raises(ValueError, match="'reference' parameter of check_robustness_result"):
        check_robustness_result(res, n_classes=10, reference=honest.isel(eps=[0, 1]))
    # a stochastic result without a reference: the gap is reported, not judged
    noisy = res.assign_attrs(stochastic=True)
    unjudged = check_robustness_result(noisy, n_classes=10, warn=False, black_box=())
    assert unjudged.masked_attacks == [] and not bool(unjudged.checks.attrs["gap_judged"])
    assert any(m.startswith("note: pgd_ce") for m in unjudged.messages)
    judged = check_robustness_result(noisy, n_classes=10, warn=False, black_box=(),
                                     reference=fake([0.9, 0.45, 0.04], [0.9, 0.45, 0.04]))
    assert judged.masked_attacks == ["pgd_ce"]
