"""Adversarial attacks that attack a stochastic network *as* a stochastic network.

Every attack here

- takes images in [0, 1] of shape ``(N, C, H, W)`` and integer labels ``(N,)`` and returns
  adversarial images of the same shape, inside the eps-ball around the input and inside [0, 1];
- never calls ``model.eval()`` / ``model.train()``: dropout or injected activation noise stays
  on during the attack (a library that switches to eval mode attacks a deterministic twin);
  every submodule's train flag is restored in ``finally`` should the model change it;
- averages gradients over ``eot_samples`` noise draws (Expectation over Transformation,
  Athalye, Carlini & Wagner 2018) when asked to;
- draws its own randomness (random start, Square's proposals) from a :class:`torch.Generator`
  seeded from ``rng``, and runs the model inside :func:`torch.random.fork_rng` seeded from the
  same ``rng``, so noise layers that use the global torch RNG are reproducible from a seed and
  the caller's global RNG state is unchanged afterwards; noise modules of
  :mod:`neurovar.noise` (own generators) are reseeded from ``rng`` too and get their streams
  back afterwards; buffers that forwards in training mode update (BatchNorm running
  statistics, running noise-variance estimates) are restored.
"""

from __future__ import annotations

import torch
from torch import nn

from neurovar._validation import (  # one order: (name, owner, ...)
    Options,
    check_int,
    check_param,
    check_real,
    param_error,
)

from ..._validation import check_device, check_rng
from .._utils import (
    CURRENT_BAR,
    RNGLike,
    check_images_labels,
    check_progress,
    make_generator,
    model_device,
    preserved_state,
    progress_bar,
    seed_from,
)
from ._eot import Steps

NORMS = ("linf", "l2")


class Attack(Steps):

    """Base class: validation, device, RNG and model-state handling around ``_perturb``.

    Parameters
    ----------
    model
        A :class:`torch.nn.Module` mapping images in [0, 1] to logits. Its train/eval state is
        used as it is (so dropout in train mode stays stochastic) and never changed.
    eps
        Radius of the perturbation ball (L-inf: in [0, 1]; L2: >= 0).
    norm
        ``"linf"`` or ``"l2"``.
    eot_samples
        Number of noise draws the gradient (or loss) is averaged over (EOT). Use > 1 for a
        stochastic model.
    eot_batch
        Draws per forward pass: ``"auto"`` (folded into the batch on GPU, at most
        :data:`CUDA_EOT_BATCH_MAX` per pass; a loop on CPU) or
        an int. Note that folding changes batch statistics of BatchNorm layers in train mode.
    rng
        None, int or :class:`numpy.random.Generator`; seeds all randomness of the attack and of
        the model's noise during the attack.
    device
        Device to run on; default: the model's device.
    progress
        A tqdm bar over the forward passes of one call: ``None`` (default) shows it only once
        a call has run a few seconds (so ``steps=10**9`` is visibly running, with its rate and
        ETA, and can be stopped with Ctrl-C, which restores the model's state), ``True``
        always, ``False`` never.
    """

    name = "attack"
    _supported_norms: tuple[str, ...] = NORMS

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        norm: str = "linf",
        eot_samples: int = 1,
        eot_batch: int | str = "auto",
        rng: RNGLike = None,
        device: str | torch.device | None = None,
        progress: bool | None = None,
    ) -> None:
        self.model = model
        self.eps = eps
        self.norm = norm
        self.eot_samples = eot_samples
        self.eot_batch = eot_batch
        self.rng = rng
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        owner = type(self).__name__
        if not isinstance(self.model, nn.Module):
            raise param_error("model", owner, "a torch.nn.Module", type(self.model).__name__)
        check_param(self.norm, [Options(str, self._supported_norms)], name="norm", owner=owner)
        if self.norm == "linf":
            check_real(self.eps, name="eps", owner=owner, low=0.0, high=1.0)
        else:
            check_real(self.eps, name="eps", owner=owner, low=0.0)
        check_int(self.eot_samples, name="eot_samples", owner=owner, low=1)
        if not (isinstance(self.eot_batch, str) and self.eot_batch == "auto"):
            check_int(self.eot_batch, name="eot_batch", owner=owner, low=1)
        check_rng(self.rng, owner=owner)
        if self.device is not None:
            check_device(self.device, owner=owner)
        check_progress(self.progress, owner=owner)

    def _planned_passes(self) -> int:
        """Forward passes (of the whole batch, one per EOT draw) a call will make at most."""
        return self.eot_samples

    # ------------------------------------------------------------------ call
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return adversarial versions of ``images`` (same shape, device and dtype)."""
        self._validate()
        images, labels = check_images_labels(images, labels, type(self).__name__)
        device = model_device(self.model, self.device)
        seed = seed_from(self.rng)
        gen = make_generator(seed, device)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=device).item())
        x = images.detach().to(device)
        y = labels.to(device)
        if self.eps == 0 or x.shape[0] == 0:
            return images.detach().clone()
        bar = progress_bar(
            total=self._planned_passes(),
            desc=type(self).__name__,
            progress=self.progress,  # validated by _validate; progress_bar reads np.bool_ too
            unit="pass",
        )
        token = CURRENT_BAR.set(bar)
        try:
            with preserved_state(self.model, device, noise_seed):
                adv = self._perturb(x, y, gen, device)
        except IndexError as err:  # cross-entropy/gather with a label >= n_classes
            if "out of bounds" not in str(err):
                raise
            raise param_error(
                "labels",
                type(self).__name__,
                "class indices below the model's number of outputs",
                f"max label {int(labels.max())}",
            ) from err
        finally:
            CURRENT_BAR.reset(token)
            bar.close()
        return adv.detach().to(device=images.device, dtype=images.dtype)

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        keys = [k for k in vars(self) if k != "model" and not k.startswith("_")]
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
        return f"{type(self).__name__}({args})"
