"""Tests for neurovar.perturb.diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurovar.perturb import (
    FrozenNoiseTwin,
    NoiseFreeTwin,
    check_robustness_result,
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
