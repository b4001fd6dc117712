"""Every statistic on a real recording from :func:`neurovar.record.record_activations`.

The recorded ``activation`` DataArray carries the unit coords ``unit_id``, ``layer``,
``channel`` (a selectable non-dimension index) and, for conv maps, ``y`` and ``x``; it is
float32, has dead (always-zero) and deterministic units, and reopened from zarr it is
dask-backed. Every function must run on it, keep the unit coords on pairwise results, warn
(with counts) about zero-variance units instead of crashing, and give the same numbers on the
lazy copy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import neurovar.stats as nvs
from neurovar.models import SmallCNN
from neurovar.record import load_recording, record_activations, save_recording

N_TRIALS = 10


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[xr.DataTree, xr.DataTree]:
    """In-memory recording of a dropout SmallCNN and its zarr-backed (dask) reopening."""
    model = SmallCNN(dropout=0.5).train()
    images = torch.as_tensor(np.random.default_rng(0).random((8, 1, 8, 8)), dtype=torch.float32)
    tree = record_activations(
        model,
        images,
        layers=["pool", "dropout", "fc2"],
        n_trials=N_TRIALS,
        labels=np.arange(8) % 2,
        rng=0,
        progress=False,
    )
    path = save_recording(tree, tmp_path_factory.mktemp("rec") / "rec.zarr")
    return tree, load_recording(path)


def _check_pairwise_coords(out: xr.DataArray, act: xr.DataArray) -> None:
    assert out.dims[-2:] == ("unit", "unit_j")
    names = [c for c in ("unit_id", "layer", "channel", "y", "x") if c in act.coords]
    assert {"unit_id", "layer", "channel"} <= set(names)
    for c in names:
        assert out[c].dims == ("unit",) and out[f"{c}_j"].dims == ("unit_j",), c
        np.testing.assert_array_equal(out[c].values, act[c].values)
        np.testing.assert_array_equal(out[f"{c}_j"].values, act[c].values)
    # channel stays a selectable index on both axes, as on the recording
    unique = act.indexes["channel"].is_unique  # scalar .sel on a unique index drops the dim
    picked = out.sel(channel=[1] if unique else 1, channel_j=[2] if unique else 2)
    assert picked.sizes["unit"] == int((act.channel == 1).sum())
    assert picked.sizes["unit_j"] == int((act.channel == 2).sum())


def _run_all(act: xr.DataArray) -> dict[str, xr.DataArray | xr.Dataset]:
    """Every public function of neurovar.stats on one layer's activations."""
    out: dict[str, xr.DataArray | xr.Dataset] = {}
    out["fano_factor"] = nvs.fano_factor(act)
    out["mean_matched_fano_factor"] = nvs.mean_matched_fano_factor(
        act, condition="label", n_bins=4, n_resamples=3, rng=0
    )
    out["noise_correlation"] = corr = nvs.noise_correlation(act)
    out["noise_correlation_per_stimulus"] = nvs.noise_correlation(act, method="per_stimulus")
    out["signal_correlation"] = nvs.signal_correlation(act)
    out["noise_covariance"] = cov = nvs.noise_covariance(act)
    out["noise_covariance_oas"] = nvs.noise_covariance(act, estimator="oas")
    for name, mat in (("cov", cov), ("corr", corr)):
        out[f"eigenspectrum_{name}"] = nvs.eigenspectrum(mat)
        out[f"participation_ratio_{name}"] = nvs.participation_ratio(mat)
        out[f"power_law_exponent_{name}"] = nvs.power_law_exponent(mat, max_rank=10)
    a, b = act.isel(stimulus=0), act.isel(stimulus=1)
    signal = (b.mean("trial") - a.mean("trial")).expand_dims(direction=["signal"])
    out["variance_along"] = nvs.variance_along(cov, signal)
    half = act.sizes["stimulus"] // 2
    cov_b = nvs.noise_covariance(act.isel(stimulus=slice(half, None)))
    out["alignment_index"] = nvs.alignment_index(
        nvs.noise_covariance(act.isel(stimulus=slice(None, half))), cov_b, n_components=2
    )
    tuning = act.mean("trial").isel(stimulus=[0, 1, 2]).transpose("unit", "stimulus")
    tuning_b = act.mean("trial").isel(stimulus=[3, 4]).transpose("unit", "stimulus")
    out["principal_angles"] = nvs.principal_angles(tuning, tuning_b)
    out["fisher_shuffled"] = nvs.linear_fisher_information(a, b, delta_s=1.0, shuffled=True)
    if act.sizes["unit"] + 3 < 2 * N_TRIALS:
        out["fisher"] = nvs.linear_fisher_information(a, b, delta_s=1.0)
    out["differential_correlation_strength"] = nvs.differential_correlation_strength(a, b)
    out["shared_variance"] = nvs.shared_variance(act, n_factors=1)
    return out


