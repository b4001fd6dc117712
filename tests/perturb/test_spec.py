"""One perturbation interface: sources apply what the primitives apply; targets score them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurovar.perturb import corrupt, evaluate_robustness, modify
from neurovar.perturb.corruptions import MODIFICATIONS
from neurovar.perturb.evaluate import correct_matrix
from neurovar.perturb.spec import Perturbation, TargetSpec, evaluate_target, perturbation_names


def test_names_per_family():
    assert "pgd_ce" in perturbation_names("attack")
    assert "gaussian_noise" in perturbation_names("corruption")
    assert "rotation" in perturbation_names("modification")


def test_corruption_and_modification_apply_the_primitives(test_batch):
    x, _ = test_batch
    torch.testing.assert_close(Perturbation("corruption", "gaussian_noise", 3).apply(x, rng=5),
                               corrupt(x, "gaussian_noise", severity=3, rng=5))
    torch.testing.assert_close(Perturbation("modification", "rotation", 20).apply(x, rng=5),
                               modify(x, "rotation", strength=20, rng=5))


def test_attack_source_stays_in_its_ball(det_model, test_batch):
    x, y = test_batch
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        adv = Perturbation("attack", "pgd_ce", eps, norm=norm, steps=5).apply(
            x, y, model=det_model, rng=0)
        d = (adv - x).flatten(1)
        size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
        assert float((det_model(adv).argmax(1) == y).float().mean()) < float(
            (det_model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("bad", [
    dict(family="attack", name="pgd_ce", strength=1.5),
    dict(family="corruption", name="gaussian_noise", strength=7),
    dict(family="corruption", name="nope", strength=1),
    dict(family="other", name="x", strength=1),
    dict(family="modification", name="rotation", strength=float("nan")),
])
def test_bad_specs_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        Perturbation(**bad)


def test_attack_target_is_the_ensemble_worst_case(det_model, test_batch):
    x, y = test_batch
    target = TargetSpec("attack", "ensemble", (0.05, 0.1), attacks=("fgsm", "pgd_ce"))
    res = evaluate_target(det_model, x, y, target, steps=3, rng=0)
    ref = evaluate_robustness(det_model, x, y, eps=[0.05, 0.1], attacks=["fgsm", "pgd_ce"],
                              steps=3, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(res["correct"].values, ref["worst_case_correct"].values)
    assert (res["accuracy"].values <= res["attack_accuracy"].min("attack").values + 1e-12).all()


def test_corruption_target_is_accuracy_under_it(det_model, test_batch):
    x, y = test_batch
    target = TargetSpec("corruption", "gaussian_noise", (1, 5))
    res = evaluate_target(det_model, x, y, target, rng=0)
    gen = np.random.default_rng(0)
    for i, s in enumerate((1, 5)):
        xc = corrupt(x, "gaussian_noise", severity=s, rng=gen)
        mat = correct_matrix(det_model, xc, y, n_evaluations=1, rng=int(gen.integers(2**62)))
        np.testing.assert_allclose(res["correct"].values[i], mat.mean(axis=0))
    assert res.attrs["outcome"] == "mean_over_evaluations"


def test_one_strength_rule_with_and_without_the_clean_point():
    """spec and the experiment config read one rule; only the clean point differs."""
    from neurovar.perturb.spec import strength_violation

    # eps 0 is the clean point of a library sweep, not a target of an experiment
    assert strength_violation("attack", "pgd_ce", "linf", 0.0) is None
    assert strength_violation("attack", "pgd_ce", "linf", 0.0, clean_ok=False) == (
        "an eps in (0, 1] for norm 'linf'"
    )
    for clean_ok in (True, False):
        assert strength_violation("attack", "pgd_ce", "linf", 1.5, clean_ok=clean_ok)
        assert strength_violation("attack", "pgd_ce", "l2", 1.5, clean_ok=clean_ok) is None
        assert strength_violation("attack", "pgd_ce", "linf", -0.1, clean_ok=clean_ok)
        assert strength_violation("corruption", "fog", "linf", 6, clean_ok=clean_ok)
    name, (_, (low, high), identity) = next(iter(MODIFICATIONS.items()))
    assert strength_violation("modification", name, "linf", identity) is None
    assert "(no change)" in strength_violation("modification", name, "linf", identity, clean_ok=False)
    assert strength_violation("modification", name, "linf", high + 1.0)
    # the library applies it: Perturbation accepts eps 0 and refuses 1.5 with the rule's words
    assert Perturbation("attack", "fgsm", 0.0).strength == 0.0
    with pytest.raises(ValueError, match=r"an eps in \[0, 1\] for norm 'linf'"):
        Perturbation("attack", "fgsm", 1.5)


def test_one_default_number_of_steps():
    """The attack, the evaluation, the perturbation spec and the experiment config share one
    default budget."""
    import inspect

    from neurovar.experiment.config import EvaluationConfig
    from neurovar.perturb import PGD
    from neurovar.perturb._defaults import DEFAULT_STEPS

    def default(f):
        return inspect.signature(f).parameters["steps"].default

    for f in (PGD.__init__, evaluate_robustness, evaluate_target):
        assert default(f) == DEFAULT_STEPS, f
    assert Perturbation("attack", "pgd_ce", 0.1).steps == DEFAULT_STEPS
    assert EvaluationConfig().steps == DEFAULT_STEPS
