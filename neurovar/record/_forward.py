"""One forward pass of a chunk of stimuli x trials, with trials branched at the noise site."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._validation import param_error
from . import _state as _store
from ._inputs import _OWNER


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
