"""Inject noise into the outputs of named layers of a PyTorch model through forward hooks.

:func:`inject_noise` registers one forward hook per named layer; the hook replaces the layer
output ``h`` by ``noise_module(h)``. The returned :class:`NoiseInjection` is a context manager
(hooks removed on exit, also after an exception) and a persistent handle for training
(``handle.remove()``). Noise is applied in train and eval mode alike (unlike dropout):
train-time and test-time injection are both explicit choices of the caller.

Every hook is a :class:`NoiseHook`, whose attribute ``_neurovar_noise`` is true while it adds
noise, so :func:`neurovar.record.record_activations` can find the first noisy layer (with
:func:`find_noise_hooks`, which lives in :mod:`neurovar._torch` with the rest of the noise
discovery) and branch trials there.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from neurovar._validation import InvalidParameterError

from .._compat import renamed_attribute, renamed_parameters
from .._torch import find_noise_hooks, layer_names, noise_modules
from .models import NoiseModule

__all__ = [
    "NoiseHook",
    "NoiseInjection",
    "inject_noise",
    "frozen_noise",
    "suspend_noise",
    "find_noise_hooks",
]


class NoiseHook:
    r"""Forward hook that passes a layer's output through a noise module, :math:`h \to n(h)`.

    Parameters
    ----------
    noise
        The noise module (any callable ``tensor -> tensor`` of the same shape).
    layer
        Dotted name of the hooked layer in the model. ``layer_name`` is the deprecated name
        (a ``FutureWarning``, for one release).

    Attributes
    ----------
    noise, layer
        As passed (``layer_name`` is a deprecated read-only alias of ``layer``).
    enabled
        Whether the hook adds noise (toggle with :attr:`NoiseInjection.enabled`).
    suspended
        Temporarily off (set by :func:`suspend_noise`).

    References
    ----------
    PyTorch documentation, ``torch.nn.Module.register_forward_hook`` (a hook that returns a
    value replaces the module's output).
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (noise injected into layers).
    """

    @renamed_parameters({"layer_name": "layer"})
    def __init__(self, noise: Callable[[torch.Tensor], torch.Tensor], layer: str) -> None:
        self.noise = noise
        self.layer = layer
        self.enabled = True
        self.suspended = False

    layer_name = renamed_attribute("layer_name", "layer")

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a model pickled before the rename (neurovar < 0.2) holds hooks with 'layer_name'
        if "layer_name" in state and "layer" not in state:
            state = dict(state)
            state["layer"] = state.pop("layer_name")
        self.__dict__.update(state)

    @property
    def _neurovar_noise(self) -> bool:
        """Marker for the recorder: true while this hook adds noise."""
        return self.enabled and not self.suspended

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not (self.enabled and not self.suspended):
            return None
        passes = getattr(self, "_passes", None)  # set by inject_noise (absent when unpickled)
        if passes is not None:
            passes.count(self.layer)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"Noise can only be injected into layers that return a tensor; layer "
                f"{self.layer!r} returned {type(output).__name__}."
            )
        noise = self.noise
        if isinstance(noise, nn.Module) and noise.training != module.training:
            # running estimates follow the hooked layer's train/eval mode
            noise.train(module.training)
        out = noise(output)
        if not isinstance(out, torch.Tensor) or out.shape != output.shape:
            raise ValueError(
                f"The noise module at layer {self.layer!r} must return a tensor of the "
                f"layer's output shape {tuple(output.shape)}; got "
                f"{getattr(out, 'shape', type(out).__name__)}."
            )
        return out

    def __repr__(self) -> str:
        return f"NoiseHook(layer={self.layer!r}, noise={self.noise!r}, enabled={self.enabled})"


class _PassCounter:
    """Counts how often each hooked layer runs within one forward pass of the model.

    A forward pre-hook on the model starts a new pass; a layer whose hook fires a second time
    in one pass (torchvision's ``BasicBlock`` calls one ``self.relu`` twice) would get noise
    added at every call, so it is refused. A second call outside any forward pass of the model
    (a submodule called directly) starts a new pass instead.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.pass_id = 0
        self.calls: dict[str, tuple[int, int]] = {}

    def start(self, _module: nn.Module, _inputs: Any) -> None:
        self.pass_id += 1

    def _inside_model_forward(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "_call_impl" and frame.f_locals.get("self") is self.model:
                return True
            frame = frame.f_back
        return False

    def count(self, layer: str) -> None:
        pass_id, n = self.calls.get(layer, (-1, 0))
        n = n + 1 if pass_id == self.pass_id else 1
        if n > 1 and not self._inside_model_forward():
            self.pass_id += 1  # a direct call of the submodule: a pass of its own
            n = 1
        self.calls[layer] = (self.pass_id, n)
        if n > 1:
            raise InvalidParameterError(
                "The 'noise' parameter of inject_noise must name layers that run once per "
                f"forward pass. Got layer {layer!r}, called {n} times in one forward pass, "
                "instead: its noise would be added at every call (and a recording of it would "
                "hold its last call only). Inject into a module that runs once, e.g. give each "
                "call its own module (an nn.Identity after it), or pick another layer."
            )


class NoiseInjection:
    """Handle of injected noise: a context manager, or a persistent handle with :meth:`remove`.

    Returned by :func:`inject_noise`; not meant to be built directly.

    Parameters
    ----------
    model
        The model the hooks are registered on.
    hooks
        ``{layer: NoiseHook}``.
    handles
        The ``torch.utils.hooks.RemovableHandle`` of every hook.

    Attributes
    ----------
    model
        The model the hooks are registered on.
    noise
        ``{layer: noise_module}`` as passed to :func:`inject_noise`.
    hooks
        ``{layer: NoiseHook}``.

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (noise injected into layers).
    """

    def __init__(self, model: nn.Module, hooks: dict[str, NoiseHook], handles: list[Any]) -> None:
        self.model = model
        self.hooks = hooks
        self.noise = {name: hook.noise for name, hook in hooks.items()}
        self._handles = handles

    @property
    def enabled(self) -> bool:
        """Whether noise is added (settable; the hooks stay registered)."""
        return any(h.enabled for h in self.hooks.values())

    @enabled.setter
    def enabled(self, value: bool) -> None:
        for hook in self.hooks.values():
            hook.enabled = bool(value)

    @property
    def removed(self) -> bool:
        """Whether :meth:`remove` has been called."""
        return not self._handles

    def remove(self) -> None:
        """Remove all hooks (idempotent). The model is left exactly as before injection."""
        while self._handles:
            self._handles.pop().remove()

    def freeze(self) -> NoiseInjection:
        """Freeze every noise module (see :meth:`NoiseModule.freeze`)."""
        for module in _target_noise_modules(self):
            module.freeze()
        return self

    def unfreeze(self) -> NoiseInjection:
        """Unfreeze every noise module."""
        for module in _target_noise_modules(self):
            module.unfreeze()
        return self

    def config(self) -> dict[str, Any]:
        """``{layer: noise.config()}``, JSON-serialisable (for recording attrs)."""
        return {
            name: (n.config() if isinstance(n, NoiseModule) else {"type": type(n).__name__})
            for name, n in self.noise.items()
        }

    def __enter__(self) -> NoiseInjection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self.removed else ("enabled" if self.enabled else "disabled")
        return f"NoiseInjection(layers={list(self.hooks)!r}, {state})"


def inject_noise(
    model: nn.Module,
    noise: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    enabled: bool = True,
) -> NoiseInjection:
    r"""Add noise to the outputs of named layers through forward hooks.

    For every named layer ``l`` with output :math:`h_l` the network continues with
    :math:`\tilde h_l = n_l(h_l)`, e.g. :math:`h_l + s\,\epsilon` with :math:`\epsilon \sim
    \mathcal N(0, \Sigma_l)`; layers before the first noisy one are unchanged. Noise is added in
    train and eval mode alike (unlike dropout): train-time injection (the network learns with it)
    and test-time injection are both explicit choices of the caller, to be labelled as such.

    Parameters
    ----------
    model
        The network.
    noise
        ``{layer: noise_module}``; names are dotted names from ``model.named_modules()``
        (e.g. ``"layer1.0.conv2"``; ``""`` is the whole model). The hook returns
        ``noise_module(output)``, which must keep the output's shape.
    enabled
        Start with noise on (True) or off (False; toggle later with ``handle.enabled``).

    Returns
    -------
    NoiseInjection
        Use as ``with inject_noise(model, {...}):`` (hooks removed on exit, even after an
        exception), or keep it for training and call ``handle.remove()`` when done.

    Raises
    ------
    ValueError
        Unknown layer name (the message lists the valid ones) or empty mapping; and, during a
        forward pass, a named layer that runs a second time in that pass (noise would be added
        at every call; e.g. the one ``relu`` that torchvision's ``BasicBlock`` calls twice).

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (noise injected into layers).

    Examples
    --------
    >>> noise = LowRankNoise(factors, 0.1, share="channel", rng=0)  # doctest: +SKIP
    >>> with inject_noise(model, {"layer1": noise}):                  # doctest: +SKIP
    ...     logits = model(images)
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(
            f"The 'model' parameter of inject_noise must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    if not isinstance(noise, Mapping) or not noise:
        raise InvalidParameterError(
            "The 'noise' parameter of inject_noise must be a non-empty mapping "
            f"{{layer: noise_module}}. Got {noise!r} instead."
        )
    modules = dict(model.named_modules())
    unknown = [name for name in noise if name not in modules]
    if unknown:
        valid = layer_names(model)
        shown = ", ".join(repr(v) for v in valid[:60]) + (" ..." if len(valid) > 60 else "")
        raise InvalidParameterError(
            f"The 'noise' parameter of inject_noise names layer(s) {unknown!r} that the model "
            f"does not have. Valid layer names: {shown}."
        )
    for name, module in noise.items():
        if not callable(module):
            raise TypeError(
                f"The noise for layer {name!r} must be a noise module (callable tensor -> "
                f"tensor). Got {type(module).__name__} instead."
            )
    hooks: dict[str, NoiseHook] = {}
    handles: list[Any] = []
    passes = _PassCounter(model)
    try:
        handles.append(model.register_forward_pre_hook(passes.start))
        for name, module in noise.items():
            hook = NoiseHook(module, layer=name)
            hook._passes = passes
            hook.enabled = bool(enabled)
            handles.append(modules[name].register_forward_hook(hook))
            hooks[name] = hook
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return NoiseInjection(model, hooks, handles)


def _target_noise_modules(*targets: Any) -> list[NoiseModule]:
    out: list[NoiseModule] = []
    for target in targets:
        if isinstance(target, NoiseInjection):
            out.extend(n for n in target.noise.values() if isinstance(n, NoiseModule))
        elif isinstance(target, NoiseModule):
            out.append(target)
        elif isinstance(target, nn.Module):
            out.extend(noise_modules(target))
        else:
            raise TypeError(
                "frozen_noise takes noise modules, NoiseInjection handles or models with "
                f"injected noise. Got {type(target).__name__} instead."
            )
    return out


@contextlib.contextmanager
def frozen_noise(*targets: NoiseModule | NoiseInjection | nn.Module) -> Iterator[None]:
    r"""Replay one noise draw inside the block (for attacks, gradient checks, debugging).

    Each noise module draws its standard-normal :math:`z` once at its first forward inside the
    block and reuses it afterwards, so :math:`\tilde h = h + s L z` is a deterministic function
    of :math:`h`; the previous frozen state is restored on exit. An attack on a frozen draw
    attacks one deterministic member of the stochastic network, not the network itself: for
    robustness numbers average gradients over draws (EOT) instead (Athalye et al. 2018).

    Parameters
    ----------
    *targets
        Noise modules, :class:`NoiseInjection` handles, or models (all noise hooked into them).

    Yields
    ------
    None

    References
    ----------
    Athalye, A., Carlini, N. & Wagner, D. (2018). Obfuscated gradients give a false sense of
    security. ICML.
    """
    modules = _target_noise_modules(*targets)
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.enter_context(m.freezing())
        yield


@contextlib.contextmanager
def suspend_noise(model: nn.Module) -> Iterator[None]:
    r"""Temporarily switch off all noise injected into ``model``: :math:`\tilde h_l = h_l`.

    The hooks stay registered (the recorder no longer sees them as noisy while suspended); their
    previous suspended state is restored on exit, also after an exception.

    Parameters
    ----------
    model
        The network with noise injected by :func:`inject_noise`.

    Yields
    ------
    None

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026). arXiv 2606.13801 (noise injected into layers).
    """
    hooks = [hook for _, hook in find_noise_hooks(model)]
    saved = [h.suspended for h in hooks]
    try:
        for h in hooks:
            h.suspended = True
        yield
    finally:
        for h, s in zip(hooks, saved):
            h.suspended = s
