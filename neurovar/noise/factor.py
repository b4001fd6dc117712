r"""A covariance in factor form, :math:`\Sigma = F F^T + \mathrm{diag}(d)`, never formed densely.

A covariance fitted from ``n`` activation changes of ``N`` units has rank at most ``n - 1``; at a
conv layer ``N`` is in the thousands, so the ``N x N`` matrix costs memory and an
eigendecomposition that its factor form does not: :math:`\mathrm{cov}(D) = F F^T` with
:math:`F = V S / \sqrt{n - 1}` from the thin SVD of the centred changes. Every control of
:mod:`neurovar.noise.controls` keeps this form (the diagonal control is a diagonal, the isotropic
one a constant diagonal, the rotated one a random ``N x r`` frame times the singular values), and
:func:`neurovar.noise.noise_from_covariance` turns it into the module that samples it exactly
(:class:`~neurovar.noise.LowRankNoise`, :class:`~neurovar.noise.DiagonalNoise`,
:class:`~neurovar.noise.IsotropicNoise`), so an experiment reaches every control and every noise
kind through those two functions without an ``N x N`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from neurovar._validation import check_memory, check_real, param_error

__all__ = ["FactorCovariance"]


def _constant(d: np.ndarray) -> bool:
    """All entries equal (to 1e-9 relative): an isotropic diagonal."""
    return bool(d.size) and bool(np.allclose(d, d[0], rtol=1e-9, atol=0.0))


@dataclass(frozen=True)
class FactorCovariance:
    r"""The covariance :math:`\Sigma = F F^T + \mathrm{diag}(d)`.

    Parameters
    ----------
    diagonal
        ``d``, shape ``(N,)``, non-negative.
    factors
        ``F``, shape ``(N, r)``, or None (:math:`\Sigma` diagonal).

    Notes
    -----
    :math:`\mathrm{tr}\,\Sigma = \lVert F \rVert_F^2 + \sum_i d_i` and
    :math:`\mathrm{diag}\,\Sigma = \sum_j F_{ij}^2 + d_i` without the dense matrix. It is
    accepted by :func:`~neurovar.noise.match_total_variance`,
    :func:`~neurovar.noise.diagonal_control`, :func:`~neurovar.noise.isotropic_control`,
    :func:`~neurovar.noise.rotate_spectrum`, :func:`~neurovar.noise.matched_controls` and
    :func:`~neurovar.noise.noise_from_covariance` (each returns a ``FactorCovariance``, or the
    noise module).

    References
    ----------
    Preble, Venkatesh, Mihalas & Harris (2026), arXiv 2606.13801, ``scripts/compute_covariance.py``
    lines 46-49: :math:`\mathrm{cov}(h(\tilde x) - h(x)) + r I`, here :math:`F F^T + r I`.
    """

    diagonal: np.ndarray
    factors: np.ndarray | None = None

    def __post_init__(self) -> None:
        owner = "FactorCovariance"
        d = np.asarray(self.diagonal, dtype=float)
        if d.ndim != 1 or d.size == 0:
            raise param_error("diagonal", owner, "a non-empty 1-D array of variances",
                              f"shape {d.shape}", raw=True)
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise param_error("diagonal", owner, "finite variances >= 0",
                              f"a minimum of {np.nanmin(d):.4g}" if np.any(np.isfinite(d))
                              else "non-finite values", raw=True)
        object.__setattr__(self, "diagonal", d)
        if self.factors is not None:
            f = np.asarray(self.factors, dtype=float)
            if f.ndim != 2 or f.shape[0] != d.size:
                raise param_error("factors", owner, f"a ({d.size}, r) matrix or None",
                                  f"shape {f.shape}", raw=True)
            if not np.all(np.isfinite(f)):
                raise param_error("factors", owner, "finite values", "non-finite values",
                                  raw=True)
            object.__setattr__(self, "factors", f if f.shape[1] else None)

    @classmethod
    def identity(cls, n_units: int) -> FactorCovariance:
        """:math:`I_N` (the isotropic shape before it is scaled)."""
        return cls(np.ones(int(n_units)))

    @property
    def n_units(self) -> int:
        """``N``."""
        return int(self.diagonal.shape[0])

    @property
    def rank(self) -> int:
        """Number of factor columns ``r`` (0 for a diagonal covariance)."""
        return 0 if self.factors is None else int(self.factors.shape[1])

    @property
    def trace(self) -> float:
        r""":math:`\mathrm{tr}\,\Sigma = \lVert F\rVert_F^2 + \sum_i d_i`."""
        f = 0.0 if self.factors is None else float(np.sum(self.factors**2))
        return f + float(np.sum(self.diagonal))

    @property
    def participation_ratio(self) -> float:
        r"""Effective dimensionality :math:`(\mathrm{tr}\,\Sigma)^2 / \mathrm{tr}(\Sigma^2)`
        (Gao et al. 2017), exactly and without the ``N x N`` matrix:
        :math:`\mathrm{tr}(\Sigma^2) = \lVert F^TF\rVert_F^2 + 2\sum_i d_i (FF^T)_{ii} +
        \sum_i d_i^2`. NaN for a covariance with zero variance."""
        d = self.diagonal.astype(float)
        tr2 = float(np.sum(d**2))
        if self.factors is not None:
            f = self.factors.astype(float)
            tr2 += float(np.sum((f.T @ f) ** 2)) + 2.0 * float(np.sum(d * np.sum(f**2, axis=1)))
        return self.trace**2 / tr2 if tr2 > 0 else float("nan")

    @property
    def is_isotropic(self) -> bool:
        """No factors and a constant diagonal."""
        return self.factors is None and _constant(self.diagonal)

    @property
    def has_constant_diagonal(self) -> bool:
        """``d`` constant (then a rotation keeps the factor form)."""
        return _constant(self.diagonal)

    def scaled(self, total_variance: float) -> FactorCovariance:
        r"""The same shape with :math:`\mathrm{tr}\,\Sigma` = ``total_variance``:
        :math:`c\Sigma`, :math:`c = v / \mathrm{tr}\,\Sigma` (``F`` times :math:`\sqrt c`)."""
        v = check_real(total_variance, name="total_variance", owner="FactorCovariance.scaled",
                       low=0.0)
        if not self.trace > 0:
            raise ValueError("a covariance with zero total variance cannot be scaled "
                             "(e.g. a source that changes nothing at the layer, and ridge 0)")
        c = float(v) / self.trace
        f = None if self.factors is None else self.factors * np.sqrt(c)
        return FactorCovariance(self.diagonal * c, f)

    def dense(self) -> np.ndarray:
        r"""The ``N x N`` matrix :math:`F F^T + \mathrm{diag}(d)` (memory ``8 N^2`` bytes)."""
        out = np.diag(self.diagonal.astype(float))
        if self.factors is not None:
            out = out + self.factors @ self.factors.T
        return out

    def diag_of(self) -> np.ndarray:
        r""":math:`\mathrm{diag}\,\Sigma = \sum_j F_{ij}^2 + d_i`."""
        f = 0.0 if self.factors is None else np.sum(self.factors**2, axis=1)
        return self.diagonal + f

    def rotated(self, random_frame: Any) -> FactorCovariance:
        r"""The same spectrum with random eigenvectors, :math:`Q \Sigma Q^T`.

        With a constant diagonal :math:`d I`, :math:`Q (F F^T + d I) Q^T = (Q F)(Q F)^T + d I`
        has the distribution of :math:`U S U^T + d I` for a Haar-random ``N x r`` frame ``U``
        and the singular values ``S`` of ``F``: only ``random_frame(N, r)`` is drawn. Otherwise
        the dense matrix is eigendecomposed and rotated by ``random_frame(N, N)``, the result
        kept as factors (diagonal 0). ``random_frame(n, k)`` is
        :func:`~neurovar.noise.random_orthogonal` with the caller's generator.
        """
        if self.is_isotropic:
            return FactorCovariance(self.diagonal.copy())  # Q (d I) Q^T = d I
        if self.factors is not None and self.has_constant_diagonal:
            _, sv, _ = np.linalg.svd(self.factors, full_matrices=False)
            q = random_frame(self.n_units, sv.size)
            return FactorCovariance(self.diagonal.copy(), q * sv[None, :])
        n = self.n_units
        # the dense matrix, its eigenvectors and the N x N frame: refused before they are built
        check_memory(3 * 8.0 * n * n, name="noise_or_cov", owner="rotate_spectrum", value=n,
                     what=f"the dense {n} x {n} rotation of a non-constant diagonal")
        evals, _ = np.linalg.eigh(self.dense())
        q = random_frame(self.n_units, self.n_units)
        keep = evals > 0
        return FactorCovariance(np.zeros(self.n_units), q[:, keep] * np.sqrt(evals[keep])[None, :])
