"""Statistical inference for neurovar results: calibrated tests, effect sizes, tidy tables.

- :func:`permutation_test`: two-sample / paired permutation tests along a named dim, with
  Cohen's d and rank-biserial effect sizes next to every p-value.
- :func:`bootstrap_ci`: percentile / BCa intervals, flat or hierarchical (seeds, then units).
- :func:`correct_pvalues`: multiple-comparison correction over any xarray of p-values.
- :func:`to_tidy`: any xarray result to a long DataFrame for statsmodels formulas.
- :func:`fit_mixed_model`: statsmodels MixedLM with a readable summary and clear errors, for
  continuous outcomes.
- :func:`fit_binomial_model`: logistic GEE (population-averaged) or binomial GLMM
  (subject-specific) for 0/1 outcomes such as correct / not correct per example.
"""

from __future__ import annotations

from .binomial import BINOMIAL_METHODS, BinomialModelResult, fit_binomial_model
from .bootstrap import BOOTSTRAP_STATISTICS, bootstrap_ci
from .effect_size import cohens_d, rank_biserial
from .mixed import MixedModelResult, fit_mixed_model
from .multiple import PVALUE_METHODS, correct_pvalues
from .permutation import PERMUTATION_STATISTICS, permutation_test
from .tidy import to_tidy

__all__ = [
    "permutation_test",
    "bootstrap_ci",
    "to_tidy",
    "fit_mixed_model",
    "MixedModelResult",
    "fit_binomial_model",
    "BinomialModelResult",
    "BINOMIAL_METHODS",
    "correct_pvalues",
    "cohens_d",
    "rank_biserial",
    "PERMUTATION_STATISTICS",
    "BOOTSTRAP_STATISTICS",
    "PVALUE_METHODS",
]
