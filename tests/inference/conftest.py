"""Shared fixtures for the neurovar.inference tests."""

from __future__ import annotations

import pytest
from scipy import stats as sps

import neurovar.inference._validation as validation


@pytest.fixture
def scipy_batches(monkeypatch):
    """Record the ``batch`` that neurovar passes to a scipy.stats resampling function.

    ``scipy_batches("bootstrap", max_values=...)`` lowers the default step size to
    ``max_values`` and returns the list that every call's ``batch`` is appended to.
    """

    def install(name: str, *, max_values: float) -> list:
        batches: list = []
        real = getattr(sps, name)

        def spy(*args, **kwargs):
            batches.append(kwargs["batch"])
            return real(*args, **kwargs)

        monkeypatch.setattr(sps, name, spy)
        monkeypatch.setattr(validation, "MAX_VALUES_PER_STEP", max_values)
        return batches

    return install
