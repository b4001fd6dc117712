"""Adapters that give torchattacks' wider zoo the neurovar calling convention and guarantees.

``TorchattacksAttack("CW", model, c=1.0)(images, labels) -> adversarial images``, with

- the model's train/eval state *kept during the attack*, module by module (torchattacks
  switches models to eval mode by default, and even with
  ``set_model_training_mode(model_training=True)`` it switches every ``Dropout`` submodule to
  eval unless ``dropout_training=True`` is also set: it would then attack a deterministic twin
  of a dropout network; its modes are all-train or all-eval, never a mix such as MC dropout in
  an eval-mode model). Every submodule's flag is restored in ``finally``;
- torchattacks' random draws (it uses the global torch RNG) made inside
  :func:`torch.random.fork_rng` seeded from ``rng``: reproducible from a seed and the caller's
  global RNG state unchanged.

Reference: Kim (2020), "Torchattacks: A PyTorch repository for adversarial attacks",
arXiv:2010.01950.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from neurovar._validation import (
    check_device,
    check_int,
    check_real,
    check_rng,
    param_error,  # one order: (name, owner, ...)
)

from ._utils import RNGLike, check_images_labels, model_device, preserved_state, seed_from

__all__ = ["TorchattacksAttack", "torchattacks_names"]


def _torchattacks():
    try:
        return importlib.import_module("torchattacks")
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TorchattacksAttack needs the optional dependency 'torchattacks' "
            "(pip install torchattacks, or neurovar[peers])."
        ) from err


def torchattacks_names() -> list[str]:
    """Names of the attack classes torchattacks provides (e.g. ``"CW"``, ``"AutoAttack"``)."""
    ta = _torchattacks()
    base = ta.attack.Attack
    return sorted(
        name
        for name in dir(ta)
        if isinstance(getattr(ta, name), type)
        and issubclass(getattr(ta, name), base)
        and getattr(ta, name) is not base
    )


def _keep_model_modes(atk: Any) -> None:
    """Stop a torchattacks attack (and its sub-attacks) from switching train/eval modes.

    Its ``set_model_training_mode`` is not enough: it chooses between ``model.eval()`` and
    ``model.train()`` from the *top-level* flag only, so a model in eval mode with dropout or
    a noise layer switched on (MC dropout, test-time noise) would lose its noise, and a model
    in train mode with some modules deliberately in eval (frozen BatchNorm) would have them
    switched to train. Here the model is used exactly in the modes it is in.
    """
    subs = atk.__dict__.get("_attacks", {})
    for a in (atk, *subs.values()):
        # object.__setattr__: torchattacks' __setattr__ registers attribute values as sub-attacks
        object.__setattr__(a, "_change_model_mode", lambda given_training: None)
        object.__setattr__(a, "_recover_model_mode", lambda given_training: None)
        object.__setattr__(a, "get_output_with_eval_nograd", torch.no_grad()(a.get_logits))


class TorchattacksAttack:
    """Run a torchattacks attack with neurovar's state and RNG guarantees.

    Parameters
    ----------
    attack
        Name of a torchattacks class (``"PGD"``, ``"CW"``, ``"DeepFool"``, ``"APGD"``,
        ``"APGDT"``, ``"Square"``, ``"AutoAttack"`` — use ``version="rand"`` for randomized
        models, which runs APGD with 20 EOT draws; see :func:`torchattacks_names`) or the class.
    model
        The network; its train/eval state is kept as it is during the attack.
    keep_training_mode
        If True (default) the attack sees the model exactly in the mode it is in (dropout stays
        stochastic in train mode). If False, torchattacks' default (eval mode) is used: the
        attack then targets the deterministic twin.
    rng
        None, int or numpy Generator seeding the global torch RNG inside the call.
    device
        Device; default the model's.
    **kwargs
        Passed to the torchattacks constructor (``eps``, ``steps``, ``norm``...).

    Examples
    --------
    >>> atk = TorchattacksAttack("AutoAttack", model, norm="Linf", eps=0.1, version="rand",
    ...                          n_classes=10)  # doctest: +SKIP
    >>> adv = atk(images, labels)  # doctest: +SKIP
    """

    def __init__(
        self,
        attack: str | type,
        model: nn.Module,
        *,
        keep_training_mode: bool = True,
        rng: RNGLike = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> None:
        self.attack = attack
        self.model = model
        self.keep_training_mode = keep_training_mode
        self.rng = rng
        self.device = device
        self.kwargs = kwargs

    def _build(self, seed: int):
        ta = _torchattacks()
        if isinstance(self.attack, str):
            names = torchattacks_names()
            if self.attack not in names:
                raise param_error("attack", "TorchattacksAttack", f"one of {names}", self.attack)
            cls = getattr(ta, self.attack)
        elif isinstance(self.attack, type) and issubclass(self.attack, ta.attack.Attack):
            cls = self.attack
        else:
            raise param_error(
                "attack", "TorchattacksAttack", "a torchattacks class or its name", self.attack
            )
        kwargs = dict(self.kwargs)
        if "seed" in inspect.signature(cls.__init__).parameters and "seed" not in kwargs:
            # APGD/AutoAttack re-seed the global RNG with their own seed (time-based for
            # AutoAttack's default None): derive it from ``rng`` so runs are reproducible
            kwargs["seed"] = seed % (2**31)
        return cls(self.model, **kwargs)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return adversarial images (same shape, device and dtype as ``images``)."""
        owner = "TorchattacksAttack"
        if not isinstance(self.model, nn.Module):
            raise param_error("model", owner, "a torch.nn.Module", type(self.model).__name__)
        if not isinstance(self.keep_training_mode, (bool, np.bool_)):
            raise param_error("keep_training_mode", owner, "a bool", self.keep_training_mode)
        check_rng(self.rng, owner=owner)
        if self.device is not None:
            check_device(self.device, owner=owner)
        for key in ("eps", "alpha"):  # torchattacks takes eps=-1 or nan without a word
            if key in self.kwargs:
                check_real(self.kwargs[key], name=key, owner=owner, low=0.0)
        for key in ("steps", "n_restarts", "eot_iter", "n_queries", "n_classes"):
            if key in self.kwargs:
                check_int(self.kwargs[key], name=key, owner=owner, low=1)
        images, labels = check_images_labels(images, labels, owner)
        device = model_device(self.model, self.device)
        seed = seed_from(self.rng)
        atk = self._build(seed)
        if self.keep_training_mode:
            _keep_model_modes(atk)
        with preserved_state(self.model, device, seed):
            if hasattr(atk, "set_device"):
                atk.set_device(device)
            adv = atk(images.detach().to(device), labels.to(device))
        return adv.detach().to(device=images.device, dtype=images.dtype)

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"TorchattacksAttack({self.attack!r}, {kw})"
