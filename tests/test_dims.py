import numpy as np
import pytest
import xarray as xr

from neurovar.dims import RESPONSE_DIMS, check_dims, check_responses, pair_dim


def test_valid_responses_pass():
    da = xr.DataArray(np.zeros((3, 4, 5)), dims=RESPONSE_DIMS)
    check_responses(da, min_trials=2)


def test_missing_dim_names_missing_found_and_rename_hint():
    da = xr.DataArray(np.zeros((3, 4, 5)), dims=("repeat", "stimulus", "neuron"))
    with pytest.raises(ValueError) as err:
        check_responses(da)
    msg = str(err.value)
    assert "'trial'" in msg and "'unit'" in msg  # missing
    assert "repeat" in msg and "neuron" in msg  # found
    assert "rename" in msg


def test_extra_dims_rejected_when_not_allowed():
    da = xr.DataArray(np.zeros((2, 3, 4, 5)), dims=("trial", "stimulus", "unit", "time"))
    with pytest.raises(ValueError, match="extra dims.*time"):
        check_dims(da, RESPONSE_DIMS, allow_extra=False)
    check_dims(da, RESPONSE_DIMS)  # allowed by default


def test_min_sizes_and_type_errors():
    da = xr.DataArray(np.zeros((1, 3, 4)), dims=RESPONSE_DIMS)
    with pytest.raises(ValueError, match="at least 2 entries along 'trial'"):
        check_responses(da, min_trials=2)
    with pytest.raises(TypeError, match="xarray.DataArray"):
        check_responses(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="Dataset"):
        check_responses(da.to_dataset(name="activation"))


def test_renamed_dims_accepted():
    da = xr.DataArray(np.zeros((3, 5)), dims=("rep", "neuron"))
    check_responses(da, trial_dim="rep", stimulus_dim=None, unit_dim="neuron")
    assert pair_dim("unit") == "unit_j"


def test_datatree_gets_a_hint_to_select_a_layer():
    tree = xr.DataTree.from_dict(
        {"fc1": xr.Dataset({"activation": (RESPONSE_DIMS, np.zeros((2, 3, 4)))})}
    )
    with pytest.raises(TypeError, match=r"tree\['fc1'\]\['activation'\]"):
        check_dims(tree, RESPONSE_DIMS)


def test_dims_imports_first_in_a_fresh_process():
    # importing xarray registers the accessor, which imports neurovar.stats, which imports
    # neurovar.dims: a partly initialised dims failed with "cannot import name 'UNIT'"
    import subprocess
    import sys

    code = "import neurovar.dims as d; import neurovar.stats; print(d.UNIT, d.xr.__name__)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["unit", "xarray"]
