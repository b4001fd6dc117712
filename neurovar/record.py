"""Repeated-trial recording of a PyTorch model's activations into xarray (and zarr on disk).

Each trial is a real forward pass of a stochastic model (dropout in train mode, or noise added
with :func:`neurovar.noise.inject_noise`). Trials are folded into the batch dimension, and where
the noise enters at a known layer the deterministic layers before it run once per stimulus and
the batch branches into trials only from there (see :func:`record_activations`).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from . import _store
from ._io import remove_path, replace_path, temp_sibling
from ._torch import (
    find_noise_hooks,
    layer_names,
    noise_hooks,
    noise_modules,
    reseeded_noise,
    resolve_device,
    seed_from,
    seeded_torch,
)
from ._validation import (
    check_bool,
    check_instance,
    check_int,
    check_memory,
    check_rng,
    param_error,
)
from ._version import __version__
from .dims import STIMULUS, TRIAL, UNIT, unit_coords

__all__ = [
    "record_activations",
    "find_noise_site",
    "layer_names",
    "unit_coords",
    "save_recording",
    "load_recording",
    "IncompleteRecordingError",
]

_DROPOUT_TYPES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)
_BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


_OWNER = "record_activations"


def _check_layers(model: nn.Module, layers: Sequence[str] | str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise param_error("layers", _OWNER, "a layer name or a sequence of layer names", layers)
    layers = list(layers)
    if not layers:
        raise param_error("layers", _OWNER, "a non-empty list of layer names", layers)
    valid = dict(model.named_modules())
    unknown = [name for name in layers if name not in valid or name == ""]
    if unknown:
        raise param_error(
            "layers",
            _OWNER,
            "dotted module names of the model",
            unknown,
            hint=f"Valid dotted module names are: {layer_names(model)!r}.",
        )
    if len(set(layers)) != len(layers):
        raise param_error(
            "layers", _OWNER, "a list of distinct layer names (a layer twice)", layers
        )
    return layers


def _stochastic_kind(module: nn.Module) -> str | None:
    """``"output"`` for injected noise, ``"input"`` for active dropout, else None."""
    if noise_hooks(module, active_only=True):
        return "output"
    if isinstance(module, _DROPOUT_TYPES) and module.training and module.p > 0:
        return "input"
    return None


def _describe_noise(noise: Any) -> Any:
    config = getattr(noise, "config", None)
    if callable(config):  # neurovar noise modules describe themselves as JSON-able dicts
        try:
            return json.loads(json.dumps(config(), default=str))
        except (TypeError, ValueError):
            pass
    return repr(noise)


def _stochastic_sites(model: nn.Module, describe: Callable[[Any], Any]) -> dict[str, Any]:
    """``{layer: description}`` of every active stochastic site of ``model``: the noise of its
    active hooks through ``describe`` (a list when a layer has several), else active dropout
    by its ``repr``."""
    config: dict[str, Any] = {}
    for name, module in model.named_modules():
        hooks = noise_hooks(module, active_only=True)
        if hooks:
            described = [describe(getattr(h, "noise", h)) for h in hooks]
            config[name] = described[0] if len(described) == 1 else described
        elif isinstance(module, _DROPOUT_TYPES) and module.training and module.p > 0:
            config[name] = repr(module)
    return config


def noise_config(model: nn.Module) -> dict[str, Any]:
    """Description of every stochastic site of ``model``: ``{layer: description}``.

    Injected noise modules are described by their ``config()`` (type, magnitude, sharing,
    seed); active dropout by its ``repr``.
    """
    return _stochastic_sites(model, _describe_noise)


class _ProbeStop(Exception):
    """Raised by the probe pass of :func:`find_noise_site` at the first stochastic module."""


def find_noise_site(model: nn.Module, example: torch.Tensor) -> tuple[str, str] | None:
    """First stochastic site of ``model`` in execution order, found by one probe forward pass.

    The probe stops at the first stochastic module, before it runs, so it draws no noise; it
    runs in a fork of torch's RNG, so layers neurovar does not know to be random leave the
    caller's generator where it was.

    Stochastic sites are modules carrying a noise hook from :func:`neurovar.noise.inject_noise`
    (noise enters at the module's output) and dropout modules in training mode (noise enters
    inside the module, so trials branch at its input).

    Parameters
    ----------
    model
        The network.
    example
        A batch (of size 1 is enough) to run the probe on.

    Returns
    -------
    tuple of (layer name, "input" | "output") or None
        None when no known stochastic site runs in the forward pass.
    """
    order: list[str] = []
    handles = []

    def stop_here(_m: nn.Module, _i: Any, name: str) -> None:
        order.append(name)
        raise _ProbeStop  # stop before any noise is drawn: no RNG, frozen draws or estimates used

    for name, module in model.named_modules():
        if name and _stochastic_kind(module) is not None:
            handles.append(
                module.register_forward_pre_hook(lambda m, i, name=name: stop_here(m, i, name))
            )
    if not handles:
        return None
    device = example.device
    devices = _fork_devices(device)
    try:
        # in a fork of torch's RNG: randomness neurovar does not know of (a custom layer calling
        # torch.rand before the site) draws in the probe without shifting the recording's draws
        with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type="cuda"):
            model(example)
    except _ProbeStop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not order:
        return None
    first = order[0]
    kind = _stochastic_kind(dict(model.named_modules())[first])
    assert kind is not None  # internal invariant: only stochastic modules were hooked
    return first, kind


#: Class names of stochastic-depth / drop-path layers of other libraries (torchvision's
#: ``StochasticDepth``, timm's ``DropPath``, ``DropBlock2d``): random in training mode.
_DROP_PATH_NAMES = ("StochasticDepth", "DropPath", "DropBlock2d", "DropBlock3d")


def _known_random(module: nn.Module) -> bool:
    """Whether ``module`` is a layer known to draw randomness in training mode (dropout,
    stochastic depth / drop path, RReLU) and is in training mode with a drop rate above 0."""
    if not module.training:
        return False
    if isinstance(module, _DROPOUT_TYPES):
        return module.p > 0
    if isinstance(module, nn.RReLU):
        return module.lower != module.upper
    if type(module).__name__ in _DROP_PATH_NAMES:
        rate = getattr(module, "p", getattr(module, "drop_prob", getattr(module, "drop_rate", 1)))
        try:
            return float(rate) > 0
        except (TypeError, ValueError):
            return True
    return False


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, Mapping):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` differ by more than float round-off (non-deterministic GPU kernels, or
    kernels for another batch size, differ in the last bits; a random mask or noise differs at
    the scale of the values)."""
    if a.shape != b.shape:
        return True
    if not a.is_floating_point():
        return not torch.equal(a, b)
    if not a.numel():
        return False
    scale = float(torch.nan_to_num(a.detach().abs()).max())
    diff = float(torch.nan_to_num((a.detach() - b.detach()).abs(), nan=float("inf")).max())
    # kernels of other batch sizes round differently: a few dozen ulps of the dtype
    rtol = max(1e-4, 50 * torch.finfo(a.dtype).eps)
    return diff > rtol * scale + 1e-12


