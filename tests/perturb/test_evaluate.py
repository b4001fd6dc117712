"""Tests for neurovar.perturb.evaluate: ensemble result, worst case, repeated evaluations, CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from statsmodels.stats.proportion import proportion_confint

from neurovar._validation import InvalidParameterError
from neurovar.perturb import (
    FGSM,
    PGD,
    attack_names,
    evaluate_robustness,
    get_attack_factory,
    register_attack,
    robust_accuracy,
    robustness_table,
    unregister_attack,
)
from neurovar.perturb.evaluate import TABLE_COLUMNS, correct_matrix

FAST = {"steps": 5, "n_queries": 50, "n_target_classes": 2}


def test_result_structure_and_worst_case(det_model, test_batch):
    x, y = test_batch
    res = evaluate_robustness(det_model, x, y, eps=[0.0, 0.05, 0.2], rng=0, **FAST)
    assert res.correct.dims == ("eps", "attack", "stimulus")
    assert list(res.attack.values) == ["pgd_ce", "pgd_dlr_targeted", "square"]
    assert res.sizes == {"eps": 3, "attack": 3, "stimulus": 64}
    np.testing.assert_array_equal(res.stimulus_id, np.arange(64))
    np.testing.assert_array_equal(res.label, y.numpy())
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
    """The old factory(eps) form still works, with a FutureWarning."""
    x, y = test_batch
    with pytest.warns(FutureWarning, match=r"factory\(eps\)"):
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


def test_batches_get_their_own_random_draws(det_model, test_batch):
    """With batch_size, each batch of the attack draws its own random start: two identical
    batches of a deterministic model must not get identical adversarial images (an int seed
    reused per call would do that). Order-free: the attack's outputs are captured."""
    x, y = test_batch
    x2, y2 = torch.cat([x[:16], x[:16]]), torch.cat([y[:16], y[:16]])
    outputs = []

    def capturing(model, *, eps, norm, eot_samples, rng, device, steps):
        atk = PGD(model, eps=eps, norm=norm, steps=steps, eot_samples=eot_samples, rng=rng)

        def run(images, labels):
            outputs.append(atk(images, labels))
            return outputs[-1]

        return run

    evaluate_robustness(
        det_model, x2, y2, eps=0.1, attacks={"cap": capturing}, steps=1, batch_size=16, rng=0
    )
    assert len(outputs) == 2 and all(o.shape == (16, 1, 8, 8) for o in outputs)
    assert not torch.equal(outputs[0], x[:16]) and not torch.equal(outputs[1], x[:16])
    assert not torch.equal(outputs[0], outputs[1])
    # and the same rng gives the same draws again
    first = outputs[:]
    outputs.clear()
    evaluate_robustness(
        det_model, x2, y2, eps=0.1, attacks={"cap": capturing}, steps=1, batch_size=16, rng=0
    )
    assert all(torch.equal(a, b) for a, b in zip(first, outputs, strict=True))


def test_registered_attack_gets_eot_rng_and_device(noisy_model, test_batch):
    """A user-registered attack is built like the built-in ones: EOT on a stochastic model, a
    seeded numpy Generator, the device, and only the budget keywords it names."""
    x, y = test_batch
    calls = []

    @register_attack("user_fgsm")
    def factory(model, *, eps, norm, eot_samples, rng, device, steps):
        calls.append(dict(eps=eps, norm=norm, eot=eot_samples, rng=rng, device=device, steps=steps))
        return FGSM(model, eps=eps, norm=norm, eot_samples=eot_samples, rng=rng, device=device)

    try:
        assert "user_fgsm" in attack_names() and get_attack_factory("user_fgsm") is factory
        with pytest.raises(ValueError, match="already registered"):
            register_attack("user_fgsm", factory)
        kw = dict(eps=[0.0, 0.1, 0.2], attacks=["user_fgsm"], n_evaluations=2, steps=7, rng=3)
        res = evaluate_robustness(noisy_model, x[:16], y[:16], **kw)
        assert list(res.attack.values) == ["user_fgsm"]
        assert [c["eps"] for c in calls] == [0.1, 0.2]  # eps 0 is the clean evaluation
        for c in calls:
            assert c["eot"] == 8 and c["norm"] == "linf" and c["steps"] == 7
            assert isinstance(c["rng"], np.random.Generator)
            assert c["device"] == torch.device("cpu")
        # each eps gets its own stream, and the same rng reproduces the result
        assert c["rng"] is not calls[0]["rng"]
        again = evaluate_robustness(noisy_model, x[:16], y[:16], **kw)
        np.testing.assert_array_equal(res.correct, again.correct)
        # a mapping with the new signature: no FutureWarning
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            evaluate_robustness(
                noisy_model, x[:8], y[:8], eps=0.1, attacks={"f": factory}, n_evaluations=1
            )
    finally:
        unregister_attack("user_fgsm")
    assert "user_fgsm" not in attack_names()
    with pytest.raises(ValueError, match="'attacks' parameter .* must be one of"):
        evaluate_robustness(noisy_model, x, y, eps=0.1, attacks=["user_fgsm"])


