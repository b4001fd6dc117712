"""``batch_size="auto"``: samples per forward pass from the bytes a pass holds.

The first probe pass of :func:`._sites._prefix_randomness` (two copies of one stimulus, in
:func:`._sites.probe_guard`, injected noise off from the branch site on: it draws nothing the
recording would draw) goes on to the model's output and measures the output of every leaf
module, split at the branch site into what runs once per stimulus (before the site) and once
per trial (from the site on); :func:`activation_bytes` is the same on a pass of its own, where
that probe could not measure. Two bounds set the samples per pass:

- speed: the largest activation of a pass (the largest leaf output, once per stimulus before the
  site plus once per trial after it) within :data:`PEAK_BYTES_CPU` (``_CUDA`` on a GPU). Small
  passes pay per-call overhead (a conv of 10 stimuli costs nearly what one of 256 does), passes
  whose layers outgrow the CPU's caches are memory-bound;
- memory: the sum of all leaf outputs of a pass within :data:`PASS_BYTES_MAX` and half the free
  memory (the limit of :func:`neurovar._validation.check_memory`; on a GPU, of the GPU). An
  estimate, not a bound: it covers what leaf modules return (without autograd most of it is
  freed as soon as the next layer has run), not what a module computes inside its own forward
  (the attention scores of ``nn.MultiheadAttention``, a functional op between leaves). For such
  models pass an int ``batch_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import memory_limit
from . import _state as _store
from ._sites import Bytes, LeafBytes, _suspend, noise_suspended, probe_guard

__all__ = ["auto_batch_size", "activation_bytes", "Bytes"]

#: Bytes of the largest activation of one pass with ``batch_size="auto"`` on a CPU. Measured
#: (CPU time, 1 thread, benchmarks/results/record.md): SmallCNN with noise at ``relu2`` (largest
#: layer 8 KB per sample) recorded 500 stimuli x 50 trials in 0.56 s with passes of 1,000
#: samples (8 MB), 0.68 s with 2,500 and 0.86 s in one pass of 25,000 (200 MB); ResNet-18 on
#: 32 x 32 (conv1: 64 KB per sample) with noise at ``layer1`` and 16 trials was faster in one
#: pass of 32 stimuli (0.22 s; ``layer1`` 8 MB) than in passes of 8 (0.24 s) or 4 (0.29 s).
PEAK_BYTES_CPU = 8 * 2**20
#: The same on a GPU, where larger passes amortise kernel launches (a cap, not measured here).
PEAK_BYTES_CUDA = 256 * 2**20
#: Bytes of all leaf outputs of one pass (an upper bound of its memory), at most.
PASS_BYTES_MAX = 2**30
#: The batch_size when the probe pass fails (the recording then meets the error itself).
FALLBACK_BATCH_SIZE = 512


def activation_bytes(
    model: nn.Module, example: torch.Tensor, site: tuple[str, str] | None, device: torch.device
) -> Bytes | None:
    """Bytes of the leaf modules' outputs for one stimulus (``example``, a batch of one), from
    a probe pass of its own (a recording measures them in its randomness probe instead, see
    :func:`._sites._prefix_randomness`).

    ``shared`` is what runs once per stimulus (the layers before ``site``, and the site's own
    output when trials branch at its output), ``per_trial`` what runs once per trial (from the
    site on: the expanded output or input of the site and every layer after it; everything for
    ``site=None`` or :data:`._state.PER_TRIAL`). None when the probe pass raises.
    """
    leaf_bytes = LeafBytes()
    handles = []
    try:
        handles.extend(leaf_bytes.install(model))
        if site is not None and site != _store.PER_TRIAL:
            target = model.get_submodule(site[0])
            if site[1] == "input":
                hook = target.register_forward_pre_hook(
                    lambda _m, inputs: leaf_bytes.branch(inputs), prepend=True
                )
            else:  # after the site's own leaf hook (prepended)
                hook = target.register_forward_hook(lambda _m, _i, out: leaf_bytes.branch(out))
            handles.append(hook)
        leaf_bytes.recording = True
        with probe_guard(model, device), noise_suspended(model):
            _suspend(model)
            model(example)
        leaf_bytes.complete = True
    except Exception:  # noqa: BLE001  (the recording itself reports a model that fails)
        return None
    finally:
        for h in handles:
            h.remove()
    return leaf_bytes.result(site)


def _budgets(device: torch.device) -> tuple[float, float]:
    """``(peak, total)``: the bytes of the largest activation of one pass (speed) and of all
    its leaf outputs (memory: :data:`PASS_BYTES_MAX`, at most half the free memory)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return PEAK_BYTES_CUDA, min(PASS_BYTES_MAX, 0.5 * free)
    return PEAK_BYTES_CPU, min(PASS_BYTES_MAX, memory_limit(0.5))  # check_memory's limit


def auto_batch_size(
    model: nn.Module,
    example: torch.Tensor,
    site: tuple[str, str] | None,
    n_trials: int,
    n_stim: int,
    device: torch.device,
    sizes: Bytes | None = None,
) -> int:
    """The ``batch_size`` of ``batch_size="auto"``: as many samples per pass as both budgets allow.

    A pass of ``s`` stimuli x ``t`` trials has a largest activation of about
    ``s * (shared_peak + t * per_trial_peak)`` bytes and holds at most
    ``s * (shared + t * per_trial)`` (:func:`activation_bytes`). All trials of as many stimuli
    as fit, spread evenly over the passes that takes (the result is a multiple of
    ``n_trials``: 32 stimuli of which 25 fit run as 2 x 16, not 25 + 7); where not even one
    stimulus's trials fit, as many trials of one stimulus as fit (at least one). With one pass
    per trial (:data:`._state.PER_TRIAL`), as many stimuli as fit. ``sizes``: measured
    already (else a probe pass of :func:`activation_bytes`).
    """
    b = sizes if sizes is not None else activation_bytes(model, example, site, device)
    if b is None:
        return FALLBACK_BATCH_SIZE
    peak, total = _budgets(device)
    if site == _store.PER_TRIAL:  # t = 1 per pass
        fit = min(peak // max(1, b.shared_peak + b.per_trial_peak), total // max(1, b.shared + b.per_trial))
        return _balanced(n_stim, int(max(1, fit)))
    stimuli = min(
        peak // max(1, b.shared_peak + n_trials * b.per_trial_peak),
        total // max(1, b.shared + n_trials * b.per_trial),
    )
    if stimuli >= 1:
        return _balanced(n_stim, int(stimuli)) * n_trials
    trials = min(
        (peak - b.shared_peak) // max(1, b.per_trial_peak),
        (total - b.shared) // max(1, b.per_trial),
    )
    return int(max(1, min(n_trials, trials)))


def _balanced(n_stim: int, fit: int) -> int:
    """Stimuli per pass: as few passes as ``fit`` stimuli a pass allow, evenly filled."""
    passes = -(-n_stim // fit)
    return -(-n_stim // passes)
