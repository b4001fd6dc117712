"""The modules compose into the paper's pipeline: perturbations -> fitted noise covariance ->
injected structured noise (and matched controls) -> recording -> statistics -> robustness."""

import numpy as np
import pytest
import xarray as xr

from neurovar import stats
from neurovar.datasets import load_digits
from neurovar.models import SmallCNN, train
from neurovar.noise import (
    CovarianceNoise,
    collect_layer_activations,
    fit_perturbation_covariance,
    inject_noise,
    isotropic_control,
    layer_total_variance,
    match_total_variance,
    rotate_spectrum,
)
from neurovar.perturb import PGD, evaluate_robustness
from neurovar.record import record_activations

LAYER = "fc1"  # 64 units, before the ReLU: noise is not rectified away


@pytest.fixture(scope="module")
def setup():
    data = load_digits(rng=0)
    model = SmallCNN(rng=0)
    train(model, data, epochs=4, rng=0, progress=False)
    x, y = data.x_test[:96], data.y_test[:96]
    adv = PGD(model, eps=0.1, steps=5, rng=0)(x, y)
    return model, x, y, adv


def test_structured_noise_lies_along_adversarial_directions(setup, global_rng_guard):
    model, x, y, adv = setup
    cov = fit_perturbation_covariance(model, x, adv, layer=LAYER, method="difference")
    assert cov.dims == ("unit", "unit_j") and cov.sizes["unit"] == 64
    total = 0.5 * layer_total_variance(model, x, layer=LAYER)  # noise = 0.5 x the signal trace
    structured = match_total_variance(cov, total)
    controls = {
        "structured": structured,
        "isotropic": isotropic_control(structured),
        "rotated": rotate_spectrum(structured, rng=0),
    }
    for c in controls.values():
        np.testing.assert_allclose(float(np.trace(np.asarray(c))), total, rtol=1e-10)

    d = collect_layer_activations(model, adv, layer=LAYER) - collect_layer_activations(
        model, x, layer=LAYER
    )
    directions = xr.DataArray(d.flatten(1).numpy(), dims=("direction", "unit"))
    along = {}
    for name, c in controls.items():
        with inject_noise(model, {LAYER: CovarianceNoise(np.asarray(c), rng=1)}):
            tree = record_activations(
                model, x[:32], layers=[LAYER], n_trials=40, rng=0, progress=False
            )
        assert tree.attrs["branch_site"] == f"{LAYER}:output"
        noise_cov = stats.noise_covariance(tree[LAYER]["activation"])
        # the recorded trial-to-trial covariance is the injected one (sampling error only)
        np.testing.assert_allclose(np.trace(noise_cov.values), total, rtol=0.05)
        along[name] = float(stats.variance_along(noise_cov, directions).mean())
    # isotropic noise has no preferred direction; the fitted covariance concentrates variance
    # along the adversarial activation changes; a random rotation of its spectrum does not
    assert abs(along["isotropic"] - 1.0) < 0.15
    assert along["structured"] > 3.0 * along["isotropic"]
    assert along["rotated"] < 0.5 * along["structured"]


def test_robustness_of_the_noisy_network_is_an_ensemble_worst_case(setup, global_rng_guard):
    model, x, y, adv = setup
    cov = fit_perturbation_covariance(model, x, adv, layer=LAYER, method="difference")
    noise = CovarianceNoise(
        np.asarray(match_total_variance(cov, 0.2 * layer_total_variance(model, x, layer=LAYER))),
        rng=2,
    )
    with inject_noise(model, {LAYER: noise}):
        res = evaluate_robustness(
            model,
            x[:16],
            y[:16],
            eps=[0.05, 0.3],
            n_evaluations=3,
            steps=5,
            n_queries=30,
            eot_samples=2,
            rng=0,
        )
    acc = res["accuracy"]
    worst = res["worst_case_accuracy"]
    assert set(res["attack"].values) >= {"pgd_ce", "pgd_dlr_targeted", "square"}
    # the worst case over the ensemble is never better than any single attack
    assert bool((worst <= acc.min("attack") + 1e-12).all())
    # more budget never helps the defender
    assert float(worst.sel(eps=0.3)) <= float(worst.sel(eps=0.05))
    assert float(worst.sel(eps=0.3)) < 0.5
