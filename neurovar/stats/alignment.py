"""Alignment of noise covariance with directions and subspaces."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from scipy.linalg import subspace_angles

from neurovar._validation import InvalidParameterError, check_int
from neurovar.dims import UNIT, check_dims

from ._util import check_square, check_symmetric_psd, drop_nan_units, warn_nan

__all__ = ["variance_along", "alignment_index", "principal_angles", "top_subspace"]


def _matrix(cov: xr.DataArray, name: str, unit_dim: str, func: str | None = None) -> np.ndarray:
    unit_j = check_square(cov, name, unit_dim, func)
    extra = [d for d in cov.dims if d not in (unit_dim, unit_j)]
    if extra:
        raise InvalidParameterError(
            f"The '{name}' parameter must have exactly the dims ({unit_dim!r}, {unit_j!r}); "
            f"found extra dims {tuple(extra)!r}. Select one matrix first, "
            f"e.g. {name}.isel({extra[0]}=0)."
        )
    c = np.asarray(cov.transpose(unit_dim, unit_j).values, dtype=np.float64)
    check_symmetric_psd(c, name, func or "alignment")
    return (c + c.T) / 2


def _warn_left_out(keep: np.ndarray, name: str) -> None:
    warn_nan(
        int(np.sum(~keep)),
        keep.size,
        f"units of '{name}'",
        "have a NaN variance on the diagonal (e.g. units without valid trials)",
        consequence="they were left out",
        stacklevel=4,
    )


def _same_units(a: xr.DataArray, b: xr.DataArray, names: tuple[str, str], unit_dim: str) -> None:
    if a.sizes[unit_dim] != b.sizes[unit_dim]:
        raise InvalidParameterError(
            f"The '{names[0]}' and '{names[1]}' parameters must have the same number of "
            f"units; got {a.sizes[unit_dim]} and {b.sizes[unit_dim]}."
        )
    for cname in ("unit_id", unit_dim):
        if cname in a.coords and cname in b.coords:
            va, vb = a.coords[cname], b.coords[cname]
            if va.dims == (unit_dim,) and vb.dims == (unit_dim,):
                if not np.array_equal(va.values, vb.values):
                    raise InvalidParameterError(
                        f"The '{names[0]}' and '{names[1]}' parameters have different "
                        f"'{cname}' coordinates; reorder one with .sel({cname}=...) first."
                    )


def variance_along(
    cov: xr.DataArray,
    directions: xr.DataArray,
    *,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Noise variance along given directions, relative to the mean variance per dimension.

    For each direction :math:`d` (normalised to unit length),

    .. math::

        v(d) = \frac{\hat d^\top \Sigma \hat d}{\operatorname{tr}(\Sigma) / N},
        \qquad \hat d = d / \lVert d \rVert,

    so isotropic noise gives 1 for every direction, noise concentrated along ``d`` gives up to
    N, and noise orthogonal to ``d`` gives 0. Units with a NaN variance in ``cov`` are left
    out (of :math:`\Sigma`, of :math:`N` and of the directions), with a warning; a covariance
    with no positive total variance gives NaN, with a warning. Use it with adversarial perturbation
    directions in activation space, or with the signal direction :math:`f'` (where values
    above 1 mean information-limiting, differential correlations; Moreno-Bote et al. 2014).

    Parameters
    ----------
    cov
        Covariance with dims ``(unit, unit_j)``, e.g. from :func:`noise_covariance`.
    directions
        Directions with the unit dim and any other dims (e.g. ``direction`` or ``stimulus``).
    unit_dim
        Name of the unit dim.

    Returns
    -------
    xarray.DataArray
        ``"variance_along"`` over the non-unit dims of ``directions`` (coords kept);
        ``attrs["mean_variance"]`` is :math:`\operatorname{tr}(\Sigma)/N`. Zero-length
        directions give NaN with a warning.

    References
    ----------
    Moreno-Bote, R. et al. (2014). Information-limiting correlations. Nat. Neurosci. 17,
    1410-1417.
    """
    c = _matrix(cov, "cov", unit_dim, "variance_along")
    check_dims(
        directions,
        [unit_dim],
        name="directions",
        owner="variance_along",
        params={unit_dim: "unit_dim"},
    )
    _same_units(cov, directions, ("cov", "directions"), unit_dim)
    other = [d for d in directions.dims if d != unit_dim]
    d = np.asarray(directions.transpose(*other, unit_dim).values, dtype=np.float64)
    c, keep = drop_nan_units(c)
    _warn_left_out(keep, "cov")
    flat = d.reshape(-1, keep.size)[:, keep]
    norm = np.linalg.norm(flat, axis=1)
    ok = norm > 0
    unit_vecs = flat / np.where(ok, norm, 1.0)[:, None]
    mean_var = np.trace(c) / c.shape[0] if c.shape[0] else np.nan
    usable = bool(np.all(np.isfinite(c))) and mean_var > 0
    warn_nan(
        int(not usable),
        1,
        "covariance 'cov'",
        "has non-finite entries or no positive total variance",
        consequence="every value is NaN",
    )
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        v = np.einsum("ki,ij,kj->k", unit_vecs, c, unit_vecs) / mean_var
    v = np.where(ok & usable, v, np.nan)
    warn_nan(int(np.sum(~ok)), ok.size, "directions", "have zero length")
    coords = {k: val for k, val in directions.coords.items() if unit_dim not in val.dims}
    return xr.DataArray(
        v.reshape(d.shape[:-1]),
        dims=other,
        coords=coords,
        name="variance_along",
        attrs={"mean_variance": float(mean_var)},
    )


