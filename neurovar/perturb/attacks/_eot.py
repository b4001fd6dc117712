"""Expectation over Transformation (EOT): losses, gradients and logits averaged over noise draws.

The steps every attack shares (:class:`Steps`, a mixin of :class:`~neurovar.perturb.attacks.Attack`): the projection onto the eps-ball, the steepest-ascent step, and the EOT gradient, margin and logits (Athalye, Carlini & Wagner 2018); the loss an attack maximizes (:func:`_loss_per_example`) and how many draws share a forward pass (:func:`resolve_eot_batch`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import (
    CURRENT_BAR,
    chunk_sizes,
    margin,
)

LOSSES = ("ce", "dlr", "margin")

#: EOT draws folded into one forward pass when ``eot_batch="auto"``. On CUDA the draws are
#: folded into the batch dimension, up to :data:`CUDA_EOT_BATCH_MAX` (one big kernel launch
#: beats k small ones). On CPU a loop over draws (chunk of 1) measured as fast as or faster
#: than folding for the small MLP/CNN of ``benchmarks/bench_eot_pgd.py`` (cache effects); see
#: ``benchmarks/results/eot_pgd.md``.
CPU_EOT_BATCH = 1

#: Most EOT draws folded into one forward pass on CUDA with ``eot_batch="auto"``: folding
#: repeats the batch that many times, so an unbounded fold would try to allocate
#: ``eot_samples`` copies of it at once.
CUDA_EOT_BATCH_MAX = 256


def resolve_eot_batch(eot_batch: int | str, eot_samples: int, device: torch.device) -> int:
    """Number of EOT draws processed per forward pass.

    ``"auto"`` folds the draws into the batch dimension on a GPU (at most
    :data:`CUDA_EOT_BATCH_MAX` per pass) and loops on CPU (:data:`CPU_EOT_BATCH`); an int is
    used as given (capped at ``eot_samples``).
    """
    if eot_batch == "auto":
        per_pass = CUDA_EOT_BATCH_MAX if device.type == "cuda" else CPU_EOT_BATCH
        return min(per_pass, eot_samples)
    return min(int(eot_batch), eot_samples)


def _loss_per_example(
    logits: torch.Tensor, labels: torch.Tensor, loss: str, targets: torch.Tensor | None
) -> torch.Tensor:
    """Per-example loss that the attack *maximizes*.

    Untargeted (``targets is None``):

    - ``"ce"``: cross-entropy :math:`-\\log p_y`.
    - ``"dlr"``: :math:`-(z_y - \\max_{j\\ne y} z_j)/(z_{\\pi_1} - z_{\\pi_3})` (Croce & Hein 2020).
    - ``"margin"``: :math:`-(z_y - \\max_{j\\ne y} z_j)` (Carlini & Wagner 2017).

    Targeted at class :math:`t`:

    - ``"ce"``: :math:`\\log p_t`.
    - ``"dlr"``: :math:`(z_t - z_y)/(z_{\\pi_1} - (z_{\\pi_3} + z_{\\pi_4})/2)` (Croce & Hein 2020).
    - ``"margin"``: :math:`z_t - z_y`.

    ``z`` are logits sorted as :math:`z_{\\pi_1} \\ge z_{\\pi_2} \\ge \\dots`; the DLR scale is
    dropped when there are too few classes for it.
    """
    n_classes = logits.shape[1]
    if targets is None:
        if loss == "ce":
            return F.cross_entropy(logits, labels, reduction="none")
        neg_margin = -margin(logits, labels)
        if loss == "margin" or n_classes < 3:
            return neg_margin
        srt = logits.sort(dim=1, descending=True).values
        return neg_margin / (srt[:, 0] - srt[:, 2] + 1e-12)
    if loss == "ce":
        return -F.cross_entropy(logits, targets, reduction="none")
    diff = logits.gather(1, targets[:, None]).squeeze(1) - logits.gather(
        1, labels[:, None]
    ).squeeze(1)
    if loss == "margin" or n_classes < 4:
        return diff
    srt = logits.sort(dim=1, descending=True).values
    return diff / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


class Steps:
    """The projection, the step and the EOT passes of an attack (a mixin of :class:`Attack`:
    it reads ``model``, ``eps``, ``norm``, ``eot_samples`` and ``eot_batch``)."""

    model: nn.Module
    eps: float
    norm: str
    eot_samples: int
    eot_batch: int | str

    @staticmethod
    def _tick(n_passes: int) -> None:
        bar = CURRENT_BAR.get()
        if bar is not None:
            bar.update(n_passes)

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project onto the eps-ball around ``x`` intersected with [0, 1]."""
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            factor = (self.eps / norms).clamp(max=1.0)
            delta = delta * factor.view(-1, 1, 1, 1)
        return (x + delta).clamp(0.0, 1.0)

    def _step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        """Steepest-ascent step of size ``alpha`` under the attack's norm."""
        if self.norm == "linf":
            return alpha * grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        return alpha * grad / norms.view(-1, 1, 1, 1)

    def _eot_grad(
        self,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        loss: str,
        targets: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """EOT gradient :math:`\\frac1k\\sum_{i=1}^k \\nabla_x L(f_{\\xi_i}(x), y)`.

        Returns the averaged gradient and the per-example margin of the draw-averaged logits
        (the score of ``x_adv``, used to keep the best iterate: it comes free with the gradient
        passes). Each chunk of draws is differentiated right after its forward pass and its
        graph freed (as torchattacks' per-draw loop does): one graph alive at a time keeps the
        working set in cache, which measured faster on CPU than one backward call over the
        summed losses of all draws (``benchmarks/results/eot_pgd.md``).
        """
        k = self.eot_samples
        n = x_adv.shape[0]
        grad = None
        logit_sum = None
        xg = x_adv.detach().requires_grad_(True)
        for kc in chunk_sizes(k, resolve_eot_batch(self.eot_batch, k, device)):
            xin = xg.repeat(kc, 1, 1, 1) if kc > 1 else xg
            yin = y.repeat(kc) if kc > 1 else y
            tin = targets.repeat(kc) if (targets is not None and kc > 1) else targets
            logits = self.model(xin)
            if loss == "ce" and tin is None:  # fused sum: fewer small ops per draw on CPU
                value = F.cross_entropy(logits, yin, reduction="sum")
            else:
                value = _loss_per_example(logits, yin, loss, tin).sum()
            (g,) = torch.autograd.grad(value, xg)
            grad = g if grad is None else grad.add_(g)
            summed = logits.detach() if kc == 1 else logits.detach().view(kc, n, -1).sum(0)
            logit_sum = summed if logit_sum is None else logit_sum.add_(summed)
            self._tick(kc)
        # margin of the EOT-mean logits: the best-iterate criterion, one cheap op per step
        return grad / k, margin(logit_sum / k, y)

    @torch.no_grad()
    def _eot_margin(self, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Margin of the logits averaged over ``eot_samples`` forward passes (no gradient)."""
        k = self.eot_samples
        n = x.shape[0]
        total = None
        for kc in chunk_sizes(k, resolve_eot_batch(self.eot_batch, k, device)):
            xin = x.repeat(kc, 1, 1, 1) if kc > 1 else x
            summed = self.model(xin).view(kc, n, -1).sum(0)
            total = summed if total is None else total + summed
            self._tick(kc)
        return margin(total / k, y)

    @torch.no_grad()
    def _eot_logits(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Mean logits over ``eot_samples`` forward passes."""
        total = None
        for _ in range(self.eot_samples):
            out = self.model(x)
            total = out if total is None else total + out
            self._tick(1)
        return total / self.eot_samples
