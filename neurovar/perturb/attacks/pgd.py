"""PGD: projected gradient ascent (Madry et al. 2018), with EOT."""

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

from .._defaults import DEFAULT_STEPS
from .._utils import RNGLike
from ._base import Attack
from ._eot import LOSSES

__all__ = ["PGD"]


class PGD(Attack):
    """Projected Gradient Descent (Madry et al. 2018) with EOT (Athalye et al. 2018).

    Iterates :math:`x_{t+1} = \\Pi_{B_\\epsilon(x)\\cap[0,1]^d}(x_t + \\alpha\\,s(\\bar g_t))`
    with :math:`\\bar g_t = \\frac1k \\sum_{i=1}^k \\nabla_x L(f_{\\xi_i}(x_t), y)` averaged over
    ``k = eot_samples`` noise draws :math:`\\xi_i`, :math:`s` the sign (L-inf) or the
    L2-normalized gradient. Per example it returns the most adversarial iterate: the one with
    the lowest margin :math:`z_y - \\max_{j\\ne y} z_j` of the EOT-averaged logits, scored
    from the forward passes of the gradients themselves, the last iterate included (for a
    stochastic model: the lowest-scored iterate if it fools the model, else the last one; see
    :meth:`_run`).
    Input: images in [0, 1], shape (N, C, H, W).

    Parameters
    ----------
    model, eps, norm, eot_samples, eot_batch, rng, device, progress
        See :class:`Attack`.
    alpha
        Step size; default ``2.5 * eps / steps`` (Madry et al. 2018).
    steps
        Number of iterations.
    random_start
        Start at a random point of the eps-ball: uniform in the L-inf box; for L2 a uniformly
        random direction at a radius uniform in [0, eps] (as torchattacks' ``PGDL2``; not uniform
        in volume).
    loss
        ``"ce"`` (cross-entropy), ``"dlr"`` (Croce & Hein 2020) or ``"margin"`` (CW).
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        norm: str = "linf",
        alpha: float | None = None,
        steps: int = DEFAULT_STEPS,
        random_start: bool = True,
        loss: str = "ce",
        eot_samples: int = 1,
        eot_batch: int | str = "auto",
        rng: RNGLike = None,
        device: str | torch.device | None = None,
        progress: bool | None = None,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            norm=norm,
            eot_samples=eot_samples,
            eot_batch=eot_batch,
            rng=rng,
            device=device,
            progress=progress,
        )
        self.alpha = alpha
        self.steps = steps
        self.random_start = random_start
        self.loss = loss

    def _validate(self) -> None:
        super()._validate()
        owner = type(self).__name__
        check_int(self.steps, name="steps", owner=owner, low=1)
        if self.alpha is not None:
            check_real(self.alpha, name="alpha", owner=owner, low=0.0, low_open=True)
        check_param(self.loss, [Options(str, LOSSES)], name="loss", owner=owner)
        if not isinstance(self.random_start, bool):
            raise param_error("random_start", owner, "a bool", self.random_start)

    def _planned_passes(self) -> int:
        return self._run_passes()

    def _run_passes(self) -> int:
        """Passes of one :meth:`_run`: ``steps`` EOT gradients (+ 1 final score without EOT)."""
        return self.steps * self.eot_samples + (1 if self.eot_samples == 1 else 0)

    @property
    def step_size(self) -> float:
        """The step size actually used."""
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps

    def _random_start(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return self._project(x + (2 * u - 1) * self.eps, x)
        d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        r = torch.rand((x.shape[0], 1, 1, 1), generator=gen, device=x.device, dtype=x.dtype)
        return self._project(x + d * r * self.eps, x)

    def _run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        gen: torch.Generator,
        device: torch.device,
        targets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run PGD; return per example the most adversarial iterate and its margin.

        Iterates :math:`x_0, \\dots, x_{T-1}` are scored by the margin of their EOT-mean
        logits, taken from the very forward passes of their gradients (no extra pass).

        - Deterministic model (``eot_samples == 1``): the final iterate :math:`x_T` is scored
          too (one forward pass) and the iterate with the lowest margin is returned.
        - Stochastic model (``eot_samples > 1``): the lowest of :math:`T` noisy scores is
          biased low (selection bias), so comparing it with a fresh score of :math:`x_T` would
          prefer earlier iterates that only looked better -- measured weaker than returning
          :math:`x_T` -- and re-scoring both costs ``2 * eot_samples`` extra passes. Instead the
          lowest-scored iterate is returned if it fools the EOT-mean model (margin < 0), and
          :math:`x_T` otherwise, at no extra cost. As with exact scores, an example is returned
          fooled whenever a scored iterate fooled it; otherwise it gets the furthest iterate,
          as plain PGD. The margin returned for :math:`x_T` is then the lowest score seen
          (used only to rank the runs of :class:`TargetedPGD`).

        ``benchmarks/bench_eot_pgd.py`` measures speed and strength against torchattacks.
        """
        x_adv = self._random_start(x, gen) if self.random_start else x.clone()
        best = x_adv.clone()
        best_margin = torch.full((x.shape[0],), torch.inf, device=device)
        alpha = self.step_size
        for _ in range(self.steps):
            grad, m = self._eot_grad(x_adv, y, self.loss, targets, device)
            best = torch.where((m < best_margin).view(-1, 1, 1, 1), x_adv, best)
            best_margin = torch.minimum(m, best_margin)
            x_adv = self._project(x_adv.detach() + self._step(grad, alpha), x)
        if self.eot_samples == 1:
            m_last = self._eot_margin(x_adv, y, device)
            last_wins = m_last <= best_margin
            m_out = torch.where(last_wins, m_last, best_margin)
        else:
            last_wins = best_margin >= 0
            m_out = best_margin
        best = torch.where(last_wins.view(-1, 1, 1, 1), x_adv, best)
        return best, m_out

    def _perturb(self, x, y, gen, device):
        return self._run(x, y, gen, device)[0]
