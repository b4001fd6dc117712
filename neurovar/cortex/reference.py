"""Published variability statistics of visual cortex, shipped as a small CSV table."""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = ["load_reference_values"]

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