def _alignment_result(index: float, chance: float, frac: float, k: int) -> xr.Dataset:
    return xr.Dataset(
        {
            "alignment_index": index,
            "chance_level": chance,
            "relative_to_chance": index / chance if chance and np.isfinite(chance) else np.nan,
            "fraction_of_variance": frac,
        },
        attrs={"n_components": k, "reference": "Elsayed et al. (2016)"},
    )


def alignment_index(
    cov_a: xr.DataArray,
    cov_b: xr.DataArray,
    *,
    n_components: int,
    unit_dim: str = UNIT,
) -> xr.Dataset:
    r"""Alignment index: how much of A's variance lies in B's top principal subspace.

    With :math:`U_B` the top ``n_components`` eigenvectors of :math:`\Sigma_B` and
    :math:`\lambda^A_1 \ge \lambda^A_2 \ge \dots` the eigenvalues of :math:`\Sigma_A`,

    .. math::

        A = \frac{\operatorname{tr}(U_B^\top \Sigma_A U_B)}{\sum_{i=1}^{k} \lambda^A_i}
        \in [0, 1]

    (Elsayed et al. 2016): 1 if B's subspace captures as much of A's variance as A's own top
    subspace can. The chance level is the expected index for a uniformly random
    k-dimensional subspace, :math:`(k/N)\operatorname{tr}(\Sigma_A) / \sum_{i\le k}\lambda^A_i`
    (Elsayed et al. instead sampled random subspaces shaped by the data covariance, which gives
    a higher, more conservative chance level). ``relative_to_chance`` is index / chance.

    Units with a NaN variance in either matrix are left out of both (N counts the rest),
    with a warning; other non-finite entries, or a :math:`\Sigma_B` with fewer than k
    positive eigenvalues (its top subspace is then not unique), give NaN, with a warning.

    Parameters
    ----------
    cov_a, cov_b
        Covariances with dims ``(unit, unit_j)`` over the same units.
    n_components
        Dimension k of B's subspace, ``1 <= k <= N``.
    unit_dim
        Name of the unit dim.

    Returns
    -------
    xarray.Dataset
        Scalars ``alignment_index``, ``chance_level``, ``relative_to_chance``
        (index / chance) and ``fraction_of_variance``
        (:math:`\operatorname{tr}(U_B^\top\Sigma_A U_B)/\operatorname{tr}\Sigma_A`).

    References
    ----------
    Elsayed, G. F., Lara, A. H., Kaufman, M. T., Churchland, M. M. & Cunningham, J. P. (2016).
    Reorganization between preparatory and movement population responses in motor cortex.
    Nat. Commun. 7, 13239.
    """
    func = "alignment_index"
    a = _matrix(cov_a, "cov_a", unit_dim, "alignment_index")
    b = _matrix(cov_b, "cov_b", unit_dim, "alignment_index")
    _same_units(cov_a, cov_b, ("cov_a", "cov_b"), unit_dim)
    keep = np.isfinite(np.diag(a)) & np.isfinite(np.diag(b))
    _warn_left_out(keep, "cov_a' or 'cov_b")
    a, b = a[np.ix_(keep, keep)], b[np.ix_(keep, keep)]
    n = a.shape[0]
    k = check_int(n_components, name="n_components", owner=func, low=1)
    if k > n:
        raise InvalidParameterError(
            f"The 'n_components' parameter of {func} must be <= the number of units with a "
            f"finite variance ({n}). Got {k} instead."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        warn_nan(1, 1, "pair of covariances", "has non-finite entries")
        return _alignment_result(np.nan, np.nan, np.nan, k)
    lam_a = np.linalg.eigvalsh(a)[::-1]
    lam_b, vec_b = np.linalg.eigh(b)
    u_b = vec_b[:, ::-1][:, :k]
    rank_b = int(np.sum(lam_b > lam_b.max(initial=0.0) * n * np.finfo(float).eps))
    if rank_b < k:
        # B's top-k subspace would contain arbitrary directions of its null space.
        warnings.warn(
            f"The 'cov_b' parameter of {func} has only {rank_b} positive eigenvalues, fewer "
            f"than n_components={k}, so its top subspace is not unique; the index is NaN. "
            f"Use n_components <= {rank_b}.",
            RuntimeWarning,
            stacklevel=2,
        )
        return _alignment_result(np.nan, np.nan, np.nan, k)
    captured = float(np.trace(u_b.T @ a @ u_b))
    top = float(lam_a[:k].sum())
    total = float(np.trace(a))
    with np.errstate(invalid="ignore", divide="ignore"):
        index = captured / top if top > 0 else np.nan
        chance = (k / n) * total / top if top > 0 else np.nan
        frac = captured / total if total > 0 else np.nan
    warn_nan(int(top <= 0), 1, "covariance 'cov_a'", "has no positive variance")
    return _alignment_result(index, chance, frac, k)


def principal_angles(
    subspace_a: xr.DataArray,
    subspace_b: xr.DataArray,
    *,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Principal angles between two subspaces of unit space, smallest first.

    For orthonormal bases :math:`Q_A, Q_B` of the column spaces, the cosines of the angles
    are the singular values of :math:`Q_A^\top Q_B`:
    :math:`\cos\theta_i = \sigma_i(Q_A^\top Q_B)`, :math:`0 \le \theta_1 \le \dots \le
    \pi/2` (Björck & Golub 1973), computed with :func:`scipy.linalg.subspace_angles`.

    Parameters
    ----------
    subspace_a, subspace_b
        2-D arrays with the unit dim and one dim listing spanning vectors (any name, e.g.
        ``component``); the vectors need not be orthonormal.
    unit_dim
        Name of the unit dim.

    Returns
    -------
    xarray.DataArray
        ``"principal_angle"`` in radians over dim ``angle`` (length min(k_A, k_B)).

    References
    ----------
    Björck, Å. & Golub, G. H. (1973). Numerical methods for computing angles between linear
    subspaces. Math. Comput. 27, 579-594.
    """
    mats = []
    for name, sub in (("subspace_a", subspace_a), ("subspace_b", subspace_b)):
        check_dims(
            sub, [unit_dim], name=name, owner="principal_angles", params={unit_dim: "unit_dim"}
        )
        if sub.ndim != 2:
            raise InvalidParameterError(
                f"The '{name}' parameter must be 2-D: ({unit_dim!r}, <vectors>). "
                f"Got dims {sub.dims!r}."
            )
        other = next(d for d in sub.dims if d != unit_dim)
        m = np.asarray(sub.transpose(unit_dim, other).values, dtype=np.float64)
        if not np.all(np.isfinite(m)):
            raise InvalidParameterError(
                f"The '{name}' parameter must hold finite values; it has "
                f"{int(np.sum(~np.isfinite(m)))} NaN or infinite entries."
            )
        mats.append(m)
    _same_units(subspace_a, subspace_b, ("subspace_a", "subspace_b"), unit_dim)
    for name, m in zip(("subspace_a", "subspace_b"), mats):
        if np.linalg.matrix_rank(m) < m.shape[1]:
            raise InvalidParameterError(
                f"The '{name}' parameter must hold linearly independent vectors; its rank is "
                f"{np.linalg.matrix_rank(m)} < {m.shape[1]}."
            )
    angles = np.sort(subspace_angles(mats[0], mats[1]))
    return xr.DataArray(angles, dims=["angle"], name="principal_angle", attrs={"units": "radians"})


def top_subspace(
    cov: xr.DataArray,
    n_components: int,
    *,
    unit_dim: str = UNIT,
) -> xr.DataArray:
    r"""Orthonormal basis of a covariance's top principal subspace, for :func:`principal_angles`.

    The eigenvectors :math:`u_1, \dots, u_k` of :math:`\Sigma` with the ``k`` largest
    eigenvalues (:func:`numpy.linalg.eigh` of the symmetrised matrix), each with its sign fixed
    so that its largest-magnitude entry is positive (a deterministic basis). Units with a NaN
    variance are left out with a warning (their entries are 0).

    Parameters
    ----------
    cov
        Covariance with dims ``(unit, unit_j)``.
    n_components
        ``k``, ``1 <= k <= N``; fewer than ``k`` positive eigenvalues is an error (the subspace
        would not be unique).
    unit_dim
        Name of the unit dim.

    Returns
    -------
    xarray.DataArray
        ``subspace`` with dims ``(unit, component)``, the unit coords of ``cov``, and
        ``eigenvalue`` along ``component``.

    References
    ----------
    Jolliffe, I. T. (2002). Principal Component Analysis, 2nd ed. Springer, ch. 1.
    """
    k = check_int(n_components, name="n_components", owner="top_subspace", low=1)
    c = _matrix(cov, "cov", unit_dim, "top_subspace")
    n = c.shape[0]
    if k > n:
        raise ValueError(
            f"The 'n_components' parameter of top_subspace must be <= the number of units "
            f"({n}). Got {k} instead."
        )
    c_live, keep = drop_nan_units(c)
    _warn_left_out(keep, "cov")
    evals, evecs = np.linalg.eigh(c_live)
    order = np.argsort(evals)[::-1][:k]
    top = max(float(np.max(np.abs(evals))), np.finfo(float).tiny) if evals.size else 0.0
    if evals.size < k or np.sum(evals[order] > 1e-12 * top) < k:
        raise ValueError(
            f"top_subspace: the covariance has fewer than n_components={k} positive "
            "eigenvalues, so its top subspace is not unique."
        )
    vecs = evecs[:, order]
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(k)])
    vecs = vecs * np.where(signs == 0, 1.0, signs)
    full = np.zeros((n, k))
    full[keep] = vecs
    coords = {name: (unit_dim, var.values) for name, var in cov.coords.items()
              if var.dims == (unit_dim,)}
    return xr.DataArray(
        full, dims=(unit_dim, "component"),
        coords={**coords, "component": np.arange(k), "eigenvalue": ("component", evals[order])},
        name="subspace",
    )
