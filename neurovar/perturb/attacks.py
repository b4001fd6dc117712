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

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from neurovar._validation import check_device, check_rng

from ._utils import (
    CURRENT_BAR,
    RNGLike,
    check_choice,
    check_images_labels,
    check_number,
    check_progress,
    chunk_sizes,
    make_generator,
    margin,
    model_device,
    param_error,
    preserved_state,
    progress_bar,
    seed_from,
)

__all__ = [
    "Attack",
    "FGSM",
    "PGD",
    "TargetedPGD",
    "Square",
    "LOSSES",
    "resolve_eot_batch",
]

NORMS = ("linf", "l2")
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


class Attack:
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
            raise param_error(owner, "model", "a torch.nn.Module", type(self.model).__name__)
        check_choice(self.norm, "norm", owner, self._supported_norms)
        if self.norm == "linf":
            check_number(self.eps, "eps", owner, low=0.0, high=1.0)
        else:
            check_number(self.eps, "eps", owner, low=0.0)
        check_number(self.eot_samples, "eot_samples", owner, low=1, integer=True)
        if not (isinstance(self.eot_batch, str) and self.eot_batch == "auto"):
            check_number(self.eot_batch, "eot_batch", owner, low=1, integer=True)
        check_rng(self.rng, owner=owner)
        if self.device is not None:
            check_device(self.device, owner=owner)
        check_progress(self.progress, owner)

    def _planned_passes(self) -> int:
        """Forward passes (of the whole batch, one per EOT draw) a call will make at most."""
        return self.eot_samples

    @staticmethod
    def _tick(n_passes: int) -> None:
        bar = CURRENT_BAR.get()
        if bar is not None:
            bar.update(n_passes)

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
                type(self).__name__,
                "labels",
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

    # ------------------------------------------------------------------ helpers
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

    def __repr__(self) -> str:
        keys = [k for k in vars(self) if k != "model" and not k.startswith("_")]
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
        return f"{type(self).__name__}({args})"


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
        steps: int = 10,
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
        check_number(self.steps, "steps", owner, low=1, integer=True)
        if self.alpha is not None:
            check_number(self.alpha, "alpha", owner, low=0.0, low_inclusive=False)
        check_choice(self.loss, "loss", owner, LOSSES)
        if not isinstance(self.random_start, bool):
            raise param_error(owner, "random_start", "a bool", self.random_start)

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
        check_number(
            self.n_target_classes, "n_target_classes", type(self).__name__, low=1, integer=True
        )

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
        check_number(self.n_queries, "n_queries", owner, low=1, integer=True)
        check_number(self.p_init, "p_init", owner, low=0.0, high=1.0, low_inclusive=False)

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
