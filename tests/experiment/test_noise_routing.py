"""The experiment's noise goes through neurovar.noise: its controls and noise_from_covariance's
registry (one home for the science), in factor form."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from neurovar.experiment import structure
from neurovar.experiment.registry import CONDITIONS, Shape, StructureContext
from neurovar.noise import NOISE_KINDS, FactorCovariance, diagonal_control, rotate_spectrum
from neurovar.noise.controls import _factor_module


def test_the_experiment_shape_is_the_noise_factor_covariance():
    assert Shape is FactorCovariance


def test_noise_module_is_built_by_the_registered_full_kind(monkeypatch):
    calls = []

    def spy(cov, *, rank=None, **kwargs):
        calls.append((cov, kwargs))
        return _factor_module(cov, **kwargs)

    monkeypatch.setitem(NOISE_KINDS, "full", spy)
    gen = np.random.default_rng(0)
    shape = Shape(np.full(6, 0.1), gen.standard_normal((6, 2)))
    cfg = SimpleNamespace(fit=SimpleNamespace(share="flat"))
    module = structure.noise_module(shape, cfg, seed=3, relative_scale=None)
    assert len(calls) == 1 and calls[0][0] is shape
    assert calls[0][1]["share"] == "flat" and calls[0][1]["rng"] == 3
    np.testing.assert_allclose(module.dense_covariance().numpy(), shape.dense(), atol=1e-6)


def test_conditions_are_the_noise_controls():
    gen = np.random.default_rng(1)
    src = Shape(np.full(5, 0.2), gen.standard_normal((5, 2)))
    rotated = structure._rotated(src, 7)
    ctx = StructureContext(n_units=5, clean_trace=1.0, sources={"s": src},
                           source_trace={"s": src.trace}, pooled=src, rotated={"s": rotated})
    np.testing.assert_array_equal(CONDITIONS["diagonal"].shape(ctx, "s", None).diagonal,
                                  diagonal_control(src).diagonal)
    np.testing.assert_array_equal(rotated.factors, rotate_spectrum(src, rng=7).factors)
    iso = CONDITIONS["isotropic"].shape(ctx, None, None)
    assert iso.is_isotropic and iso.trace == 5.0