def test_tags_concat_and_table(det_model, test_batch):
    x, y = test_batch
    kw = dict(eps=[0.0, 0.1], attacks=["fgsm", "pgd_ce"], steps=2, rng=0)
    a = evaluate_robustness(det_model, x, y, tags={"condition": "none", "seed": 0}, **kw)
    b = evaluate_robustness(
        det_model, x[:32], y[:32], tags={"condition": "iso", "seed": 0}, confidence_level=0.9, **kw
    )
    assert a.condition.item() == "none" and a.seed.item() == 0 and a.condition.ndim == 0
    table = robustness_table(a)
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert {"condition", "seed"} <= set(table.columns)
    assert len(table) == 1 + 2 * 3  # clean + (2 attacks + worst case) per eps
    assert set(table.attack) == {"clean", "fgsm", "pgd_ce", "worst_case"}
    assert (table.condition == "none").all() and (table.n == 64).all()
    wc = table[table.attack == "worst_case"].set_index("eps")
    np.testing.assert_allclose(wc.accuracy, a.worst_case_accuracy.values)
    np.testing.assert_allclose(wc.ci_low, a.ci_low.values)
    row = table[(table.attack == "pgd_ce") & (table.eps == 0.1)].iloc[0]
    k = int(a.correct.sel(eps=0.1, attack="pgd_ce").sum())
    low, high = proportion_confint(k, 64, alpha=0.05, method="wilson")
    assert row.n_correct == k and row.accuracy == pytest.approx(k / 64)
    assert row.ci_low == pytest.approx(low) and row.ci_high == pytest.approx(high)
    clean = table[table.attack == "clean"].iloc[0]
    assert clean.accuracy == pytest.approx(float(a.clean_accuracy))
    # b: other level, other n
    tb = robustness_table(b)
    r = tb[(tb.attack == "fgsm") & (tb.eps == 0.1)].iloc[0]
    kb = int(b.correct.sel(eps=0.1, attack="fgsm").sum())
    assert r.ci_low == pytest.approx(proportion_confint(kb, 32, alpha=0.1, method="wilson")[0])
    # results of several conditions join along the tag
    both = xr.concat([a.isel(stimulus=slice(0, 32)), b], dim="condition")
    assert list(both.condition.values) == ["none", "iso"]
    tj = robustness_table(both)
    assert len(tj) == 2 * 7 and set(tj.condition) == {"none", "iso"}
    with pytest.raises(ValueError, match="'tags' parameter"):
        evaluate_robustness(det_model, x, y, tags={"eps": 1}, **kw)
    with pytest.raises(ValueError, match="'tags' parameter"):
        evaluate_robustness(det_model, x, y, tags={"c": [1, 2]}, **kw)
    with pytest.raises(ValueError, match="'result' parameter of robustness_table"):
        robustness_table(xr.Dataset())


