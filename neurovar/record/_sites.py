"""Where a model's randomness enters, so trials branch there: the noise site and its probes.

:func:`find_noise_site` finds the first known stochastic module (injected noise, dropout in
training mode) by a probe pass; :func:`_untracked_randomness` looks for randomness neurovar does
not track before that site and falls back to folding trials at the input or to one forward pass
per trial; :func:`noise_config` describes every stochastic site for the recording's attrs.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .._torch import find_noise_hooks, noise_hooks, noise_modules
from . import _state as _store

_DROPOUT_TYPES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)
_BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


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


def _cloned(obj: Any) -> Any:
    """``obj`` with every tensor in it copied (a tensor, a list, tuple or namedtuple, a mapping:
    the containers :func:`_tensors` reads), so a later in-place layer cannot change it."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if type(obj) in (list, tuple):
        return type(obj)(_cloned(item) for item in obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_cloned(item) for item in obj))
    if isinstance(obj, Mapping):  # every tensor _tensors reads, copied
        return {k: _cloned(v) for k, v in obj.items()}
    return obj


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


class Bytes(NamedTuple):
    """Bytes of the leaf outputs of one stimulus: their sum and the largest, for the part of a
    forward pass that runs once per stimulus (``shared``) and once per trial (``per_trial``)."""

    shared: int
    per_trial: int
    shared_peak: int
    per_trial_peak: int


class LeafBytes:
    """The bytes of every leaf module's output in one probe pass, per stimulus, in the order
    they run, each marked 0 (before the branch site), 1 (from it on) or 2 (the tensor trials
    branch from, expanded to every trial): for ``batch_size="auto"`` (:mod:`._budget`)."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []
        self.part = 0
        self.copies = 1
        self.recording = False  # only during the measured pass
        self.complete = False  # the measured pass ran to the end

    def add(self, obj: Any, part: int | None = None) -> None:
        if self.recording:
            n = sum(t.numel() * t.element_size() for t in _tensors(obj)) // self.copies
            self.entries.append((n, self.part if part is None else part))

    def leaf_hook(self, _m: nn.Module, _i: Any, out: Any) -> None:
        self.add(out)

    def branch(self, obj: Any) -> None:
        """The branch site is reached: ``obj`` is expanded to every trial, the rest per trial."""
        self.add(obj, 2)
        self.part = 1

    def install(self, model: nn.Module) -> list[Any]:
        """Forward hooks on every leaf module (prepended: a leaf's own output is counted
        before a hook at its output marks the branch); returns their handles."""
        return [
            m.register_forward_hook(self.leaf_hook, prepend=True)
            for m in model.modules()
            if next(m.children(), None) is None
        ]

    def result(self, site: tuple[str, str] | None) -> Bytes | None:
        """The bytes for trials branched at ``site``: the probed site, or None /
        :data:`._state.PER_TRIAL` (everything per trial); None if the pass did not finish."""
        if not self.complete:
            return None
        folded = site is None or site == _store.PER_TRIAL
        shared = [] if folded else [n for n, part in self.entries if part == 0]
        per_trial = [n for n, part in self.entries if (part != 2 if folded else part != 0)]
        return Bytes(sum(shared), sum(per_trial), max(shared, default=0), max(per_trial, default=0))


@contextlib.contextmanager
def noise_suspended(model: nn.Module) -> Iterator[None]:
    """Injected noise switched off (a noise hook returns a tensor of its layer's shape, so the
    layers after it see the same shapes), each hook's own state restored on exit: the switch of
    :func:`neurovar.noise.suspend_noise`, which the record package may not import. A noise that
    draws from a generator of its own, which :func:`probe_guard` cannot restore, draws nothing."""
    hooks = [h for _, h in find_noise_hooks(model) if hasattr(h, "suspended")]
    saved = [h.suspended for h in hooks]
    try:
        yield
    finally:
        for h, was in zip(hooks, saved):
            h.suspended = was


def _suspend(model: nn.Module) -> None:
    """Switch off every injected noise of ``model`` (inside :func:`noise_suspended`)."""
    for _, h in find_noise_hooks(model):
        if hasattr(h, "suspended"):
            h.suspended = True


@contextlib.contextmanager
def probe_guard(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run probe passes that leave no trace in the recording's draws: in a fork of torch's RNG
    (and the device's), with every noise module's stream, frozen draw and buffers (running
    estimates) restored afterwards, and without autograd."""
    noise = noise_modules(model)
    saved = [(m.get_rng_state(), [(b, b.detach().clone()) for b in m.buffers()]) for m in noise]
    devices = _fork_devices(device)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices, device_type="cuda"):
            yield
    finally:
        with torch.no_grad():
            for m, (state, buffers) in zip(noise, saved):
                m.set_rng_state(state)
                for buf, value in buffers:
                    buf.copy_(value)


