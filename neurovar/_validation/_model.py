"""Checks of a model's input before it reaches torch."""

from __future__ import annotations

from typing import Any

from ._base import param_error


def check_model_input(model: Any, images: Any, *, name: str = "images", owner: str) -> None:
    """Refuse images that a model cannot take, before they reach torch: a dtype other than the
    model's (float64 images for a float32 model), and, when the model's first module with
    weights is a convolution, anything but ``(N, C, H, W)`` with its ``in_channels``.

    A cheap, conservative check (no forward pass): a model whose first convolution is not
    the first layer to see the input may still fail later, with torch's own message.
    """
    import torch

    params = [p for p in model.parameters() if p.is_floating_point()]
    if params and isinstance(images, torch.Tensor) and images.is_floating_point():
        want = params[0].dtype
        if images.dtype != want:
            raise param_error(name, owner, f"a tensor of the model's dtype {want}",
                              f"dtype {images.dtype}", raw=True,
                              hint=f"Convert it with images.to({want}).")
    first = next((m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)
                  or isinstance(m, torch.nn.Linear)), None)
    if isinstance(first, torch.nn.Conv2d) and isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != first.in_channels:
            raise param_error(name, owner, f"a tensor (N, {first.in_channels}, H, W) (the "
                              f"model's first convolution takes {first.in_channels} "
                              "channel(s))", f"shape {tuple(images.shape)}", raw=True)
