"""Targeted PGD against the most likely wrong classes (APGD-T style), with EOT."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..._validation import check_int
from .._utils import CURRENT_BAR
from .pgd import PGD

__all__ = ["TargetedPGD"]


class TargetedPGD(PGD):
    """Targeted PGD on a margin loss against the most likely wrong classes (APGD-T style).

    For each of the ``n_target_classes`` classes :math:`t` with the highest mean clean logits
    (true class excluded), PGD maximizes the targeted DLR loss
    :math:`(z_t - z_y)/(z_{\\pi_1} - (z_{\\pi_3}+z_{\\pi_4})/2)` (Croce & Hein 2020) or the
    plain margin :math:`z_t - z_y` (Carlini & Wagner 2017), with EOT; per example the run with
    the lowest mean margin :math:`z_y - \\max_{j\\ne y} z_j` is returned. Margin losses do not
    saturate like cross-entropy, so they see through the flat softmax regions that make
    cross-entropy PGD overestimate robustness (gradient masking). Input: images in [0, 1],
    shape (N, C, H, W).

    Parameters
    ----------
    n_target_classes
        Number of target classes tried (capped at ``n_classes - 1``).
    loss
        ``"dlr"`` (default), ``"margin"`` or ``"ce"``.
    **kwargs
        ``eps``, ``norm``, ``alpha``, ``steps``, ``random_start``, ``eot_samples``,
        ``eot_batch``, ``rng``, ``device``, ``progress``: as in :class:`PGD`.
    """

    name = "pgd_targeted"

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: str = "dlr",
        n_target_classes: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, loss=loss, **kwargs)
        self.n_target_classes = n_target_classes

    def _validate(self) -> None:
        super()._validate()
        check_int(self.n_target_classes, name="n_target_classes", owner=type(self).__name__, low=1)

    def _planned_passes(self) -> int:
        return self.eot_samples + self.n_target_classes * self._run_passes()

    def _perturb(self, x, y, gen, device):
        logits = self._eot_logits(x, device)
        masked = logits.scatter(1, y[:, None], -torch.inf)
        order = masked.argsort(dim=1, descending=True)
        n_t = min(self.n_target_classes, logits.shape[1] - 1)
        bar = CURRENT_BAR.get()
        if bar is not None and n_t < self.n_target_classes:
            bar.total = self.eot_samples + n_t * self._run_passes()
        best = x.clone()
        best_margin = torch.full((x.shape[0],), torch.inf, device=device)
        for rank in range(n_t):
            adv, m = self._run(x, y, gen, device, targets=order[:, rank])
            improved = m < best_margin
            best[improved] = adv[improved]
            best_margin = torch.where(improved, m, best_margin)
        return best