def test_renamed_keywords_warn_and_agree(noisy_model, det_model, test_batch):
    x, y = test_batch
    new = robust_accuracy(noisy_model, None, x, y, n_evaluations=2, confidence_level=0.9, rng=1)
    with pytest.warns(FutureWarning, match="'alpha' parameter of robust_accuracy"):
        old = robust_accuracy(noisy_model, None, x, y, n_evaluations=2, alpha=0.1, rng=1)
    assert float(old.ci_low) == float(new.ci_low) and old.attrs["confidence_level"] == 0.9
    kw = dict(eps=0.1, attacks=["fgsm"], rng=0)
    with pytest.warns(FutureWarning, match="'alpha' parameter of evaluate_robustness"):
        old = evaluate_robustness(det_model, x, y, alpha=0.2, **kw)
    new = evaluate_robustness(det_model, x, y, confidence_level=0.8, **kw)
    np.testing.assert_array_equal(old.ci_low, new.ci_low)
    with pytest.raises(TypeError, match="both 'alpha'"):
        evaluate_robustness(det_model, x, y, alpha=0.2, confidence_level=0.9, **kw)
    with pytest.warns(FutureWarning, match="'seed' parameter of correct_matrix"):
        old = correct_matrix(noisy_model, x, y, n_evaluations=3, seed=4)
    np.testing.assert_array_equal(old, correct_matrix(noisy_model, x, y, n_evaluations=3, rng=4))


def test_thread_count_restored(det_model, test_batch):
    x, y = test_batch
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate_robustness(det_model, x[:8], y[:8], eps=0.1, attacks=["fgsm"], num_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="'num_threads' parameter"):
        evaluate_robustness(det_model, x, y, eps=0.1, num_threads=0)


_THREAD_SCRIPT = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from neurovar.perturb import evaluate_robustness
model = torch.load(sys.argv[1], weights_only=False).train()
x, y = torch.load(sys.argv[1] + ".data")
res = evaluate_robustness(model, x, y, eps=[0.05, 0.1], n_evaluations=3, steps=5,
                          n_queries=40, n_target_classes=2, rng=7)
assert torch.get_num_threads() == int(sys.argv[2])
print(json.dumps({"correct": res.correct.values.astype(int).tolist(),
                  "worst": res.worst_case_accuracy.values.tolist()}))
"""


def test_results_do_not_depend_on_the_callers_thread_count(dropout_model, test_batch, tmp_path):
    """Issue 14: two runs in separate processes, with 1 and 3 intra-op threads set by the
    caller (and OMP_NUM_THREADS), give bit-identical per-stimulus outcomes."""
    x, y = test_batch
    path = tmp_path / "model.pt"
    torch.save(dropout_model, path)
    torch.save((x[:48], y[:48]), str(path) + ".data")
    script = tmp_path / "run.py"
    script.write_text(_THREAD_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    out = []
    for threads in (1, 3):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, str(script), str(path), str(threads)],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert out[0] == out[1]


def test_eval_model_judges_the_attacks_of_another_model(
    det_model, noisy_model, saturated, test_batch
):
    """``eval_model=``: the attacks run on ``model``, the images are judged on ``eval_model``."""
    x, y = test_batch
    kw = dict(eps=[0.0, 0.1], attacks=["pgd_ce"], rng=3, **FAST)
    own = evaluate_robustness(det_model, x, y, **kw)
    same = evaluate_robustness(det_model, x, y, eval_model=det_model, **kw)
    # the attacked model named as judge changes nothing but the extra attr
    assert same.attrs.pop("eval_model_stochastic") == 0
    xr.testing.assert_identical(own, same)
    # attacks on a gradient-masking twin (saturated logits), judged on the plain model: the
    # clean accuracy is the judge's, and transferred examples hurt it less than its own attack
    masked = saturated(det_model)
    transfer = evaluate_robustness(masked, x, y, eval_model=det_model, **kw)
    clean = correct_matrix(det_model, x, y, n_evaluations=1, rng=0)[0]
    np.testing.assert_array_equal(transfer.clean_correct, clean)
    assert float(transfer.accuracy.sel(eps=0.1, attack="pgd_ce")) > float(
        own.accuracy.sel(eps=0.1, attack="pgd_ce")
    )
    # a stochastic judge is evaluated n_evaluations times, the deterministic attacker gets no EOT
    noisy = evaluate_robustness(det_model, x, y, eval_model=noisy_model, n_evaluations=3, **kw)
    assert noisy.attrs["n_evaluations"] == 3 and noisy.attrs["eot_samples"] == 1
    assert noisy.attrs["stochastic"] == 0 and noisy.attrs["eval_model_stochastic"] == 1
    with pytest.raises(
        InvalidParameterError, match="'eval_model' parameter of evaluate_robustness"
    ):
        evaluate_robustness(det_model, x, y, eval_model="det", **kw)