#: The copies of one stimulus in the two probe passes of :func:`_prefix_randomness` (4 samples
#: through the prefix in all: cheap next to a recording; two in each pass, as layers that
#: estimate from the batch in training mode need at least two samples).
_PROBE_COPIES = (2, 2)


def _fork_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generators :func:`torch.random.fork_rng` must fork for ``device``."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _prefix_randomness(
    model: nn.Module,
    example: torch.Tensor,
    site: tuple[str, str] | None,
    device: torch.device,
) -> tuple[str, str] | None:
    """Randomness neurovar does not track in the part of ``model`` that trials share.

    With trials branched at ``site`` the layers before it run once per stimulus, so their
    randomness would be one draw shared by all trials of a stimulus; with trials folded into
    the batch (``site=None``: the whole model) randomness drawn once per forward pass (not per
    sample) would be one draw shared by all trials of a batch. Two checks: a module of a known
    random type in training mode runs before the site (stochastic depth, drop path, RReLU,
    dropout), and two probe passes on two copies of one stimulus each
    (:data:`_PROBE_COPIES`), compared where trials would branch (the model's output for
    ``site=None``): copies that differ within a pass mean per-sample randomness,
    passes that differ while the copies agree mean randomness drawn once per pass (e.g. a
    custom module calling ``torch.rand(())``), or per-sample randomness that happened to draw
    alike for the two copies (then one pass per trial is slower than needed, never wrong).

    The probe passes run in a fork of torch's RNG and the noise modules' streams and buffers
    are restored afterwards, so the recording's draws do not depend on them.

    Returns
    -------
    (why, level) or None
        ``why`` is a clause for a warning; ``level`` is ``"sample"`` (per-sample draws: folding
        trials at the input samples them) or ``"batch"`` (one draw per forward pass: only one
        trial per pass samples them).
    """
    modules = dict(model.named_modules())
    target = modules[site[0]] if site is not None else None
    ran: list[str] = []
    captured: list[Any] = []
    handles = []

    def seen(_m: nn.Module, _i: Any, name: str) -> None:
        if not captured:  # the modules of the first pass, up to the site
            ran.append(name)

    def stop_input(_m: nn.Module, inputs: Any) -> None:
        captured.append(inputs)
        raise _ProbeStop

    def stop_output(_m: nn.Module, _i: Any, out: Any) -> None:
        captured.append(out)
        raise _ProbeStop

    noise = noise_modules(model)
    saved = [(m.get_rng_state(), [(b, b.detach().clone()) for b in m.buffers()]) for m in noise]
    devices = _fork_devices(device)
    try:
        for mname, module in modules.items():
            if mname and module is not target:
                handles.append(
                    module.register_forward_pre_hook(lambda m, i, n=mname: seen(m, i, n))
                )
        if site is not None and site[1] == "input":
            handles.append(target.register_forward_pre_hook(stop_input, prepend=True))
        elif site is not None:  # before the noise hook: the site's own output, no noise drawn
            handles.append(target.register_forward_hook(stop_output, prepend=True))
        with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type="cuda"):
            for copies in _PROBE_COPIES:
                try:
                    out = model(example.expand(copies, *example.shape[1:]).contiguous())
                except _ProbeStop:
                    continue
                captured.append(out)  # site None: the model's output
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, (state, buffers) in zip(noise, saved):
                m.set_rng_state(state)
                for buf, value in buffers:
                    buf.copy_(value)
    for mname in dict.fromkeys(ran):
        module = modules[mname]
        if _known_random(module):
            level = "batch" if getattr(module, "mode", "row") == "batch" else "sample"
            if site is None and level == "sample":
                continue  # folded trials sample it per trial
            where = "for every sample of a batch at once" if level == "batch" else "per sample"
            return (
                f"{mname!r} ({type(module).__name__}) is in training mode and draws {where}",
                level,
            )
    if len(captured) < 2:
        return None
    where = "the model's output" if site is None else f"the {site[1]} of {site[0]!r}"
    first, second = _tensors(captured[0]), _tensors(captured[1])
    pairs = [t for t in (*first, *second) if t.ndim and len(t) == 2]
    if any(_differs(t[:1], t[1:]) for t in pairs):
        if site is None:
            return None
        return f"{where} differs between copies of the same stimulus in one pass", "sample"
    if len(first) != len(second) or any(_differs(a, b) for a, b in zip(first, second)):
        return (
            f"{where} differs between two passes on the same stimulus but not between the "
            "copies of it in one pass: a draw shared by the whole batch",
            "batch",
        )
    return None


