from datetime import datetime, timezone

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from neurovar.cortex.nwb import load_nwb  # noqa: E402


def _write_nwb(path, rng):
    """Small file: 3 units, stimuli 'A' x4, 'B' x2, 'C' x3 presentations of 0.5 s."""
    nwb = pynwb.NWBFile(
        session_description="neurovar round trip",
        identifier="nv-test",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    nwb.add_trial_column(name="stimulus", description="stimulus shown")
    sequence = ["A", "B", "C", "A", "C", "A", "B", "C", "A"]
    starts = 1.0 + np.arange(len(sequence)) * 1.0
    for s, t in zip(sequence, starts):
        nwb.add_trial(start_time=t, stop_time=t + 0.5, stimulus=s)
    nwb.add_unit_column(name="location", description="brain area")
    spikes = []
    for u in range(3):
        times = np.sort(rng.uniform(0, 11, size=60 + 20 * u))
        spikes.append(times)
        nwb.add_unit(spike_times=times, location=["V1", "V1", "V4"][u])
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return sequence, starts, spikes


def test_nwb_round_trip_counts(tmp_path):
    rng = np.random.default_rng(1)
    sequence, starts, spikes = _write_nwb(tmp_path / "s.nwb", rng)
    da = load_nwb(tmp_path / "s.nwb", window=(0.05, 0.25))
    assert da.dims == ("trial", "stimulus", "unit") and da.shape == (4, 3, 3)
    assert list(da["stimulus_id"].values) == ["A", "B", "C"]
    np.testing.assert_array_equal(da["n_repeats"].values, [4, 2, 3])
    assert list(da["area"].values) == ["V1", "V1", "V4"]
    assert da.attrs["count_window"].startswith("200 ms")
    for s_idx, s in enumerate(["A", "B", "C"]):
        t_s = [t for t, name in zip(starts, sequence) if name == s]
        for r, t in enumerate(t_s):
            for u in range(3):
                expected = np.sum((spikes[u] >= t + 0.05) & (spikes[u] < t + 0.25))
                assert da.values[r, s_idx, u] == expected
        assert np.isnan(da.values[len(t_s) :, s_idx]).all()
    # whole presentation window
    full = load_nwb(tmp_path / "s.nwb", window=None)
    t = starts[1]
    assert full.values[0, 1, 2] == np.sum((spikes[2] >= t) & (spikes[2] < t + 0.5))


def test_nwb_errors(tmp_path):
    _write_nwb(tmp_path / "s.nwb", np.random.default_rng(2))
    with pytest.raises(ValueError, match="'stimulus_column' parameter"):
        load_nwb(tmp_path / "s.nwb", stimulus_column="image")
    with pytest.raises(ValueError, match="'intervals' parameter"):
        load_nwb(tmp_path / "s.nwb", intervals="presentations")
    with pytest.raises(ValueError, match="'window' parameter"):
        load_nwb(tmp_path / "s.nwb", window=(0.2, 0.1))


def test_nwb_custom_time_intervals_table(tmp_path):
    from pynwb.epoch import TimeIntervals

    nwb = pynwb.NWBFile(
        session_description="presentations table",
        identifier="nv-test-2",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    table = TimeIntervals(name="presentations", description="image presentations")
    table.add_column(name="image", description="image index")
    for t, image in [(0.0, 3), (0.5, 1), (1.0, 3), (1.5, 1), (2.0, 3)]:
        table.add_interval(start_time=t, stop_time=t + 0.3, image=image)
    nwb.add_time_intervals(table)
    nwb.add_unit(spike_times=[0.01, 0.02, 0.55, 1.05, 1.06, 1.07, 2.5])
    nwb.add_unit(spike_times=[0.6, 1.6, 1.65])
    with pynwb.NWBHDF5IO(str(tmp_path / "p.nwb"), "w") as io:
        io.write(nwb)
    da = load_nwb(tmp_path / "p.nwb", intervals="presentations", stimulus_column="image",
                  window=(0.0, 0.1))  # fmt: skip
    assert list(da["stimulus_id"].values) == [1, 3]
    np.testing.assert_array_equal(da["n_repeats"].values, [2, 3])
    # image 3 at 0.0, 1.0, 2.0; image 1 at 0.5, 1.5 (windows of 100 ms)
    np.testing.assert_array_equal(da.isel(unit=0).values[:, 1], [2, 3, 0])
    # unit 1 fires at 0.6 = end of [0.5, 0.6): half-open windows do not count it
    np.testing.assert_array_equal(da.isel(unit=1).values[:2, 0], [0, 0])
    wide = load_nwb(tmp_path / "p.nwb", intervals="presentations", stimulus_column="image",
                    window=(0.0, 0.2))  # fmt: skip
    np.testing.assert_array_equal(wide.isel(unit=1).values[:2, 0], [1, 2])
    assert np.isnan(da.values[2, 0]).all()
    assert "area" not in da.coords
    with pytest.raises(ValueError, match="'presentations'"):
        load_nwb(tmp_path / "p.nwb", intervals="trials", stimulus_column="image")
