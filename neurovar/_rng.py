"""Deprecated location of the seeded-RNG helpers: they live in :mod:`neurovar._torch` now.

Kept as a thin re-export so code written against ``neurovar._rng`` keeps working; import
from :mod:`neurovar._torch` instead.
"""

from __future__ import annotations

from ._torch import noise_modules, reseeded_noise, seed_from, seeded_torch

__all__ = ["seed_from", "seeded_torch", "noise_modules", "reseeded_noise"]
