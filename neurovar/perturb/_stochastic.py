"""Is a model stochastic? (Below :mod:`.evaluate` and :mod:`.diagnostics`, which both use it.)"""

from __future__ import annotations

import torch
import xarray as xr
from torch import nn

from neurovar._validation import (
    check_int,
    check_memory,
    param_error,  # one order: (name, owner, ...)
)

from ._utils import RNGLike, check_progress, model_device, preserved_state, progress_bar, seed_from

__all__ = ["randomness_check", "is_stochastic"]


@torch.no_grad()
def randomness_check(
    model: nn.Module,
    images: torch.Tensor,
    *,
    n_repeats: int = 4,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Does the model give different outputs on the same input?

    Runs ``n_repeats`` forward passes on the same images (model in its current mode) and reports
    the largest absolute logit difference between passes, the mean across-pass standard
    deviation of the logits (``ddof=1``), and the fraction of examples whose predicted class
    changes between passes. The ``n_repeats`` outputs are held in memory (checked after the
    first pass, before the others run); ``progress`` shows a tqdm bar over the passes
    (``None``: once the call has run a few seconds; ``True`` always; ``False`` never).

    Returns
    -------
    xarray.Dataset
        Scalars ``is_stochastic`` (max difference > 0), ``max_abs_diff``, ``mean_logit_std``,
        ``prediction_flip_rate``.
    """
    owner = "randomness_check"
    check_int(n_repeats, name="n_repeats", owner=owner, low=2)
    progress = check_progress(progress, owner=owner)
    if not isinstance(images, torch.Tensor) or images.ndim < 2:
        raise param_error("images", owner, "a batched torch.Tensor", images)
    dev = model_device(model, device)
    bar = progress_bar(total=n_repeats, desc=owner, progress=progress, unit="pass")
    with bar, preserved_state(model, dev, seed_from(rng)):
        first = model(images.to(dev)).float()
        bar.update(1)
        # the list, its stacked copy and the differences from the first pass live together
        check_memory(
            3 * 4.0 * n_repeats * first.numel(),
            name="n_repeats",
            owner=owner,
            value=n_repeats,
            what="the stacked outputs",
        )
        outs = [first]
        for _ in range(n_repeats - 1):
            outs.append(model(images.to(dev)).float())
            bar.update(1)
        outs = torch.stack(outs)
    max_diff = float((outs - outs[0]).abs().max())
    preds = outs.argmax(dim=-1)
    flips = (preds != preds[0]).any(dim=0).float().mean()
    return xr.Dataset(
        {
            "is_stochastic": ((), max_diff > 0),
            "max_abs_diff": ((), max_diff),
            "mean_logit_std": ((), float(outs.std(dim=0, unbiased=True).mean())),
            "prediction_flip_rate": ((), float(flips)),
        },
        attrs={"n_repeats": n_repeats},
    )


def is_stochastic(
    model: nn.Module,
    images: torch.Tensor,
    *,
    rng: RNGLike = None,
    device: str | torch.device | None = None,
) -> bool:
    """True if two forward passes on the same images differ (see :func:`randomness_check`)."""
    return bool(randomness_check(model, images, n_repeats=2, rng=rng, device=device).is_stochastic)
