"""Published variability statistics of visual cortex, shipped as a small CSV table."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pandas as pd

__all__ = ["count_window_ms", "load_reference_values", "match_reference"]

_COLUMNS = [
    "statistic",
    "area",
    "species",
    "preparation",
    "count_window_ms",
    "stimulus",
    "value",
    "value_low",
    "value_high",
    "value_kind",
    "citation",
    "doi",
    "notes",
]


def load_reference_values(*, statistic: str | None = None) -> pd.DataFrame:
    """Published Fano factors and noise correlations (r_sc) with their context and citations.

    Parameters
    ----------
    statistic
        If given (``"r_sc"`` or ``"fano_factor"``), keep only those rows.

    Returns
    -------
    pandas.DataFrame
        One row per published value or range, columns ``statistic, area, species,
        preparation, count_window_ms, stimulus, value, value_low, value_high, value_kind,
        citation, doi, notes``. ``value`` is a published mean (NaN when the source gives a
        range); ``value_low``/``value_high`` a range (NaN when it gives one value).
        Provenance: ``neurovar/data/README.md``.

    References
    ----------
    Cohen, M. R. & Kohn, A. (2011). Measuring and interpreting neuronal correlations.
    Nat. Neurosci. 14, 811-819 (review of r_sc across areas), and the papers in the table.
    """
    ref = resources.files("neurovar") / "data" / "reference_values.csv"
    with ref.open("r", encoding="utf-8") as fh:
        table = pd.read_csv(fh, dtype={"count_window_ms": str})
    table = table[_COLUMNS]
    if statistic is not None:
        known = sorted(table["statistic"].unique())
        if statistic not in known:
            raise ValueError(
                f"The 'statistic' parameter must be one of {known!r} or None. "
                f"Got {statistic!r} instead."
            )
        table = table[table["statistic"] == statistic].reset_index(drop=True)
    return table


def count_window_ms(window: str | float | None) -> float | None:
    """Length of a count window in ms, from strings like ``"100 ms"`` or ``"10 x 100 ms"``.

    Returns None when the window is unknown (``""``, None, ``"various"``).
    """
    if window is None:
        return None
    if isinstance(window, (int, float, np.integer, np.floating)):
        return float(window) if np.isfinite(window) else None
    m = re.search(r"(?:(\d+(?:\.\d+)?)\s*x\s*)?(\d+(?:\.\d+)?)\s*ms", str(window))
    if m is None:
        return None
    return float(m.group(1) or 1) * float(m.group(2))


def _window_range(text: str) -> tuple[float, float] | None:
    nums = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", str(text))]
    if not nums:
        return None  # "various": not a window one can match
    return min(nums), max(nums)


def match_reference(
    reference: pd.DataFrame,
    *,
    statistic: str,
    area: str,
    count_window: str | float | None,
    preparation: str | None = None,
    tolerance: float = 1.5,
) -> pd.DataFrame:
    """Published rows that fit data of one area and count window.

    A row fits when its ``statistic`` is ``statistic``, its ``area`` names ``area`` (areas
    are ``/``-separated, e.g. ``"V1/V4"``), its count window contains the data's window up to
    a factor ``tolerance`` (``"100-200"`` fits 100 ms; ``"2000"`` does not), and, when both
    are known, the preparation (awake / anesthetized) agrees. Rows whose window is
    ``"various"`` fit only when the data's window is unknown. r_sc grows with the count
    window and differs between preparations (Cohen & Kohn 2011), so pooling every published
    value into one band says little about a given recording.

    Parameters
    ----------
    reference
        Table of :func:`load_reference_values`.
    statistic
        ``"r_sc"`` or ``"fano_factor"``.
    area
        Area of the data, e.g. ``"V4"``.
    count_window
        The data's window (``"100 ms"``, ``"10 x 100 ms"``, a number of ms) or None.
    preparation
        ``"awake"``, ``"anesthetized"`` or None (not checked).
    tolerance
        Factor by which the window may lie outside the published one.

    Returns
    -------
    pandas.DataFrame
        The fitting rows (possibly none).
    """
    window = count_window_ms(count_window)
    keep = []
    for _, row in reference.iterrows():
        if row["statistic"] != statistic:
            keep.append(False)
            continue
        areas = [a.strip() for a in re.split(r"[/,]| and ", str(row["area"])) if a.strip()]
        ok = area in areas
        published = _window_range(row["count_window_ms"])
        if window is None or published is None:
            ok = ok and window is None and published is None
        else:
            ok = ok and published[0] / tolerance <= window <= published[1] * tolerance
        prep = str(row["preparation"])
        if preparation and prep in ("awake", "anesthetized"):
            ok = ok and prep == preparation
        keep.append(bool(ok))
    return reference[np.asarray(keep, dtype=bool)].reset_index(drop=True)
