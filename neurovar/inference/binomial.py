"""Models for binary outcomes (correct / not correct per example) with clustered data.

Robustness results are mostly 0/1 per example, clustered by network seed (and often by
example across conditions). A linear mixed model on 0/1 data (:func:`fit_mixed_model`)
predicts values outside [0, 1], has a residual variance that depends on the mean, and in
practice gives convergence and boundary warnings. :func:`fit_binomial_model` fits a logistic
model instead, either population-averaged (GEE) or subject-specific (a binomial GLMM).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import special, stats
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

from neurovar._validation import check_choice, check_confidence_level, check_int, param_error

from ._validation import NAN_POLICIES, check_model_table

__all__ = [
    "BINOMIAL_METHODS",
    "GEE_COV_TYPES",
    "SMALL_N_GROUPS",
    "BinomialModelResult",
    "fit_binomial_model",
]

#: ``method`` values of :func:`fit_binomial_model`.
BINOMIAL_METHODS = ("gee", "glmm")

#: ``cov_type`` values of :func:`fit_binomial_model` (GEE standard errors).
GEE_COV_TYPES = ("auto", "robust", "bias_reduced")

#: Below this many groups the GEE sandwich standard errors are too small (Mancl & DeRouen
#: 2001): ``cov_type="auto"`` then uses the bias-reduced sandwich and a t reference.
SMALL_N_GROUPS = 20


@dataclass(frozen=True)
class BinomialModelResult:
    """Summary of a fitted logistic model for a binary outcome.

    Attributes
    ----------
    params
        One row per fixed-effect term, on the log-odds scale: ``estimate``, ``std_error``,
        ``z``, ``p_value``, ``ci_low``, ``ci_high``, and ``odds_ratio`` with
        ``odds_ratio_low`` / ``odds_ratio_high`` (the exponentiated estimate and limits).
    method
        ``"gee"`` (population-averaged, robust sandwich standard errors, Wald z) or
        ``"glmm"`` (subject-specific; variational Bayes posterior means and standard
        deviations, ``z`` = mean / SD, intervals and p-values from the normal approximation
        of the posterior).
    dependence
        ``"gee"``: the exchangeable working correlation within groups. ``"glmm"``: the
        posterior mean of the random-intercept standard deviation (log-odds scale).
    n_obs, n_groups
        Observations used and number of groups.
    formula, groups, confidence_level
        What was fit.
    result
        The raw statsmodels result.
    cov_type
        GEE standard errors: ``"robust"`` (sandwich, normal reference) or ``"bias_reduced"``
        (Mancl-DeRouen sandwich, t reference with ``df`` degrees of freedom). ``"vb"`` for the
        GLMM.
    df
        Degrees of freedom of the t reference of ``z`` (``p_value``, ``ci_low``/``ci_high``):
        ``n_groups - 1`` with the bias-reduced sandwich, ``inf`` (normal) otherwise.
    """

    params: pd.DataFrame
    method: str
    dependence: float
    n_obs: int
    n_groups: int
    formula: str
    groups: str
    confidence_level: float
    result: object = field(repr=False)
    cov_type: str = "robust"
    df: float = float("inf")

    def __str__(self) -> str:
        if self.method != "gee":
            kind = "binomial GLMM, random intercept per group (variational Bayes)"
        elif self.cov_type == "bias_reduced":
            kind = (
                "GEE, binomial family, exchangeable correlation (population-averaged); "
                f"bias-reduced sandwich SEs, t reference with {self.df:g} df "
                f"({self.n_groups} groups)"
            )
        else:
            kind = "GEE, binomial family, exchangeable correlation (population-averaged)"
        dep = (
            f"working correlation within groups: {self.dependence:.4g}"
            if self.method == "gee"
            else f"random-intercept SD (log-odds): {self.dependence:.4g}"
        )
        table = self.params.to_string(float_format=lambda v: f"{v:.4g}")
        return (
            f"Logistic model: {self.formula}  |  groups: {self.groups} ({self.n_groups} groups, "
            f"{self.n_obs} observations)\n{kind}\n{dep}\n\n"
            f"Fixed effects (log-odds, {100 * self.confidence_level:g}% CI):\n{table}"
        )

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        return "<pre>" + str(self) + "</pre>"


def _outcome_column(formula: str) -> str:
    lhs = formula.split("~", 1)[0].strip()
    return lhs


def _table(
    estimate, std_error, confidence_level: float, index, df: float = np.inf
) -> pd.DataFrame:
    """Wald table; ``z`` referred to a t distribution with ``df`` degrees of freedom (normal
    when ``df`` is infinite)."""
    estimate = np.asarray(estimate, dtype=float)
    std_error = np.asarray(std_error, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = estimate / std_error
    if np.isfinite(df):
        crit = stats.t.ppf(0.5 + confidence_level / 2, df)
        p_value = 2 * stats.t.sf(np.abs(z), df)
    else:
        crit = special.ndtri(0.5 + confidence_level / 2)
        p_value = 2 * special.ndtr(-np.abs(z))
    lo, hi = estimate - crit * std_error, estimate + crit * std_error
    out = pd.DataFrame(
        {
            "estimate": estimate,
            "std_error": std_error,
            "z": z,
            "p_value": p_value,
            "ci_low": lo,
            "ci_high": hi,
            "odds_ratio": np.exp(estimate),
            "odds_ratio_low": np.exp(lo),
            "odds_ratio_high": np.exp(hi),
        },
        index=pd.Index(list(index), name="term"),
    )
    return out


def _binary_table(
    df: pd.DataFrame, formula: str, groups: str, nan_policy: str, owner: str
) -> tuple[pd.DataFrame, str]:
    """A copy of ``df`` with the outcome as floats 0/1 (NaN rows dropped under
    ``nan_policy='omit'``), and the outcome's name; readable errors otherwise."""
    outcome = _outcome_column(formula)
    if outcome not in df.columns:
        raise ValueError(
            f"The 'formula' parameter of {owner} must name an outcome column of 'df'. Got "
            f"{outcome!r}; columns are {list(df.columns)!r}."
        )
    data = df.copy()
    y = data[outcome]
    if y.isna().any() or data[groups].isna().any():
        if nan_policy == "raise":
            raise ValueError(
                f"The 'df' parameter of {owner} has NaN in {outcome!r} or {groups!r}. Drop them "
                "or pass nan_policy='omit'."
            )
        data = data[y.notna() & data[groups].notna()]
        y = data[outcome]
    values = pd.to_numeric(y.astype(float) if y.dtype == bool else y, errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        bad = sorted(set(y[~values.isin([0, 1])].astype(str)))[:5]
        raise ValueError(
            f"The outcome {outcome!r} of {owner} must be binary (0/1 or booleans). Got values "
            f"{bad!r}; for continuous outcomes use fit_mixed_model."
        )
    data[outcome] = values.astype(float)
    return data, outcome


def _small_cluster_choice(
    method: str, cov_type: str, n_groups: int, groups: str, owner: str
) -> tuple[str, float]:
    """The GEE covariance and the t degrees of freedom for ``n_groups`` clusters: below
    :data:`SMALL_N_GROUPS` the bias-reduced sandwich with ``n_groups - 1`` df (Mancl &
    DeRouen 2001) under ``cov_type='auto'``, with a warning naming the number of groups."""
    if method == "glmm":
        return "vb", np.inf
    used_cov, df_t = "robust", np.inf
    small = n_groups < SMALL_N_GROUPS
    if cov_type == "bias_reduced" or (cov_type == "auto" and small):
        used_cov, df_t = "bias_reduced", float(n_groups - 1)
    if small:
        what = (
            f"used the bias-reduced (Mancl-DeRouen) sandwich and a t reference with "
            f"{n_groups - 1} df"
            if used_cov == "bias_reduced"
            else "the plain sandwich (cov_type='robust') is too small and its p-values too "
            "low; pass cov_type='auto' or 'bias_reduced'"
        )
        warnings.warn(
            f"{owner}: only {n_groups} groups in {groups!r} (GEE standard errors need about "
            f"{SMALL_N_GROUPS} or more); {what}. p-values stay approximate with so few "
            f"groups: the exact permutation test over {groups!r} means cannot go below "
            f"{min(1.0, 2.0 ** (1 - n_groups)):.3g} (paired, two-sided).",
            UserWarning,
            stacklevel=3,
        )
    return used_cov, df_t


def _fit_gee(formula, groups, data, missing, used_cov, df_t, confidence_level):
    """GEE, binomial family, exchangeable working correlation: (params, dependence, n_obs,
    statsmodels result)."""
    model = smf.gee(
        formula,
        groups,
        data,
        family=sm.families.Binomial(),
        cov_struct=sm.cov_struct.Exchangeable(),
        missing=missing,
    )
    result = model.fit(cov_type=used_cov)
    params = _table(result.params, result.bse, confidence_level, result.params.index, df=df_t)
    dependence = float(np.asarray(model.cov_struct.dep_params, dtype=float).ravel()[0])
    return params, dependence, int(result.nobs), result


def _fit_glmm(formula, groups, data, confidence_level):
    """Binomial GLMM with a random intercept per group, variational Bayes: (params, the
    random-intercept variance, n_obs, statsmodels result)."""
    vc = {groups: f"0 + C({groups})"}
    model = BinomialBayesMixedGLM.from_formula(formula, vc, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = model.fit_vb()
    params = _table(result.fe_mean, result.fe_sd, confidence_level, model.fep_names)
    dependence = float(np.exp(np.asarray(result.vcp_mean, dtype=float)[0]))
    return params, dependence, int(model.endog.shape[0]), result


def fit_binomial_model(
    df: pd.DataFrame,
    formula: str,
    *,
    groups: str,
    method: str = "gee",
    confidence_level: float = 0.95,
    nan_policy: str = "raise",
    min_groups: int = 3,
    cov_type: str = "auto",
) -> BinomialModelResult:
    r"""Logistic model of a binary outcome with clustered observations (GEE or GLMM).

    Both model :math:`\operatorname{logit} P(y_{gi} = 1) = x_{gi}^\top \beta\,(+\, b_g)` for
    observation i of group g (seed, animal, example):

    - ``method="gee"`` (default): generalized estimating equations (Liang & Zeger 1986) with
      a binomial family, logit link and an *exchangeable* working correlation within groups,
      :func:`statsmodels.formula.api.gee`. :math:`\beta` is *population-averaged* (the
      effect on the log-odds of the average accuracy), and the robust (sandwich) standard
      errors stay valid even if the working correlation is wrong. The sandwich needs enough
      groups (roughly 20 or more): with fewer it is too small and the p-values too low (5
      seeds can give p = 0.01 where the exact test over seeds cannot go below 0.06). Below
      :data:`SMALL_N_GROUPS` groups ``cov_type="auto"`` therefore uses the bias-reduced
      sandwich of Mancl & DeRouen (2001) (statsmodels ``cov_type="bias_reduced"``) and
      refers ``z`` to a t distribution with ``n_groups - 1`` degrees of freedom, and warns,
      naming the number of groups. With a handful of seeds, also report the exact
      permutation test over seed means (:func:`permutation_test`).
    - ``method="glmm"``: a binomial generalized linear mixed model with a random intercept
      :math:`b_g \sim N(0, \sigma^2)` per group,
      :class:`statsmodels.genmod.bayes_mixed_glm.BinomialBayesMixedGLM` fitted by
      variational Bayes (``fit_vb``). :math:`\beta` is *subject-specific* (the effect within
      a group); it is larger in magnitude than the GEE one when :math:`\sigma > 0`
      (:math:`\beta_{PA} \approx \beta / \sqrt{1 + 0.346\,\sigma^2}`, Zeger et al. 1988).
      Intervals use the normal approximation of the variational posterior, which tends to
      be too narrow.

    Which model? For a 0/1 outcome use this function, not :func:`fit_mixed_model` (a linear
    model of 0/1 data predicts outside [0, 1] and its variance depends on the mean). Use GEE
    to report how a condition changes accuracy on average over seeds (the usual robustness
    question), GLMM when the effect within a seed, or the seed-to-seed spread
    (``dependence``), is the quantity of interest. Use :func:`fit_mixed_model` for continuous
    outcomes (Fano factors, accuracies averaged over many examples per seed).

    Parameters
    ----------
    df
        Long table, e.g. from :func:`to_tidy`, one row per observation.
    formula
        Patsy formula ``"outcome ~ terms"``; the outcome column must hold 0/1 or booleans.
    groups
        Column identifying the clusters (seed, animal, example).
    method
        ``"gee"`` or ``"glmm"``, see above.
    confidence_level
        Level of the intervals in ``params``.
    nan_policy
        ``"raise"`` (default) or ``"omit"`` (drop rows with NaN in the used columns).
    min_groups
        Fewer groups than this is an error.
    cov_type
        GEE standard errors: ``"auto"`` (default: ``"bias_reduced"`` below
        :data:`SMALL_N_GROUPS` groups, ``"robust"`` from there), ``"robust"`` (the plain
        sandwich with a normal reference; warns below :data:`SMALL_N_GROUPS` groups) or
        ``"bias_reduced"`` (Mancl-DeRouen sandwich, t reference with ``n_groups - 1`` df).
        Ignored by ``method="glmm"``.

    Warns
    -----
    UserWarning
        GEE with fewer than :data:`SMALL_N_GROUPS` groups, naming the number of groups and the
        correction applied (or not applied, with ``cov_type="robust"``).

    Returns
    -------
    BinomialModelResult

    Raises
    ------
    ValueError
        Missing columns, an outcome that is not binary, NaN without ``nan_policy='omit'``, too
        few groups.

    References
    ----------
    Mancl, L. A. & DeRouen, T. A. (2001). A covariance estimator for GEE with improved
    small-sample properties. *Biometrics* 57, 126-134.
    Liang, K.-Y. & Zeger, S. L. (1986). Longitudinal data analysis using generalized linear
    models. *Biometrika* 73, 13-22.
    Zeger, S. L., Liang, K.-Y. & Albert, P. S. (1988). Models for longitudinal data: a
    generalized estimating equation approach. *Biometrics* 44, 1049-1060.
    Jaeger, T. F. (2008). Categorical data analysis: away from ANOVAs (transformation or not)
    and towards logit mixed models. *J. Mem. Lang.* 59, 434-446.
    """
    owner = "fit_binomial_model"
    check_model_table(df, formula, groups, owner=owner)
    check_choice(method, name="method", owner=owner, options=BINOMIAL_METHODS)
    check_choice(nan_policy, name="nan_policy", owner=owner, options=NAN_POLICIES)
    check_choice(cov_type, name="cov_type", owner=owner, options=GEE_COV_TYPES)
    confidence_level = check_confidence_level(confidence_level, owner=owner)
    min_groups = check_int(min_groups, name="min_groups", owner=owner, low=2)
    data, outcome = _binary_table(df, formula, groups, nan_policy, owner)
    n_groups = int(data[groups].nunique())
    if n_groups < min_groups:
        raise param_error(
            "min_groups",
            owner,
            f"at most the number of groups in column {groups!r} of 'df' ({n_groups})",
            min_groups,
            hint="Give data with more groups (e.g. more seeds) or lower min_groups.",
        )
    missing = "drop" if nan_policy == "omit" else "raise"
    used_cov, df_t = _small_cluster_choice(method, cov_type, n_groups, groups, owner)
    try:
        if method == "gee":
            params, dependence, n_obs, result = _fit_gee(
                formula, groups, data, missing, used_cov, df_t, confidence_level
            )
        else:
            params, dependence, n_obs, result = _fit_glmm(formula, groups, data, confidence_level)
    except Exception as err:  # patsy / statsmodels errors -> readable ValueError
        msg = str(err)
        name = re.search(r"name '([^']+)' is not defined", msg)
        if name:
            raise ValueError(
                f"The 'formula' parameter of {owner} uses column {name.group(1)!r}, which is not "
                f"in 'df'. Columns are {list(df.columns)!r}."
            ) from err
        raise ValueError(f"{owner} could not fit {formula!r} ({method}): {msg}") from err
    return BinomialModelResult(
        params=params,
        method=method,
        dependence=dependence,
        n_obs=n_obs,
        n_groups=n_groups,
        formula=formula,
        groups=groups,
        confidence_level=confidence_level,
        result=result,
        cov_type=used_cov,
        df=float(df_t),
    )
