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

from neurovar._validation import (  # one order: (name, owner, ...)
    Options,
    check_int,
    check_param,
    check_real,
    param_error,
)

from ._base import Attack
from ._eot import LOSSES, _loss_per_example

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
    loss is the per-example cross-entropy (``loss="ce"``) or DLR.

    **Where ours differs from ART, and why the robust accuracy is the same.** ART takes, per
    step, a gradient pass at :math:`x_k` (forward + backward) and a separate forward pass for
    the loss at :math:`x_{k+1}`. With ``fused=True`` (the default) one forward + backward pass
    at :math:`x_{k+1}` gives both its loss (for the checkpoint bookkeeping) and the gradient
    the next step takes there, so a step costs one pass instead of a gradient pass plus a
    forward pass (``benchmarks/results/paper_protocol.md``); the last step's is forward only.
    When a checkpoint moves an example back to its best point :math:`x_{max}`, the gradient
    kept from the pass that evaluated :math:`x_{max}` is used (ART takes a new gradient pass
    there). On a deterministic network both orders compute the same numbers, and the
    adversarial examples are bit-identical to ``fused=False``, which runs ART's order (tested
    in ``tests/perturb/test_apgd.py``). On a stochastic network the only change is which
    noise draw a number comes from: the loss of a point and the gradient taken there share
    one draw (ART draws twice). Each is still a single-draw loss or gradient of the same
    point, with the same distribution as ART's, so the robust accuracy is the same within
    sampling error (measured against ART and, paired by seed, against ``fused=False``:
    ``benchmarks/bench_apgd_fused_accuracy.py``). Two further
    differences, with either setting: each restart starts from the clean image plus fresh
    uniform noise (ART adds it to the previous restart's start point), and the loss at the
    start comes from the gradient pass (ART evaluates it in a separate forward pass). With
    ``eot_samples = k > 1`` every gradient and loss is the mean over ``k`` draws of the
    model's noise, and an example counts as fooled by the draw-mean logits.

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
    fused
        Take each step's loss from its gradient pass (default) instead of a separate forward
        pass as ART does; see above.
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
                 restarts: int = 5, loss: str = "ce", fused: bool = True, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.eps_step = eps_step
        self.steps = steps
        self.restarts = restarts
        self.loss = loss
        self.fused = fused

    def _validate(self) -> None:
        super()._validate()
        owner = type(self).__name__
        check_real(self.eps_step, name="eps_step", owner=owner, low=0.0, low_open=True)
        check_int(self.steps, name="steps", owner=owner, low=1)
        check_int(self.restarts, name="restarts", owner=owner, low=1)
        losses = tuple(x for x in LOSSES if x != "margin")
        check_param(self.loss, [Options(str, losses)], name="loss", owner=owner)
        if not isinstance(self.fused, bool):
            raise param_error("fused", owner, "a bool", self.fused)

    def _planned_passes(self) -> int:
        # per restart: one success check; unfused, a gradient and a loss pass per step and one
        # more loss pass (ART's order); fused, one pass per step and one more
        per = self.steps + 1 if self.fused else 2 * self.steps + 1
        return self.restarts * (1 + self.eot_samples * per)

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

    def _perturb(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                 device: torch.device) -> torch.Tensor:
        if self.steps < 1:  # pragma: no cover - validated
            raise param_error("steps", type(self).__name__, "an int >= 1", self.steps)
        x_adv = x.clone()
        for _ in range(int(self.restarts)):
            robust = self._correct(x_adv, y)
            if not bool(robust.any()):
                break
            idx = robust.nonzero().squeeze(1)
            x_adv[idx] = _restart(self, x[idx], y[idx], gen)
        return x_adv


def _loss_grad(atk: APGD, x: torch.Tensor, y: torch.Tensor,
               need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-example loss at ``x`` and, if ``need_grad``, its input gradient from the same
    forward passes: the mean over ``atk.eot_samples`` draws of the model's noise of
    :math:`L(f_\\xi(x), y)` and of :math:`\\nabla_x L(f_\\xi(x), y)`."""
    k = atk.eot_samples
    total = None
    with torch.enable_grad() if need_grad else torch.no_grad():
        xg = x.detach().requires_grad_(True) if need_grad else x
        for _ in range(k):
            value = _loss_per_example(atk.model(xg), y, atk.loss, None)
            total = value if total is None else total + value
            atk._tick(1)
        grad = torch.autograd.grad(total.sum(), xg)[0] / k if need_grad else None
    return total.detach() / k, grad


def _restart(atk: APGD, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One APGD restart on ``x0`` (the clean images of the examples still robust): ART's
    iteration, each step's loss at :math:`x_{k+1}` and gradient at :math:`x_{k+1}` from one
    pass when ``atk.fused`` (see :class:`APGD`), from two (as ART) otherwise."""
    n, fused, steps = x0.shape[0], atk.fused, atk.steps
    view = (-1,) + (1,) * (x0.dim() - 1)
    checkpoints = set(apgd_checkpoints(steps)[1:])
    start = atk._random_point(x0, gen)
    eta = torch.full((n,), float(atk.eps_step), device=x0.device, dtype=x0.dtype)
    f_k, grad = _loss_grad(atk, start, y, True)
    x_1 = atk._project(start + eta.view(view) * atk._direction(grad), x0)
    grad_0 = grad
    f_1, grad = _loss_grad(atk, x_1, y, fused and steps > 1)
    better = f_1 >= f_k
    f_max = torch.where(better, f_1, f_k)
    x_max = torch.where(better.view(view), x_1, start)
    # fused: the gradient at x_max, from the pass that evaluated x_max
    g_max = torch.where(better.view(view), grad, grad_0) if grad is not None else None
    x_max_prev = x0  # as ART: the point before the best one starts at the clean x
    count = better.to(x0.dtype)
    eta_at_last, f_max_at_last = eta, f_k
    x_prev, x_k = start, x_1
    last = 0
    for k in range(1, steps):
        if grad is None:  # unfused (ART): a gradient pass of its own at x_k
            grad = _loss_grad(atk, x_k, y, True)[1]
        z = atk._project(x_k + eta.view(view) * atk._direction(grad), x0)
        x_new = atk._project(x_k + 0.75 * (z - x_k) + 0.25 * (x_k - x_prev), x0)
        # fused: the gradient at x_new (the next step's) comes with its loss; none after the last
        f_new, grad = _loss_grad(atk, x_new, y, fused and k < steps - 1)
        if bool((f_new == 0).all()):
            x_k = x_new
            break
        up = f_new > f_max
        count += up.to(x0.dtype)
        x_max_prev = torch.where(up.view(view), x_k, x_max_prev)
        x_max = torch.where(up.view(view), x_new, x_max)
        f_max = torch.where(up, f_new, f_max)
        if grad is not None:
            g_max = torch.where(up.view(view), grad, g_max)
        x_prev, x_k = x_k, x_new
        if k in checkpoints:
            halve = (count < 0.75 * (k - last)) | ((eta_at_last == eta) & (f_max_at_last == f_max))
            eta = torch.where(halve, eta / 2, eta)
            x_k = torch.where(halve.view(view), x_max, x_k)
            x_prev = torch.where(halve.view(view), x_max_prev, x_prev)
            if grad is not None:  # moved back to x_max: the gradient of its pass
                grad = torch.where(halve.view(view), g_max, grad)
            count = torch.zeros_like(count)
            eta_at_last, f_max_at_last = eta, f_max
            last = k
    fooled = ~atk._correct(x_k, y)
    return torch.where(fooled.view(view), x_k, start)
