"""Linear mixed models (statsmodels MixedLM) with a readable summary and clear errors."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from neurovar._validation import (
    InvalidParameterError,
    check_choice,
    check_confidence_level,
    check_int,
    param_error,
)

from ._validation import NAN_POLICIES, check_model_table

__all__ = ["fit_mixed_model", "MixedModelResult"]


@dataclass(frozen=True)
class MixedModelResult:
    """Summary of a fitted linear mixed model.

    Attributes
    ----------
    params
        Fixed effects, one row per term: ``estimate``, ``std_error``, ``z``, ``p_value``
        (Wald), ``ci_low``, ``ci_high``.
    random_effects
        Variance components: one row per random-effect (co)variance plus the residual
        (``variance`` and ``std``; ``std`` is NaN for covariance rows).
    converged
        Whether the optimizer reported convergence.
    boundary
        Whether a random-effect variance is (numerically) zero, i.e. the fit is on the boundary
        of the parameter space; Wald inference on that component is then unreliable.
    n_obs, n_groups
        Observations used and number of groups.
    formula, groups, confidence_level
        What was fit.
    result
        The raw :class:`statsmodels.regression.mixed_linear_model.MixedLMResults`.
    """

    params: pd.DataFrame
    random_effects: pd.DataFrame
    converged: bool
    boundary: bool
    n_obs: int
    n_groups: int
    formula: str
    groups: str
    confidence_level: float
    result: object = field(repr=False)

    def __str__(self) -> str:
        head = (
            f"Linear mixed model: {self.formula}  |  groups: {self.groups} "
            f"({self.n_groups} groups, {self.n_obs} observations)\n"
            f"converged: {self.converged}   boundary (zero variance component): {self.boundary}\n"
        )
        cl = f"{100 * self.confidence_level:g}% CI"
        fixed = self.params.to_string(float_format=lambda v: f"{v:.4g}")
        rand = self.random_effects.to_string(float_format=lambda v: f"{v:.4g}")
        return f"{head}\nFixed effects (Wald z, {cl}):\n{fixed}\n\nVariance components:\n{rand}"

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        return "<pre>" + str(self) + "</pre>"


def _redundant_columns(exog: np.ndarray, names: list[str]) -> list[str]:
    """Columns that do not raise the rank when added left to right (linear dependence)."""
    redundant, rank = [], 0
    for j in range(exog.shape[1]):
        r = np.linalg.matrix_rank(exog[:, : j + 1])
        if r == rank:
            redundant.append(names[j])
        rank = r
    return redundant


def _group_codes(model) -> np.ndarray:
    codes = np.empty(int(model.nobs), dtype=np.intp)
    for k, rows in enumerate(model.row_indices.values()):
        codes[np.asarray(rows, dtype=np.intp)] = k
    return codes


def _random_design_problem(model, exog: np.ndarray, re_names: list[str]) -> str | None:
    r"""Describe why the random-effects design cannot be estimated, or return None.

    Two designs are refused:

    - the random-effect columns :math:`Z_g` are collinear within *every* group that has at
      least as many rows as columns (e.g. a random slope for a variable that is constant within
      groups duplicates the random intercept), so :math:`\Psi` is not identifiable;
    - a random-effect column :math:`z` is absorbed by the fixed effects: every group's column
      :math:`z \odot 1_g` lies in the column space of :math:`X` (e.g. the group column itself
      is a fixed effect, ``C(seed)``), so the group effects have no variance left to estimate.
      With :math:`Q` an orthonormal basis of :math:`X`, the residual of :math:`z \odot 1_g` is
      :math:`\sum_{i \in g} z_i^2 - \lVert \sum_{i \in g} z_i Q_i \rVert^2`.
    """
    if model.exog_re is None or model.k_re == 0:  # variance components only
        return None
    z = np.asarray(model.exog_re, dtype=float)
    k = z.shape[1]
    rows = [np.asarray(r, dtype=np.intp) for r in model.row_indices.values()]
    informative = [r for r in rows if r.size >= k]
    if k > 1 and informative and all(np.linalg.matrix_rank(z[r]) < k for r in informative):
        redundant = _redundant_columns(z[informative[0]], re_names)
        return (
            f"the random-effects design is singular within every group: {redundant!r} "
            "duplicate earlier random effects (e.g. a random slope for a variable that is "
            "constant within groups). Drop them from re_formula."
        )
    q, _ = np.linalg.qr(exog)
    codes = _group_codes(model)
    n_groups = len(rows)
    for j, name in enumerate(re_names):
        w = z[:, j : j + 1] * q
        total = np.bincount(codes, weights=z[:, j] ** 2, minlength=n_groups)
        proj = sum(
            np.bincount(codes, weights=w[:, c], minlength=n_groups) ** 2 for c in range(q.shape[1])
        )
        if np.all(total - proj <= 1e-9 * np.maximum(total, np.finfo(float).tiny)):
            return (
                f"the random effect {name!r} is confounded with the fixed effects: the "
                "fixed-effects formula already explains every group's value of it (e.g. the "
                "groups column is also a fixed effect, or there are as many group-level "
                "predictors as groups), so its variance cannot be estimated. Remove the "
                "group-level terms from the formula or drop the random effect."
            )
    return None


def _build_mixed_model(df, formula, groups, re_formula, vc_formula, nan_policy, owner):
    """statsmodels' MixedLM from the formula, with patsy errors turned into readable ones."""
    try:
        return smf.mixedlm(
            formula,
            df,
            groups=groups,
            re_formula=re_formula,
            vc_formula=vc_formula,
            missing="drop" if nan_policy == "omit" else "raise",
        )
    except Exception as err:  # patsy / statsmodels errors -> readable ValueError
        msg = str(err)
        name = re.search(r"name '([^']+)' is not defined", msg)
        if name:
            raise InvalidParameterError(
                f"The 'formula' parameter of {owner} uses column {name.group(1)!r}, which is not "
                f"in 'df'. Columns are {list(df.columns)!r}."
            ) from err
        if "missing" in msg.lower() or "nan" in msg.lower():
            raise InvalidParameterError(
                f"The 'df' parameter of {owner} has NaN in columns used by the model. Drop them "
                f"or pass nan_policy='omit'. ({msg})"
            ) from err
        raise ValueError(f"{owner} could not build the model from {formula!r}: {msg}") from err


