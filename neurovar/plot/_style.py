"""What every figure shares: a new figure or the caller's axes."""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._validation import InvalidParameterError


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


def panels(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.4), *,
           min_width: float = 0.0, extra_height: float = 0.0) -> tuple[Figure, list[Axes]]:
    """A pyplot-free figure of ``n`` panels on a grid of at most ``ncols`` columns.

    Each panel gets ``size`` inches; the figure is at least ``min_width`` wide and
    ``extra_height`` taller than its panels (room for a legend below them).
    """
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(max(size[0] * ncols, min_width), size[1] * nrows + extra_height),
                 layout="constrained")
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]


def save_figure(fig: Figure, path: Any, *, dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` all-or-nothing (a temporary sibling renamed into place), in
    the format of ``path``'s suffix (PNG when it has none)."""
    from pathlib import Path

    from .._io import atomic_path

    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_path(path, overwrite=True, owner="save_figure") as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
