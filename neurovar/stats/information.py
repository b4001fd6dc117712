"""Linear Fisher information and information-limiting (differential) correlations."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from neurovar._validation import InvalidParameterError, check_bool, check_real
from neurovar.dims import TRIAL, UNIT, check_dims

from ._util import center, warn_nan
from .alignment import _same_units

__all__ = ["linear_fisher_information", "differential_correlation_strength"]


def _two_stimuli(
    responses_a: xr.DataArray,
    responses_b: xr.DataArray,
    trial_dim: str,
    unit_dim: str,
    func: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two (trial, unit) arrays; return their complete trials as float64."""
    out = []
    for name, resp in (("responses_a", responses_a), ("responses_b", responses_b)):
        check_dims(
            resp,
            [trial_dim, unit_dim],
            name=name,
            allow_extra=False,
            owner=func,
            params={trial_dim: "trial_dim", unit_dim: "unit_dim"},
        )
        x = np.asarray(resp.transpose(trial_dim, unit_dim).values, dtype=np.float64)
        nan = np.isnan(x)
        partial = int(np.sum(nan.any(axis=1) & ~nan.all(axis=1)))
        if partial:
            warnings.warn(
                f"{partial} trials of '{name}' have missing values for some units and were "
                f"left out of {func}.",
                RuntimeWarning,
                stacklevel=3,
            )
        x = x[~nan.any(axis=1)]
        if x.shape[0] < 2:
            raise InvalidParameterError(
                f"The '{name}' parameter of {func} needs at least 2 complete trials; "
                f"got {x.shape[0]}."
            )
        out.append(x)
    _same_units(responses_a, responses_b, ("responses_a", "responses_b"), unit_dim)
    return out[0], out[1]