def _fixed_effects(result, confidence_level: float) -> pd.DataFrame:
    """Estimate, SE, z, Wald p and CI of every fixed effect (rows named by term)."""
    fe = list(result.fe_params.index)
    alpha = 1.0 - confidence_level
    ci = result.conf_int(alpha=alpha).loc[fe]
    params = pd.DataFrame(
        {
            "estimate": result.fe_params,
            "std_error": result.bse_fe,
            "z": result.tvalues.loc[fe],
            "p_value": result.pvalues.loc[fe],
            "ci_low": ci.iloc[:, 0],
            "ci_high": ci.iloc[:, 1],
        }
    )
    params.index.name = "term"
    return params


def _random_effects(result, model, re_names, groups, vc_formula) -> tuple[pd.DataFrame, bool]:
    """Variances (and covariances) of the random effects, the variance components and the
    residual, with their standard deviations; and whether a variance sits on the boundary."""
    rows = []  # (component, variance or covariance, is a variance)
    cov_re = np.asarray(result.cov_re, dtype=float)
    for i, a in enumerate(re_names):
        for j, b in enumerate(re_names[: i + 1]):
            label = f"{groups}: var({a})" if i == j else f"{groups}: cov({a}, {b})"
            rows.append((label, float(cov_re[i, j]), i == j))
    vc_names = list(model.exog_vc.names) if vc_formula else []
    for name_, v in zip(vc_names, np.atleast_1d(result.vcomp), strict=False):
        rows.append((f"{name_} (variance component)", float(v), True))
    rows.append(("residual", float(result.scale), True))
    random_effects = pd.DataFrame(
        [r[:2] for r in rows], columns=["component", "variance"]
    ).set_index("component")
    # a covariance has no standard deviation: NaN rather than sqrt(max(cov, 0))
    is_var = np.array([r[2] for r in rows])
    random_effects["std"] = np.where(
        is_var, np.sqrt(random_effects["variance"].clip(lower=0)), np.nan
    )
    diag = np.diag(np.asarray(cov_re, dtype=float))
    vcomp = np.atleast_1d(np.asarray(result.vcomp, dtype=float)) if vc_formula else np.array([])
    boundary = bool(
        np.any(np.concatenate([diag, vcomp]) <= 1e-8 * max(float(result.scale), 1e-300))
    )
    return random_effects, boundary