@pytest.mark.parametrize("layer", ["dropout", "fc2"])
def test_every_statistic_runs_on_a_recording(recording, layer, global_rng_guard):
    tree, _ = recording
    act = tree[layer]["activation"]
    assert act.dtype == np.float32 and "channel" in act.xindexes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _run_all(act)
    for name in ("noise_correlation", "signal_correlation", "noise_covariance"):
        _check_pairwise_coords(out[name], act)
    _check_pairwise_coords(out["noise_correlation_per_stimulus"], act)
    assert "unit_id" in out["shared_variance"].coords
    assert (
        out["fano_factor"].sel(channel=[3] if layer != "pool" else 3).sizes["stimulus"]
        == act.sizes["stimulus"]
    )

    # units that never vary (dead ReLUs after dropout) are NaN with a counted warning, and
    # nothing anywhere is infinite
    std = act.std("trial")
    n_const_units = int((std == 0).all("stimulus").sum())
    messages = [str(w.message) for w in caught]
    assert n_const_units > 0 or layer == "fc2"  # the dropout layer has dead ReLUs
    if n_const_units:
        nan_rows = np.isnan(out["noise_correlation"].values).all(axis=1)
        assert int(nan_rows.sum()) == n_const_units
        assert f"{n_const_units} of {act.sizes['unit']} units have zero trial-to-trial" in (
            " ".join(messages)
        )
    for name, value in out.items():
        arrays = value.data_vars.values() if isinstance(value, xr.Dataset) else [value]
        for arr in arrays:
            assert not np.isinf(np.asarray(arr.values, dtype=float)).any(), name
    assert np.isfinite(float(out["participation_ratio_corr"]))
    assert np.isfinite(out["eigenspectrum_corr"].values[0])
    # Fisher information leaves out exactly the units without noise in the two stimuli
    pooled_var = act.isel(stimulus=[0, 1]).var("trial").sum("stimulus")
    assert out["fisher_shuffled"].attrs["n_units"] == int((pooled_var > 0).sum())
    assert np.isfinite(float(out["fisher_shuffled"]))
    # Fano factor is NaN exactly where the mean or the variance is zero (silent ReLUs, units
    # without trial-to-trial variability), never inf
    constant = act.max("trial") == act.min("trial")  # exact: no float rounding in a variance
    n_degenerate = int(((act.mean("trial") == 0) | constant).sum())
    assert int(out["fano_factor"].isnull().sum()) == n_degenerate


def test_deterministic_layer_warns_instead_of_crashing(recording):
    # 'pool' lies before the dropout: every unit is deterministic across trials
    tree, _ = recording
    act = tree["pool"]["activation"]
    n = act.sizes["unit"]
    with pytest.warns(RuntimeWarning, match=f"{n} of {n} units have zero trial-to-trial"):
        corr = nvs.noise_correlation(act)
    assert np.isnan(corr.values).all()
    _check_pairwise_coords(corr, act)
    assert {"y", "x", "y_j", "x_j"} <= set(corr.coords)
    cov = nvs.noise_covariance(act)
    np.testing.assert_array_equal(cov.values, 0.0)
    with pytest.warns(RuntimeWarning, match=f"{n} of {n} units have a non-finite variance"):
        spec = nvs.eigenspectrum(corr)
    assert np.isnan(spec.values).all()
    with pytest.warns(RuntimeWarning, match="units have the same mean response"):
        _check_pairwise_coords(nvs.signal_correlation(act), act)
    with (
        pytest.warns(RuntimeWarning, match=f"{n} of {n} units have zero trial-to-trial"),
        pytest.raises(ValueError, match="no unit with trial-to-trial variance"),
    ):
        nvs.shared_variance(act)


@pytest.mark.parametrize("layer", ["dropout", "fc2"])
def test_zarr_dask_recording_gives_identical_results(recording, layer):
    tree, lazy_tree = recording
    eager = tree[layer]["activation"]
    lazy = lazy_tree[layer]["activation"].chunk({"stimulus": 3})
    assert lazy.chunks is not None and "channel" in lazy.xindexes
    assert nvs.fano_factor(lazy).chunks is not None  # stays lazy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expect, got = _run_all(eager), _run_all(lazy)
    assert expect.keys() == got.keys()
    for name in expect:
        assert type(got[name]) is type(expect[name]), name
        xr.testing.assert_allclose(got[name].compute(), expect[name], rtol=1e-10, atol=1e-12)
