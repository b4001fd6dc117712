r"""Assembly of the :func:`~neurovar.perturb.evaluate_robustness` result (one job: numbers in,
a labelled :class:`xarray.Dataset` out), and the Wilson interval of a proportion.

The Wilson (1927) score interval of :math:`k` successes in :math:`n` trials at level
:math:`1 - \alpha` is

.. math:: \frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p (1 - \hat p)}{n}
          + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}}, \qquad \hat p = k / n,
          \quad z = \Phi^{-1}(1 - \alpha/2),

computed by :func:`statsmodels.stats.proportion.proportion_confint`.

References
----------
Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference.
JASA 22, 209-212.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr
from statsmodels.stats.proportion import proportion_confint

from neurovar.dims import STIMULUS

from ._eval_checks import STIMULUS_ID

__all__: list[str] = []


def wilson(
    successes: int, n: int, confidence_level: float, method: str = "wilson"
) -> tuple[float, float]:
    """Interval of ``successes / n`` (``method`` any of ``proportion_confint``); NaN for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(successes, n, alpha=1 - confidence_level, method=method)
    return float(low), float(high)


def ensemble_dataset(
    correct: np.ndarray,
    fraction: np.ndarray,
    clean: np.ndarray,
    *,
    eps_list: list[Any],
    names: list[str],
    labels: torch.Tensor,
    tag_coords: dict[str, Any],
    level: float,
    attrs: dict[str, Any],
) -> xr.Dataset:
    r"""The result of :func:`evaluate_robustness` from its per-stimulus outcomes.

    ``correct`` and ``fraction`` have shape (eps, attack, stimulus), ``clean`` (stimulus,); the
    worst case over attacks is :math:`w_n = \min_a c_{a,n}`, every accuracy gets a Wilson
    interval at ``level``; ``attrs`` (the settings) are stored as given.
    """
    n_eps, n_att, n = correct.shape
    worst = correct.all(axis=1)
    ci = np.array([wilson(int(w.sum()), n, level) for w in worst])
    att_ci = np.array(
        [[wilson(int(c.sum()), n, level) for c in per_eps] for per_eps in correct]
    ).reshape(n_eps, n_att, 2)
    return xr.Dataset(
        {
            "accuracy": (("eps", "attack"), correct.mean(axis=2)),
            "accuracy_ci_low": (("eps", "attack"), att_ci[..., 0]),
            "accuracy_ci_high": (("eps", "attack"), att_ci[..., 1]),
            "correct": (("eps", "attack", STIMULUS), correct),
            "correct_fraction": (("eps", "attack", STIMULUS), fraction),
            "worst_case_accuracy": (("eps",), worst.mean(axis=1)),
            "worst_case_correct": (("eps", STIMULUS), worst),
            "ci_low": (("eps",), ci[:, 0]),
            "ci_high": (("eps",), ci[:, 1]),
            "clean_accuracy": ((), float(clean.mean())),
            "clean_correct": ((STIMULUS,), clean),
        },
        coords={
            "eps": np.asarray(eps_list, dtype=float),
            "attack": names,
            STIMULUS_ID: (STIMULUS, np.arange(n)),
            "label": (STIMULUS, labels.cpu().numpy()),
            **tag_coords,
        },
        attrs=attrs,
    )