def _prefix_randomness(
    model: nn.Module,
    example: torch.Tensor,
    site: tuple[str, str] | None,
    device: torch.device,
    leaf_bytes: LeafBytes | None = None,
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

    With ``leaf_bytes`` the first pass also measures every leaf module's output: it goes on
    past the site to the model's output, with injected noise switched off from the site on (a
    failure after the site only leaves ``leaf_bytes`` incomplete); one pass serves both.

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

    def stop(value: Any) -> None:
        if leaf_bytes is None or not leaf_bytes.recording:
            captured.append(value)
            raise _ProbeStop
        if leaf_bytes.part == 1:
            return  # the site runs again (the recording refuses a site called twice)
        # the measured pass goes on: a copy (a later in-place layer must not change what is
        # compared), and no noise from here on
        captured.append(_cloned(value))
        leaf_bytes.branch(value)
        _suspend(model)

    def stop_input(_m: nn.Module, inputs: Any) -> None:
        stop(inputs)

    def stop_output(_m: nn.Module, _i: Any, out: Any) -> None:
        stop(out)

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
        if leaf_bytes is not None:  # after stop_output: prepended, they run before it
            handles.extend(leaf_bytes.install(model))
        with probe_guard(model, device):
            for i, copies in enumerate(_PROBE_COPIES):
                if leaf_bytes is not None:
                    leaf_bytes.recording, leaf_bytes.copies = i == 0, copies
                try:
                    with noise_suspended(model):
                        out = model(example.expand(copies, *example.shape[1:]).contiguous())
                except _ProbeStop:
                    continue
                except Exception:
                    if site is None or not captured or leaf_bytes is None or i > 0:
                        raise
                    continue  # the measured pass failed after the site: no bytes, no harm
                if site is None:
                    captured.append(out)  # the model's output
                elif leaf_bytes is not None and i == 0:
                    leaf_bytes.complete = True
            if site is None and leaf_bytes is not None and len(captured) == len(_PROBE_COPIES):
                leaf_bytes.complete = True
    finally:
        for h in handles:
            h.remove()
        if leaf_bytes is not None:
            leaf_bytes.recording = False
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
    model: nn.Module,
    example: torch.Tensor,
    site: tuple[str, str] | None,
    device: torch.device,
    *,
    stacklevel: int = 3,
    leaf_bytes: LeafBytes | None = None,
) -> tuple[str, str] | None:
    """The branch site to record with, once :func:`_prefix_randomness` has looked for
    randomness neurovar does not track: ``site`` itself, or (with a warning saying why) None
    (fold trials at the input) or :data:`neurovar.record._state.PER_TRIAL` (one pass per trial).
    ``leaf_bytes``: measured in the same probe pass (see :func:`_prefix_randomness`)."""
    found = _prefix_randomness(model, example, site, device, leaf_bytes)
    if found is None:
        return site
    why, level = found
    if level == "batch":
        warnings.warn(
            f"The model draws randomness once per forward pass, not per sample ({why}): "
            "trials folded into one batch would share that draw. Recording one forward pass "
            "per trial instead (every layer runs once per trial, one trial at a time).",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
        return _store.PER_TRIAL
    assert site is not None  # internal invariant: per-sample draws are only reported before a site
    warnings.warn(
        f"The layers before the branch site {site[0]!r} are random in a way neurovar does not "
        f"track ({why}): branching trials there would give all trials of a stimulus one shared "
        "draw of that randomness. Falling back to folding trials at the input (every layer "
        "runs once per trial).",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return None


def _relative_noise_in_training(model: nn.Module) -> list[tuple[str, float]]:
    """``[(layer, relative_scale), ...]`` of the noise that a recording would re-estimate from
    batches of trial copies (see :func:`_warn_relative_noise_in_training`); read before the
    recording puts BatchNorm layers in eval mode."""
    found = []
    for name, hook in find_noise_hooks(model, active_only=True):
        noise = getattr(hook, "noise", None)
        # the noise module follows the train/eval mode of the layer it is hooked into
        if getattr(noise, "relative_scale", None) is None or not model.get_submodule(name).training:
            continue
        found.append((name, float(noise.relative_scale)))
    return found


def _warn_relative_noise_in_training(
    found: list[tuple[str, float]], stim_chunk: int, *, stacklevel: int = 3
) -> None:
    """Warn about noise whose scale a recording would re-estimate from batches of trial copies
    (``found``: :func:`_relative_noise_in_training`).

    A noise module with ``relative_scale`` in training mode sets its scale from the variance of
    the batch it sees. Inside a recording that batch holds ``n_trials`` copies of each of a few
    stimuli, not a sample of the data: its variance is not the layer's (with one stimulus per
    pass it is 0 at the layer where trials branch, and the module adds no noise at all).
    """
    for name, scale in found:
        warnings.warn(
            f"The noise at layer {name!r} has relative_scale={scale:g} and the "
            "layer is in training mode, so inside this recording the noise re-estimates the "
            f"layer's variance from batches of trial copies ({stim_chunk} stimuli per pass) "
            "instead of using its running estimate: the recorded noise level is not the "
            "model's (with 1 stimulus per pass it can be 0). Put that layer in eval mode (e.g. "
            f"`model.get_submodule({name!r}).eval()`, or `model.eval()`; injected noise is still "
            "added) to record with the running estimate.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
