"""Spike counts per trial, stimulus and unit from an NWB file (pynwb)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from neurovar._validation import InvalidParameterError, param_error
from neurovar.cortex.loaders import from_array

__all__ = ["load_nwb", "counts_from_nwbfile"]


def load_nwb(
    path: str | os.PathLike[str],
    *,
    intervals: str = "trials",
    stimulus_column: str = "stimulus",
    window: tuple[float, float] | None = (0.0, 0.1),
    area_column: str | None = "location",
) -> xr.DataArray:
    """Spike counts per presentation from an NWB file, as ``("trial", "stimulus", "unit")``.

    Opens ``path`` read-only with :class:`pynwb.NWBHDF5IO` and calls
    :func:`counts_from_nwbfile`; see there for the parameters.

    Parameters
    ----------
    path
        An NWB (HDF5) file with a units table (``spike_times``) and a ``TimeIntervals``
        table of stimulus presentations.
    intervals, stimulus_column, window, area_column
        See :func:`counts_from_nwbfile`.

    Returns
    -------
    xarray.DataArray
        Spike counts, NaN-padded where a stimulus was shown fewer times than the most
        repeated one.
    """
    try:
        from pynwb import NWBHDF5IO
    except ImportError as err:  # an optional extra, not part of the base install
        raise ImportError(
            "load_nwb needs pynwb, which is not installed: pip install 'neurovar[peers]' "
            "(or pip install pynwb)."
        ) from err

    path = os.fspath(path)
    with NWBHDF5IO(path, "r") as io:
        nwbfile = io.read()
        da = counts_from_nwbfile(
            nwbfile,
            intervals=intervals,
            stimulus_column=stimulus_column,
            window=window,
            area_column=area_column,
        )
    da.attrs["source"] = path
    return da


def _get_intervals(nwbfile: Any, intervals: str) -> Any:
    if intervals == "trials" and nwbfile.trials is not None:
        return nwbfile.trials
    tables = dict(nwbfile.intervals or {})
    if intervals not in tables:
        have = (["trials"] if nwbfile.trials is not None else []) + sorted(tables)
        raise InvalidParameterError(
            f"The 'intervals' parameter must name a TimeIntervals table of the file, one of "
            f"{have!r}. Got {intervals!r} instead."
        )
    return tables[intervals]


def counts_from_nwbfile(
    nwbfile: Any,
    *,
    intervals: str = "trials",
    stimulus_column: str = "stimulus",
    window: tuple[float, float] | None = (0.0, 0.1),
    area_column: str | None = "location",
) -> xr.DataArray:
    """Count spikes of every unit in a window around every stimulus presentation.

    For presentation :math:`k` with start time :math:`t_k` and unit :math:`u` with spike times
    :math:`\\{s\\}`, the count is :math:`N_{ku} = \\#\\{s : t_k + w_0 \\le s < t_k + w_1\\}`
    (half-open window, so adjacent windows never count a spike twice). Presentations are
    grouped by the value in ``stimulus_column``; the ``r``-th presentation of a stimulus (in
    time order) becomes ``trial = r``.

    Parameters
    ----------
    nwbfile
        An open :class:`pynwb.NWBFile` with a units table.
    intervals
        Name of the ``TimeIntervals`` table holding the presentations: ``"trials"`` (the
        file's trials table) or a table in ``nwbfile.intervals``.
    stimulus_column
        Column of that table identifying the stimulus shown.
    window
        ``(w0, w1)`` in seconds relative to each presentation's ``start_time``; ``None``
        counts from ``start_time`` to ``stop_time`` of each presentation (then the count
        window differs between presentations if their durations differ).
    area_column
        Column of the units table with each unit's brain area (the default ``"location"``
        is ignored if absent; another missing column is an error; set None to skip).

    Returns
    -------
    xarray.DataArray
        Dims ``("trial", "stimulus", "unit")``: stimulus coord ``stimulus_id`` (sorted unique
        values of ``stimulus_column``) and ``n_repeats``; unit coord ``unit_id`` (the units
        table ids) and ``area`` when available. Stimuli shown fewer times are NaN-padded.

    Raises
    ------
    ValueError
        If the file has no units, the table or column does not exist, or the window is empty.
    """
    for pname, value in (("intervals", intervals), ("stimulus_column", stimulus_column)):
        if not isinstance(value, str):
            raise param_error(pname, "counts_from_nwbfile", "a str", value)
    if area_column is not None and not isinstance(area_column, str):
        raise param_error("area_column", "counts_from_nwbfile", "a str or None", area_column)
    if window is not None:
        if (
            not isinstance(window, (tuple, list))
            or len(window) != 2
            or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w)
                for w in window
            )
        ):
            raise param_error(
                "window",
                "counts_from_nwbfile",
                "a pair (start, stop) of finite seconds or None",
                window,
            )
        w0, w1 = (float(w) for w in window)
        if not w1 > w0:
            raise InvalidParameterError(
                "The 'window' parameter of counts_from_nwbfile must be (start, stop) in seconds with stop > start. "
                f"Got {window!r} instead."
            )
    units = nwbfile.units
    if units is None or len(units) == 0:
        raise InvalidParameterError("The 'nwbfile' parameter must contain a non-empty units table.")
    table = _get_intervals(nwbfile, intervals)
    columns = list(table.colnames)
    if stimulus_column not in columns:
        raise InvalidParameterError(
            f"The 'stimulus_column' parameter must be a column of the '{intervals}' table, one "
            f"of {columns!r}. Got {stimulus_column!r} instead."
        )
    starts = np.asarray(table["start_time"][:], dtype=float)
    stops = np.asarray(table["stop_time"][:], dtype=float)
    stim = np.asarray(table[stimulus_column][:])
    order = np.argsort(starts, kind="stable")
    starts, stops, stim = starts[order], stops[order], stim[order]
    if window is None:
        lo, hi = starts, stops
        window_label = "presentation (start_time to stop_time)"
    else:
        lo, hi = starts + w0, starts + w1
        window_label = f"{(w1 - w0) * 1000:g} ms ({w0:g} s to {w1:g} s after start_time)"

    n_units = len(units)
    counts = np.empty((len(starts), n_units))
    for u in range(n_units):
        spikes = np.sort(np.asarray(units.get_unit_spike_times(u), dtype=float))
        counts[:, u] = np.searchsorted(spikes, hi, side="left") - np.searchsorted(
            spikes, lo, side="left"
        )

    stimulus_ids = np.unique(stim)
    per_stimulus: Sequence[np.ndarray] = [counts[stim == s] for s in stimulus_ids]
    area = None
    if area_column is not None and area_column in units.colnames:
        area = [str(a) for a in units[area_column][:]]
    elif area_column is not None and area_column != "location":  # only the default may be absent
        raise InvalidParameterError(
            f"The 'area_column' parameter of counts_from_nwbfile must be a column of the units "
            f"table, one of {list(units.colnames)!r}, or None. Got {area_column!r} instead.",
            name="area_column",
            owner="counts_from_nwbfile",
        )
    return from_array(
        list(per_stimulus),
        stimulus_ids=stimulus_ids,
        unit_ids=np.asarray(units.id[:]),
        area=area,
        count_window=window_label,
        attrs={"nwb_identifier": str(nwbfile.identifier), "intervals": intervals},
    )
