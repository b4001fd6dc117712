"""The orchestrator of a recording: :func:`record_activations`.

Each trial is a real forward pass of a stochastic model (dropout in train mode, or noise added
with :func:`neurovar.noise.inject_noise`). Trials are folded into the batch dimension, and where
the noise enters at a known layer the deterministic layers before it run once per stimulus and
the batch branches into trials only from there. The jobs live in the sibling modules: the
checks of the inputs (``_inputs``), the noise site (``_sites``), the forward pass of a chunk
(``_forward``), the layout of a layer (``_layout``), the zarr stream (``_zarr``), resuming
(``_resume``, ``_state``) and the files (``_files``).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .._io import remove_path, replace_path, temp_sibling
from .._progress import progress_bar
from .._torch import (
    find_noise_hooks,
    noise_modules,
    reseeded_noise,
    resolve_device,
    seed_from,
    seeded_torch,
)
from .._validation import check_memory, param_error
from .._version import __version__
from . import _state as _store
from ._budget import auto_batch_size
from ._files import load_recording
from ._forward import _forward_trials
from ._inputs import _OWNER, Call, check_call
from ._layout import _index_units, _layer_dataset
from ._resume import _check_fingerprint, _fingerprint, _resume_snapshot, _root_attrs, _stored_seed
from ._sites import (
    _BATCHNORM_TYPES,
    LeafBytes,
    _relative_noise_in_training,
    _untracked_randomness,
    _warn_relative_noise_in_training,
    find_noise_site,
    noise_config,
)
from ._zarr import (
    _check_size,
    _init_store,
    _mark_complete,
    _release_writer,
    _set_root_attrs,
    _write_region,
    check_store,
)

__all__ = ["record_activations"]


def record_activations(
    model: nn.Module,
    stimuli: torch.Tensor | np.ndarray,
    *,
    layers: Sequence[str] | str,
    n_trials: int,
    labels: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    stimulus_coords: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    batch_size: int | str = "auto",
    branch: str = "auto",
    device: str | torch.device | None = None,
    rng: int | np.random.Generator | torch.Generator | None = None,
    store: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    model_id: str | None = None,
    progress: bool | None = None,
) -> xr.DataTree:
    """Record repeated-trial activations of named layers into an :class:`xarray.DataTree`.

    For every stimulus ``s`` and trial ``t`` the recorded response is the output of each layer
    in an independent forward pass, ``r[t, s, u] = h_u(x_s; ξ_t)``, where ``ξ_t`` is the noise
    draw (dropout mask or injected noise) of trial ``t``. Stimuli are never de-duplicated.

    Speed: ``n_stimuli_per_batch x n_trials`` samples are folded into one batch. With
    ``branch="auto"`` a probe pass finds the first stochastic site (a noise hook from
    :func:`neurovar.noise.inject_noise` or a dropout module in training mode); the layers before
    it run once per stimulus and the batch is expanded to trials only there
    (``repeat_interleave`` at the site). If that expansion breaks the model (a skip connection
    that jumps over the site), recording falls back to folding trials at the input, with a
    warning. Without any detectable stochastic site trials are folded at the input, so hidden
    stochasticity is still sampled.

    Randomness neurovar does not track is not erased: before branching, two probe passes on
    copies of one stimulus (in a fork of the RNG) look for it where the trials would branch,
    and a layer of a known random type in training mode before the site (stochastic depth,
    drop path, RReLU) counts too. Per-sample randomness before the site falls back to folding
    trials at the input; randomness drawn once per forward pass (e.g. ``StochasticDepth(...,
    mode="batch")``), which folded trials would share, runs one forward pass per trial
    (``branch_site="trial"``); both with a warning saying why.

    Parameters
    ----------
    model
        A PyTorch module. Its train/eval state is not changed (keep dropout in train mode to make
        it stochastic), except that BatchNorm layers are put in eval mode during the call, so
        stimuli in one batch do not influence each other; every mode and hook is restored, and
        so are the buffers (running estimates) of injected noise modules.
    stimuli
        Inputs of shape ``(n_stimuli, ...)``, e.g. ``(N, C, H, W)`` images; cast to the dtype of
        the model's parameters (float64 or float16 stimuli run a float32 model in float32).
        NaN or infinite values (also after that cast) are an error.
    layers
        Dotted module names (``model.named_modules()``); an unknown name is an error listing the
        valid names, and so is a module that runs more than once per forward pass (e.g. the one
        ``relu`` that torchvision's ``BasicBlock`` calls twice).
    n_trials
        Repeats per stimulus (>= 1).
    labels
        Class labels, stored as the ``label`` stimulus coordinate.
    stimulus_coords
        Further coordinates along ``stimulus`` (e.g. ``perturbation``, ``severity``).
    batch_size
        Samples (stimuli x trials) per forward pass (an int >= 1), or ``"auto"`` (default):
        from the layer outputs measured in the probe passes above (which draw nothing the
        recording draws), as many samples as keep the largest layer output of a pass within
        8 MiB on a CPU (small passes pay per-call overhead, larger ones are memory-bound) or
        256 MiB on a GPU, and the sum of all its layer outputs within 1 GiB and half the free
        memory; layers before the branch site count once per stimulus, the passes are filled
        evenly. The layer outputs are those leaf modules return: what a module computes inside
        its own forward (attention scores) is not counted, so for such models pass an int.
        Trials are split across passes when ``n_trials > batch_size``. The batch size
        used is stored in ``attrs["batch_size"]``: pass it to reproduce a recording exactly.
    branch
        ``"auto"`` (first stochastic site), ``"input"`` (fold at the input: every layer runs
        per trial), or a layer name whose *output* is branched.
    device
        Where to run; default: where the model is (its parameters' device, else the CPU; the
        rule of :func:`neurovar._torch.resolve_device`). The model is moved there for the call
        and back afterwards. Results are returned on the CPU.
    rng
        Seed (int), numpy or torch Generator, or None (fresh entropy). It seeds torch's generator
        inside a fork of the global RNG (dropout draws from it), so the caller's global torch and
        numpy RNG states are unchanged and the same seed reproduces the recording. When ``rng``
        is given, noise modules injected with :func:`neurovar.noise.inject_noise` draw from
        streams seeded from it too (one per module; their own streams are restored afterwards);
        with ``rng=None`` they keep drawing from (and advancing) their own generators. The seed used is stored in
        ``attrs["seed"]``. Results depend on the seed and on the batch size (the order of
        draws): with ``batch_size="auto"`` that is the one in ``attrs["batch_size"]``, which
        depends on the model, the stimuli's shape and the device type (and on the free memory
        only where it is short: less than twice the sum of a pass's layer outputs).
    store
        Path of a zarr store (``.zarr``) to stream the recording to, stimulus chunk by stimulus
        chunk, so recordings larger than memory work. The returned tree is then opened lazily
        (dask) from the store.
    overwrite
        Allow replacing an existing ``store`` (a bool). The old store is replaced only once the
        new recording is complete (it is written to a temporary sibling first), so a failed
        rerun leaves it intact; without ``overwrite`` an existing path is an error and is left
        untouched. A new store is written in place and marked complete last: an interrupted
        one is refused by :func:`load_recording`.
    resume
        Finish an interrupted ``store`` (a bool; not together with ``overwrite``). The store
        keeps a fingerprint of the call that started it (stimuli, coordinates, layers,
        ``n_trials``, ``batch_size`` (``"auto"`` resumes with the batch size the store was
        started with), ``branch``, seed, model weights, buffers and modes, noise
        configuration, device, versions) and, with every chunk written, the random states the
        recording draws from (torch's generator, the device's CUDA generator, each noise
        module's stream and running estimates). With ``resume=True`` and the same arguments,
        recording continues at the first unwritten chunk and the finished store is
        bit-identical to an uninterrupted one (with ``rng=None`` the seed the store was started
        with is used again). A complete store with the same fingerprint is returned as it is,
        nothing recomputed; a store started by a different call is an error naming what
        differs, and nothing on disk is changed. A store whose noise module draws from a
        caller's :class:`torch.Generator` (with ``rng=None``) or is frozen cannot be resumed
        exactly and is refused, and so is a store that another live process is still writing
        (see :func:`load_recording`). Without an existing store, ``resume=True`` records as
        usual.
    model_id
        Identifier stored in attrs (a str; default: the model's class name).
    progress
        A tqdm progress bar over stimuli: None (default) after a few seconds of work, True at
        once, False never (:mod:`neurovar._progress`, the package's one policy).

    Returns
    -------
    xarray.DataTree
        One child node per layer (named by the layer), each with the data variable
        ``activation`` of dims ``("trial", "stimulus", "unit")``; stimulus coords
        ``stimulus_id`` (and ``label``, ...), unit coords ``unit_id``, ``layer``, ``channel``
        (``y``, ``x`` for conv maps). Attrs: ``model``, ``layer``, ``noise_config`` (JSON),
        ``seed``, ``n_trials``, ``batch_size`` (samples per forward pass, as used),
        ``branch_site``, ``neurovar_version``, ``torch_version``.

    Examples
    --------
    >>> tree = record_activations(model, x, layers=["conv1", "fc1"], n_trials=20, rng=0)
    >>> tree["fc1"]["activation"].sel(channel=3)
    """
    call = check_call(
        model, stimuli, layers=layers, n_trials=n_trials, labels=labels,
        stimulus_coords=stimulus_coords, batch_size=batch_size, branch=branch, rng=rng,
        overwrite=overwrite, resume=resume, model_id=model_id, progress=progress,
    )  # fmt: skip
    store_path = check_store(store, overwrite=call.overwrite, resume=call.resume)
    if store_path is None:
        _check_memory_bound(call)
    dev = resolve_device(device, model=model, owner=_OWNER)
    plan = _plan(model, call, store_path, dev)
    if plan is None:
        assert store_path is not None  # internal invariant: only a store can be complete
        return load_recording(store_path)  # the same call, already finished
    relative = _relative_noise_in_training(model)  # before BatchNorm is put in eval mode
    with _restoring(model, dev, plan, store_path) as initial:
        streams = reseeded_noise(model, plan.seed) if rng is not None else contextlib.nullcontext()
        with torch.no_grad(), seeded_torch(plan.seed, dev), streams:
            _choose_site(model, call, plan, dev, initial)
            _warn_relative_noise_in_training(relative, plan.stim_chunk)
            _record_chunks(model, call, plan, dev, store_path, initial)
        _finish_store(plan, store_path)
    if store_path is not None:
        return load_recording(store_path)
    return _tree(call, plan)


def _finish_store(plan: _Plan, store_path: Path | None) -> None:
    """Mark the store written complete, and put it in place of the one it replaces."""
    if plan.write_path is not None:
        _mark_complete(plan.write_path)
        if plan.write_path != store_path:
            assert store_path is not None  # internal invariant: a temporary sibling of a store
            replace_path(plan.write_path, store_path)


def _check_memory_bound(call: Call) -> None:
    """Refuse an in-memory result that cannot fit, from a lower bound of its size (one unit per
    layer), before anything runs: ``n_trials=10**9`` is refused at once."""
    check_memory(
        4.0 * call.n_trials * call.n_stim * len(call.layers),
        name="n_trials",
        owner=_OWNER,
        value=call.n_trials,
        what="the recorded activations",
    )


@dataclass
class _Plan:
    """How one call records: its seed, chunking and store, and what the chunks found so far."""

    seed: int
    batch_size: int = 0  # samples per forward pass (0 until batch_size="auto" is resolved)
    trial_chunk: int = 0  # trials per forward pass
    stim_chunk: int = 0  # stimuli per forward pass (and per zarr chunk)
    n_chunks: int = 0
    start: int = 0  # first chunk to record (> 0 when resuming)
    resume_from: dict[str, Any] | None = None  # the random states to restore when resuming
    fingerprint: dict[str, str] = field(default_factory=dict)
    write_path: Path | None = None  # the store, or a temporary sibling replacing it at the end
    site: tuple[str, str] | None = None  # where trials branch (see _forward_trials)
    site_param: str = "model"  # the parameter that chose the site, blamed for a bad one
    state: str = ""  # the random states after the chunks written (see _state.snapshot)
    not_resumable: str = ""  # why the store cannot be resumed exactly ("" when it can)
    attrs: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    full: dict[str, torch.Tensor] = field(default_factory=dict)  # the in-memory result


def _plan(model: nn.Module, call: Call, store_path: Path | None, dev: torch.device) -> _Plan | None:
    """The seed, chunking and store of a call; None when ``store_path`` is a complete store of
    the same call (resume=True), which is returned as it is."""
    previous = None  # root attrs of the store to resume
    if call.resume and store_path is not None and store_path.exists():
        previous = _root_attrs(store_path)
        if previous is None or "neurovar_complete" not in previous:
            raise param_error(
                "resume",
                _OWNER,
                "True only for a store written by record_activations(store=...)",
                f"resume=True for {str(store_path)!r}, which is not one",
                raw=True,
                hint="Nothing on disk was changed; pass overwrite=True to replace it.",
            )
    # rng=None resumes with the seed the store was started with
    rng = call.rng
    seed = _stored_seed(previous) if previous is not None and rng is None else seed_from(rng)
    plan = _Plan(seed)
    if call.batch_size != "auto":
        _set_chunks(plan, call, int(call.batch_size))
    elif previous is not None and "batch_size" in previous:
        # "auto" resumes with the batch_size the store was started with (the fingerprint
        # holds "auto"): a resume on another machine continues the same chunks
        _set_chunks(plan, call, int(previous["batch_size"]))
    plan.site_param = "model" if call.branch == "auto" else "branch"
    if store_path is not None:
        plan.fingerprint = _fingerprint(
            model, call.stimuli, call.stim_coords, call.layers, call.n_trials, call.batch_size,
            call.branch, rng, seed, dev, call.model_id,
        )  # fmt: skip
    if previous is not None:
        assert store_path is not None  # internal invariant: previous is read from the store
        _check_fingerprint(previous, plan.fingerprint, store_path)
        if int(previous["neurovar_complete"]):
            return None
        plan.resume_from = _resume_snapshot(previous, store_path)
        plan.start = int(previous["neurovar_chunks_written"])
    # an existing store (overwrite=True) is only replaced once the new one is complete; a
    # resumed one is continued in place (a failure keeps every chunk written so far)
    plan.write_path = store_path
    if store_path is not None and store_path.exists() and plan.resume_from is None:
        plan.write_path = temp_sibling(store_path)
    return plan


def _set_chunks(plan: _Plan, call: Call, batch_size: int) -> None:
    """The chunking of ``batch_size`` samples per pass: all trials of as many stimuli as fit,
    or as many trials of one stimulus as fit."""
    plan.batch_size = batch_size
    plan.trial_chunk = min(call.n_trials, batch_size)
    plan.stim_chunk = max(1, batch_size // plan.trial_chunk)
    plan.n_chunks = -(-call.n_stim // plan.stim_chunk)


@contextlib.contextmanager
def _restoring(
    model: nn.Module, dev: torch.device, plan: _Plan, store_path: Path | None
) -> Iterator[dict[int, torch.Tensor]]:
    """Run the recording with BatchNorm in eval mode and the model on ``dev``; afterwards
    restore every mode, the noise modules' buffers and the model's device, and leave a store
    that failed as it should be (a replaced one as it was, a new one resumable).

    Yields the noise modules' buffers as they were (``{id(buffer): saved}``), which a snapshot
    of the random states may skip.
    """
    bn_modes = {m: m.training for m in model.modules() if isinstance(m, _BATCHNORM_TYPES)}
    # running estimates of noise modules (e.g. relative_scale) must not learn from trial copies:
    # the noise of the hooks and noise modules used as submodules alike
    hooked = {
        id(h.noise): h.noise
        for _, h in find_noise_hooks(model, active_only=True)
        if isinstance(getattr(h, "noise", None), nn.Module)
    }
    for module in noise_modules(model):
        hooked.setdefault(id(module), module)
    noise_buffers = [
        (buf, buf.detach().clone()) for module in hooked.values() for buf in module.buffers()
    ]
    param = next(iter(model.parameters()), None)
    orig_device = param.device if param is not None else None
    write_path = plan.write_path
    finished = moved = False
    try:
        if plan.resume_from is not None:
            assert store_path is not None  # internal invariant: only a store is resumed
            _set_root_attrs(store_path, neurovar_writer=_store.writer_mark())
        for m in bn_modes:
            m.eval()
        # moved only if some tensor is elsewhere (a walk of every module otherwise)
        moved = any(t.device != dev for t in (*model.parameters(), *model.buffers()))
        if moved:
            model.to(dev)
        yield {id(buf): saved for buf, saved in noise_buffers}
        finished = True
    finally:
        if not finished and write_path is not None and write_path != store_path:
            remove_path(write_path)  # the old store stays as it was
        elif not finished and write_path is not None:
            _release_writer(write_path)  # interrupted, not being written: resumable
        for m, mode in bn_modes.items():
            m.train(mode)
        with torch.no_grad():
            for buf, saved in noise_buffers:
                buf.copy_(saved)
        if orig_device is not None and moved:
            model.to(orig_device)


def _choose_site(
    model: nn.Module, call: Call, plan: _Plan, dev: torch.device, initial: Mapping[int, Any]
) -> None:
    """Where trials branch (``plan.site``), and the random states before the first chunk: a
    resumed store's restored, else the probe passes' (see :mod:`._sites`)."""
    if plan.resume_from is not None:
        # the random states right after the last chunk written (after the probe pass
        # when nothing was written), so the draws continue exactly
        plan.site = _store.parse_site(plan.resume_from["site"])
        _store.restore(plan.resume_from, model, dev)
    elif call.branch == "auto":
        plan.site = find_noise_site(model, call.stimuli[:1].to(dev))
    elif call.branch != "input":
        plan.site = (call.branch, "output")
    example = call.stimuli[:1].to(dev)
    # batch_size="auto" (not resumed): the activation bytes, measured in the randomness probe
    leaf_bytes = LeafBytes() if not plan.batch_size else None
    if plan.resume_from is None:
        # stacklevel: _untracked_randomness < _choose_site < record_activations < its caller
        plan.site = _untracked_randomness(
            model, example, plan.site, dev, stacklevel=4, leaf_bytes=leaf_bytes
        )
    if not plan.batch_size:
        sizes = leaf_bytes.result(plan.site) if leaf_bytes is not None else None
        bs = auto_batch_size(model, example, plan.site, call.n_trials, call.n_stim, dev, sizes)
        _set_chunks(plan, call, bs)
    if plan.site == _store.PER_TRIAL:  # one trial of up to batch_size stimuli per pass
        plan.trial_chunk, plan.stim_chunk = 1, plan.batch_size
        plan.n_chunks = -(-call.n_stim // plan.stim_chunk)
    if plan.write_path is not None:
        plan.state, plan.not_resumable = _store.snapshot(model, dev, plan.site, plan.start, initial)


def _record_chunks(
    model: nn.Module,
    call: Call,
    plan: _Plan,
    dev: torch.device,
    store_path: Path | None,
    initial: Mapping[int, Any],
) -> None:
    """Record chunk after chunk of stimuli, from ``plan.start``, into ``plan.full`` or the
    store (each chunk written with the random states after it)."""
    n_stim = call.n_stim
    pbar = progress_bar(
        total=n_stim,
        initial=min(n_stim, plan.start * plan.stim_chunk),
        desc="record",
        unit="stim",
        progress=call.progress,
    )
    modules = dict(model.named_modules())
    for ci in range(plan.start, plan.n_chunks):
        a, b = ci * plan.stim_chunk, min(n_stim, (ci + 1) * plan.stim_chunk)
        chunk = _record_chunk(model, call, plan, call.stimuli[a:b].to(dev), a, ci == 0, modules)
        if ci == 0:
            _start(model, call, plan, store_path)
        if plan.write_path is not None:
            if not plan.not_resumable:
                plan.state, plan.not_resumable = _store.snapshot(
                    model, dev, plan.site, ci + 1, initial
                )
            _write_region(plan.write_path, chunk, a, b, ci + 1, plan.state, plan.not_resumable)
        pbar.update(b - a)
    pbar.close()


def _record_chunk(
    model: nn.Module,
    call: Call,
    plan: _Plan,
    x: torch.Tensor,
    a: int,
    first: bool,
    modules: Mapping[str, nn.Module],
) -> dict[str, np.ndarray]:
    """Every trial of the stimuli ``x`` (starting at stimulus ``a``), ``plan.trial_chunk``
    trials per pass: copied into ``plan.full`` in memory, or returned for the store."""
    layers, n_trials = call.layers, call.n_trials
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for t0 in range(0, n_trials, plan.trial_chunk):
        nt = min(plan.trial_chunk, n_trials - t0)
        out = _forward_or_fold(model, x, layers, nt, plan, modules)
        if first and t0 == 0:
            _check_size(out, n_trials, call.n_stim, plan.write_path)
            if plan.write_path is None:  # the result, filled in place: one copy
                plan.full = {
                    name: torch.empty(
                        (n_trials, call.n_stim, out[name].shape[2]), dtype=torch.float32
                    )
                    for name in layers
                }
        for name in layers:
            if plan.write_path is None:
                plan.full[name][t0 : t0 + nt, a : a + len(x)].copy_(out[name])
            else:
                parts[name].append(out[name].float().cpu())
    if plan.write_path is None:
        return {}
    return {name: torch.cat(parts[name], dim=0).numpy() for name in layers}


def _forward_or_fold(
    model: nn.Module,
    x: torch.Tensor,
    layers: list[str],
    nt: int,
    plan: _Plan,
    modules: Mapping[str, nn.Module],
) -> dict[str, torch.Tensor]:
    """:func:`_forward_trials` at ``plan.site``; where branching there breaks the model (a
    skip connection jumps over the site), fold trials at the input from now on, warning."""
    site, site_param = plan.site, plan.site_param
    try:
        out, plan.shapes = _forward_trials(
            model, x, layers, nt, site, site_param=site_param, modules=modules
        )
    except RuntimeError as err:
        if site is None or site == _store.PER_TRIAL:
            raise
        # the unbranched model either works (the branch broke it: warn and
        # keep folding at the input) or raises its own, genuine error
        out, plan.shapes = _forward_trials(
            model, x, layers, nt, None, watch=site, site_param=site_param, modules=modules
        )
        warnings.warn(
            f"Branching trials at {site[0]!r} ({site[1]}) failed ({err}); a skip "
            "connection probably jumps over it. Falling back to folding trials at "
            "the input (every layer runs once per trial).",
            RuntimeWarning,
            stacklevel=5,  # < _record_chunk < _record_chunks < record_activations < its caller
        )
        plan.site = None
    return out


def _start(model: nn.Module, call: Call, plan: _Plan, store_path: Path | None) -> None:
    """After the first chunk: the recording's attrs, and the store started with the layers'
    templates (their shapes are known now)."""
    plan.attrs = {
        "model": call.model_id or type(model).__name__,
        "noise_config": json.dumps(noise_config(model), sort_keys=True),
        "seed": plan.seed,
        "n_trials": call.n_trials,
        "batch_size": plan.batch_size,
        "branch_site": _store.site_text(plan.site),
        "neurovar_version": __version__,
        "torch_version": str(torch.__version__),
    }
    if store_path is None:
        return
    assert plan.write_path is not None  # internal invariant: a store is written somewhere
    templates = {
        name: _layer_dataset(
            name,
            None,
            plan.shapes[name],
            call.n_trials,
            call.stim_coords,
            plan.attrs,
            template_chunk=plan.stim_chunk,
        )
        for name in call.layers
    }
    if plan.resume_from is not None:
        # started before, but no chunk was written: start it again (with
        # the random states it was started with), now that chunk 0 is ready
        remove_path(plan.write_path)
    _init_store(
        plan.write_path,
        templates,
        n_chunks=plan.n_chunks,
        stim_chunk=plan.stim_chunk,
        fingerprint=plan.fingerprint,
        state=plan.state,
        not_resumable=plan.not_resumable,
    )


def _tree(call: Call, plan: _Plan) -> xr.DataTree:
    """The in-memory recording: one node per layer, the call's attrs at the root."""
    children = {}
    for name in call.layers:
        data = plan.full[name].numpy()
        children[name] = _index_units(
            _layer_dataset(
                name, data, plan.shapes[name], call.n_trials, call.stim_coords, plan.attrs
            )
        )
    tree = xr.DataTree.from_dict(children)
    tree.attrs.update({k: v for k, v in plan.attrs.items() if k != "layer"})
    return tree
