"""Square Attack: score-based, gradient-free, L-inf (Andriushchenko et al. 2020)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..._validation import check_int, check_real
from ._base import Attack

__all__ = ["Square"]


#: Square: redraws of a proposal that would leave the image unchanged (the reference redraws
#: until it changes; a window of 1-channel pixels already at the proposed sign is common).
_MAX_REDRAWS = 10


def _p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Square attack's schedule of the window fraction (Andriushchenko et al. 2020, rescaled to
    ``n_queries`` as in the reference implementation)."""
    it = int(it / n_queries * 10000)
    for bound, div in (
        (8000, 512),
        (6000, 256),
        (4000, 128),
        (2000, 64),
        (1000, 32),
        (500, 16),
        (200, 8),
        (50, 4),
        (10, 2),
    ):
        if it > bound:
            return p_init / div
    return p_init


class Square(Attack):
    """Square Attack, L-inf, score-based and gradient-free (Andriushchenko et al. 2020).

    Starts from vertical stripes :math:`x + \\epsilon\\,\\sigma`, :math:`\\sigma\\in\\{\\pm1\\}`,
    then repeatedly proposes to set a random square window (side :math:`\\approx\\sqrt{p\\,HW}`,
    :math:`p` shrinking on a fixed schedule) to :math:`\\pm\\epsilon` per channel, and accepts
    the proposal if it lowers the margin loss :math:`z_y - \\max_{j\\ne y} z_j` of the logits
    averaged over ``eot_samples`` noise draws (proposals that change no pixel are redrawn, as in
    the reference code). No gradients are used, so it is immune to gradient masking; if it is
    *stronger* than the white-box attacks, the white-box numbers are not trustworthy.

    On a stochastic model (``eot_samples > 1``) the incumbent's loss is the lowest of noisy
    estimates and so biased low; left alone, proposals stop beating it and examples stop being
    attacked on one lucky estimate. Here the incumbent is re-scored with fresh draws in the same
    forward pass as every proposal (twice the forward passes per query), its loss is the mean of
    all its scorings, and an example stops only when that mean over at least two scorings is
    <= 0.
    Proposals are vectorized over the batch (one window per example per query). Input: images
    in [0, 1], shape (N, C, H, W). Only ``norm="linf"``; for L2 use
    ``TorchattacksAttack("Square", model, norm="L2", ...)``.

    Parameters
    ----------
    n_queries
        Number of proposals per example.
    p_init
        Initial fraction of pixels changed per proposal.
    **kwargs
        ``eps``, ``norm``, ``eot_samples``, ``eot_batch``, ``rng``, ``device``, ``progress``:
        as in :class:`Attack`.
    """

    name = "square"
    _supported_norms = ("linf",)

    def __init__(
        self, model: nn.Module, *, n_queries: int = 1000, p_init: float = 0.8, **kwargs: Any
    ) -> None:
        super().__init__(model, **kwargs)
        self.n_queries = n_queries
        self.p_init = p_init

    def _validate(self) -> None:
        super()._validate()
        owner = type(self).__name__
        check_int(self.n_queries, name="n_queries", owner=owner, low=1)
        check_real(self.p_init, name="p_init", owner=owner, low=0.0, high=1.0, low_open=True)

    def _planned_passes(self) -> int:
        # one scoring of the start, then one pass per query (proposal and, for a stochastic
        # model, the incumbent's re-scoring share it); it stops early once all are fooled
        return self.n_queries * self.eot_samples

    def _sign(self, shape: tuple[int, ...], gen: torch.Generator, x: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1

    def _perturb(self, x, y, gen, device):
        n, c, h, w = x.shape
        eps = self.eps
        stochastic = self.eot_samples > 1
        x_best = (x + eps * self._sign((n, c, 1, w), gen, x)).clamp(0, 1)
        loss_best = self._eot_margin(x_best, y, device)
        n_scored = torch.ones(n, device=device)  # estimates averaged into loss_best
        rows = torch.arange(h, device=device).view(1, 1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, 1, w)
        for it in range(self.n_queries - 1):
            # stochastic model: stop only once the incumbent's mean estimate over >= 2 scorings
            # says it is fooled (a single lucky estimate does not count)
            active = (loss_best > 0) | (n_scored < 2) if stochastic else loss_best > 0
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            xa, xb, ya = x[idx], x_best[idx], y[idx]
            na = idx.numel()
            p = _p_selection(self.p_init, it, self.n_queries)
            s = max(int(round(math.sqrt(p * h * w))), 1)
            s = min(s, h - 1 if h > 1 else 1, w - 1 if w > 1 else 1)
            vh = torch.randint(0, h - s + 1, (na, 1, 1, 1), generator=gen, device=device)
            vw = torch.randint(0, w - s + 1, (na, 1, 1, 1), generator=gen, device=device)
            window = (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)
            sign = self._sign((na, c, 1, 1), gen, x)
            for attempt in range(_MAX_REDRAWS + 1):
                x_new = torch.where(window, (xa + eps * sign).clamp(0, 1), xb)
                # as the reference: redraw the signs of a proposal that changes nothing; the
                # last resort, the opposite signs, always changes the window (eps > 0)
                same = ((x_new - xb).abs() < 1e-7).flatten(1).all(1).view(-1, 1, 1, 1)
                if not bool(same.any()) or attempt == _MAX_REDRAWS:
                    break
                redraw = self._sign((na, c, 1, 1), gen, x) if attempt < _MAX_REDRAWS - 1 else -sign
                sign = torch.where(same, redraw, sign)
            if stochastic:
                # The incumbent's stored loss was selected as the lowest of noisy estimates and
                # is biased low (proposals could no longer beat it and the attack would stall):
                # re-score it with fresh draws in the same pass and keep the running mean.
                both = self._eot_margin(torch.cat([x_new, xb]), torch.cat([ya, ya]), device)
                loss_new, again = both[:na], both[na:]
                cnt = n_scored[idx]
                loss_best[idx] = (loss_best[idx] * cnt + again) / (cnt + 1)
                n_scored[idx] = cnt + 1
            else:
                loss_new = self._eot_margin(x_new, ya, device)
            better = loss_new < loss_best[idx]
            upd = idx[better]
            x_best[upd] = x_new[better]
            loss_best[upd] = loss_new[better]
            n_scored[upd] = 1
        return x_best
