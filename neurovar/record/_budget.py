"""``batch_size="auto"``: samples per forward pass from the bytes a pass holds.

One probe pass of one stimulus (in :func:`._sites.probe_guard`: it draws nothing the recording
would draw) measures the outputs of every leaf module, split at the branch site into the bytes
computed once per stimulus (before the site) and once per trial (from the site on). The batch
is the largest number of samples whose pass stays within a per-device budget of activation
bytes. The sum of all leaf outputs is an upper bound of what a pass holds at once (without
autograd most of them are freed as soon as the next layer has run).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._torch import find_noise_hooks
from .._validation import available_memory
from . import _state as _store
from ._sites import _tensors, probe_guard

__all__ = ["auto_batch_size", "activation_bytes"]

#: Activation bytes one forward pass may hold with ``batch_size="auto"``. On a CPU passes much
#: larger than the last-level cache are memory-bound: SmallCNN with noise at ``relu2`` (21 KB
#: per sample) recorded 500 stimuli x 50 trials in 0.56 s CPU with passes of 1,000 samples
#: (21 MB), 0.68 s with 2,500 and 0.86 s in one pass of 25,000 (benchmarks/results/record.md),
#: while with noise at ``relu3`` (0.9 KB per sample) one pass of 12,800 samples was fastest.
#: On a GPU larger passes amortise kernel launches (not measured here: a cap, not a tuning).
PASS_BYTES_CPU = 16 * 2**20
PASS_BYTES_CUDA = 256 * 2**20
#: The batch_size when the probe pass fails (the recording then meets the error itself).
FALLBACK_BATCH_SIZE = 512


def activation_bytes(
    model: nn.Module, example: torch.Tensor, site: tuple[str, str] | None, device: torch.device
) -> tuple[int, int] | None:
    """Bytes of the leaf modules' outputs for one stimulus: ``(shared, per_trial)``.

    ``shared`` is what runs once per stimulus (the layers before ``site``, and the site's own
    output when trials branch at its output), ``per_trial`` what runs once per trial (from the
    site on; everything for ``site=None`` or :data:`._state.PER_TRIAL`). None when the probe
    pass raises.
    """
    sizes = [0, 0]  # [shared, per_trial]
    branched = [site is None or site == _store.PER_TRIAL]
    handles = []

    def nbytes(obj: Any) -> int:
        return sum(t.numel() * t.element_size() for t in _tensors(obj))

    def leaf(_m: nn.Module, _i: Any, out: Any) -> None:
        sizes[branched[0]] += nbytes(out)

    def at_output(_m: nn.Module, _i: Any, out: Any) -> None:
        sizes[1] += nbytes(out)  # the expanded copy, one per trial
        branched[0] = True

    def at_input(_m: nn.Module, inputs: Any) -> None:
        sizes[1] += nbytes(inputs)
        branched[0] = True

    try:
        for module in model.modules():
            if next(module.children(), None) is None:
                handles.append(module.register_forward_hook(leaf))
        if site is not None and site != _store.PER_TRIAL:
            target = model.get_submodule(site[0])
            if site[1] == "input":
                handles.append(target.register_forward_pre_hook(at_input, prepend=True))
            else:
                handles.append(target.register_forward_hook(at_output))
        with probe_guard(model, device), _hooks_suspended(model):
            model(example)
    except Exception:  # noqa: BLE001  (the recording itself reports a model that fails)
        return None
    finally:
        for h in handles:
            h.remove()
    return sizes[0], sizes[1]


@contextlib.contextmanager
def _hooks_suspended(model: nn.Module) -> Iterator[None]:
    """Injected noise switched off (a noise hook returns a tensor of its layer's shape, so the
    bytes are the same): a noise that draws from a generator of its own, which
    :func:`._sites.probe_guard` cannot restore, draws nothing in the probe. The switch of
    :func:`neurovar.noise.suspend_noise`, which the record package may not import."""
    hooks = [h for _, h in find_noise_hooks(model) if hasattr(h, "suspended")]
    saved = [h.suspended for h in hooks]
    try:
        for h in hooks:
            h.suspended = True
        yield
    finally:
        for h, was in zip(hooks, saved):
            h.suspended = was


def _pass_budget(device: torch.device) -> float:
    """The activation bytes of one pass: :data:`PASS_BYTES_CPU` (or ``_CUDA``), at most what
    :func:`neurovar._validation.check_memory` allows (half the free memory of the device)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return min(PASS_BYTES_CUDA, 0.5 * free)
    env = os.environ.get("NEUROVAR_MAX_BYTES")  # check_memory's override of its limit
    return min(PASS_BYTES_CPU, float(env) if env else 0.5 * available_memory())


def auto_batch_size(
    model: nn.Module,
    example: torch.Tensor,
    site: tuple[str, str] | None,
    n_trials: int,
    n_stim: int,
    device: torch.device,
) -> int:
    """The ``batch_size`` of ``batch_size="auto"``: as many samples per pass as fit the budget.

    A pass of ``s`` stimuli x ``t`` trials holds about ``s * (shared + t * per_trial)`` bytes
    (:func:`activation_bytes`). All trials of as many stimuli as fit (at most ``n_stim``: the
    result is a multiple of ``n_trials``); where not even one stimulus's trials fit, as many
    trials of one stimulus as fit (at least one). With one pass per trial
    (:data:`._state.PER_TRIAL`), as many stimuli as fit.
    """
    sizes = activation_bytes(model, example, site, device)
    if sizes is None:
        return FALLBACK_BATCH_SIZE
    shared, per_trial = sizes
    budget = _pass_budget(device)
    if site == _store.PER_TRIAL:
        return int(max(1, min(n_stim, budget // max(1, shared + per_trial))))
    per_stimulus = shared + n_trials * per_trial
    stimuli = int(budget // max(1, per_stimulus))
    if stimuli >= 1:
        return min(stimuli, n_stim) * n_trials
    return int(max(1, min(n_trials, (budget - shared) // max(1, per_trial))))
