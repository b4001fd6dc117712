"""Variability figures: trial variance against mean (Fano factor)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import InvalidParameterError, check_rng, param_error
from ..dims import STIMULUS, TRIAL, UNIT, check_responses
from ._style import _figure_and_axes

__all__ = ['plot_variance_vs_mean']


def plot_variance_vs_mean(
    responses: xr.DataArray,
    *,
    ddof: int = 1,
    max_points: int | None = 20000,
    rng: None | int | np.random.Generator = 0,
    trial_dim: str = TRIAL,
    stimulus_dim: str = STIMULUS,
    unit_dim: str = UNIT,
    ax: Axes | None = None,
) -> Figure:
    r"""Trial variance vs trial mean of every (stimulus, unit) pair, log-log, with the Poisson line.

    For unit :math:`i` and stimulus :math:`s` over :math:`T` trials,

    .. math:: \mu_{si} = \frac1T\sum_t x_{tsi}, \qquad
              \sigma^2_{si} = \frac{1}{T - \mathrm{ddof}} \sum_t (x_{tsi} - \mu_{si})^2,

    plotted against each other with the line :math:`\sigma^2 = \mu` (Fano factor 1, Poisson
    counts). Points above it are super-Poisson; cortex typically lies somewhat above it
    (Tolhurst, Movshon & Dean 1983; Churchland et al. 2010). Only pairs with
    :math:`\mu > 0` and :math:`\sigma^2 > 0` can be drawn on log axes; the legend says how many
    of all pairs that is, and gives their median Fano factor :math:`\sigma^2/\mu`. NaN trials
    are skipped.

    Parameters
    ----------
    responses
        Responses with dims ``(trial, stimulus, unit)`` (an ANN layer or cortex; names
        overridable below), at least 2 trials.
    ddof
        Delta degrees of freedom of the variance (1: unbiased).
    max_points
        Draw at most this many points, a random subset (``None``: all); the median Fano factor
        and the counts use all pairs.
    rng
        Seed of that subset (None, int or numpy Generator); the global RNG is not used.
    trial_dim, stimulus_dim, unit_dim
        Dim names.
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The scatter has gid ``"variability"``, the Poisson line ``"poisson"``.

    Raises
    ------
    ValueError
        ``responses`` lacks the dims or has fewer than 2 trials; no pair has positive mean and
        variance; bad ``ddof``/``max_points``.

    References
    ----------
    Tolhurst, D. J., Movshon, J. A. & Dean, A. F. (1983). The statistical reliability of signals
    in single neurons in cat and monkey visual cortex. Vision Res. 23, 775-785.
    Churchland, M. M. et al. (2010). Stimulus onset quenches neural variability. Nat. Neurosci.
    13, 369-378.
    """
    owner = "plot_variance_vs_mean"
    check_rng(rng, owner=owner, torch_ok=False)
    check_responses(
        responses,
        trial_dim=trial_dim,
        stimulus_dim=stimulus_dim,
        unit_dim=unit_dim,
        name="responses",
        min_trials=2,
        owner=owner,
    )
    if isinstance(ddof, bool) or not isinstance(ddof, Integral) or ddof < 0:
        raise param_error("ddof", owner, "an int >= 0", ddof)
    if responses.sizes[trial_dim] <= ddof:
        raise param_error(
            "ddof", owner, f"smaller than the number of trials, {responses.sizes[trial_dim]}", ddof
        )
    if max_points is not None and (
        isinstance(max_points, bool) or not isinstance(max_points, Integral) or max_points < 1
    ):
        raise param_error("max_points", owner, "a positive int or None", max_points)
    mean = responses.mean(trial_dim, skipna=True)
    var = responses.var(trial_dim, ddof=int(ddof), skipna=True)
    mean = np.asarray(mean.transpose(stimulus_dim, unit_dim, ...).values, dtype=float).ravel()
    var = np.asarray(var.transpose(stimulus_dim, unit_dim, ...).values, dtype=float).ravel()
    ok = np.isfinite(mean) & np.isfinite(var) & (mean > 0) & (var > 0)
    n_ok, n_all = int(ok.sum()), int(mean.size)
    if n_ok == 0:
        raise InvalidParameterError(
            f"The 'responses' parameter of {owner} has no (stimulus, unit) pair with positive "
            f"trial mean and variance ({n_all} pairs); nothing can be drawn on log axes."
        )
    m, v = mean[ok], var[ok]
    median_ff = float(np.median(v / m))
    shown = np.arange(n_ok)
    if max_points is not None and n_ok > max_points:
        gen = np.random.default_rng(check_rng(rng, owner=owner, torch_ok=False))
        shown = np.sort(gen.choice(n_ok, size=int(max_points), replace=False))
    fig, ax = _figure_and_axes(ax, owner, (4.5, 4.0))
    pts = ax.scatter(
        m[shown],
        v[shown],
        s=4,
        alpha=0.3,
        lw=0,
        rasterized=len(shown) > 2000,
        label=f"{n_ok} of {n_all} pairs, median FF {median_ff:.2f}",
    )
    pts.set_gid("variability")
    lo = min(m.min(), v.min())
    hi = max(m.max(), v.max())
    grid = np.geomspace(lo, hi, 50)
    (line,) = ax.plot(grid, grid, "k--", lw=1, label="Poisson (var = mean)")
    line.set_gid("poisson")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trial mean")
    ax.set_ylabel(f"trial variance (ddof={int(ddof)})")
    name = responses.attrs.get("layer") or responses.name
    if name:
        ax.set_title(str(name), fontsize=9)
    ax.legend(fontsize=7)
    return fig
