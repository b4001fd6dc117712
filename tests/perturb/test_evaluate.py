"""Tests for neurovar.perturb.evaluate: ensemble result, worst case, repeated evaluations, CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from neurovar.perturb import PGD, evaluate_robustness, robust_accuracy

FAST = {"steps": 5, "n_queries": 50, "n_target_classes": 2}


def test_result_structure_and_worst_case(det_model, test_batch):
    x, y = test_batch
    res = evaluate_robustness(det_model, x, y, eps=[0.0, 0.05, 0.2], rng=0, **FAST)
    assert res.correct.dims == ("eps", "attack", "example")
    assert list(res.attack.values) == ["pgd_ce", "pgd_dlr_targeted", "square"]
    assert res.sizes == {"eps": 3, "attack": 3, "example": 64}
    # worst case = example survives every attack
    np.testing.assert_array_equal(res.worst_case_correct, res.correct.all("attack"))
    assert bool((res.worst_case_accuracy <= res.accuracy.min("attack") + 1e-12).all())
    # eps 0 is clean accuracy, and accuracy falls with eps
    np.testing.assert_allclose(res.accuracy.sel(eps=0.0), float(res.clean_accuracy))
    assert float(res.worst_case_accuracy.sel(eps=0.2)) < float(res.clean_accuracy) - 0.5
    assert bool((res.ci_low <= res.worst_case_accuracy).all())
    assert bool((res.worst_case_accuracy <= res.ci_high).all())
    assert res.attrs["stochastic"] == 0 and res.attrs["n_evaluations"] == 1
    assert res.attrs["eot_samples"] == 1


def test_stochastic_model_gets_eot_and_repeated_evaluations(noisy_model, test_batch, rng_guard):
    x, y = test_batch
    with rng_guard:
        res = evaluate_robustness(
            noisy_model, x[:24], y[:24], eps=0.05, n_evaluations=4, rng=0, **FAST
        )
    assert res.attrs["stochastic"] == 1
    zero = evaluate_robustness(noisy_model, x[:24], y[:24], eps=[0.0], n_evaluations=4, rng=0)
    # eps 0: every attack reports the same clean evaluations, and so does the worst case
    np.testing.assert_allclose(zero.accuracy.values, float(zero.clean_accuracy))
    assert float(zero.worst_case_accuracy.item()) == float(zero.clean_accuracy)
    assert res.attrs["eot_samples"] == 8 and res.attrs["n_evaluations"] == 4
    assert all(m.training for m in noisy_model.modules())
    # correct = correct in every evaluation, so never above the mean fraction correct
    assert bool((res.correct <= (res.correct_fraction > 0)).all())
    assert bool((res.correct.astype(float) <= res.correct_fraction + 1e-12).all())


def test_reproducible_from_seed(noisy_model, test_batch):
    x, y = test_batch
    kw = dict(eps=0.1, n_evaluations=2, attacks=["fgsm", "pgd_ce"], steps=3)
    a = evaluate_robustness(noisy_model, x[:16], y[:16], rng=5, **kw)
    b = evaluate_robustness(noisy_model, x[:16], y[:16], rng=5, **kw)
    np.testing.assert_array_equal(a.correct, b.correct)
    np.testing.assert_array_equal(a.correct_fraction, b.correct_fraction)


def test_ensemble_exposes_gradient_masking(det_model, saturated, test_batch):
    """CE-PGD alone reports a false robustness on a saturated model; the worst case does not."""
    x, y = test_batch
    masked = saturated(det_model).eval()
    res = evaluate_robustness(masked, x, y, eps=0.1, rng=0, steps=10, n_queries=200)
    acc = res.accuracy.sel(eps=0.1)
    assert float(acc.sel(attack="pgd_ce")) > 0.9
    assert float(res.worst_case_accuracy.sel(eps=0.1)) < float(acc.sel(attack="pgd_ce")) - 0.3


def test_custom_attack_mapping(det_model, test_batch):
    x, y = test_batch
    res = evaluate_robustness(
        det_model,
        x,
        y,
        eps=[0.1],
        attacks={"mine": lambda e: PGD(det_model, eps=e, steps=3, rng=0)},
        rng=0,
    )
    assert list(res.attack.values) == ["mine"]
    assert float(res.accuracy.sel(eps=0.1, attack="mine")) < float(res.clean_accuracy)


def test_robust_accuracy_ci_and_worst_case(noisy_model, test_batch, rng_guard):
    x, y = test_batch
    atk = PGD(noisy_model, eps=0.05, steps=3, eot_samples=2, rng=0)
    with rng_guard:
        res = robust_accuracy(noisy_model, atk, x, y, n_evaluations=6, rng=1)
    k = int(res.correct.sum())
    low, high = proportion_confint(k, 64, alpha=0.05, method="wilson")
    assert float(res.accuracy) == pytest.approx(k / 64)
    assert float(res.ci_low) == pytest.approx(low) and float(res.ci_high) == pytest.approx(high)
    # worst-case counting: never above the mean per-evaluation accuracy
    assert float(res.accuracy) <= float(res.correct_fraction.mean()) + 1e-12
    beta = robust_accuracy(noisy_model, None, x, y, n_evaluations=2, method="beta", rng=1)
    assert beta.attrs["ci_method"] == "beta"


def test_robust_accuracy_clean_deterministic(det_model, test_batch):
    x, y = test_batch
    res = robust_accuracy(det_model, None, x, y, n_evaluations=1)
    with torch.no_grad():
        expected = float((det_model(x).argmax(1) == y).float().mean())
    assert float(res.accuracy) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 1.5}, r"'eps' parameter of evaluate_robustness must be a float in \[0.0, 1.0\]"),
        ({"eps": 0.1, "attacks": ["pgd_ce", "cw"]}, r"'attacks' parameter .* must be one of"),
        ({"eps": 0.1, "attacks": "all"}, r"'attacks' parameter of evaluate_robustness must be"),
        ({"eps": 0.1, "n_evaluations": 0}, r"'n_evaluations' parameter"),
        ({"eps": [0.1, 0.1]}, r"distinct values"),
        ({"eps": 0.1, "norm": "l1"}, r"'norm' parameter of evaluate_robustness"),
    ],
)
def test_evaluate_errors(kwargs, match, det_model, test_batch):
    x, y = test_batch
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(det_model, x, y, **kwargs)


def test_batches_get_their_own_random_draws(input_recorder, det_model, test_batch):
    """With batch_size, each batch of the attack draws its own random start: two identical
    batches must not get the identical start (an int seed reused per call would do that)."""
    x, y = test_batch
    x2, y2 = torch.cat([x[:16], x[:16]]), torch.cat([y[:16], y[:16]])
    rec = input_recorder(det_model).eval()
    evaluate_robustness(rec, x2, y2, eps=0.1, attacks=["pgd_ce"], steps=1, batch_size=16, rng=0)
    # forwards: 2 randomness check, 2 clean, then per attack batch (start, final), 2 evaluation
    starts = rec.seen[4:8:2]
    assert not torch.equal(starts[0], x[:16]) and not torch.equal(starts[1], x[:16])
    assert not torch.equal(starts[0], starts[1])
