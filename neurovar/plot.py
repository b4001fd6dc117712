"""Matplotlib figures of neurovar's results: robustness curves, variability and corruptions.

Every function takes neurovar's xarray results (or image tensors) and returns a
:class:`matplotlib.figure.Figure`; nothing calls ``plt.show()``. Without ``ax=`` a new figure
is built with :class:`matplotlib.figure.Figure` directly, not through :mod:`matplotlib.pyplot`,
so it works under any backend (Agg included), is never registered with pyplot's global figure
list (no "too many open figures" warnings in loops) and is displayed in Jupyter as a cell's
value or saved with ``fig.savefig(path)``. With ``ax=`` the function draws into that existing
axes (e.g. one panel of ``plt.subplots``) and returns its figure.

Artists that tests and users may want to find again carry a ``gid``
(``artist.get_gid()``): ``"attack:<name>"``, ``"worst_case"``, ``"worst_case_ci"``,
``"clean"``, ``"chance"``, ``"poisson"``, ``"mean"``, ``"spectrum"``, ``"panel:<name>:<severity>"``;
in :func:`plot_comparison` ``"reference:<area>"`` (published band of that area) and
``"reference_note"`` (which study each band comes from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from neurovar.dims import STIMULUS, TRIAL, UNIT, check_dims, check_responses, pair_dim

from ._validation import InvalidParameterError, check_bool, check_memory, check_rng

__all__ = [
    "plot_robustness",
    "plot_robustness_comparison",
    "plot_variance_vs_mean",
    "plot_noise_correlations",
    "plot_spectrum",
    "plot_corruptions",
    "plot_comparison",
    "COMPARISON_DETAIL_PANELS",
]

_ROBUSTNESS_VARS = {
    "accuracy": ("eps", "attack"),
    "worst_case_accuracy": ("eps",),
    "ci_low": ("eps",),
    "ci_high": ("eps",),
}


# ---------------------------------------------------------------------------- helpers
def _error(owner: str, name: str, expected: str, got: Any) -> ValueError:
    """The package's uniform error (:class:`neurovar._validation.InvalidParameterError`)."""
    from neurovar._validation import param_error

    return param_error(name, owner, expected, got)