def _untracked_randomness(
    model: nn.Module, example: torch.Tensor, site: tuple[str, str] | None, device: torch.device
) -> tuple[str, str] | None:
    """The branch site to record with, once :func:`_prefix_randomness` has looked for
    randomness neurovar does not track: ``site`` itself, or (with a warning saying why) None
    (fold trials at the input) or :data:`neurovar._store.PER_TRIAL` (one pass per trial)."""
    found = _prefix_randomness(model, example, site, device)
    if found is None:
        return site
    why, level = found
    if level == "batch":
        warnings.warn(
            f"The model draws randomness once per forward pass, not per sample ({why}): "
            "trials folded into one batch would share that draw. Recording one forward pass "
            "per trial instead (every layer runs once per trial, one trial at a time).",
            RuntimeWarning,
            stacklevel=3,
        )
        return _store.PER_TRIAL
    assert site is not None  # internal invariant: per-sample draws are only reported before a site
    warnings.warn(
        f"The layers before the branch site {site[0]!r} are random in a way neurovar does not "
        f"track ({why}): branching trials there would give all trials of a stimulus one shared "
        "draw of that randomness. Falling back to folding trials at the input (every layer "
        "runs once per trial).",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _to_tensor(stimuli: Any) -> torch.Tensor:
    if isinstance(stimuli, xr.DataArray):
        stimuli = stimuli.values
    if isinstance(stimuli, np.ndarray):
        stimuli = torch.from_numpy(stimuli)
    if not isinstance(stimuli, torch.Tensor):
        raise param_error(
            "stimuli",
            _OWNER,
            "a torch.Tensor or numpy array of shape (n_stimuli, ...)",
            type(stimuli).__name__,
            raw=True,
        )
    if stimuli.ndim < 2 or len(stimuli) == 0:
        raise param_error(
            "stimuli",
            _OWNER,
            "of shape (n_stimuli, ...) with n_stimuli >= 1",
            f"shape {tuple(stimuli.shape)}",
            raw=True,
        )
    if stimuli.is_complex() or stimuli.dtype == torch.bool:
        raise param_error(
            "stimuli", _OWNER, "a real-valued tensor", f"dtype {stimuli.dtype}", raw=True
        )
    stimuli = stimuli if stimuli.is_floating_point() else stimuli.float()
    _check_finite(stimuli, "")
    return stimuli


def _check_finite(stimuli: torch.Tensor, precision: str) -> None:
    """Refuse NaN or infinite stimuli (they would record as NaN activations, the value of an
    unwritten chunk); ``precision`` names the dtype they were cast to, if any."""
    finite = torch.isfinite(stimuli)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(stimuli).sum())
    n_inf = int((~finite).sum()) - n_nan
    first = int((~finite).flatten(1).any(dim=1).nonzero()[0, 0])
    raise param_error(
        "stimuli",
        _OWNER,
        "finite (no NaN or infinite values)" + precision,
        f"{n_nan} NaN and {n_inf} infinite values (the first in stimulus {first})",
        raw=True,
    )


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class _Recorder:
    """Registers capture hooks, an optional trial-branching hook, and restores everything."""

    def __init__(
        self, model: nn.Module, layers: list[str], modules: Mapping[str, nn.Module] | None = None
    ) -> None:
        self.model = model
        self.layers = layers
        self.modules = dict(model.named_modules()) if modules is None else modules
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []
        self.calls: dict[str, int] = {}  # calls of each watched module in this forward pass

    def watch(self, name: str) -> None:
        """Count the calls of module ``name`` (one that trials branch at)."""
        module = self.modules[name]

        def count(_m, _inp, name=name):
            self.calls[name] = self.calls.get(name, 0) + 1

        self.handles.append(module.register_forward_pre_hook(count))

    def check_once(self, site_param: Mapping[str, str]) -> None:
        """Refuse a recorded or branched module that ran more than once in the forward pass
        (its recorded output would be its last call's; a branch would expand twice).
        ``site_param`` maps a branch site that is not recorded to the parameter to blame."""
        for name, n in self.calls.items():
            if n > 1:
                param = site_param.get(name, "layers")
                raise param_error(
                    param,
                    _OWNER,
                    "layers that run once per forward pass"
                    if param == "layers"
                    else "a model whose branch site (the first noise site) runs once per "
                    "forward pass"
                    if param == "model"
                    else "a layer that runs once per forward pass",
                    f"layer {name!r}, which is called {n} times per forward pass",
                    raw=True,
                    hint="A module called more than once (torchvision's BasicBlock calls one "
                    "`relu` twice) records only its last call, and trials branched or noise "
                    "injected there apply at every call. Pick a module that runs once, e.g. "
                    "give each call its own module (an nn.Identity after it), or another layer.",
                )

    def capture(self) -> None:
        modules = self.modules
        for name in self.layers:

            def hook(_m, _inp, out, name=name):
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"Layer {name!r} returns {type(out).__name__}, not a tensor; record a "
                        "submodule that returns a tensor."
                    )
                self.outputs[name] = out.detach()
                self.calls[name] = self.calls.get(name, 0) + 1

            self.handles.append(modules[name].register_forward_hook(hook))

    def branch(self, site: str, kind: str, n_trials: int) -> None:
        module = self.modules[site]
        if kind == "output":

            def expand_output(_m, _inp, out):
                return out.repeat_interleave(n_trials, dim=0)

            # prepend: expand before the noise hook draws independent noise per trial
            self.handles.append(module.register_forward_hook(expand_output, prepend=True))
        else:

            def expand_input(_m, inp):
                return tuple(
                    t.repeat_interleave(n_trials, dim=0) if isinstance(t, torch.Tensor) else t
                    for t in inp
                )

            self.handles.append(module.register_forward_pre_hook(expand_input, prepend=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _forward_trials(
    model: nn.Module,
    x: torch.Tensor,
    layers: list[str],
    n_trials: int,
    site: tuple[str, str] | None,
    watch: tuple[str, str] | None = None,
    site_param: str = "model",
    modules: Mapping[str, nn.Module] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, ...]]]:
    """One forward pass of ``len(x)`` stimuli x ``n_trials``.

    Returns ``(trial, stimulus, unit)`` tensors and each layer's per-sample output shape. A
    recorded layer, the branch site, or ``watch`` (a site whose branch failed) that runs more
    than once in the pass is an error.
    """
    if site == _store.PER_TRIAL:  # one pass per trial: randomness drawn once per pass
        passes = [
            _forward_trials(model, x, layers, 1, None, modules=modules) for _ in range(n_trials)
        ]
        shapes = passes[0][1]
        return {name: torch.cat([p[0][name] for p in passes]) for name in layers}, shapes
    rec = _Recorder(model, layers, modules)
    b = len(x)
    watched = site or watch
    try:
        if site is None:
            inp = x.repeat_interleave(n_trials, dim=0)
        else:
            rec.branch(site[0], site[1], n_trials)
            inp = x
        if watched is not None and watched[0] not in layers:
            rec.watch(watched[0])
        rec.capture()
        out = model(inp)
        if isinstance(out, torch.Tensor) and out.shape[0] != b * n_trials:
            raise RuntimeError(
                f"model output has batch {out.shape[0]}, expected {b * n_trials} after branching"
            )
    finally:
        rec.remove()
    rec.check_once(
        {watched[0]: site_param} if watched is not None and watched[0] not in layers else {}
    )
    result, shapes = {}, {}
    for name in layers:
        shapes[name] = tuple(rec.outputs[name].shape[1:])
        t = rec.outputs[name].flatten(1)
        if t.shape[0] == b * n_trials:
            t = t.reshape(b, n_trials, -1).transpose(0, 1)
        elif t.shape[0] == b:  # a layer before the branch site: deterministic, same each trial
            t = t.unsqueeze(0).expand(n_trials, -1, -1)
        else:
            raise RuntimeError(
                f"layer {name!r} has batch {t.shape[0]}, expected {b} or {b * n_trials}"
            )
        result[name] = t
    return result, shapes


def _layer_dataset(
    name: str,
    data: np.ndarray | None,
    shape: Sequence[int],
    n_trials: int,
    stim_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    template_chunk: int = 1,
) -> xr.Dataset:
    coords: dict[str, Any] = {TRIAL: np.arange(n_trials)}
    coords.update({k: (STIMULUS, v) for k, v in stim_coords.items()})
    coords.update(unit_coords(name, shape))
    if data is None:  # lazy template for streaming to zarr
        import dask.array as da

        n_units = int(np.prod(shape))
        n_stim = len(next(iter(stim_coords.values())))
        # one zarr chunk per recording chunk of stimuli, so region writes never share a chunk
        data = da.zeros(
            (n_trials, n_stim, n_units),
            dtype=np.float32,
            chunks=(n_trials, template_chunk, n_units),
        )
    act = xr.DataArray(data, dims=(TRIAL, STIMULUS, UNIT), coords=coords, name="activation")
    act.attrs.update({"long_name": f"activation of {name}", "units": "a.u."})
    ds = act.to_dataset()
    ds.attrs.update(attrs)
    ds.attrs["layer"] = name
    return ds


