"""Tests of neurovar.inference.fit_binomial_model (GEE and binomial GLMM for 0/1 outcomes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from neurovar._validation import InvalidParameterError
from neurovar.inference import fit_binomial_model

TERM = "C(noise, Treatment('isotropic'))[T.structured]"
FORMULA = "correct ~ C(noise, Treatment('isotropic'))"


@pytest.fixture(scope="module")
def clustered():
    """Correct / not correct per example, 30 seeds with a seed effect (SD 1 on log-odds)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(30):
        b = rng.normal(0, 1.0)
        for cond, name in ((0, "isotropic"), (1, "structured")):
            p = 1 / (1 + np.exp(-(-0.2 + 1.0 * cond + b)))
            rows += [{"seed": seed, "noise": name, "correct": v} for v in rng.random(60) < p]
    return pd.DataFrame(rows)


def test_gee_is_statsmodels_gee_with_exchangeable_correlation(clustered):
    res = fit_binomial_model(clustered, FORMULA, groups="seed")
    ref = smf.gee(
        FORMULA,
        "seed",
        clustered.assign(correct=clustered.correct.astype(float)),
        family=sm.families.Binomial(),
        cov_struct=sm.cov_struct.Exchangeable(),
    ).fit()
    np.testing.assert_allclose(res.params["estimate"], ref.params, rtol=1e-6)
    np.testing.assert_allclose(res.params["std_error"], ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.params.loc[TERM, "odds_ratio"], np.exp(ref.params[TERM]))
    assert res.method == "gee" and res.n_groups == 30 and res.n_obs == len(clustered)
    assert res.dependence > 0.05  # the seed effect shows up as within-seed correlation
    # clustering is not ignored: the robust SE of the intercept (a seed-level quantity) is
    # far larger than that of a logistic regression treating examples as independent
    naive = smf.logit(FORMULA, clustered.assign(correct=clustered.correct.astype(float)))
    assert res.params.loc["Intercept", "std_error"] > 2 * naive.fit(disp=0).bse["Intercept"]


def test_glmm_recovers_the_subject_specific_effect_and_gee_the_averaged_one(clustered):
    gee = fit_binomial_model(clustered, FORMULA, groups="seed", method="gee")
    glmm = fit_binomial_model(clustered, FORMULA, groups="seed", method="glmm")
    beta = glmm.params.loc[TERM]
    assert beta.ci_low < 1.0 < beta.ci_high  # true within-seed effect 1.0
    assert 0.5 < glmm.dependence < 1.5  # true seed SD 1.0
    # population-averaged effect is attenuated: about 1 / sqrt(1 + 0.346 sigma^2) = 0.86
    pa = gee.params.loc[TERM]
    assert pa.estimate < beta.estimate
    assert pa.ci_low < 1.0 / np.sqrt(1 + 0.346) < pa.ci_high
    assert pa.p_value < 1e-6 and "GEE" in str(gee) and "GLMM" in str(glmm)


def test_binomial_model_refuses_what_it_cannot_fit(clustered):
    with pytest.raises(ValueError, match="must be binary"):
        fit_binomial_model(clustered.assign(correct=0.5), FORMULA, groups="seed")
    with pytest.raises(ValueError, match="'groups' parameter of fit_binomial_model"):
        fit_binomial_model(clustered, FORMULA, groups="animal")
    with pytest.raises(ValueError, match="'method' parameter"):
        fit_binomial_model(clustered, FORMULA, groups="seed", method="ols")
    msg = (
        r"'min_groups' parameter of fit_binomial_model must be at most the number of groups in "
        r"column 'seed' of 'df' \(2\)\. Got 3"
    )
    with pytest.raises(InvalidParameterError, match=msg):
        fit_binomial_model(clustered[clustered.seed < 2], FORMULA, groups="seed")
    nan = clustered.astype({"correct": float})
    nan.loc[0, "correct"] = np.nan
    with pytest.raises(ValueError, match="nan_policy='omit'"):
        fit_binomial_model(nan, FORMULA, groups="seed")
    assert fit_binomial_model(nan, FORMULA, groups="seed", nan_policy="omit").n_obs == len(nan) - 1


@pytest.fixture(scope="module")
def five_seeds():
    """5 seeds with a seed effect and a seed-to-seed varying condition effect."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        b = rng.normal(0, 1.0)
        for cond, name in ((0, "isotropic"), (1, "structured")):
            p = 1 / (1 + np.exp(-(-0.2 + 0.4 * cond + b + rng.normal(0, 0.4) * cond)))
            rows += [{"seed": seed, "noise": name, "correct": v} for v in rng.random(60) < p]
    return pd.DataFrame(rows)


def test_few_groups_get_bias_reduced_errors_t_reference_and_a_warning(five_seeds):
    from scipy import stats

    data = five_seeds.assign(correct=five_seeds.correct.astype(float))
    model = smf.gee(FORMULA, "seed", data, family=sm.families.Binomial(),
                    cov_struct=sm.cov_struct.Exchangeable())
    plain = model.fit()
    reduced = model.fit(cov_type="bias_reduced")
    with pytest.warns(UserWarning, match=r"only 5 groups in 'seed'.*bias-reduced.*4 df"):
        res = fit_binomial_model(five_seeds, FORMULA, groups="seed")
    assert res.cov_type == "bias_reduced" and res.df == 4
    np.testing.assert_allclose(res.params["std_error"], reduced.bse, rtol=1e-6)
    z = reduced.params[TERM] / reduced.bse[TERM]
    assert res.params.loc[TERM, "p_value"] == pytest.approx(2 * stats.t.sf(abs(z), 4))
    # the plain sandwich claims significance that the few seeds cannot carry
    assert plain.pvalues[TERM] < 0.01 < 0.05 < res.params.loc[TERM, "p_value"]
    half = res.params.loc[TERM, "ci_high"] - res.params.loc[TERM, "estimate"]
    assert half == pytest.approx(stats.t.ppf(0.975, 4) * reduced.bse[TERM])
    assert "bias-reduced" in str(res) and "4 df" in str(res)


def test_plain_sandwich_on_few_groups_is_kept_on_request_with_a_warning(five_seeds):
    with pytest.warns(UserWarning, match=r"only 5 groups.*too small"):
        res = fit_binomial_model(five_seeds, FORMULA, groups="seed", cov_type="robust")
    assert res.cov_type == "robust" and np.isinf(res.df)
    with pytest.raises(InvalidParameterError, match="'cov_type' parameter of fit_binomial_model"):
        fit_binomial_model(five_seeds, FORMULA, groups="seed", cov_type="sandwich")


def test_many_groups_keep_the_plain_sandwich_without_warning(clustered):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fit_binomial_model(clustered, FORMULA, groups="seed")
    assert res.cov_type == "robust" and np.isinf(res.df)
    forced = fit_binomial_model(clustered, FORMULA, groups="seed", cov_type="bias_reduced")
    assert forced.df == 29
    assert (forced.params["std_error"] >= res.params["std_error"]).all()