def _figure_and_axes(ax: Axes | None, owner: str, figsize: tuple[float, float]) -> tuple[Any, Axes]:
    """``(ax.figure, ax)`` for a given axes, else a new pyplot-free figure with one axes."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise InvalidParameterError(
            f"The 'ax' parameter of {owner} must be a matplotlib Axes or None. "
            f"Got {type(ax).__name__} instead."
        )
    return ax.figure, ax


def _check_n_classes(n_classes: Any, owner: str) -> int | None:
    if n_classes is None:
        return None
    if isinstance(n_classes, bool) or not isinstance(n_classes, Integral) or n_classes < 2:
        raise _error(owner, "n_classes", "an int >= 2 or None", n_classes)
    return int(n_classes)


def _check_robustness_result(result: Any, owner: str, name: str = "result") -> None:
    """Raise unless ``result`` looks like the Dataset of ``evaluate_robustness``."""
    if not isinstance(result, xr.Dataset):
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be the xarray.Dataset returned by "
            f"neurovar.perturb.evaluate_robustness. Got {type(result).__name__} instead."
        )
    missing = [v for v in _ROBUSTNESS_VARS if v not in result.data_vars]
    if missing:
        raise InvalidParameterError(
            f"The '{name}' parameter of {owner} must be the output of evaluate_robustness; "
            f"missing variables {missing!r}, found {sorted(map(str, result.data_vars))!r}."
        )
    for var, dims in _ROBUSTNESS_VARS.items():
        if tuple(result[var].dims) != dims:
            raise InvalidParameterError(
                f"The '{name}' parameter of {owner}: variable {var!r} must have dims {dims!r}. "
                f"Got {tuple(result[var].dims)!r} instead."
            )


def _chance(result: xr.Dataset, n_classes: int | None) -> float | None:
    if n_classes is not None:
        return 1.0 / n_classes
    from_attrs = result.attrs.get("n_classes")
    return 1.0 / float(from_attrs) if from_attrs else None


def _robustness_title(result: xr.Dataset) -> str:
    """``"linf attacks, stochastic model: EOT 8 draws, 10 evaluations"`` from the attrs."""
    attrs = result.attrs
    norm = attrs.get("norm", "?")
    if "stochastic" not in attrs:
        return f"{norm} attacks"
    if int(attrs["stochastic"]):
        return (
            f"{norm} attacks, stochastic model: EOT {attrs.get('eot_samples', '?')} draws, "
            f"{attrs.get('n_evaluations', '?')} evaluations"
        )
    return f"{norm} attacks, deterministic model (no EOT)"


# ---------------------------------------------------------------------------- robustness
def plot_robustness(
    result: xr.Dataset,
    *,
    n_classes: int | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    r"""Accuracy vs attack radius for every attack, and the per-example worst case with its CI.

    One thin line per attack, :math:`\mathrm{acc}_a(\epsilon)`, and a bold black line for the
    worst case over attacks, :math:`\bar w(\epsilon) = \frac1N\sum_n \min_a c_{a,n}(\epsilon)`
    (the number to quote; Croce & Hein 2020), with its confidence band (``ci_low`` to
    ``ci_high``, Wilson 1927). Since :math:`w_n \le c_{a,n}`, the worst case never lies above an
    attack's curve. A dotted line marks the clean accuracy and a grey line chance,
    :math:`1/K`, when the number of classes :math:`K` is known. The title states whether the
    model was found stochastic and, if so, the EOT draws and repeated evaluations used
    (Athalye, Carlini & Wagner 2018).

    Parameters
    ----------
    result
        Output of :func:`neurovar.perturb.evaluate_robustness`: ``accuracy`` (eps, attack),
        ``worst_case_accuracy``, ``ci_low``, ``ci_high`` (eps); ``clean_accuracy`` and the attrs
        ``norm``, ``stochastic``, ``eot_samples``, ``n_evaluations`` are used when present.
    n_classes
        Number of classes for the chance line; default ``result.attrs["n_classes"]`` if set,
        else no chance line.
    title
        Axes title; default from the attrs (norm, stochastic or not, EOT, evaluations).
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    TypeError
        ``result`` is not a Dataset, ``ax`` not an Axes.
    ValueError
        ``result`` lacks the variables or dims above; ``n_classes`` not an int >= 2.

    References
    ----------
    Croce, F. & Hein, M. (2020). Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks. ICML. Athalye, A., Carlini, N. & Wagner, D. (2018).
    Obfuscated gradients give a false sense of security. ICML.
    """
    owner = "plot_robustness"
    _check_robustness_result(result, owner)
    k = _check_n_classes(n_classes, owner)
    fig, ax = _figure_and_axes(ax, owner, (5.0, 3.8))
    res = result.sortby("eps")
    eps = np.asarray(res["eps"].values, dtype=float)
    for attack in res["attack"].values:
        (line,) = ax.plot(
            eps,
            res["accuracy"].sel(attack=attack).values,
            marker="o",
            ms=3,
            lw=1,
            alpha=0.8,
            label=str(attack),
        )
        line.set_gid(f"attack:{attack}")
    band = ax.fill_between(
        eps, res["ci_low"].values, res["ci_high"].values, color="k", alpha=0.15, lw=0
    )
    band.set_gid("worst_case_ci")
    level = res.attrs.get("confidence_level")
    ci_text = f", {100 * float(level):.0f}% CI" if level is not None else ", CI"
    (worst,) = ax.plot(
        eps,
        res["worst_case_accuracy"].values,
        color="k",
        lw=2.5,
        marker="o",
        ms=4,
        label=f"worst case{ci_text}",
    )
    worst.set_gid("worst_case")
    if "clean_accuracy" in res.data_vars:
        clean = ax.axhline(
            float(res["clean_accuracy"]),
            color="tab:gray",
            ls=":",
            lw=1,
            label=f"clean ({float(res['clean_accuracy']):.2f})",
        )
        clean.set_gid("clean")
    chance = _chance(res, k)
    if chance is not None:
        line = ax.axhline(chance, color="0.6", ls="--", lw=1, label=f"chance ({chance:.2f})")
        line.set_gid("chance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(r"attack radius $\epsilon$" + f" ({res.attrs.get('norm', '?')})")
    ax.set_ylabel("robust accuracy")
    ax.set_title(_robustness_title(res) if title is None else title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_robustness_comparison(
    results: Mapping[str, xr.Dataset],
    *,
    n_classes: int | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    r"""Worst-case robust accuracy vs attack radius of several conditions, with their CIs.

    One line per condition (e.g. no noise / isotropic / structured at matched total variance),
    each the per-example worst case over its attack ensemble,
    :math:`\bar w(\epsilon) = \frac1N\sum_n \min_a c_{a,n}(\epsilon)`, with its confidence band
    (Croce & Hein 2020). Use :func:`plot_robustness` to see the individual attacks.

    Parameters
    ----------
    results
        ``{condition name: evaluate_robustness output}`` (non-empty).
    n_classes
        Number of classes for a chance line (default: none unless every result's attrs set
        ``n_classes``).
    title
        Axes title; default ``"worst case over attacks"``.
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        Lines have gids ``"worst_case:<condition>"``.

    References
    ----------
    Croce, F. & Hein, M. (2020). Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks. ICML.
    """
    owner = "plot_robustness_comparison"
    if not isinstance(results, Mapping) or not results:
        raise _error(owner, "results", "a non-empty mapping {name: Dataset}", results)
    for name, res in results.items():
        _check_robustness_result(res, owner, name=f"results[{name!r}]")
    k = _check_n_classes(n_classes, owner)
    fig, ax = _figure_and_axes(ax, owner, (5.0, 3.8))
    for name, res in results.items():
        res = res.sortby("eps")
        eps = np.asarray(res["eps"].values, dtype=float)
        stoch = res.attrs.get("stochastic")
        tag = "" if stoch is None else (" (stochastic)" if int(stoch) else " (deterministic)")
        (line,) = ax.plot(
            eps, res["worst_case_accuracy"].values, marker="o", lw=2, label=f"{name}{tag}"
        )
        line.set_gid(f"worst_case:{name}")
        ax.fill_between(
            eps, res["ci_low"].values, res["ci_high"].values, color=line.get_color(), alpha=0.15
        )
    chance = 1.0 / k if k is not None else None
    if chance is None:
        from_attrs = [r.attrs.get("n_classes") for r in results.values()]
        if all(from_attrs) and len(set(from_attrs)) == 1:
            chance = 1.0 / float(from_attrs[0])
    if chance is not None:
        line = ax.axhline(chance, color="0.6", ls="--", lw=1, label=f"chance ({chance:.2f})")
        line.set_gid("chance")
    norms = {r.attrs.get("norm", "?") for r in results.values()}
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(r"attack radius $\epsilon$" + f" ({', '.join(sorted(map(str, norms)))})")
    ax.set_ylabel("worst-case robust accuracy")
    ax.set_title("worst case over attacks" if title is None else title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------- variability
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
        raise _error(owner, "ddof", "an int >= 0", ddof)
    if responses.sizes[trial_dim] <= ddof:
        raise _error(
            owner, "ddof", f"smaller than the number of trials, {responses.sizes[trial_dim]}", ddof
        )
    if max_points is not None and (
        isinstance(max_points, bool) or not isinstance(max_points, Integral) or max_points < 1
    ):
        raise _error(owner, "max_points", "a positive int or None", max_points)
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


def plot_noise_correlations(
    rsc: xr.DataArray,
    *,
    bins: int | Sequence[float] = 50,
    unit_dim: str = UNIT,
    ax: Axes | None = None,
) -> Figure:
    r"""Histogram of the noise correlations :math:`r_{sc}` of all distinct unit pairs.

    Takes the upper triangle :math:`\{r_{ij}: i < j\}` of the matrix (each pair once, the
    diagonal :math:`r_{ii} = 1` left out) and drops non-finite entries (units without
    trial-to-trial variance). The mean :math:`\bar r_{sc}` is marked; awake cortex typically
    gives 0.01-0.2 (Cohen & Kohn 2011).

    Parameters
    ----------
    rsc
        Output of :func:`neurovar.stats.noise_correlation` with ``method="pooled"``: dims
        exactly ``(unit, unit_j)`` (select one stimulus of a ``"per_stimulus"`` result first).
    bins
        Passed to :meth:`matplotlib.axes.Axes.hist`.
    unit_dim
        Name of the unit dim; the second is ``unit_dim + "_j"``.
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The mean line has gid ``"mean"``.

    Raises
    ------
    ValueError
        Wrong dims, a non-square matrix, or no finite off-diagonal pair.

    References
    ----------
    Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting neuronal correlations.
    Nat. Neurosci. 14, 811-819.
    """
    owner = "plot_noise_correlations"
    if not isinstance(unit_dim, str):
        raise _error(owner, "unit_dim", "a dimension name (str)", unit_dim)
    unit_j = pair_dim(unit_dim)
    check_dims(
        rsc,
        [unit_dim, unit_j],
        name="rsc",
        allow_extra=False,
        owner=owner,
        params={unit_dim: "unit_dim"},
    )
    n = rsc.sizes[unit_dim]
    if rsc.sizes[unit_j] != n:
        raise InvalidParameterError(
            f"The 'rsc' parameter of {owner} must be square over ({unit_dim!r}, {unit_j!r}); "
            f"got sizes {n} and {rsc.sizes[unit_j]}."
        )
    mat = np.asarray(rsc.transpose(unit_dim, unit_j).values, dtype=float)
    pairs = mat[np.triu_indices(n, k=1)]
    finite = pairs[np.isfinite(pairs)]
    if finite.size == 0:
        raise InvalidParameterError(
            f"The 'rsc' parameter of {owner} has no finite off-diagonal entry "
            f"({n} units, {pairs.size} pairs)."
        )
    fig, ax = _figure_and_axes(ax, owner, (4.5, 3.5))
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise _error(owner, "bins", "an int >= 1 or a sequence of bin edges", bins)
        check_memory(8.0 * 4 * bins, name="bins", owner=owner, value=bins, what="the histogram")
    elif isinstance(bins, (str, bool)) or not isinstance(bins, Sequence):
        raise _error(owner, "bins", "an int >= 1 or a sequence of bin edges", bins)
    ax.hist(finite, bins=bins, color="tab:blue", alpha=0.8)
    mean = float(finite.mean())
    line = ax.axvline(mean, color="k", lw=1.5, label=f"mean {mean:.3f}")
    line.set_gid("mean")
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("noise correlation $r_{sc}$")
    ax.set_ylabel("unit pairs")
    dropped = pairs.size - finite.size
    note = f" ({dropped} non-finite left out)" if dropped else ""
    ax.set_title(f"{finite.size} pairs of {n} units{note}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_spectrum(
    cov_or_eigs: xr.DataArray | np.ndarray,
    *,
    normalize: bool = False,
    label: str | None = None,
    unit_dim: str = UNIT,
    ax: Axes | None = None,
) -> Figure:
    r"""Eigenspectrum :math:`\lambda_n` vs rank :math:`n` on log-log axes, with the participation ratio.

    From the eigenvalues :math:`\lambda_1 \ge \lambda_2 \ge \dots` (given, or of the covariance
    via :func:`neurovar.stats.eigenspectrum`) the legend gives

    .. math:: \mathrm{PR} = \frac{(\sum_n \lambda_n)^2}{\sum_n \lambda_n^2}

    (Gao et al. 2017), computed from all finite eigenvalues; only positive ones can be drawn on
    log axes. Call it repeatedly with the same ``ax`` to overlay several spectra.

    Parameters
    ----------
    cov_or_eigs
        A covariance with dims ``(unit, unit_j)`` (e.g. :func:`neurovar.stats.noise_covariance`,
        :func:`neurovar.noise.fit_perturbation_covariance`), an eigenspectrum with the single dim
        ``component`` (:func:`neurovar.stats.eigenspectrum`), or a plain 1-D array of
        eigenvalues / 2-D square covariance array.
    normalize
        Divide the eigenvalues by their sum (fraction of variance per component), which makes
        spectra of different magnitude comparable.
    label
        Prefix of the legend entry.
    unit_dim
        Name of the unit dim of a covariance.
    ax
        Axes to draw into; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The spectrum line has gid ``"spectrum"``.

    Raises
    ------
    ValueError
        Any other dims or shape, or no finite eigenvalue.

    References
    ----------
    Gao, P. et al. (2017). A theory of multineuronal dimensionality, dynamics and measurement.
    bioRxiv 214262. Stringer, C. et al. (2019). High-dimensional geometry of population
    responses in visual cortex. Nature 571, 361-365.
    """
    from neurovar.stats import eigenspectrum

    owner = "plot_spectrum"
    normalize = check_bool(normalize, name="normalize", owner=owner)
    if not isinstance(unit_dim, str):
        raise _error(owner, "unit_dim", "a dimension name (str)", unit_dim)
    unit_j = pair_dim(unit_dim)
    obj = cov_or_eigs
    if not isinstance(obj, xr.DataArray):
        arr = np.asarray(obj, dtype=float) if not isinstance(obj, xr.Dataset) else None
        if arr is not None and arr.ndim == 1:
            obj = xr.DataArray(arr, dims=("component",))
        elif arr is not None and arr.ndim == 2 and arr.shape[0] == arr.shape[1]:
            obj = xr.DataArray(arr, dims=(unit_dim, unit_j))
        else:
            shape = getattr(arr, "shape", type(cov_or_eigs).__name__)
            raise _error(
                owner,
                "cov_or_eigs",
                "a covariance (unit, unit_j), an eigenspectrum (component), a 1-D array of "
                "eigenvalues or a square 2-D array",
                shape,
            )
    if set(obj.dims) == {"component"}:
        eigs = np.asarray(obj.values, dtype=float)
    elif set(obj.dims) == {unit_dim, unit_j}:
        if obj.sizes[unit_dim] != obj.sizes[unit_j]:
            raise InvalidParameterError(
                f"The 'cov_or_eigs' parameter of {owner} must be square over "
                f"({unit_dim!r}, {unit_j!r}); got sizes {obj.sizes[unit_dim]} and "
                f"{obj.sizes[unit_j]}."
            )
        eigs = np.asarray(eigenspectrum(obj, unit_dim=unit_dim).values, dtype=float)
    else:
        raise InvalidParameterError(
            f"The 'cov_or_eigs' parameter of {owner} must have dims ({unit_dim!r}, {unit_j!r}) "
            f"or ('component',) (set by the 'unit_dim' parameter, {unit_dim!r}); found "
            f"{tuple(obj.dims)!r}. Select extra dims first, "
            f"e.g. cov.isel(layer=0)."
        )
    eigs = eigs[np.isfinite(eigs)]
    if eigs.size == 0:
        raise InvalidParameterError(
            f"The 'cov_or_eigs' parameter of {owner} has no finite eigenvalue."
        )
    eigs = np.sort(eigs)[::-1]
    total = float(eigs.sum())
    sq = float(np.sum(eigs**2))
    pr = total**2 / sq if sq > 0 else float("nan")
    if normalize:
        if total <= 0:
            raise InvalidParameterError(
                f"The 'cov_or_eigs' parameter of {owner} has eigenvalues summing to {total:g}; "
                "cannot normalize."
            )
        eigs = eigs / total
    ranks = np.arange(1, eigs.size + 1)
    pos = eigs > 0
    fig, ax = _figure_and_axes(ax, owner, (4.5, 3.5))
    text = f"PR = {pr:.1f} of {eigs.size}"
    (line,) = ax.plot(
        ranks[pos],
        eigs[pos],
        marker=".",
        ms=3,
        lw=1,
        label=text if label is None else f"{label}: {text}",
    )
    line.set_gid("spectrum")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank $n$")
    ax.set_ylabel("fraction of variance" if normalize else r"eigenvalue $\lambda_n$")
    ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------- corruptions
def _montage(x: np.ndarray, gap: int = 1) -> np.ndarray:
    """Images (N, C, H, W) side by side with ``gap`` white columns: (H, N W + gaps[, 3])."""
    n, c, h, w = x.shape
    out = np.ones((h, n * w + (n - 1) * gap, c))
    for i in range(n):
        out[:, i * (w + gap) : i * (w + gap) + w] = x[i].transpose(1, 2, 0)
    return out[..., 0] if c == 1 else out


def plot_corruptions(
    images: Any,
    *,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 3, 5),
    show_clean: bool = True,
    rng: None | int | np.random.Generator = 0,
) -> Figure:
    r"""Grid of example images under CIFAR-10-C corruptions: one row per corruption, one column per severity.

    Every panel shows all ``images`` side by side after
    ``neurovar.perturb.corrupt(images, name, severity=s, rng=seed_name)``; the seed of a
    corruption is drawn once from ``rng`` and reused across its severities, so the columns of a
    row differ in strength only (common random numbers), and the figure is reproducible.

    Parameters
    ----------
    images
        Float tensor in [0, 1], shape (N, C, H, W) or (C, H, W), C = 1 (gray) or 3 (RGB);
        pass a few (1-6) images.
    names
        Corruptions (keys of :data:`neurovar.perturb.CORRUPTIONS`); default all 15.
    severities
        Severities 1-5 to show (columns).
    show_clean
        Add a first column with the clean images.
    rng
        None, int or numpy Generator for the per-corruption seeds.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(names) x (len(severities) + show_clean)`` panels; corrupted panels have gid
        ``"panel:<name>:<severity>"``, clean ones ``"panel:<name>:clean"``.

    Raises
    ------
    ValueError
        Bad ``images`` shape, range or channels; unknown ``names``; ``severities`` not in 1-5.

    References
    ----------
    Hendrycks, D. & Dietterich, T. (2019). Benchmarking neural network robustness to common
    corruptions and perturbations. ICLR.
    """
    import torch

    from neurovar.perturb import CORRUPTIONS, SEVERITIES, corrupt

    owner = "plot_corruptions"
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise _error(owner, "images", "a torch.Tensor of shape (N, C, H, W) or (C, H, W)", shape)
    x = images[None] if images.ndim == 3 else images
    if x.shape[0] < 1:
        raise _error(owner, "images", "at least one image", tuple(x.shape))
    if x.shape[1] not in (1, 3):
        raise _error(owner, "images", "1 (gray) or 3 (RGB) channels in dim 1", x.shape[1])
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise _error(owner, "images", "a floating-point tensor with values in [0, 1]", x.dtype)
    if names is None:
        names = list(CORRUPTIONS)
    elif isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if not names or unknown:
        raise _error(
            owner, "names", f"a non-empty list from {sorted(CORRUPTIONS)}", unknown or names
        )
    severities = [severities] if isinstance(severities, Integral) else list(severities)
    bad = [s for s in severities if isinstance(s, bool) or s not in SEVERITIES]
    if not severities or bad:
        raise _error(owner, "severities", f"a non-empty list from {list(SEVERITIES)}", severities)
    gen = np.random.default_rng(rng)
    seeds = {name: int(gen.integers(2**62)) for name in names}
    x = x.detach()
    clean = _montage(x.cpu().double().numpy())
    columns: list[Any] = (["clean"] if show_clean else []) + severities
    n_img = x.shape[0]
    fig = Figure(
        figsize=(1.0 + 0.9 * n_img * len(columns), 0.3 + 1.0 * len(names)), layout="constrained"
    )
    axes = fig.subplots(len(names), len(columns), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i, name in enumerate(names):
        for j, col in enumerate(columns):
            ax = axes[i, j]
            if col == "clean":
                panel = clean
            else:
                out = corrupt(x, name, severity=int(col), rng=seeds[name])
                panel = _montage(out.cpu().double().numpy())
            ax.imshow(panel, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_gid(f"panel:{name}:{col}")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col if col == "clean" else f"severity {col}", fontsize=8)
            if j == 0:
                ax.set_ylabel(
                    name.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center"
                )
    fig.suptitle("CIFAR-10-C corruptions (Hendrycks & Dietterich 2019)", fontsize=9)
    return fig


# ---------------------------------------------------------------------------- ANN vs cortex
#: Summary panels drawn with a published reference, and the reference statistic they use.
_REFERENCE_STATISTIC = {
    "fano_factor": "fano_factor",
    "mean_matched_fano_factor": "fano_factor",
    "noise_correlation": "r_sc",
}
#: Raw-value panels of :func:`plot_comparison` (beside one summary panel per statistic).
COMPARISON_DETAIL_PANELS = ("fano_vs_mean", "rsc_distribution", "rsc_vs_signal", "eigenspectrum")


def _comparison_label(key: tuple[str, str, str]) -> str:
    return f"{key[0]}:{key[1]}" + (f" [{key[2]}]" if key[2] else "")


def _short_citation(text: str) -> str:
    first = str(text).split(";")[0]
    return first.split(" Nat")[0].split(" J ")[0].split(" Science")[0].strip()


def _summary_panel(ax: Axes, table: Any, stat: str, reference: Any) -> None:
    """Value and CI per layer/area and condition; matched published bands on cortex rows."""
    from neurovar.cortex.reference import match_reference

    sub = table[table["statistic"] == stat].reset_index(drop=True)
    labels = [
        f"{r.source}:{r.layer}" + (f" [{r.condition}]" if r.condition else "")
        for r in sub.itertuples()
    ]
    y = np.arange(len(sub))
    colors = ["tab:blue" if s == "ann" else "tab:red" for s in sub["source"]]
    lo = (sub["value"] - sub["ci_low"]).clip(lower=0).fillna(0)
    hi = (sub["ci_high"] - sub["value"]).clip(lower=0).fillna(0)
    ax.errorbar(sub["value"], y, xerr=[lo, hi], fmt="none", ecolor="k", lw=1, gid="ci")
    ax.scatter(sub["value"], y, c=colors, zorder=3, gid="value")
    ax.set_yticks(y, labels, fontsize=7)
    title = stat
    if "scale_dependent" in sub and sub["scale_dependent"].astype(bool).any():
        title += "\n(ANN values scale-dependent: not comparable with counts)"
    ref_name = _REFERENCE_STATISTIC.get(stat)
    if reference is not None and ref_name is not None:
        details = table.attrs.get("details") or {}
        notes = []
        for i, r in enumerate(sub.itertuples()):
            if r.source != "cortex":
                continue
            prep = details.get((r.source, r.layer, r.condition), {}).get("preparation") or None
            window = getattr(r, "count_window", "") or None
            ref = match_reference(
                reference, statistic=ref_name, area=str(r.layer), count_window=window,
                preparation=prep,
            )  # fmt: skip
            if ref.empty:
                notes.append(f"{r.layer} ({window or 'window unknown'}): no published match")
                continue
            for p in ref.itertuples():
                if np.isfinite(p.value_low) and np.isfinite(p.value_high):
                    ax.fill_betweenx(
                        [i - 0.4, i + 0.4], p.value_low, p.value_high, color="0.85", zorder=0,
                        gid=f"reference:{r.layer}",
                    )  # fmt: skip
                if np.isfinite(p.value):
                    ax.vlines(p.value, i - 0.4, i + 0.4, color="0.5", ls=":", lw=1,
                              gid=f"reference:{r.layer}")  # fmt: skip
                notes.append(
                    f"{r.layer}: {p.area} {p.preparation}, {p.count_window_ms} ms "
                    f"({_short_citation(p.citation)})"
                )
        if notes:
            title += "\ngrey: published, same area & count window"
            ax.text(0.01, -0.02, "\n".join(notes), transform=ax.transAxes, fontsize=5,
                    va="top", ha="left", gid="reference_note")  # fmt: skip
    ax.set_title(title, fontsize=8)


def _detail_panel(ax: Axes, table: Any, panel: str) -> bool:
    """Draw one raw-value panel; False when the table has no data for it."""
    from neurovar.cortex.compare import _slope

    details = table.attrs.get("details") or {}
    keys = list(details)
    if panel == "fano_vs_mean":
        with_means = [k for k in keys if "mean" in details[k]]
        if not with_means:
            return False
        lims = [np.inf, -np.inf]
        for k in with_means:
            m, v = details[k]["mean"], details[k]["var"]
            ok = (m > 0) & (v > 0)
            if not ok.any():
                continue
            pts = ax.scatter(m[ok], v[ok], s=3, alpha=0.3, label=_comparison_label(k))
            lims = [min(lims[0], m[ok].min()), max(lims[1], m[ok].max())]
            b, a = details[k].get("variance_mean_fit", (np.nan, np.nan))
            if np.isfinite(b):
                xs = np.geomspace(m[ok].min(), m[ok].max(), 50)
                ax.plot(xs, a * xs**b, color=pts.get_facecolor()[0][:3], lw=1.5)
        if np.isfinite(lims[0]):
            ax.plot(lims, lims, "k--", lw=1, label="Poisson (var = mean)", gid="poisson")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean response")
        ax.set_ylabel("variance across trials")
    elif panel == "rsc_distribution":
        with_rsc = [k for k in keys if "rsc" in details[k]]
        if not with_rsc:
            return False
        bins = np.linspace(-1, 1, 81)
        for k in with_rsc:
            r = details[k]["rsc"]
            ax.hist(r[np.isfinite(r)], bins=bins, density=True, histtype="step",
                    label=_comparison_label(k))  # fmt: skip
        ax.set_xlabel("noise correlation r_sc")
        ax.set_ylabel("density")
    elif panel == "rsc_vs_signal":
        with_sig = [k for k in keys if "rsig" in details[k]]
        if not with_sig:
            return False
        for k in with_sig:
            x, y = details[k]["rsig"], details[k]["rsc"]
            ax.scatter(x, y, s=2, alpha=0.2, label=_comparison_label(k))
            b = _slope(x, y)
            if np.isfinite(b):
                xs = np.array([-1.0, 1.0])
                ok = np.isfinite(x) & np.isfinite(y)
                ax.plot(xs, y[ok].mean() + b * (xs - x[ok].mean()), lw=1.5)
        ax.set_xlabel("signal correlation")
        ax.set_ylabel("noise correlation r_sc")
    elif panel == "eigenspectrum":
        with_eig = [k for k in keys if "eigenvalues" in details[k]]
        if not with_eig:
            return False
        for k in with_eig:
            lam = np.asarray(details[k]["eigenvalues"], dtype=float)
            lam = lam[np.isfinite(lam) & (lam > 0)]  # dead units / zero eigenvalues: absent
            if lam.size:
                ax.plot(np.arange(1, lam.size + 1), lam / lam.sum(), label=_comparison_label(k),
                        gid=f"spectrum:{_comparison_label(k)}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rank")
        ax.set_ylabel("fraction of noise variance")
    ax.legend(fontsize=6)
    return True


def plot_comparison(
    table: Any,
    *,
    reference: Any = None,
    panel: str | None = None,
    ax: Axes | None = None,
) -> Any:
    """Figures of a :func:`neurovar.cortex.compare` table: summary with CIs, raw values.

    Parameters
    ----------
    table
        Output of :func:`neurovar.cortex.compare`.
    reference
        Optional :func:`neurovar.cortex.load_reference_values` table. Published ranges
        (grey bands) and values (dotted ticks) are drawn on the row of each cortical area
        they match in area, count window and preparation
        (:func:`neurovar.cortex.match_reference`); the panel says which study each band comes
        from, or that none matches. ANN rows get no band.
    panel
        ``None``: every figure, as a dict. A statistic of the table (``"noise_correlation"``)
        or one of ``"fano_vs_mean"``, ``"rsc_distribution"``, ``"rsc_vs_signal"``,
        ``"eigenspectrum"``: that one panel, drawn into ``ax``.
    ax
        Axes to draw one ``panel`` into (a new figure if None). Only with ``panel``.

    Returns
    -------
    dict or matplotlib.figure.Figure
        With ``panel=None``: figures ``"summary"`` (one panel per statistic), and, when the
        table carries raw values (``table.attrs["details"]``), ``"fano_vs_mean"`` (variance vs
        mean, log-log, Poisson line and fitted power law), ``"rsc_distribution"``,
        ``"rsc_vs_signal"`` and ``"eigenspectrum"`` (normalised noise eigenvalues vs rank;
        dead units and zero eigenvalues left out). Otherwise the figure of ``ax``.
    """
    owner = "plot_comparison"
    missing = [c for c in ("source", "layer", "condition", "statistic", "value") if c not in table]
    if missing:
        raise ValueError(
            f"The 'table' parameter of {owner} must be the output of compare(); missing "
            f"columns {missing!r}."
        )
    from neurovar.cortex.compare import STATISTICS

    present = [s for s in STATISTICS if s in set(table["statistic"])]
    present += sorted(set(table["statistic"]) - set(present))
    if panel is not None:
        if panel in present:
            fig, axes = _figure_and_axes(ax, owner, (4.5, 3.5))
            _summary_panel(axes, table, panel, reference)
            return fig
        if panel in COMPARISON_DETAIL_PANELS:
            fig, axes = _figure_and_axes(ax, owner, (4.5, 4))
            if not _detail_panel(axes, table, panel):
                raise ValueError(
                    f"The 'table' parameter of {owner} has no raw values for panel {panel!r} "
                    "(table.attrs['details'] lacks them; compute the matching statistic)."
                )
            return fig
        raise _error(owner, "panel", f"None, one of {present + list(COMPARISON_DETAIL_PANELS)}",
                     panel)  # fmt: skip
    if ax is not None:
        raise ValueError(
            f"The 'ax' parameter of {owner} needs 'panel': with panel=None several figures "
            "are built."
        )
    figures: dict[str, Any] = {}
    n = max(len(present), 1)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for a, stat in zip(axes, present):
        _summary_panel(a, table, stat, reference)
    for a in axes[len(present) :]:
        a.set_visible(False)
    figures["summary"] = fig
    for name in COMPARISON_DETAIL_PANELS:
        fig = Figure(figsize=(4.5, 4), layout="constrained")
        if _detail_panel(fig.add_subplot(), table, name):
            figures[name] = fig
    return figures
