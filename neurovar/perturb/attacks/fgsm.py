"""FGSM: one signed-gradient step (Goodfellow, Shlens & Szegedy 2015), with EOT."""

from __future__ import annotations

from ._base import Attack

__all__ = ["FGSM"]


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy 2015), with optional EOT.

    :math:`x' = \\Pi_{[0,1]}(x + \\epsilon\\,\\mathrm{sign}(\\bar g))` for L-inf and
    :math:`x' = \\Pi_{[0,1]}(x + \\epsilon\\,\\bar g/\\|\\bar g\\|_2)` for L2, where
    :math:`\\bar g` is the cross-entropy gradient averaged over ``eot_samples`` noise draws.
    Input: images in [0, 1], shape (N, C, H, W). See :class:`Attack` for the parameters.
    """

    name = "fgsm"

    def _perturb(self, x, y, gen, device):
        grad, _ = self._eot_grad(x, y, "ce", None, device)
        return self._project(x + self._step(grad, self.eps), x)
