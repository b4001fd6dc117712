"""Shared (population-wide) versus private variability by factor analysis."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from sklearn.decomposition import FactorAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold

from neurovar._validation import InvalidParameterError, check_int, check_real
from neurovar.dims import STIMULUS, TRIAL, UNIT

from ._residuals import pooled_residuals, stimulus_major
from ._util import resolve_rng, unit_coords, warn_nan

__all__ = ["shared_variance"]


def _diag_gaussian_loglik(train: np.ndarray, test: np.ndarray) -> float:
    """Mean held-out log-likelihood per trial of an independent Gaussian (0 factors)."""
    mu = train.mean(axis=0)
    var = train.var(axis=0)
    var = np.where(var > 0, var, 1e-12)
    ll = -0.5 * (np.log(2 * np.pi * var) + (test - mu) ** 2 / var)
    return float(ll.sum(axis=1).mean())


def _cv_loglik(x: np.ndarray, k: int, folds: KFold) -> float:
    scores = []
    for train, test in folds.split(x):
        if k == 0:
            scores.append(_diag_gaussian_loglik(x[train], x[test]))
        else:
            fa = FactorAnalysis(n_components=k, svd_method="lapack").fit(x[train])
            scores.append(fa.score(x[test]))
    return float(np.mean(scores))


def shared_variance(
    responses: xr.DataArray,
    *,
    n_factors: int | None = None,
    max_factors: int | None = None,
    n_folds: int = 5,
    threshold: float = 0.95,
    rng: None | int | np.random.Generator = None,
    trial_dim: str = TRIAL,
    stimulus_dim: str | None = STIMULUS,
    unit_dim: str = UNIT,
) -> xr.Dataset:
    r"""Percent shared variance per unit and shared dimensionality, by factor analysis.

    Trial-to-trial residuals (responses minus each stimulus' trial mean, complete trials
    only, pooled over stimuli, scaled by :math:`\sqrt{n_\mathrm{trials}/(n_\mathrm{trials} -
    n_\mathrm{stimuli})}` so that the fitted covariance is the unbiased pooled noise
    covariance of :func:`noise_covariance`) are modelled as :math:`r = L z + \epsilon`,
    :math:`z \sim \mathcal N(0, I_k)`, :math:`\epsilon \sim \mathcal N(0, \Psi)` with
    :class:`sklearn.decomposition.FactorAnalysis`. For unit i

    .. math::

        \%\mathrm{sv}_i = 100 \, \frac{(LL^\top)_{ii}}{(LL^\top)_{ii} + \Psi_{ii}},

    and the shared dimensionality :math:`d_\mathrm{shared}` is the number of eigenvalues of
    :math:`LL^\top` needed to explain ``threshold`` (95%) of the shared variance
    (Williamson et al. 2016). With ``n_factors=None`` the number of factors k is chosen by
    ``n_folds``-fold cross-validated log-likelihood over ``0..max_factors`` (0 = independent
    Gaussian noise).

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)``.
    n_factors
        Number of factors; ``None`` selects it by cross-validation.
    max_factors
        Largest k tried by cross-validation; default ``min(n_units - 1, 10)``.
    n_folds
        Folds of the cross-validation.
    threshold
        Fraction of shared variance that defines the shared dimensionality, in (0, 1].
    rng
        Seed or numpy Generator for the fold split.
    trial_dim, stimulus_dim, unit_dim
        Names of the dims; ``stimulus_dim=None`` for a single stimulus.

    Returns
    -------
    xarray.Dataset
        ``percent_shared``, ``shared_variance``, ``private_variance`` (per unit),
        ``loading`` (unit, factor), scalars ``shared_dimensionality`` and ``n_factors``, and
        ``cv_log_likelihood`` over ``n_factors_tried`` when k was cross-validated.

    References
    ----------
    Williamson, R. C. et al. (2016). Scaling properties of dimensionality reduction for
    neural populations and network models. PLoS Comput. Biol. 12, e1005141.
    """
    func = "shared_variance"
    for pname, value in (("n_factors", n_factors), ("max_factors", max_factors)):
        if value is not None:
            check_int(value, name=pname, owner=func, low=0)
    n_folds = check_int(n_folds, name="n_folds", owner=func, low=2)
    threshold = check_real(threshold, name="threshold", owner=func, low=0, high=1, low_open=True)
    gen = resolve_rng(rng, func)
    data = stimulus_major(
        responses, trial_dim=trial_dim, stimulus_dim=stimulus_dim, unit_dim=unit_dim, func=func
    )
    res = pooled_residuals(data, func=func)
    x, n_used = res.values, res.n_stimuli
    n_rows = x.shape[0]
    if res.dof < n_folds * 2:
        raise InvalidParameterError(
            f"The 'responses' parameter of {func} has too few residual degrees of freedom "
            f"({res.dof}) for {n_folds}-fold cross-validation (the 'n_folds' parameter)."
        )
    # FactorAnalysis (maximum likelihood) divides by the number of rows; scaling the residuals
    # makes its covariance the unbiased pooled one (dof = rows - stimuli), as noise_covariance.
    x = x * np.sqrt(n_rows / res.dof)
    varying = x.var(axis=0) > 0
    warn_nan(
        int(np.sum(~varying)),
        int(res.live.size),
        "units",
        "have zero trial-to-trial variance",
        consequence="they were left out of the factor analysis; their percent shared is NaN",
    )
    x = x[:, varying]
    n_units = x.shape[1]
    if n_units == 0:
        raise InvalidParameterError(
            f"The 'responses' parameter of {func} has no unit with trial-to-trial variance."
        )
    k, ds_vars = _choose_n_factors(x, n_factors, max_factors, n_folds=n_folds, gen=gen, func=func)
    loading, private, d_shared = _fit_factors(x, k, threshold)
    # back to all units: zero-variance units have no shared or private variance, units
    # without valid values are NaN
    fitted = np.flatnonzero(res.live)[varying]
    n_all = res.live.size
    full_loading = np.full((n_all, k), np.nan)
    full_loading[res.live] = 0.0
    full_loading[fitted] = loading
    full_private = np.where(res.live, 0.0, np.nan)
    full_private[fitted] = private
    loading, private = full_loading, full_private
    shared = np.sum(loading**2, axis=1) if k else np.where(res.live, 0.0, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * shared / (shared + private)
    coords = unit_coords(responses, unit_dim)
    out = xr.Dataset(
        {
            "percent_shared": (unit_dim, pct),
            "shared_variance": (unit_dim, shared),
            "private_variance": (unit_dim, private),
            "loading": ((unit_dim, "factor"), loading),
            "shared_dimensionality": d_shared,
            "n_factors": k,
            **ds_vars,
        },
        coords=coords,
        attrs={"threshold": threshold, "n_trials": n_rows, "n_stimuli": n_used},
    )
    for cname in coords.indexed:
        out = out.set_xindex(cname)
    if "cv_log_likelihood" in ds_vars:
        out = out.assign_coords(n_factors_tried=np.arange(len(ds_vars["cv_log_likelihood"][1])))
    return out


def _choose_n_factors(
    x: np.ndarray, n_factors: int | None, max_factors: int | None, *, n_folds: int,
    gen: np.random.Generator, func: str,
) -> tuple[int, dict]:  # fmt: skip
    """The number of factors: ``n_factors``, or the maximiser of the ``n_folds``-fold
    cross-validated log-likelihood over ``0..max_factors`` (then also returned, as a data
    variable over ``n_factors_tried``)."""
    n_units = x.shape[1]
    ds_vars: dict = {}
    if n_factors is None:
        if max_factors is None:
            max_factors = min(n_units - 1, 10)
        max_factors = check_int(max_factors, name="max_factors", owner=func, low=0)
        if max_factors >= n_units:
            raise InvalidParameterError(
                f"The 'max_factors' parameter of {func} must be < the number of units "
                f"({n_units}). Got {max_factors} instead."
            )
        folds = KFold(n_folds, shuffle=True, random_state=int(gen.integers(2**31 - 1)))
        tried = np.arange(max_factors + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ll = np.array([_cv_loglik(x, int(k), folds) for k in tried])
        k = int(tried[np.argmax(ll)])
        ds_vars["cv_log_likelihood"] = ("n_factors_tried", ll)
    else:
        k = check_int(n_factors, name="n_factors", owner=func, low=0)
        if k >= n_units:
            raise InvalidParameterError(
                f"The 'n_factors' parameter of {func} must be < the number of units "
                f"({n_units}). Got {k} instead."
            )
    return k, ds_vars


def _fit_factors(x: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Loadings ``L`` (units, k), private variances ``Psi`` and the shared dimensionality (the
    eigenvalues of ``L L^T`` that explain ``threshold`` of the shared variance)."""
    n_units = x.shape[1]
    if k == 0:
        loading = np.zeros((n_units, 0))
        private = x.var(axis=0, ddof=0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fa = FactorAnalysis(n_components=k, svd_method="lapack").fit(x)
        loading = fa.components_.T
        private = fa.noise_variance_
    if k > 0:
        eig = np.clip(np.linalg.eigvalsh(loading @ loading.T)[::-1], 0, None)
        frac = np.cumsum(eig) / eig.sum() if eig.sum() > 0 else np.ones_like(eig)
        d_shared = int(np.searchsorted(frac, threshold - 1e-12) + 1)
    else:
        d_shared = 0
    return loading, private, d_shared
