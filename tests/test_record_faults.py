"""Fault tests: nothing a user wrote is lost, and a partial store never looks complete."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from store_helpers import kill_after_chunks

from neurovar._validation import InvalidParameterError
from neurovar.models import SmallCNN
from neurovar.record import (
    IncompleteRecordingError,
    load_recording,
    record_activations,
    save_recording,
)

KW = dict(layers=["fc1", "fc2"], n_trials=2, rng=0, batch_size=2, progress=False)


@pytest.fixture
def images():
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class RaiseAfter:
    """Forward hook that raises on its ``n``-th call (a recording failing mid-way)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, module, inp, out):
        self.calls += 1
        if self.calls > self.n:
            raise RuntimeError("boom: simulated failure")


def _listing(path: Path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def _siblings(path: Path):
    return sorted(p.name for p in path.parent.iterdir())


def test_failed_overwrite_rerun_keeps_old_store(images, tmp_path):
    model = SmallCNN().eval()
    path = tmp_path / "rec.zarr"
    old = record_activations(model, images, store=path, **KW).load()
    before = _listing(path)
    hook = model.fc2.register_forward_hook(RaiseAfter(2))  # fails on the 3rd forward pass
    with pytest.raises(RuntimeError, match="boom"):
        record_activations(model, images * 0.5, store=path, overwrite=True, **KW)
    hook.remove()
    assert _listing(path) == before  # not a byte changed
    assert _siblings(path) == ["rec.zarr"]  # the temporary sibling was removed
    xr.testing.assert_identical(load_recording(path).load(), old)
    # and a successful overwrite does replace it
    new = record_activations(model, images * 0.5, store=path, overwrite=True, **KW).load()
    assert not np.allclose(new["fc2"]["activation"], old["fc2"]["activation"])
    assert _siblings(path) == ["rec.zarr"]


def test_interrupted_store_is_refused_and_names_the_missing_part(images, tmp_path):
    model = SmallCNN().eval()
    path = tmp_path / "rec.zarr"
    # two probe passes (the check for randomness neurovar does not track), then chunks of
    # 1 stimulus x 2 trials: fails in the third chunk
    hook = model.fc2.register_forward_hook(RaiseAfter(4))
    with pytest.raises(RuntimeError, match="boom"):
        record_activations(model, images, store=path, **KW)
    hook.remove()
    with pytest.raises(IncompleteRecordingError, match=r"4 of 6 stimuli \(4 of 6 chunks\)"):
        load_recording(path)
    with pytest.warns(RuntimeWarning, match="incomplete"):
        part = load_recording(path, allow_incomplete=True)
    assert part["fc2"]["activation"].sizes["stimulus"] == 2
    full = record_activations(model, images, **KW)
    np.testing.assert_array_equal(
        part["fc2"]["activation"].values, full["fc2"]["activation"].values[:, :2]
    )
    # a complete store carries no bookkeeping attrs after loading
    done = record_activations(model, images, store=tmp_path / "ok.zarr", **KW)
    assert not any(k.startswith("neurovar_complete") for k in done.attrs)
    assert done.attrs == full.attrs


_CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from neurovar.models import SmallCNN
    from neurovar.record import record_activations
    model = SmallCNN().eval()
    model.fc2.register_forward_hook(lambda m, i, o: time.sleep(0.3))
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    record_activations(model, x, layers=["fc2"], n_trials=2, batch_size=2, rng=0,
                       store=sys.argv[1], progress=False)
    """
)


def test_killed_recording_subprocess_is_flagged(tmp_path):
    path = tmp_path / "killed.zarr"
    kill_after_chunks(_CHILD, path, 1)
    with pytest.raises(IncompleteRecordingError, match=r"of 200 stimuli"):
        load_recording(path)


@pytest.mark.parametrize("flag", ["False", "True", 0, 1, None, np.array([True])])
def test_string_and_int_flags_are_refused(images, tmp_path, flag):
    model = SmallCNN().eval()
    path = tmp_path / "rec.zarr"
    tree = record_activations(model, images, store=path, **KW)
    before = _listing(path)
    with pytest.raises(InvalidParameterError, match="'overwrite' parameter of record_activations"):
        record_activations(model, images, store=path, **{**KW, "overwrite": flag})
    if flag is not None:  # progress=None is the automatic bar
        with pytest.raises(InvalidParameterError,
                           match="'progress' parameter of record_activations"):
            record_activations(model, images, **{**KW, "progress": flag})
    nc = save_recording(tree.load(), tmp_path / "rec.nc")
    nc_bytes = nc.read_bytes()
    with pytest.raises(InvalidParameterError, match="'overwrite' parameter of save_recording"):
        save_recording(tree.load(), nc, overwrite=flag)
    with pytest.raises(
        InvalidParameterError, match="'allow_incomplete' parameter of load_recording"
    ):
        load_recording(path, allow_incomplete=flag)
    assert _listing(path) == before and nc.read_bytes() == nc_bytes
    # numpy bools are flags too
    record_activations(model, images, store=path, **{**KW, "overwrite": np.bool_(True)})


def test_netcdf_attrs_round_trip_or_are_refused_before_writing(images, tmp_path):
    from neurovar.record import load_recording

    model = SmallCNN().eval()
    tree = record_activations(model, images, **KW)
    # values HDF5 cannot store as they are come back exactly (tagged encoding in _io)
    for i, value in enumerate(({"a": 1}, None, True, [1, "a"], ["a", "b"], [[1, 2], [3, 4]])):
        t = tree.copy()
        t["fc2"].attrs["extra"] = value
        back = load_recording(save_recording(t, tmp_path / f"rec{i}.nc"))
        assert back["fc2"].attrs["extra"] == value and type(back["fc2"].attrs["extra"]) is type(value)
    # what cannot be stored exactly is refused, naming it, and nothing is written
    t = tree.copy()
    t["fc2"].attrs["extra"] = object()
    (tmp_path / "refused").mkdir()
    path = tmp_path / "refused" / "rec.nc"
    with pytest.raises(InvalidParameterError, match="extra"):
        save_recording(t, path)
    assert not path.exists() and _siblings(path) == []
    save_recording(tree, path)


def test_failed_netcdf_overwrite_keeps_old_file(images, tmp_path, monkeypatch):
    model = SmallCNN().eval()
    tree = record_activations(model, images, **KW)
    path = save_recording(tree, tmp_path / "rec.nc")
    old = path.read_bytes()

    def half_write(self, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(xr.DataTree, "to_netcdf", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_recording(tree, path, overwrite=True)
    assert path.read_bytes() == old and _siblings(path) == ["rec.nc"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_stimuli_cast_to_model_dtype(images, dtype):
    model = SmallCNN().eval()
    ref = record_activations(model, images, **KW)
    got = record_activations(model, images.to(dtype), **KW)
    tol = 1e-6 if dtype == torch.float64 else 1e-2
    np.testing.assert_allclose(
        got["fc2"]["activation"].values, ref["fc2"]["activation"].values, atol=tol
    )


def test_bad_device_model_rng_and_huge_trials(images):
    model = SmallCNN().eval()
    with pytest.raises(InvalidParameterError, match="'device' parameter of record_activations"):
        record_activations(model, images, device="bogus", **KW)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            record_activations(model, images, device="cuda", **KW)
    with pytest.raises(InvalidParameterError, match="'model' parameter of record_activations"):
        record_activations(None, images, **KW)
    with pytest.raises(InvalidParameterError, match="'rng' parameter of record_activations"):
        record_activations(model, images, **{**KW, "rng": "seed"})
    with pytest.raises(InvalidParameterError, match="'n_trials' parameter .* fit in memory"):
        record_activations(model, images, **{**KW, "n_trials": 10**12})
