"""A store that another process is still writing is not called interrupted, and resuming
or overwriting it is refused while that process runs (issue 21); non-finite stimuli are
refused."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr
from store_helpers import REPO, chunks_written
from torch import nn

from neurovar._validation import InvalidParameterError
from neurovar.record import IncompleteRecordingError, load_recording, record_activations


class Slow(nn.Module):
    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    def forward(self, x):
        time.sleep(self.delay)
        return x


def _model(delay):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), Slow(delay)).eval()


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_record_writer import KW, _model, _stimuli
from neurovar.record import record_activations
record_activations(_model(0.1), _stimuli(), store=sys.argv[1], **KW)
"""

KW = dict(layers=["1"], n_trials=2, batch_size=2, rng=0, progress=False)


def _stimuli():
    return torch.rand(120, 4, generator=torch.Generator().manual_seed(0))


def test_a_store_being_written_is_not_offered_for_resume(tmp_path):
    path = tmp_path / "slow.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    source = _CHILD.format(tests=str(REPO / "tests"))
    proc = subprocess.Popen([sys.executable, "-c", source, str(path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while chunks_written(path) < 2:
            assert proc.poll() is None, "the writing subprocess ended early"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        mark = json.loads(zarr.open_group(str(path), mode="r").attrs["neurovar_writer"])
        assert mark["pid"] == proc.pid
        with pytest.raises(IncompleteRecordingError) as err:
            load_recording(path)
        message = str(err.value)
        assert f"being written by process {proc.pid} on this host since" in message
        assert "resume=True" not in message and "interrupted" not in message
        with pytest.warns(RuntimeWarning, match=f"being written by process {proc.pid}"):
            part = load_recording(path, allow_incomplete=True)
        assert 2 <= part["1"]["activation"].sizes["stimulus"] < 120
        assert np.isfinite(part["1"]["activation"].values).all()
        model = _model(0.0)
        with pytest.raises(
            InvalidParameterError,
            match=rf"'resume' parameter of record_activations.*being written by process {proc.pid}",
        ):
            record_activations(model, _stimuli(), store=path, resume=True, **KW)
        with pytest.raises(InvalidParameterError, match=r"'overwrite' parameter.*being written"):
            record_activations(model, _stimuli(), store=path, overwrite=True, **KW)
        with pytest.raises(FileExistsError, match=f"being written by process {proc.pid}"):
            record_activations(model, _stimuli(), store=path, **KW)
        assert proc.poll() is None, "the writer must still be running for the checks above"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # killed: now it is an interrupted store, and resuming it is offered and works
    with pytest.raises(IncompleteRecordingError, match=r"interrupted.*resume=True"):
        load_recording(path)
    done = record_activations(_model(0.0), _stimuli(), store=path, resume=True, **KW)
    full = record_activations(_model(0.0), _stimuli(), **KW)
    np.testing.assert_array_equal(done["1"]["activation"].values, full["1"]["activation"].values)
    assert "neurovar_writer" not in load_recording(path).attrs


def test_a_recording_that_failed_in_this_process_releases_its_store(tmp_path):
    path = tmp_path / "failed.zarr"
    model = _model(0.0)
    calls = []

    def fail_later(_m, _i, _o):
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("boom")

    handle = model[1].register_forward_hook(fail_later)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            record_activations(model, _stimuli(), store=path, **KW)
    finally:
        handle.remove()
    assert zarr.open_group(str(path), mode="r").attrs["neurovar_writer"] == ""
    with pytest.raises(IncompleteRecordingError, match="resume=True"):
        load_recording(path)
    record_activations(model, _stimuli(), store=path, resume=True, **KW)
    assert load_recording(path)["1"]["activation"].sizes["stimulus"] == 120


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_stimuli_are_refused(bad):
    x = torch.rand(5, 4)
    x[3, 2] = bad
    with pytest.raises(
        InvalidParameterError,
        match=r"'stimuli' parameter of record_activations must be finite.*stimulus 3",
    ):
        record_activations(_model(0.0), x, **KW)
    with pytest.raises(InvalidParameterError, match="'stimuli' parameter"):
        record_activations(_model(0.0), x.numpy().astype(np.float64), **KW)


def test_stimuli_that_overflow_the_models_precision_are_refused():
    model = _model(0.0).half()
    x = torch.full((2, 4), 1e6)  # finite in float32, inf in float16
    with pytest.raises(InvalidParameterError, match=r"'stimuli'.*model's precision"):
        record_activations(model, x, **KW)
