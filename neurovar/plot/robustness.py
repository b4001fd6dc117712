"""Robustness figures: accuracy against attack strength, one model or several."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import InvalidParameterError, param_error
from ._style import _figure_and_axes

__all__ = ['plot_robustness', 'plot_robustness_comparison']


_ROBUSTNESS_VARS = {
    "accuracy": ("eps", "attack"),
    "worst_case_accuracy": ("eps",),
    "ci_low": ("eps",),
    "ci_high": ("eps",),
}


def _check_n_classes(n_classes: Any, owner: str) -> int | None:
    if n_classes is None:
        return None
    if isinstance(n_classes, bool) or not isinstance(n_classes, Integral) or n_classes < 2:
        raise param_error("n_classes", owner, "an int >= 2 or None", n_classes)
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


def plot_robustness(
    result: xr.Dataset,
    *,
    n_classes: int | None = None,
    title: str | None = None,
    diagnosis: Any = None,
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
    diagnosis
        Optional output of :func:`neurovar.perturb.check_robustness_result` on ``result``:
        attacks it suspects of gradient masking are drawn dashed and labelled
        ``"<name> (masking suspected)"``.
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
    masked: set[str] = set()
    if diagnosis is not None:
        if not hasattr(diagnosis, "masked_attacks"):
            raise param_error(
                "diagnosis", owner, "the output of check_robustness_result or None", diagnosis
            )
        masked = set(diagnosis.masked_attacks)
    fig, ax = _figure_and_axes(ax, owner, (5.0, 3.8))
    res = result.sortby("eps")
    eps = np.asarray(res["eps"].values, dtype=float)
    for attack in res["attack"].values:
        flagged = str(attack) in masked
        (line,) = ax.plot(
            eps,
            res["accuracy"].sel(attack=attack).values,
            marker="o",
            ms=3,
            lw=1,
            ls="--" if flagged else "-",
            alpha=0.8,
            label=f"{attack} (masking suspected)" if flagged else str(attack),
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
    results: Mapping[str, xr.Dataset] | xr.Dataset,
    *,
    dim: str = "condition",
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
        ``{condition name: evaluate_robustness output}`` (non-empty), or one Dataset of
        results joined along ``dim`` (e.g. ``xr.concat(results, dim="condition")`` of results
        evaluated with ``tags={"condition": ...}``).
    dim
        The dim to split a joined Dataset along (ignored for a mapping).
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
    if isinstance(results, xr.Dataset):
        if dim not in results.dims:
            raise param_error("dim", owner, f"a dim of the joined results {list(results.dims)}", dim)
        results = {str(v): results.isel({dim: i}) for i, v in enumerate(results[dim].values)}
    if not isinstance(results, Mapping) or not results:
        raise param_error("results", owner, "a non-empty mapping {name: Dataset}", results)
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
