"""Repeated-trial recording of a PyTorch model's activations into xarray (and zarr on disk).

Each trial is a real forward pass of a stochastic model (dropout in train mode, or noise added
with :func:`neurovar.noise.inject_noise`). Trials are folded into the batch dimension, and where
the noise enters at a known layer the deterministic layers before it run once per stimulus and
the batch branches into trials only from there (see :func:`record_activations`).

One module per job: ``_record`` (the orchestrator, :func:`record_activations`), ``_inputs``
(checks of the arguments), ``_sites`` (where randomness enters: :func:`find_noise_site`,
:func:`noise_config`), ``_forward`` (one forward pass of stimuli x trials), ``_layout`` (the
xarray layout of a layer), ``_zarr`` (streaming to a store), ``_resume`` and ``_state``
(fingerprint and random states of a resumable store), ``_files`` (:func:`save_recording`,
:func:`load_recording`).
"""

from __future__ import annotations

from .._torch import layer_names
from ..dims import unit_coords
from ._files import IncompleteRecordingError, load_recording, save_recording
from ._record import record_activations
from ._resume import _noise_identity as _noise_identity  # used by tests
from ._sites import find_noise_site
from ._sites import noise_config as noise_config

__all__ = [
    "record_activations",
    "find_noise_site",
    "layer_names",
    "unit_coords",
    "save_recording",
    "load_recording",
    "IncompleteRecordingError",
]

# the public functions are documented under the package, not its private modules (a class
# keeps its own module: inspect.getsource finds a class through it)
for _f in (record_activations, find_noise_site, noise_config, save_recording, load_recording):
    _f.__module__ = __name__
del _f