def fit_mixed_model(
    df: pd.DataFrame,
    formula: str,
    *,
    groups: str,
    re_formula: str | None = None,
    vc_formula: dict[str, str] | None = None,
    reml: bool = True,
    confidence_level: float = 0.95,
    nan_policy: str = "raise",
    min_groups: int = 3,
    **fit_kwargs,
) -> MixedModelResult:
    r"""Fit a linear mixed model with :func:`statsmodels.formula.api.mixedlm`.

    The model (Laird & Ware 1982) for group :math:`g` is

    .. math:: y_g = X_g \beta + Z_g b_g + \varepsilon_g, \quad b_g \sim N(0, \Psi),\;
              \varepsilon_g \sim N(0, \sigma^2 I),

    with fixed effects :math:`\beta` from ``formula``, random effects :math:`Z_g` from
    ``re_formula`` (default: a random intercept per group) and variance components from
    ``vc_formula``. Typical use: ``"fano ~ noise * layer"`` with ``groups="seed"`` so that units
    of one network seed are not treated as independent.

    For a binary outcome (correct / not correct per example) use
    :func:`neurovar.inference.fit_binomial_model` instead: a linear model of 0/1 data predicts
    outside [0, 1], its residual variance depends on the mean, and it typically gives
    convergence and boundary warnings.

    Parameters
    ----------
    df
        Long table (e.g. from :func:`to_tidy`).
    formula
        Patsy formula for the fixed effects, e.g. ``"value ~ C(noise) + alignment"``.
    groups
        Column identifying the independent groups (seeds, animals, sessions).
    re_formula, vc_formula
        Random-effects and variance-component formulas, passed to statsmodels.
    reml
        Restricted maximum likelihood (default True; use False to compare fixed effects by
        likelihood).
    confidence_level
        Level of the Wald intervals in ``params``.
    nan_policy
        ``"raise"`` (default): NaN in a used column is an error; ``"omit"``: drop those rows.
    min_groups
        Fewer groups than this is an error (a variance cannot be estimated from 1-2 groups);
        fewer than 5 gives a warning.
    **fit_kwargs
        Passed to :meth:`MixedLM.fit` (e.g. ``method="lbfgs"``).

    Returns
    -------
    MixedModelResult
        ``params`` table (estimate, std_error, z, p_value, ci_low, ci_high), variance
        components, ``converged`` and ``boundary`` flags, and the raw statsmodels result.

    Raises
    ------
    ValueError
        Missing columns, NaN without ``nan_policy='omit'``, too few groups, a singular
        (rank-deficient) fixed-effects design (naming the redundant terms), a random-effects
        design that is singular within every group (naming the redundant terms), or a random
        effect confounded with the fixed effects (e.g. ``C(seed)`` with ``groups="seed"``).

    References
    ----------
    Laird, N. M. & Ware, J. H. (1982). Random-effects models for longitudinal data.
    *Biometrics* 38, 963-974.
    Seabold, S. & Perktold, J. (2010). statsmodels: econometric and statistical modeling with
    Python. *Proc. 9th Python in Science Conf.*
    """
    owner = "fit_mixed_model"
    check_model_table(df, formula, groups, owner=owner)
    check_choice(nan_policy, name="nan_policy", owner=owner, options=NAN_POLICIES)
    confidence_level = check_confidence_level(confidence_level, owner=owner)
    min_groups = check_int(min_groups, name="min_groups", owner=owner, low=2)
    model = _build_mixed_model(df, formula, groups, re_formula, vc_formula, nan_policy, owner)
    n_groups = int(model.n_groups)
    if n_groups < min_groups:
        raise param_error(
            "min_groups",
            owner,
            f"at most the number of groups in column {groups!r} of 'df' ({n_groups})",
            min_groups,
            hint="A random-effect variance needs groups: give data with more groups (e.g. "
            "more seeds) or lower min_groups.",
        )
    if n_groups < 5:
        warnings.warn(
            f"fit_mixed_model: only {n_groups} groups in {groups!r}; random-effect variances "
            "from fewer than ~5 groups are poorly estimated.",
            UserWarning,
            stacklevel=2,
        )
    exog = np.asarray(model.exog, dtype=float)
    if np.linalg.matrix_rank(exog) < exog.shape[1]:
        redundant = _redundant_columns(exog, list(model.exog_names))
        raise ValueError(
            f"fit_mixed_model cannot fit {formula!r}: the fixed-effects design is singular "
            f"(rank {np.linalg.matrix_rank(exog)} < {exog.shape[1]} columns). Terms that are "
            f"linear combinations of earlier ones: {redundant!r}. Remove or recode them."
        )
    re_names = [
        "intercept" if n in ("Group", groups, "Intercept") else str(n)
        for n in model.data.exog_re_names
    ]
    problem = _random_design_problem(model, exog, re_names)
    if problem is not None:
        raise ValueError(
            f"fit_mixed_model cannot fit {formula!r} with groups={groups!r}: {problem}"
        )
    try:
        result = model.fit(reml=reml, **fit_kwargs)
    except (np.linalg.LinAlgError, ValueError) as err:
        raise ValueError(
            f"fit_mixed_model could not fit {formula!r} with groups={groups!r}: {err}. The "
            "random-effects design may be singular (e.g. a random slope for a variable that "
            "is constant within groups) or the data too few."
        ) from err

    params = _fixed_effects(result, confidence_level)
    random_effects, boundary = _random_effects(result, model, re_names, groups, vc_formula)
    converged = bool(result.converged)
    if not converged:
        warnings.warn(
            f"fit_mixed_model: the optimizer did not converge for {formula!r}; estimates may be "
            "unreliable. Try another method (method='lbfgs' or 'nm'), rescale predictors, or "
            "simplify the random effects.",
            UserWarning,
            stacklevel=2,
        )
    return MixedModelResult(
        params=params,
        random_effects=random_effects,
        converged=converged,
        boundary=boundary,
        n_obs=int(result.nobs),
        n_groups=n_groups,
        formula=formula,
        groups=groups,
        confidence_level=confidence_level,
        result=result,
    )
