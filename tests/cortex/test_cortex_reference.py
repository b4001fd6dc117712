import numpy as np
import pytest

from neurovar.cortex import load_reference_values


def test_reference_table_is_well_formed():
    table = load_reference_values()
    assert list(table.columns[:5]) == ["statistic", "area", "species", "preparation",
                                       "count_window_ms"]  # fmt: skip
    assert set(table["statistic"]) == {"r_sc", "fano_factor"}
    assert table["citation"].str.len().min() > 10 and table["doi"].str.startswith("10.").all()
    has_value = table["value"].notna()
    has_range = table["value_low"].notna() & table["value_high"].notna()
    assert (has_value | has_range).all()  # every row states a value or a range
    assert (table.loc[has_range, "value_low"] < table.loc[has_range, "value_high"]).all()
    rsc = table[table["statistic"] == "r_sc"]
    assert np.nanmax(rsc[["value", "value_low", "value_high"]].to_numpy()) < 0.5
    # anesthesia raises r_sc: the anesthetized V1 range lies above the awake V1 value
    awake_v1 = rsc[(rsc["area"] == "V1") & (rsc["preparation"] == "awake")]["value"].iloc[0]
    anest_v1 = rsc[(rsc["area"] == "V1") & (rsc["preparation"] == "anesthetized")]
    assert anest_v1["value_low"].iloc[0] > awake_v1


def test_reference_filter():
    ff = load_reference_values(statistic="fano_factor")
    assert len(ff) >= 1 and set(ff["statistic"]) == {"fano_factor"}
    with pytest.raises(ValueError, match="'statistic' parameter"):
        load_reference_values(statistic="rsc")


def test_every_row_has_context_and_ranges_are_marked_approximate():
    table = load_reference_values()
    for column in ("citation", "count_window_ms", "preparation", "area", "stimulus"):
        assert table[column].notna().all() and (table[column].str.strip() != "").all(), column
    ranges = table["value"].isna()
    # ranges are this table's summaries of reviews, not numbers stated in one paper
    assert table.loc[ranges, "value_kind"].str.startswith("approximate").all()
    assert table.loc[ranges, "notes"].str.contains("Approximate").all()