def _pooled_cov(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Pooled within-stimulus covariance, dof = T_a + T_b - 2."""
    ra = center(xa, axis=0)
    rb = center(xb, axis=0)
    return (ra.T @ ra + rb.T @ rb) / (xa.shape[0] + xb.shape[0] - 2)


def linear_fisher_information(
    responses_a: xr.DataArray,
    responses_b: xr.DataArray,
    *,
    delta_s: float,
    bias_corrected: bool = True,
    shuffled: bool = False,
    trial_dim: str = TRIAL,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Linear Fisher information for discriminating two nearby stimuli, with bias correction.

    With :math:`T_a, T_b` trials of responses to :math:`s` and :math:`s + \delta s`,
    :math:`\hat f' = (\bar x_b - \bar x_a)/\delta s` and the pooled covariance
    :math:`\hat\Sigma` (:math:`\nu = T_a + T_b - 2` degrees of freedom), the naive estimate is
    :math:`\hat I = \hat f'^\top \hat\Sigma^{-1} \hat f'`. It is biased upward, both by the
    inverse of a noisy covariance and by noise in :math:`\hat f'`. For Gaussian responses
    (Kanitscheider et al. 2015),

    .. math::

        \hat I_\mathrm{bc} = \hat I \, \frac{\nu - N - 1}{\nu}
            - \frac{N}{\delta s^2}\left(\frac{1}{T_a} + \frac{1}{T_b}\right),

    which for :math:`T_a = T_b = T` is
    :math:`\hat I\,(2T - N - 3)/(2T - 2) - 2N/(T\,\delta s^2)`; it is unbiased. It follows
    from :math:`E[\hat\Sigma^{-1}] = \nu\Sigma^{-1}/(\nu - N - 1)` (inverse Wishart) and
    :math:`E[\hat f'\hat f'^\top] = f'f'^\top + (1/T_a + 1/T_b)\Sigma/\delta s^2`.

    ``shuffled=True`` gives the information of trial-shuffled data (correlations removed),
    :math:`\hat I_\mathrm{shuffle} = \sum_i \hat f_i'^2 / \hat\sigma_i^2`, with the
    corresponding correction factor :math:`(\nu - 2)/\nu` (i.e. :math:`(2T-4)/(2T-2)`)
    instead of :math:`(\nu - N - 1)/\nu`.

    Units with zero noise variance are left out (with a warning) when their mean does not
    change, since they carry no information; if one does change, the information is unbounded
    and the result is NaN, with a warning. ``attrs["n_units"]`` is the N used.

    Parameters
    ----------
    responses_a, responses_b
        Responses to the two stimuli, dims ``(trial, unit)``; trials with NaN are left out.
    delta_s
        Stimulus difference :math:`\delta s` (non-zero).
    bias_corrected
        Apply the correction above (default) or return the naive estimate.
    shuffled
        Diagonal (shuffled) variant that ignores noise correlations.
    trial_dim, unit_dim
        Names of the dims.

    Returns
    -------
    xarray.DataArray
        Scalar ``"fisher_information"`` (units of :math:`1/\delta s^2`); ``attrs`` holds the
        naive estimate, the trial counts and the options. The bias-corrected value can be
        negative when the information is small.

    References
    ----------
    Kanitscheider, I., Coen-Cagli, R., Kohn, A. & Pouget, A. (2015). Measuring Fisher
    information accurately in correlated neural populations. PLoS Comput. Biol. 11, e1004218.
    """
    func = "linear_fisher_information"
    bias_corrected = check_bool(bias_corrected, name="bias_corrected", owner=func)
    shuffled = check_bool(shuffled, name="shuffled", owner=func)
    delta_s = check_real(delta_s, name="delta_s", owner=func)
    if delta_s == 0:
        raise InvalidParameterError(
            f"The 'delta_s' parameter of {func} must be non-zero. Got 0 instead."
        )
    xa, xb = _two_stimuli(responses_a, responses_b, trial_dim, unit_dim, func)
    ta, tb = xa.shape[0], xb.shape[0]
    nu = ta + tb - 2
    fprime = (xb.mean(axis=0) - xa.mean(axis=0)) / delta_s
    cov = _pooled_cov(xa, xb)
    n_all = xa.shape[1]
    attrs = {
        "bias_corrected": int(bias_corrected),
        "shuffled": int(shuffled),
        "n_trials_a": ta,
        "n_trials_b": tb,
        "delta_s": delta_s,
        "reference": "Kanitscheider et al. (2015)",
    }
    # Zero-variance units: without a mean difference they carry no information and are left
    # out; with one, the information is unbounded (a noiseless discriminating unit) -> NaN.
    const = ~(np.diag(cov) > 0)
    unbounded = int(np.sum(const & (fprime != 0)))
    if unbounded:
        warn_nan(
            unbounded,
            n_all,
            "units",
            "have zero noise variance but a non-zero mean difference, so the linear Fisher "
            "information is unbounded",
            consequence="the value is NaN",
        )
        return xr.DataArray(
            np.nan, name="fisher_information", attrs={**attrs, "naive": np.nan, "n_units": n_all}
        )
    warn_nan(
        int(np.sum(const)),
        n_all,
        "units",
        "have zero noise variance and no mean difference (no linear information)",
        consequence="they were left out",
    )
    fprime, cov = fprime[~const], cov[np.ix_(~const, ~const)]
    n = int(fprime.size)
    if shuffled:
        naive = float(np.sum(fprime**2 / np.diag(cov)))
        factor = (nu - 2) / nu
        needed = "T_a + T_b > 4"
        valid = nu > 2
    else:
        needed = f"T_a + T_b > N + 3 = {n + 3}"
        valid = nu - n - 1 > 0
        if nu < n:
            raise ValueError(
                f"{func} needs more trials than units to invert the covariance ({needed}); "
                f"got T_a={ta}, T_b={tb}, N={n}. Use shuffled=True or fewer units."
            )
        rank = int(np.linalg.matrix_rank(cov)) if n else 0
        if rank < n:
            raise ValueError(
                f"The noise covariance of 'responses_a' and 'responses_b' is singular (rank "
                f"{rank} < {n} units: some units are linear combinations of others), so {func} "
                "cannot invert it. Use shuffled=True or remove the redundant units."
            )
        naive = float(fprime @ np.linalg.solve(cov, fprime)) if n else 0.0
        factor = (nu - n - 1) / nu
    if bias_corrected:
        if not valid:
            raise ValueError(
                f"The bias correction of {func} needs {needed}; got T_a={ta}, T_b={tb}, N={n}."
            )
        value = naive * factor - n * (1.0 / ta + 1.0 / tb) / delta_s**2
    else:
        value = naive
    return xr.DataArray(
        value, name="fisher_information", attrs={**attrs, "naive": naive, "n_units": n}
    )


def differential_correlation_strength(
    responses_a: xr.DataArray,
    responses_b: xr.DataArray,
    *,
    bias_corrected: bool = True,
    trial_dim: str = TRIAL,
    unit_dim: str = UNIT,
) -> xr.Dataset:
    r"""Share of the noise variance that lies along the signal direction :math:`f'`.

    Information-limiting (differential) correlations are noise along :math:`f'`,
    :math:`\Sigma = \Sigma_0 + \varepsilon f'f'^\top` (Moreno-Bote et al. 2014). With
    :math:`u = f'/\lVert f'\rVert` and the pooled within-stimulus covariance :math:`\Sigma`,

    .. math::

        \mathrm{share} = \frac{u^\top \Sigma u}{\operatorname{tr}\Sigma}, \qquad
        \mathrm{relative} = N \cdot \mathrm{share},

    so isotropic noise gives share :math:`1/N` (relative 1). Noise in the estimated mean
    difference :math:`\hat d = \bar x_b - \bar x_a` has covariance :math:`c\Sigma`,
    :math:`c = 1/T_a + 1/T_b`, and inflates the naive share. With ``bias_corrected=True``
    numerator and denominator are corrected separately (for Gaussian noise :math:`\hat d`
    and :math:`\hat\Sigma` are independent):
    :math:`E[\hat d^\top\hat\Sigma\hat d] = d^\top\Sigma d + c\,\operatorname{tr}\Sigma^2`
    and :math:`E\lVert\hat d\rVert^2 = \lVert d\rVert^2 + c\operatorname{tr}\Sigma`, with
    the unbiased :math:`\widehat{\operatorname{tr}\Sigma^2} = \frac{\nu^2}{(\nu-1)(\nu+2)}
    \left(\operatorname{tr}\hat\Sigma^2 - (\operatorname{tr}\hat\Sigma)^2/\nu\right)`
    (:math:`\nu = T_a + T_b - 2`). The ratio of unbiased parts is consistent, not exactly
    unbiased; it is NaN when the corrected signal :math:`\lVert d\rVert^2` is not positive.

    Parameters
    ----------
    responses_a, responses_b
        Responses to two nearby stimuli, dims ``(trial, unit)``; NaN trials are left out.
    bias_corrected
        Correct for the noise in the estimated signal direction (see above).
    trial_dim, unit_dim
        Names of the dims.

    Returns
    -------
    xarray.Dataset
        Scalars ``share`` and ``relative_to_isotropic``.

    References
    ----------
    Moreno-Bote, R., Beck, J., Kanitscheider, I., Pitkow, X., Latham, P. & Pouget, A. (2014).
    Information-limiting correlations. Nat. Neurosci. 17, 1410-1417.
    """
    func = "differential_correlation_strength"
    bias_corrected = check_bool(bias_corrected, name="bias_corrected", owner=func)
    xa, xb = _two_stimuli(responses_a, responses_b, trial_dim, unit_dim, func)
    ta, tb, n = xa.shape[0], xb.shape[0], xa.shape[1]
    nu = ta + tb - 2
    d = xb.mean(axis=0) - xa.mean(axis=0)
    cov = _pooled_cov(xa, xb)
    total = float(np.trace(cov))
    num = float(d @ cov @ d)
    den = float(d @ d)
    if bias_corrected:
        if nu < 2:
            raise ValueError(
                f"The bias correction of {func} needs T_a + T_b >= 4; got {ta} and {tb}."
            )
        c = 1.0 / ta + 1.0 / tb
        tr2 = nu**2 / ((nu - 1) * (nu + 2)) * (float(np.sum(cov * cov)) - total**2 / nu)
        num -= c * tr2
        den -= c * total
    if den <= 0 or total <= 0:
        warnings.warn(
            "The (bias-corrected) signal difference or the noise variance is not positive; "
            "the share is NaN.",
            RuntimeWarning,
            stacklevel=2,
        )
        value = np.nan
    else:
        value = num / (den * total)
    return xr.Dataset(
        {"share": value, "relative_to_isotropic": value * n},
        attrs={"bias_corrected": int(bias_corrected), "n_units": n},
    )