def _index_units(ds: xr.Dataset) -> xr.Dataset:
    """Make ``channel`` a selectable index so ``da.sel(channel=3)`` works."""
    if "channel" in ds.coords and "channel" not in ds.xindexes:
        ds = ds.set_xindex("channel")
    return ds


def _drop_unit_index(ds: xr.Dataset) -> xr.Dataset:
    if "channel" in ds.xindexes:
        ds = ds.drop_indexes("channel")
    return ds


def record_activations(
    model: nn.Module,
    stimuli: torch.Tensor | np.ndarray,
    *,
    layers: Sequence[str] | str,
    n_trials: int,
    labels: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    stimulus_coords: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    batch_size: int = 512,
    branch: str = "auto",
    device: str | torch.device | None = None,
    rng: int | np.random.Generator | torch.Generator | None = None,
    store: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    model_id: str | None = None,
    progress: bool = True,
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
        Samples (stimuli x trials) per forward pass; trials are split across passes when
        ``n_trials > batch_size``.
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
        ``attrs["seed"]``. Results depend on the seed and on ``batch_size`` (the order of draws).
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
        ``n_trials``, ``batch_size``, ``branch``, seed, model weights, buffers and modes, noise
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
        Show a tqdm progress bar.

    Returns
    -------
    xarray.DataTree
        One child node per layer (named by the layer), each with the data variable
        ``activation`` of dims ``("trial", "stimulus", "unit")``; stimulus coords
        ``stimulus_id`` (and ``label``, ...), unit coords ``unit_id``, ``layer``, ``channel``
        (``y``, ``x`` for conv maps). Attrs: ``model``, ``layer``, ``noise_config`` (JSON),
        ``seed``, ``n_trials``, ``branch_site``, ``neurovar_version``, ``torch_version``.

    Examples
    --------
    >>> tree = record_activations(model, x, layers=["conv1", "fc1"], n_trials=20, rng=0)
    >>> tree["fc1"]["activation"].sel(channel=3)
    """
    check_instance(model, nn.Module, name="model", owner=_OWNER, expected="a torch.nn.Module")
    n_trials = check_int(n_trials, name="n_trials", owner=_OWNER, low=1)
    batch_size = check_int(batch_size, name="batch_size", owner=_OWNER, low=1)
    overwrite = check_bool(overwrite, name="overwrite", owner=_OWNER)
    resume = check_bool(resume, name="resume", owner=_OWNER)
    if resume and overwrite:
        raise param_error(
            "resume",
            _OWNER,
            "False when overwrite=True (resume=True continues an interrupted store, "
            "overwrite=True replaces it)",
            resume,
        )
    progress = check_bool(progress, name="progress", owner=_OWNER)
    if model_id is not None and (not isinstance(model_id, str) or not model_id):
        raise param_error("model_id", _OWNER, "a non-empty str or None", model_id)
    if not isinstance(branch, str):
        raise param_error("branch", _OWNER, "'auto', 'input' or a layer name", branch)
    check_rng(rng, owner=_OWNER)
    layers = _check_layers(model, layers)
    x_all = _to_tensor(stimuli)
    dtype = _model_dtype(model)
    if dtype is not None and x_all.dtype != dtype:
        x_all = x_all.to(dtype)  # float64/float16 stimuli run in the model's precision
        _check_finite(x_all, f" in the model's precision ({dtype}, after the cast)")
    n_stim = len(x_all)
    stim_coords: dict[str, np.ndarray] = {"stimulus_id": np.arange(n_stim)}
    if labels is not None:
        lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if lab.shape != (n_stim,):
            raise param_error(
                "labels",
                _OWNER,
                f"of shape ({n_stim},) to match 'stimuli'",
                f"shape {lab.shape}",
                raw=True,
            )
        stim_coords["label"] = lab
    if stimulus_coords is not None and not isinstance(stimulus_coords, Mapping):
        raise param_error(
            "stimulus_coords", _OWNER, "a mapping {name: values} or None", stimulus_coords
        )
    for key, values in (stimulus_coords or {}).items():
        arr = np.asarray(values)
        if arr.shape != (n_stim,):
            raise param_error(
                f"stimulus_coords[{key!r}]",
                _OWNER,
                f"of shape ({n_stim},)",
                f"shape {arr.shape}",
                raw=True,
            )
        stim_coords[key] = arr
    if branch not in ("auto", "input") and branch not in dict(model.named_modules()):
        raise param_error(
            "branch",
            _OWNER,
            "'auto', 'input' or a layer name",
            branch,
            hint=f"Valid layer names: {layer_names(model)!r}.",
        )
    store_path = None
    if store is not None:
        if not isinstance(store, (str, Path)):
            raise param_error(
                "store", _OWNER, "a path (str or pathlib.Path) ending in '.zarr'", store
            )
        store_path = Path(store)
        if store_path.suffix != ".zarr":
            raise param_error(
                "store",
                _OWNER,
                "a path ending in '.zarr' (streamed chunk by chunk)",
                str(store),
                hint="Use save_recording(tree, 'file.nc') for netCDF.",
            )
        old = _root_attrs(store_path) if store_path.exists() else None
        if store_path.exists() and not overwrite and not resume:
            unfinished = old is not None and not int(old.get("neurovar_complete", 1))
            writer = _store.live_writer(old) if unfinished else None
            if writer is not None and writer[1]:
                raise FileExistsError(
                    f"The 'store' path {str(store_path)!r} already exists and is being "
                    f"written by {writer[0]}; wait for it to finish, or choose another path. "
                    "Nothing was written."
                )
            raise FileExistsError(
                f"The 'store' path {str(store_path)!r} already exists"
                + (
                    " and is an interrupted, incomplete recording; pass resume=True (with the "
                    "same arguments) to finish it, "
                    if unfinished
                    else "; pass "
                )
                + "overwrite=True to replace it or choose another path. Nothing was written."
            )
        _writer_error(old, store_path, "resume" if resume else "overwrite")
    # a lower bound of the result's size (one unit per layer) refuses n_trials=10**9 at once
    if store_path is None:
        check_memory(
            4.0 * n_trials * n_stim * len(layers),
            name="n_trials",
            owner=_OWNER,
            value=n_trials,
            what="the recorded activations",
        )

    dev = resolve_device(device, model=model, owner=_OWNER)
    previous = None  # root attrs of the store to resume
    if resume and store_path is not None and store_path.exists():
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
    seed = _stored_seed(previous) if previous is not None and rng is None else seed_from(rng)
    trial_chunk = min(n_trials, batch_size)
    stim_chunk = max(1, batch_size // trial_chunk)
    n_chunks = -(-n_stim // stim_chunk)
    fingerprint: dict[str, str] = {}
    if store_path is not None:
        fingerprint = _fingerprint(
            model,
            x_all,
            stim_coords,
            layers,
            n_trials,
            batch_size,
            branch,
            rng,
            seed,
            dev,
            model_id,
        )
    start, resume_from = 0, None  # first chunk to record, snapshot to restore
    if previous is not None:
        assert store_path is not None  # internal invariant: previous is read from the store
        _check_fingerprint(previous, fingerprint, store_path)
        if int(previous["neurovar_complete"]):
            return load_recording(store_path)  # the same call, already finished
        resume_from = _resume_snapshot(previous, store_path)
        start = int(previous["neurovar_chunks_written"])
    site_param = "model" if branch == "auto" else "branch"  # who chose the branch site
    bn_modes = {m: m.training for m in model.modules() if isinstance(m, _BATCHNORM_TYPES)}
    _warn_relative_noise_in_training(model, stim_chunk)
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
    initial = {id(buf): saved for buf, saved in noise_buffers}  # what a snapshot may skip
    param = next(iter(model.parameters()), None)
    orig_device = param.device if param is not None else None
    full: dict[str, torch.Tensor] = {}  # the in-memory result, (trial, stimulus, unit)
    shapes: dict[str, tuple[int, ...]] = {}
    site: tuple[str, str] | None = None
    attrs: dict[str, Any] = {}
    # an existing store (overwrite=True) is only replaced once the new one is complete; a
    # resumed one is continued in place (a failure keeps every chunk written so far)
    write_path = store_path
    if store_path is not None and store_path.exists() and resume_from is None:
        write_path = temp_sibling(store_path)
    state, not_resumable = "", ""
    finished = False
    moved = False
    try:
        if resume_from is not None:
            _set_root_attrs(store_path, neurovar_writer=_store.writer_mark())
        for m in bn_modes:
            m.eval()
        # moved only if some tensor is elsewhere (a walk of every module otherwise)
        moved = any(t.device != dev for t in (*model.parameters(), *model.buffers()))
        if moved:
            model.to(dev)
        noise_streams = reseeded_noise(model, seed) if rng is not None else contextlib.nullcontext()
        with torch.no_grad(), seeded_torch(seed, dev), noise_streams:
            if resume_from is not None:
                # the random states right after the last chunk written (after the probe pass
                # when nothing was written), so the draws continue exactly
                site = _store.parse_site(resume_from["site"])
                _store.restore(resume_from, model, dev)
            elif branch == "auto":
                site = find_noise_site(model, x_all[:1].to(dev))
            elif branch != "input":
                site = (branch, "output")
            if resume_from is None:
                site = _untracked_randomness(model, x_all[:1].to(dev), site, dev)
            if site == _store.PER_TRIAL:  # one trial of up to batch_size stimuli per pass
                trial_chunk, stim_chunk = 1, batch_size
                n_chunks = -(-n_stim // stim_chunk)
            if write_path is not None:
                state, not_resumable = _store.snapshot(model, dev, site, start, initial)
            pbar = tqdm(
                total=n_stim,
                initial=min(n_stim, start * stim_chunk),
                desc="record",
                unit="stim",
                disable=not progress,
                leave=False,
            )
            modules = dict(model.named_modules())
            for ci in range(start, n_chunks):
                a, b = ci * stim_chunk, min(n_stim, (ci + 1) * stim_chunk)
                x = x_all[a:b].to(dev)
                parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
                for t0 in range(0, n_trials, trial_chunk):
                    nt = min(trial_chunk, n_trials - t0)
                    try:
                        out, shapes = _forward_trials(
                            model, x, layers, nt, site, site_param=site_param, modules=modules
                        )
                    except RuntimeError as err:
                        if site is None or site == _store.PER_TRIAL:
                            raise
                        # the unbranched model either works (the branch broke it: warn and
                        # keep folding at the input) or raises its own, genuine error
                        out, shapes = _forward_trials(
                            model,
                            x,
                            layers,
                            nt,
                            None,
                            watch=site,
                            site_param=site_param,
                            modules=modules,
                        )
                        warnings.warn(
                            f"Branching trials at {site[0]!r} ({site[1]}) failed ({err}); a skip "
                            "connection probably jumps over it. Falling back to folding trials at "
                            "the input (every layer runs once per trial).",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                        site = None
                    if ci == 0 and t0 == 0:
                        _check_size(out, n_trials, n_stim, write_path)
                        if write_path is None:  # the result, filled in place: one copy
                            full = {
                                name: torch.empty(
                                    (n_trials, n_stim, out[name].shape[2]), dtype=torch.float32
                                )
                                for name in layers
                            }
                    for name in layers:
                        if write_path is None:
                            full[name][t0 : t0 + nt, a:b].copy_(out[name])
                        else:
                            parts[name].append(out[name].float().cpu())
                chunk = (
                    {name: torch.cat(parts[name], dim=0).numpy() for name in layers}
                    if write_path is not None
                    else {}
                )
                if ci == 0:
                    attrs = {
                        "model": model_id or type(model).__name__,
                        "noise_config": json.dumps(noise_config(model), sort_keys=True),
                        "seed": seed,
                        "n_trials": n_trials,
                        "branch_site": _store.site_text(site),
                        "neurovar_version": __version__,
                        "torch_version": str(torch.__version__),
                    }
                    if store_path is not None:
                        templates = {
                            name: _layer_dataset(
                                name,
                                None,
                                shapes[name],
                                n_trials,
                                stim_coords,
                                attrs,
                                template_chunk=stim_chunk,
                            )
                            for name in layers
                        }
                        if resume_from is not None:
                            # started before, but no chunk was written: start it again (with
                            # the random states it was started with), now that chunk 0 is ready
                            remove_path(write_path)
                        _init_store(
                            write_path,
                            templates,
                            n_chunks=n_chunks,
                            stim_chunk=stim_chunk,
                            fingerprint=fingerprint,
                            state=state,
                            not_resumable=not_resumable,
                        )
                if write_path is not None:
                    if not not_resumable:
                        state, not_resumable = _store.snapshot(model, dev, site, ci + 1, initial)
                    _write_region(write_path, chunk, a, b, ci + 1, state, not_resumable)
                pbar.update(b - a)
            pbar.close()
        if write_path is not None:
            _mark_complete(write_path)
            if write_path != store_path:
                replace_path(write_path, store_path)
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
    if store_path is not None:
        return load_recording(store_path)
    children = {}
    for name in layers:
        data = full[name].numpy()
        children[name] = _index_units(
            _layer_dataset(name, data, shapes[name], n_trials, stim_coords, attrs)
        )
    tree = xr.DataTree.from_dict(children)
    tree.attrs.update({k: v for k, v in attrs.items() if k != "layer"})
    return tree


def _warn_relative_noise_in_training(model: nn.Module, stim_chunk: int) -> None:
    """Warn about noise whose scale a recording would re-estimate from batches of trial copies.

    A noise module with ``relative_scale`` in training mode sets its scale from the variance of
    the batch it sees. Inside a recording that batch holds ``n_trials`` copies of each of a few
    stimuli, not a sample of the data: its variance is not the layer's (with one stimulus per
    pass it is 0 at the layer where trials branch, and the module adds no noise at all).
    """
    for name, hook in find_noise_hooks(model, active_only=True):
        noise = getattr(hook, "noise", None)
        # the noise module follows the train/eval mode of the layer it is hooked into
        if getattr(noise, "relative_scale", None) is None or not model.get_submodule(name).training:
            continue
        warnings.warn(
            f"The noise at layer {name!r} has relative_scale={noise.relative_scale:g} and the "
            "layer is in training mode, so inside this recording the noise re-estimates the "
            f"layer's variance from batches of trial copies ({stim_chunk} stimuli per pass) "
            "instead of using its running estimate: the recorded noise level is not the "
            "model's (with 1 stimulus per pass it can be 0). Put that layer in eval mode (e.g. "
            f"`model.get_submodule({name!r}).eval()`, or `model.eval()`; injected noise is still "
            "added) to record with the running estimate.",
            RuntimeWarning,
            stacklevel=3,
        )


#: Root attrs of a store streamed by ``record_activations(store=...)`` that track its progress:
#: chunks are written in order, so ``chunks_written`` of ``n_chunks`` says exactly which
#: stimuli are on disk; ``complete`` is set to 1 last. ``fingerprint`` (JSON) identifies the
#: call that started the store, ``resume_state`` holds the random states after the chunks
#: written (updated together with ``chunks_written``, in one write), ``not_resumable`` says why
#: a store cannot be resumed exactly ("" when it can); see :mod:`neurovar._store`. ``writer``
#: (JSON: pid, host, start) names the process writing the store ("" once it finished or
#: failed) and ``heartbeat`` the time of its last chunk. They are removed on loading.
_PROGRESS_ATTRS = (
    "neurovar_complete",
    "neurovar_chunks_written",
    "neurovar_n_chunks",
    "neurovar_chunk_stimuli",
    "neurovar_fingerprint",
    "neurovar_resume_state",
    "neurovar_not_resumable",
    "neurovar_writer",
    "neurovar_heartbeat",
)

#: What each fingerprint component of a store means, for the error of a refused resume.
_FINGERPRINT_WORDS = {
    "stimuli": "the stimuli differ from those the store was started with",
    "stimulus_coords": "the labels or stimulus_coords differ from those the store was started with",
    "layers": "the layers differ",
    "n_trials": "n_trials differs",
    "batch_size": "batch_size differs",
    "branch": "branch differs",
    "seed": "the seed differs",
    "model": "the model's weights or buffers differ from those the store was started with",
    "modes": "the train/eval modes of the model's modules differ",
    "noise_config": "the noise configuration (noise modules, their seeds, active dropout) differs",
    "device": "the device differs",
    "model_id": "model_id differs",
    "versions": "the neurovar or torch version differs",
}
#: Components stored as plain values (shown in the error); the others are sha256 digests.
_FINGERPRINT_SHOWN = (
    "layers",
    "n_trials",
    "batch_size",
    "branch",
    "seed",
    "device",
    "model_id",
    "versions",
)


def _fingerprint(
    model: nn.Module,
    x_all: torch.Tensor,
    stim_coords: Mapping[str, np.ndarray],
    layers: list[str],
    n_trials: int,
    batch_size: int,
    branch: str,
    rng: Any,
    seed: int,
    dev: torch.device,
    model_id: str | None,
) -> dict[str, str]:
    """What identifies a recording call (see :data:`_FINGERPRINT_WORDS`).

    It cannot see changes to the model's *code* or to state kept outside tensors and plain
    attributes; resume a store only with the model it was started with.
    """
    noise = [
        (type(m).__name__, dict(m.state_dict())) for m in noise_modules(model)
    ]  # hook noise modules are not in the model's state_dict
    # BatchNorm runs in eval mode inside every recording: its own flag does not matter
    modes = [
        (name, m.training)
        for name, m in model.named_modules()
        if not isinstance(m, _BATCHNORM_TYPES)
    ]
    return {
        "stimuli": _store.digest(x_all),
        "stimulus_coords": _store.digest(dict(stim_coords)),
        "layers": json.dumps(layers),
        "n_trials": str(n_trials),
        "batch_size": str(batch_size),
        "branch": branch,
        "seed": "rng=None" if rng is None else str(seed),
        "model": _store.digest(type(model).__name__, dict(model.state_dict()), noise),
        "modes": _store.digest(modes),
        "noise_config": _store.digest(_noise_identity(model, seeded=rng is not None)),
        # the device type: "cuda" and "cuda:0" are one device for the same call
        "device": dev.type,
        "model_id": model_id or type(model).__name__,
        "versions": f"neurovar {__version__}, torch {torch.__version__}",
    }


def _callable_name(obj: Any) -> str:
    """``module.qualname`` of a function or of an object's class (a ``repr`` may hold a memory
    address, which differs between processes)."""
    target = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _plain_attrs(obj: Any) -> dict[str, Any]:
    """The scalar instance attributes of ``obj`` (e.g. a custom noise's ``std``)."""
    plain = (type(None), bool, int, float, str)
    return {
        key: value
        for key, value in sorted(getattr(obj, "__dict__", {}).items())
        if isinstance(value, plain) and key != "seed"
    }


def _noise_identity(model: nn.Module, *, seeded: bool) -> dict[str, Any]:
    """What the recorded noise depends on, per active stochastic site, for the fingerprint.

    The sites of :func:`noise_config`, each noise described more fully: for neurovar noise
    modules their ``config()`` plus ``momentum`` and ``track_snr``; for any other noise (a
    custom module or a plain function) its qualified name, its scalar attributes and, for a
    module, its tensors. The modules' own seeds are left out when ``rng`` is given (the
    recording then reseeds every module from ``rng``); active dropout by its ``repr``.
    """

    def identity(noise: Any) -> Any:
        described = _describe_noise(noise)
        if isinstance(described, dict):  # a neurovar noise module's config()
            if seeded:
                described.pop("seed", None)
            described["momentum"] = getattr(noise, "momentum", None)
            described["track_snr"] = getattr(noise, "track_snr", None)
            return described
        described = {"callable": _callable_name(noise), **_plain_attrs(noise)}
        if isinstance(noise, nn.Module):
            described["state"] = dict(noise.state_dict())
        return described

    return _stochastic_sites(model, identity)


def _root_attrs(path: Path) -> dict[str, Any] | None:
    """Root attrs of the zarr store at ``path``, or None if it is not one."""
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # noqa: BLE001  (not a zarr group: a file, a folder of something else)
        return None


def _stored_seed(previous: Mapping[str, Any]) -> int:
    """The seed a store was recorded with (0 for a foreign store, refused by its fingerprint)."""
    try:
        return int(previous.get("seed", 0))
    except (TypeError, ValueError):
        return 0


def _check_fingerprint(previous: Mapping[str, Any], now: Mapping[str, str], path: Path) -> None:
    """Refuse to resume (or return) a store started by a different call; names what differs."""
    try:
        stored = json.loads(previous["neurovar_fingerprint"])
    except (KeyError, TypeError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        diffs = ["the store carries no fingerprint of the call that wrote it (an older neurovar)"]
    else:
        diffs = []
        for key, words in _FINGERPRINT_WORDS.items():
            if stored.get(key) != now[key]:
                if key in _FINGERPRINT_SHOWN:
                    words += f" (the store: {stored.get(key)}, this call: {now[key]})"
                diffs.append(words)
    if diffs:
        raise param_error(
            "resume",
            _OWNER,
            "True only with the arguments, model and seed the store was started with",
            f"resume=True for {str(path)!r}, but " + "; ".join(diffs),
            raw=True,
            hint="Nothing on disk was changed; pass overwrite=True to replace the store, or "
            "choose another path.",
        )


def _resume_snapshot(previous: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The saved random states of an incomplete store, or an error saying why it has none."""
    reason = str(previous.get("neurovar_not_resumable", ""))
    payload = None
    if not reason:
        try:
            payload = _store.load_snapshot(str(previous.get("neurovar_resume_state", "")))
        except Exception:  # noqa: BLE001  (missing, damaged or foreign data)
            reason = "its saved random state is missing or cannot be read"
        else:
            if int(payload["chunks"]) != int(previous["neurovar_chunks_written"]):
                reason = "its saved random state does not belong to the chunks written"
    if reason:
        raise param_error(
            "resume",
            _OWNER,
            "True only for a store that can be resumed exactly",
            f"resume=True for {str(path)!r}, which cannot be: {reason}",
            raw=True,
            hint="Nothing on disk was changed; pass overwrite=True to record it again.",
        )
    assert payload is not None  # internal invariant: no reason means a payload was read
    return payload


def _check_size(
    out: Mapping[str, torch.Tensor], n_trials: int, n_stim: int, store: Path | None
) -> None:
    """Refuse a recording whose result cannot fit in memory (or on disk for a store)."""
    n_units = sum(int(np.prod(t.shape[2:])) for t in out.values())
    n_bytes = 4.0 * n_trials * n_stim * n_units
    if store is None:
        check_memory(
            n_bytes, name="n_trials", owner=_OWNER, value=n_trials, what="the recorded activations"
        )
        return
    import shutil

    free = shutil.disk_usage(store.parent if store.parent.exists() else Path(".")).free
    if n_bytes > free:
        raise param_error(
            "n_trials",
            _OWNER,
            "small enough for the store to fit on disk",
            n_trials,
            hint=f"The store needs about {n_bytes / 2**30:.3g} GiB, {free / 2**30:.3g} GiB are free.",
        )


def _init_store(
    path: Path,
    datasets: Mapping[str, xr.Dataset],
    *,
    n_chunks: int,
    stim_chunk: int,
    fingerprint: Mapping[str, str],
    state: str,
    not_resumable: str,
) -> None:
    """Write metadata and coordinates of every layer; the activations follow region by region.

    The root attrs mark the store incomplete until :func:`_mark_complete` runs; ``state`` is
    the random state before the first chunk (see :data:`_PROGRESS_ATTRS`).
    """
    root_attrs = {k: v for k, v in next(iter(datasets.values())).attrs.items() if k != "layer"}
    root_attrs.update(
        neurovar_complete=0,
        neurovar_chunks_written=0,
        neurovar_n_chunks=n_chunks,
        neurovar_chunk_stimuli=stim_chunk,
        neurovar_fingerprint=json.dumps(dict(fingerprint), sort_keys=True),
        neurovar_resume_state=state,
        neurovar_not_resumable=not_resumable,
        neurovar_writer=_store.writer_mark(),
        neurovar_heartbeat=_store.now_text(),
    )
    xr.Dataset(attrs=root_attrs).to_zarr(path, mode="w-", consolidated=False)
    for name, ds in datasets.items():
        ds.to_zarr(path, group=name, mode="w-", compute=False, consolidated=False)


def _set_root_attrs(path: Path, **attrs: Any) -> None:
    import zarr

    zarr.open_group(str(path), mode="r+").attrs.update(attrs)


def _write_region(
    path: Path,
    chunk: Mapping[str, np.ndarray],
    a: int,
    b: int,
    n_done: int,
    state: str,
    not_resumable: str,
) -> None:
    for name, values in chunk.items():
        part = xr.Dataset({"activation": ((TRIAL, STIMULUS, UNIT), values)})
        part.to_zarr(path, group=name, region={STIMULUS: slice(a, b)}, consolidated=False)
    # only after every layer's region; the count and the random state after it in one
    # (atomic) write of the root metadata, so they always agree
    _set_root_attrs(
        path,
        neurovar_chunks_written=n_done,
        neurovar_resume_state=state,
        neurovar_not_resumable=not_resumable,
        neurovar_heartbeat=_store.now_text(),
    )


def _mark_complete(path: Path) -> None:
    # no writer and no time left behind: a finished store does not depend on when or by whom
    _set_root_attrs(
        path,
        neurovar_complete=1,
        neurovar_resume_state="",
        neurovar_writer="",
        neurovar_heartbeat="",
    )


def _release_writer(path: Path) -> None:
    """After a failed recording: this process no longer writes the store at ``path`` (if it
    is there and names this process as its writer), so it reads as interrupted, resumable."""
    attrs = _root_attrs(path)
    if attrs is None:
        return
    try:
        mark = json.loads(str(attrs.get("neurovar_writer", "")))
    except ValueError:
        return
    if isinstance(mark, dict) and mark.get("pid") == os.getpid():
        with contextlib.suppress(Exception):  # never mask the recording's own error
            _set_root_attrs(path, neurovar_writer="")


def _writer_error(attrs: Mapping[str, Any] | None, path: Path, flag: str) -> None:
    """Refuse ``flag`` (resume or overwrite) while another process is writing the store."""
    if attrs is None or int(attrs.get("neurovar_complete", 1)):
        return
    writer = _store.live_writer(attrs)
    if writer is None or not writer[1]:
        return
    raise param_error(
        flag,
        _OWNER,
        "True only for a store that no process is writing",
        f"{flag}=True for {str(path)!r}, which is being written by {writer[0]}",
        raw=True,
        hint="Nothing on disk was changed; wait for that process to finish (a second writer "
        "would interleave its chunks with the first's), or stop it first.",
    )




def save_recording(tree: xr.DataTree, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save a recording (DataTree) to netCDF (``.nc``, h5netcdf engine) or zarr (``.zarr``).

    Round trips through :func:`load_recording` are exact: values, dtypes, coords and attrs.
    An existing path is an error unless ``overwrite=True``.
    """
    from ._io import atomic_path

    owner = "save_recording"
    check_instance(tree, xr.DataTree, name="tree", owner=owner, expected="an xarray.DataTree")
    overwrite = check_bool(overwrite, name="overwrite", owner=owner)
    if not isinstance(path, (str, Path)):
        raise param_error(
            "path", owner, "a path (str or pathlib.Path) ending in '.nc' or '.zarr'", path
        )
    path = Path(path)
    if path.suffix not in (".nc", ".zarr"):
        raise param_error("path", owner, "a path ending in '.nc' or '.zarr'", str(path))
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"The 'path' {str(path)!r} already exists; pass overwrite=True to replace it. Nothing was written."
        )
    from ._io import encode_tree_attrs

    plain = encode_tree_attrs(tree.map_over_datasets(_drop_unit_index), owner=owner)
    # written to a temporary sibling and renamed into place: a failed save leaves nothing
    # behind, and a failed overwrite leaves the old file as it was
    with atomic_path(path, overwrite=overwrite, owner=owner) as tmp:
        if path.suffix == ".nc":
            plain.to_netcdf(tmp, engine="h5netcdf", mode="w")
        else:
            plain.to_zarr(tmp, mode="w-", consolidated=False)
    return path


class IncompleteRecordingError(RuntimeError):
    """A store streamed by ``record_activations(store=...)`` was not finished (the recording
    raised or was killed); its unwritten stimuli would read as NaN."""


def load_recording(
    path: str | Path,
    *,
    chunks: Mapping[str, int] | None = None,
    allow_incomplete: bool = False,
) -> xr.DataTree:
    """Open a recording written by :func:`save_recording` or ``record_activations(store=...)``.

    Data are opened lazily with dask (``chunks={}`` uses the on-disk chunks); ``channel`` is
    made a selectable index again.

    A store streamed by ``record_activations(store=...)`` records its progress in its root
    attrs (chunks written, in order; a completion flag written last). An interrupted store
    (exception in a hook, ``kill -9``) raises :class:`IncompleteRecordingError` naming how
    many stimuli are missing, because its unwritten stimuli read as NaN, which is also what
    legitimate trial padding looks like. ``allow_incomplete=True`` opens it anyway with a
    :class:`RuntimeWarning`, keeping only the stimuli that were written.

    While a recording writes a store, the store names its writer (pid, host, when it started)
    and the time of its last chunk; a store that a live process of this host is still writing
    is reported as such ("being written by process N ... since ..."), not as interrupted, and
    ``record_activations(..., resume=True)`` (or ``overwrite=True``) refuses it until that
    process ends. A writer on another host cannot be checked: the message names it.
    """
    owner = "load_recording"
    allow_incomplete = check_bool(allow_incomplete, name="allow_incomplete", owner=owner)
    if not isinstance(path, (str, Path)):
        raise param_error("path", owner, "a path (str or pathlib.Path)", path)
    if chunks is not None and not isinstance(chunks, Mapping):
        raise param_error("chunks", owner, "a mapping {dim: chunk size} or None", chunks)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"The 'path' parameter of load_recording: {str(path)!r} does not exist."
        )
    if path.suffix == ".zarr":
        tree = xr.open_datatree(path, engine="zarr", chunks=dict(chunks or {}), consolidated=False)
    else:
        tree = xr.open_datatree(path, engine="h5netcdf", chunks=dict(chunks or {}))
    from ._io import decode_tree_attrs

    tree = decode_tree_attrs(tree)
    if "neurovar_complete" in tree.attrs:
        tree = _check_complete(tree, path, allow_incomplete)
    return tree.map_over_datasets(_index_units)


def _check_complete(tree: xr.DataTree, path: Path, allow_incomplete: bool) -> xr.DataTree:
    attrs = dict(tree.attrs)
    complete = int(attrs.get("neurovar_complete", 1))
    n_chunks = int(attrs.get("neurovar_n_chunks", 0))
    written = int(attrs.get("neurovar_chunks_written", n_chunks))
    per_chunk = int(attrs.get("neurovar_chunk_stimuli", 1))
    reason = str(attrs.get("neurovar_not_resumable", ""))
    writer = None if complete else _store.live_writer(attrs)
    for key in _PROGRESS_ATTRS:
        attrs.pop(key, None)
    tree.attrs = attrs
    if complete:
        return tree
    layers = [name for name in tree.children if "activation" in tree[name].ds]
    n_stim = int(tree[layers[0]].ds.sizes[STIMULUS]) if layers else 0
    n_ok = min(n_stim, written * per_chunk)
    finish = (
        f"It cannot be resumed ({reason}): record it again (overwrite=True)"
        if reason
        else "record_activations(..., store=path, resume=True) with the same arguments "
        "finishes it exactly"
    )
    if writer is not None and writer[1]:
        message = (
            f"The recording store {str(path)!r} is incomplete: it is being written by "
            f"{writer[0]}, and {n_ok} of {n_stim} stimuli ({written} of {n_chunks} chunks) are "
            "written so far. Wait for that process to finish, or pass allow_incomplete=True to "
            f"open the {n_ok} stimuli written so far."
        )
    else:
        unsure = (
            f" It was being written by {writer[0]}, which cannot be checked from this host: if "
            "that process still runs, wait for it instead of resuming."
            if writer is not None
            else ""
        )
        message = (
            f"The recording store {str(path)!r} is incomplete: {n_stim - n_ok} of {n_stim} "
            f"stimuli ({n_chunks - written} of {n_chunks} chunks) were never written, because "
            f"the recording was interrupted. {finish}; or pass allow_incomplete=True to open "
            f"the {n_ok} stimuli that were written.{unsure}"
        )
    if not allow_incomplete:
        raise IncompleteRecordingError(message)
    warnings.warn(message + " Only those are returned.", RuntimeWarning, stacklevel=3)
    tree = tree.isel({STIMULUS: slice(0, n_ok)})
    tree.attrs = {**attrs, "incomplete": 1}
    return tree
