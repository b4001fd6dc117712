"""Tests for neurovar.inference.mixed.fit_mixed_model."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from neurovar._validation import InvalidParameterError
from neurovar.inference import MixedModelResult, fit_mixed_model


def _simulate(n_seeds=20, n_units=30, seed=0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_seeds), n_units)
    structured = np.tile(np.repeat([0, 1], n_units // 2), n_seeds)
    alignment = rng.normal(size=g.size)
    y = (
        1.2
        - 0.4 * structured
        + 0.3 * alignment
        + rng.normal(0, 0.5, n_seeds)[g]
        + rng.normal(0, 0.3, g.size)
    )
    noise = np.where(structured == 1, "structured", "isotropic")
    return pd.DataFrame({"fano": y, "noise": noise, "alignment": alignment, "seed": g})


def test_recovers_simulated_fixed_effects():
    df = _simulate()
    res = fit_mixed_model(df, "fano ~ C(noise) + alignment", groups="seed")
    assert isinstance(res, MixedModelResult) and res.converged and not res.boundary
    p = res.params
    assert list(p.columns) == ["estimate", "std_error", "z", "p_value", "ci_low", "ci_high"]
    truth = {"Intercept": 1.2, "C(noise)[T.structured]": -0.4, "alignment": 0.3}
    for term, value in truth.items():
        assert p.loc[term, "ci_low"] < value < p.loc[term, "ci_high"], term
    assert p.loc["alignment", "estimate"] == pytest.approx(0.3, abs=0.03)
    assert p.loc["C(noise)[T.structured]", "p_value"] < 1e-6
    assert res.n_groups == 20 and res.n_obs == 600
    # seed variance 0.25, residual variance 0.09
    assert res.random_effects.loc["seed: var(intercept)", "variance"] == pytest.approx(
        0.25, rel=0.5
    )
    assert res.random_effects.loc["residual", "variance"] == pytest.approx(0.09, rel=0.15)
    text = str(res)
    assert "fano ~ C(noise) + alignment" in text and "alignment" in text and "20 groups" in text
    # statsmodels' raw result is available and agrees
    assert res.result.fe_params["alignment"] == p.loc["alignment", "estimate"]


def test_boundary_flag_when_no_group_variance():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {"y": rng.normal(size=200), "x": rng.normal(size=200), "seed": np.repeat(np.arange(10), 20)}
    )
    df["y"] = df["y"] - df.groupby("seed")["y"].transform("mean")  # no between-seed variance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_mixed_model(df, "y ~ x", groups="seed")
    assert res.boundary


def test_clear_errors():
    df = _simulate(n_seeds=6, n_units=10)
    with pytest.raises(ValueError, match="column 'fanoo', which is not in 'df'"):
        fit_mixed_model(df, "fanoo ~ alignment", groups="seed")
    with pytest.raises(ValueError, match="'groups' parameter.*'animal'"):
        fit_mixed_model(df, "fano ~ alignment", groups="animal")
    msg = (
        r"'min_groups' parameter of fit_mixed_model must be at most the number of groups in "
        r"column 'seed' of 'df' \(2\)\. Got 3"
    )
    with pytest.raises(InvalidParameterError, match=msg):
        fit_mixed_model(df[df.seed < 2], "fano ~ alignment", groups="seed")
    with pytest.warns(UserWarning, match="only 4 groups"):
        fit_mixed_model(df[df.seed < 4], "fano ~ alignment", groups="seed")
    df2 = df.assign(alignment2=2 * df.alignment)
    with pytest.raises(ValueError, match="singular.*'alignment2'"):
        fit_mixed_model(df2, "fano ~ alignment + alignment2", groups="seed")
    nan = df.copy()
    nan.loc[3, "fano"] = np.nan
    with pytest.raises(ValueError, match="NaN.*nan_policy='omit'"):
        fit_mixed_model(nan, "fano ~ alignment", groups="seed")
    res = fit_mixed_model(nan, "fano ~ alignment", groups="seed", nan_policy="omit")
    assert res.n_obs == len(df) - 1
    with pytest.raises(TypeError, match="pandas DataFrame"):
        fit_mixed_model(df.to_dict(), "fano ~ alignment", groups="seed")
    with pytest.raises(ValueError, match="'formula' parameter"):
        fit_mixed_model(df, "fano", groups="seed")


def test_random_slope_covariance_rows_and_between_group_predictor():
    # random intercept + slope for alignment; a seed-level predictor (constant within seeds)
    # is a legitimate fixed effect and must not be mistaken for a confounded design
    rng = np.random.default_rng(2)
    n_seeds, n_units = 30, 20
    g = np.repeat(np.arange(n_seeds), n_units)
    width = rng.normal(size=n_seeds)[g]
    x = rng.normal(size=g.size)
    slope = 0.5 + rng.normal(0, 0.3, n_seeds)[g]
    y = 1.0 + 0.2 * width + slope * x + rng.normal(0, 0.5, n_seeds)[g] + rng.normal(0, 0.2, g.size)
    df = pd.DataFrame({"y": y, "x": x, "width": width, "seed": g})
    res = fit_mixed_model(df, "y ~ x + width", groups="seed", re_formula="~x")
    re = res.random_effects
    assert list(re.index) == [
        "seed: var(intercept)",
        "seed: cov(x, intercept)",
        "seed: var(x)",
        "residual",
    ]
    assert np.isnan(re.loc["seed: cov(x, intercept)", "std"])  # a covariance has no SD
    np.testing.assert_allclose(
        re.loc["seed: var(x)", "std"] ** 2, re.loc["seed: var(x)", "variance"]
    )
    assert re.loc["seed: var(x)", "variance"] == pytest.approx(0.09, rel=0.6)
    assert res.params.loc["x", "ci_low"] < 0.5 < res.params.loc["x", "ci_high"]
    # with 30 seeds the seed-level slope is weakly determined (SE ~0.09): within 4 SE of truth
    assert res.converged and not res.boundary
    assert abs(res.params.loc["width", "estimate"] - 0.2) < 4 * res.params.loc["width", "std_error"]


def test_unidentifiable_random_effects_are_clear_errors():
    df = _simulate(n_seeds=8, n_units=10)
    df["seed_size"] = df.seed * 0.1  # constant within seeds
    # a random slope for a variable constant within groups duplicates the random intercept
    with pytest.raises(ValueError, match="random-effects design is singular.*'seed_size'"):
        fit_mixed_model(df, "fano ~ alignment", groups="seed", re_formula="~seed_size")
    # the group column as a fixed effect absorbs the random intercept
    with pytest.raises(ValueError, match="random effect 'intercept' is confounded"):
        fit_mixed_model(df, "fano ~ alignment + C(seed)", groups="seed")
    with pytest.raises(ValueError, match="'confidence_level' parameter.*Got '95%'"):
        fit_mixed_model(df, "fano ~ alignment", groups="seed", confidence_level="95%")
    with pytest.raises(ValueError, match="'nan_policy' parameter"):
        fit_mixed_model(df, "fano ~ alignment", groups="seed", nan_policy="drop")
