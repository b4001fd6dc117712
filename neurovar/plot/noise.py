"""Noise figures: the distribution of noise correlations and the covariance eigenspectrum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import InvalidParameterError, check_bool, check_memory, param_error
from ..dims import UNIT, check_dims, pair_dim
from ._style import _figure_and_axes

__all__ = ['plot_noise_correlations', 'plot_spectrum']


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
        raise param_error("unit_dim", owner, "a dimension name (str)", unit_dim)
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
            raise param_error("bins", owner, "an int >= 1 or a sequence of bin edges", bins)
        check_memory(8.0 * 4 * bins, name="bins", owner=owner, value=bins, what="the histogram")
    elif isinstance(bins, (str, bool)) or not isinstance(bins, Sequence):
        raise param_error("bins", owner, "an int >= 1 or a sequence of bin edges", bins)
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
    from ..stats import eigenspectrum

    owner = "plot_spectrum"
    normalize = check_bool(normalize, name="normalize", owner=owner)
    if not isinstance(unit_dim, str):
        raise param_error("unit_dim", owner, "a dimension name (str)", unit_dim)
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
            raise param_error(
                "cov_or_eigs",
                owner,
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
