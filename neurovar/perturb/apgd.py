"""Auto-PGD (Croce & Hein 2020), with EOT, following the Adversarial Robustness Toolbox's defaults.

Preble et al. (2026) evaluate their noisy networks with ART's ``AutoProjectedGradientDescent``
at its default settings (``scripts/eval_robustness.py`` line 335: ``eps_step=0.1``,
``max_iter=100``, ``nb_random_init=5``, the classifier's cross-entropy loss). :class:`APGD`
runs the same algorithm in torch, batched over the whole input, so that the paper's protocol can
be reproduced without ART and ART can be used as a cross-check
(``tests/perturb/test_apgd.py``, ``benchmarks/bench_paper_protocol.py``). With
``eot_samples > 1`` the gradient and the loss are averaged over noise draws (Athalye et al.
2018), the adaptive attack on a stochastic network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._utils import check_choice, check_number, param_error
from .attacks import LOSSES, Attack, _loss_per_example

__all__ = ["APGD", "apgd_checkpoints"]


def apgd_checkpoints(max_iter: int) -> list[int]:
    """Iterations at which APGD may halve its step: :math:`w_j = \\lceil p_j N \\rceil` with
    :math:`p_0 = 0`, :math:`p_1 = 0.22`, :math:`p_{j+1} = p_j + \\max(p_j - p_{j-1} - 0.03,
    0.06)` (Croce & Hein 2020, Sec. 3.2; ART ``auto_projected_gradient_descent.py``)."""
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1:
            break
        p.append(nxt)
    return [math.ceil(q * max_iter) for q in p]


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML), untargeted, with optional EOT.

    Per restart, from a random point of the eps-ball, iterates with momentum 0.75

    .. math:: z_{k+1} = \\Pi(x_k + \\eta_k\\,s(\\nabla L(x_k))), \\quad
       x_{k+1} = \\Pi(x_k + 0.75 (z_{k+1} - x_k) + 0.25 (x_k - x_{k-1}))

    (``s`` the sign for L-inf, the normalised gradient for L2; :math:`\\Pi` the projection on
    the eps-ball and [0, 1]) and halves an example's step :math:`\\eta` at the checkpoints
    :func:`apgd_checkpoints` when fewer than 75% of the steps since the last checkpoint raised
    its loss, or when neither step nor best loss changed, restarting it from its best point.

    As ART's implementation (which the paper ran): the first step is :math:`\\eta_0 =`
    ``eps_step`` (ART's default 0.1, not :math:`2\\epsilon` as in the original); each restart
    attacks only the examples still classified correctly (one forward pass), and an example's
    result is the *last* iterate if that fools the model, else the restart's start point; the
    loss is the per-example cross-entropy (``loss="ce"``) or DLR. Two small differences from
    ART remain: each restart starts from the clean image plus fresh uniform noise (ART adds it
    to the previous restart's start point), and the loss at the start comes from the gradient
    pass (ART evaluates it in a separate forward pass, a second noise draw on a stochastic
    network). With ``eot_samples = k > 1``
    every gradient and loss is the mean over ``k`` draws of the model's noise, and an example
    counts as fooled by the draw-mean logits.

    Parameters
    ----------
    eps_step
        First step size :math:`\\eta_0`.
    steps
        Iterations per restart (ART's ``max_iter``).
    restarts
        Random restarts (ART's ``nb_random_init``); at least 1.
    loss
        ``"ce"`` or ``"dlr"``.
    **kwargs
        ``eps``, ``norm``, ``eot_samples``, ``eot_batch``, ``rng``, ``device``, ``progress``:
        see :class:`neurovar.perturb.Attack`. Input: images in [0, 1], shape (N, C, H, W).

    References
    ----------
    Croce, F. & Hein, M. (2020). ICML. Nicolae et al. (2018), Adversarial Robustness Toolbox
    v1.0, arXiv:1807.01069 (``AutoProjectedGradientDescent``).
    """

    name = "apgd"

    def __init__(self, model: nn.Module, *, eps_step: float = 0.1, steps: int = 100,
                 restarts: int = 5, loss: str = "ce", **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.eps_step = eps_step
        self.steps = steps
        self.restarts = restarts
        self.loss = loss

    def _validate(self) -> None:
        super()._validate()
        owner = type(self).__name__
        check_number(self.eps_step, "eps_step", owner, low=0.0, low_inclusive=False)
        check_number(self.steps, "steps", owner, low=1, integer=True)
        check_number(self.restarts, "restarts", owner, low=1, integer=True)
        check_choice(self.loss, "loss", owner, tuple(x for x in LOSSES if x != "margin"))

    def _planned_passes(self) -> int:
        # per restart: one success check, then per step a gradient and a loss evaluation
        return self.restarts * (1 + self.eot_samples * (2 * self.steps + 1))

    def _loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.eot_samples
        total = None
        with torch.enable_grad():  # also when the caller runs under torch.no_grad()
            xg = x.detach().requires_grad_(True)
            for _ in range(k):
                value = _loss_per_example(self.model(xg), y, self.loss, None)
                total = value if total is None else total + value
                self._tick(1)
            (grad,) = torch.autograd.grad(total.sum(), xg)
        return (total / k).detach(), grad / k

    @torch.no_grad()
    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = None
        for _ in range(self.eot_samples):
            value = _loss_per_example(self.model(x), y, self.loss, None)
            total = value if total is None else total + value
            self._tick(1)
        return total / self.eot_samples

    @torch.no_grad()
    def _correct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._eot_logits(x, x.device).argmax(1) == y

    def _random_point(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return self._project(x + (2 * u - 1) * self.eps, x)
        d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        r = torch.rand((x.shape[0], 1, 1, 1), generator=gen, device=x.device, dtype=x.dtype)
        return self._project(x + d * r ** (1.0 / d[0].numel()) * self.eps, x)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-7).view(-1, 1, 1, 1)

    def _run(self, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One restart on ``x0`` (the clean images of the examples still robust)."""
        n = x0.shape[0]
        view = (-1,) + (1,) * (x0.dim() - 1)
        start = self._random_point(x0, gen)
        checkpoints = apgd_checkpoints(self.steps)
        eta = torch.full((n,), float(self.eps_step), device=x0.device, dtype=x0.dtype)
        x_k = start
        f_k, grad = self._loss_and_grad(x_k, y)
        x_1 = self._project(x_k + eta.view(view) * self._direction(grad), x0)
        f_1 = self._loss(x_1, y)
        better = f_1 >= f_k
        f_max = torch.where(better, f_1, f_k)
        x_max = torch.where(better.view(view), x_1, x_k)
        x_max_prev = x0.clone()  # as ART: the point before the best one starts at the clean x
        count = better.to(x0.dtype)
        eta_at_last, f_max_at_last = eta.clone(), f_k.clone()
        x_prev, x_k = x_k, x_1
        last = 0
        for k in range(1, self.steps):
            _, grad = self._loss_and_grad(x_k, y)
            z = self._project(x_k + eta.view(view) * self._direction(grad), x0)
            x_new = self._project(x_k + 0.75 * (z - x_k) + 0.25 * (x_k - x_prev), x0)
            f_new = self._loss(x_new, y)
            if bool((f_new == 0).all()):
                x_k = x_new
                break
            up = f_new > f_max
            count += up.to(x0.dtype)
            x_max_prev = torch.where(up.view(view), x_k, x_max_prev)
            x_max = torch.where(up.view(view), x_new, x_max)
            f_max = torch.where(up, f_new, f_max)
            x_prev, x_k = x_k, x_new
            if k in checkpoints:
                halve = (count < 0.75 * (k - last)) | ((eta_at_last == eta) & (f_max_at_last == f_max))
                eta = torch.where(halve, eta / 2, eta)
                x_k = torch.where(halve.view(view), x_max, x_k)
                x_prev = torch.where(halve.view(view), x_max_prev, x_prev)
                count.zero_()
                eta_at_last, f_max_at_last = eta.clone(), f_max.clone()
                last = k
        fooled = ~self._correct(x_k, y)
        return torch.where(fooled.view(view), x_k, start)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                 device: torch.device) -> torch.Tensor:
        if self.steps < 1:  # pragma: no cover - validated
            raise param_error(type(self).__name__, "steps", "an int >= 1", self.steps)
        x_adv = x.clone()
        for _ in range(int(self.restarts)):
            robust = self._correct(x_adv, y)
            if not bool(robust.any()):
                break
            idx = robust.nonzero().squeeze(1)
            x_adv[idx] = self._run(x[idx], y[idx], gen)
        return x_adv


def _apgd(loss: str):
    def factory(model, *, eps, norm, eot_samples, rng, device, steps=20, **_):
        # the original's first step (2 eps, Croce & Hein 2020) and one restart: the adaptive
        # ensemble's APGD; the paper protocol builds APGD with ART's defaults directly
        return APGD(model, eps=eps, norm=norm, eps_step=2 * eps if eps > 0 else 0.1,
                    steps=steps, restarts=1, loss=loss, eot_samples=eot_samples, rng=rng,
                    device=device)

    factory.__doc__ = f"Auto-PGD on the {loss!r} loss (one restart, first step 2 eps)."
    return factory


def _register() -> None:
    from .evaluate import attack_names, register_attack

    for name, loss in (("apgd_ce", "ce"), ("apgd_dlr", "dlr")):
        if name not in attack_names():
            register_attack(name, _apgd(loss))


_register()
