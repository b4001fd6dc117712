"""One progress policy: ``None`` automatic (long work, seen by someone), True always, False never."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest

from neurovar._progress import (
    AUTO_PROGRESS_AT_ONCE,
    AUTO_PROGRESS_DELAY_S,
    check_progress,
    inner_progress,
    progress_bar,
)
from neurovar._validation import InvalidParameterError
from neurovar.cortex import compare
from neurovar.inference import bootstrap_ci, permutation_test
from neurovar.models import train
from neurovar.noise import collect_layer_activations, fit_perturbation_covariance
from neurovar.perturb import PGD, evaluate_robustness
from neurovar.record import record_activations
from neurovar.stats import mean_matched_fano_factor, noise_correlation, noise_covariance


def test_check_progress_reads_the_three_values_and_refuses_others():
    assert check_progress(None, owner="f") is None
    assert check_progress(True, owner="f") is True
    assert check_progress(np.bool_(False), owner="f") is False
    with pytest.raises(InvalidParameterError, match="'progress' parameter of f"):
        check_progress("yes", owner="f")
    with pytest.raises(InvalidParameterError, match="'progress' parameter of f"):
        check_progress(1, owner="f")


def test_progress_bar_follows_the_policy(monkeypatch):
    # None: a bar, but only after the delay, and removed at the end (a short loop prints
    # nothing, a long one in a log or terminal shows it is running)
    tty = io.StringIO()
    monkeypatch.setattr("sys.stderr", tty)
    auto = progress_bar(range(3), desc="t", progress=None)
    assert not auto.disable and auto.delay == AUTO_PROGRESS_DELAY_S > 0 and not auto.leave
    auto.close()
    assert tty.getvalue() == ""  # a short loop printed nothing
    monkeypatch.undo()
    # None with requested work of AUTO_PROGRESS_AT_ONCE or more: at once, with its total
    big = progress_bar(total=AUTO_PROGRESS_AT_ONCE, desc="t", progress=None)
    assert not big.disable and big.delay == 0 and big.total == AUTO_PROGRESS_AT_ONCE
    big.close()
    # ... also when the work is an iterable whose length says it (train's epochs)
    over = progress_bar(range(AUTO_PROGRESS_AT_ONCE), desc="t", progress=None)
    assert over.delay == 0 and over.total == AUTO_PROGRESS_AT_ONCE
    over.close()
    shown = progress_bar(range(3), desc="t", progress=True)
    assert not shown.disable and shown.delay == 0 and shown.leave
    shown.close()
    assert progress_bar(range(3), desc="t", progress=False).disable
    assert list(progress_bar(range(3), desc="t", progress=False)) == [0, 1, 2]
    with inner_progress(False):  # a caller's progress=False silences the automatic bars
        monkeypatch.setattr("sys.stderr", tty)
        assert progress_bar(range(3), desc="t", progress=None).disable
        monkeypatch.undo()
        assert not progress_bar(range(3), desc="t", progress=True).disable


@pytest.mark.parametrize(
    "func",
    [
        bootstrap_ci,
        permutation_test,
        compare,
        mean_matched_fano_factor,
        noise_correlation,
        noise_covariance,
        collect_layer_activations,
        fit_perturbation_covariance,
        record_activations,
        train,
        evaluate_robustness,
        PGD,
    ],
)
def test_every_progress_parameter_defaults_to_automatic(func):
    assert inspect.signature(func).parameters["progress"].default is None
