"""Loaders for public cortical recordings with repeated trials, and for a lab's own arrays.

Every loader returns the package's data model: an :class:`xarray.DataArray` with dims
``("trial", "stimulus", "unit")`` (``unit`` = neuron). Stimuli with fewer repeats than the
longest one are NaN-padded along ``trial``, never truncated; the statistics skip NaN.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from neurovar._validation import InvalidParameterError, check_bool, param_error
from neurovar.cortex.cache import REGISTRY, fetch
from neurovar.dims import RESPONSE_DIMS, STIMULUS, TRIAL, UNIT

if TYPE_CHECKING:
    import torch

__all__ = [
    "from_array",
    "load_cowley_v4",
    "load_cowley_v4_images",
    "load_semedo_v1v2",
    "require_counts",
]

COWLEY_CITATION = (
    "Cowley, B. R., Stan, P. L., Pillow, J. W. & Smith, M. A. (2023). Compact deep neural "
    "network models of visual cortex. bioRxiv 2023.11."
)
SEMEDO_CITATION = (
    "Semedo, J. D., Zandvakili, A., Machens, C. K., Yu, B. M. & Kohn, A. (2019). Cortical "
    "areas interact through a communication subspace. Neuron 102(1), 249-259."
)
_COWLEY_SESSIONS = {
    # session -> (animal, images available)
    "210325": ("PE", True),
    "201016": ("PE", False),
}


def _pad_repeats(per_stimulus: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-stimulus ``(n_repeats_s, n_units)`` arrays into ``(trial, stimulus, unit)``."""
    n_units = {a.shape[1] for a in per_stimulus}
    if len(n_units) != 1:
        raise InvalidParameterError(
            "The 'counts' parameter must give the same number of units for every stimulus. "
            f"Got unit counts {sorted(n_units)} instead."
        )
    n_trials = max(a.shape[0] for a in per_stimulus)
    out = np.full((n_trials, len(per_stimulus), n_units.pop()), np.nan)
    for s, a in enumerate(per_stimulus):
        out[: a.shape[0], s, :] = a
    return out


def from_array(
    counts: Any,
    *,
    dims: Sequence[str] = RESPONSE_DIMS,
    stimulus_ids: Sequence[Any] | None = None,
    unit_ids: Sequence[Any] | None = None,
    area: str | Sequence[str] | None = None,
    count_window: str | None = None,
    units: str = "spike count",
    mean_subtracted: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Wrap a lab's own response array as a ``("trial", "stimulus", "unit")`` DataArray.

    Parameters
    ----------
    counts
        Either an array-like whose axes are named by ``dims`` (NaN marks a missing repeat), or
        a sequence with one ``(n_repeats_s, n_units)`` array per stimulus, where
        ``n_repeats_s`` may differ between stimuli: shorter stimuli are NaN-padded along
        ``trial`` (never truncated), so every repeat is kept. A list or tuple of 2-d arrays is
        always read this way.
    dims
        Names of the axes of an array ``counts``, any order of ``"trial"``, ``"stimulus"`` and
        ``"unit"`` (e.g. ``("unit", "stimulus", "trial")`` for neurons x images x repeats).
    stimulus_ids, unit_ids
        Coordinates ``stimulus_id`` and ``unit_id``; default ``0..n-1``.
    area
        Brain area (one string for all units, or one per unit), stored as unit coord ``area``.
    count_window
        Counting window, e.g. ``"100 ms"``, stored in ``attrs`` (Fano factors and r_sc depend
        on it, so keep it next to the numbers).
    units
        Physical units of the values, stored in ``attrs["units"]``.
    mean_subtracted
        True if the values are residuals (per-stimulus means removed): then Fano factors are
        undefined and :func:`require_counts` refuses them. Stored as ``attrs["mean_subtracted"]``
        = 0/1 (netCDF has no booleans).
    attrs
        Extra attributes.

    Returns
    -------
    xarray.DataArray
        Float array with dims ``("trial", "stimulus", "unit")``, coord ``n_repeats`` on
        ``stimulus`` (number of non-NaN repeats of each stimulus).

    Raises
    ------
    ValueError
        If ``dims`` is not a permutation of the three dims (or is changed for a sequence of
        per-stimulus blocks), ``counts`` is neither a 3-d array nor a sequence of 2-d blocks
        with one common number of units, or an id sequence has the wrong length.
    """
    mean_subtracted = check_bool(mean_subtracted, name="mean_subtracted", owner="from_array")
    if isinstance(dims, str) or not isinstance(dims, Sequence):
        raise param_error("dims", "from_array", f"a permutation of {RESPONSE_DIMS!r}", dims)
    if attrs is not None and not isinstance(attrs, Mapping):
        raise param_error("attrs", "from_array", "a mapping or None", attrs)
    for pname, value in (("count_window", count_window), ("units", units)):
        if value is not None and not isinstance(value, str):
            raise param_error(pname, "from_array", "a str", value)
    dims = tuple(dims)
    if sorted(map(str, dims)) != sorted(RESPONSE_DIMS):
        raise InvalidParameterError(
            f"The 'dims' parameter of from_array must be a permutation of {RESPONSE_DIMS!r}. "
            f"Got {dims!r} instead."
        )
    if isinstance(counts, (list, tuple)) and counts and np.ndim(counts[0]) == 2:
        if dims != RESPONSE_DIMS:
            raise InvalidParameterError(
                "The 'dims' parameter of from_array names the axes of a 3-d array; a sequence of per-stimulus "
                "arrays is always read as (n_repeats, n_units) blocks. Got dims="
                f"{dims!r} with a sequence of {len(counts)} 2-d arrays instead; transpose the "
                "blocks to (n_repeats, n_units) and leave 'dims' at its default."
            )
        bad = [i for i, a in enumerate(counts) if np.ndim(a) != 2]
        if bad:
            raise InvalidParameterError(
                "The 'counts' parameter of from_array must be a sequence of 2-d (n_repeats, n_units) arrays, "
                f"one per stimulus. Got arrays with ndim != 2 at positions {bad[:5]} instead."
            )
        # _pad_repeats also checks that every stimulus has the same units
        data = _pad_repeats([np.asarray(a, dtype=float) for a in counts])
    else:
        try:
            data = np.asarray(counts, dtype=float)
        except (TypeError, ValueError):
            raise param_error(
                "counts",
                "from_array",
                "a numeric 3-d array or a sequence of 2-d arrays",
                type(counts).__name__,
                raw=True,
            ) from None
        if data.ndim != 3:
            raise InvalidParameterError(
                "The 'counts' parameter of from_array must be a 3-d array with axes named by 'dims' or a "
                "sequence of (n_repeats, n_units) arrays, one per stimulus. Got an array with "
                f"shape {data.shape} instead."
            )
        data = np.transpose(data, [dims.index(d) for d in RESPONSE_DIMS])
    n_trials, n_stimuli, n_units = data.shape
    stimulus_ids = np.arange(n_stimuli) if stimulus_ids is None else np.asarray(stimulus_ids)
    unit_ids = np.arange(n_units) if unit_ids is None else np.asarray(unit_ids)
    for pname, values, n in (
        ("stimulus_ids", stimulus_ids, n_stimuli),
        ("unit_ids", unit_ids, n_units),
    ):
        if len(values) != n:
            raise InvalidParameterError(
                f"The '{pname}' parameter of from_array must have length {n}. Got {len(values)} instead."
            )
    # A repeat counts as present when any unit has a value (units are recorded together).
    n_repeats = (~np.isnan(data)).any(axis=2).sum(axis=0)
    coords: dict[str, Any] = {
        TRIAL: np.arange(n_trials),
        "stimulus_id": (STIMULUS, stimulus_ids),
        "n_repeats": (STIMULUS, n_repeats),
        "unit_id": (UNIT, unit_ids),
    }
    if area is not None:
        coords["area"] = (UNIT, np.broadcast_to(np.asarray(area, dtype=str), (n_units,)).copy())
    out_attrs: dict[str, Any] = {"units": units, "mean_subtracted": int(bool(mean_subtracted))}
    if count_window is not None:
        out_attrs["count_window"] = count_window
    out_attrs.update(attrs or {})
    return xr.DataArray(data, dims=RESPONSE_DIMS, coords=coords, attrs=out_attrs, name="responses")


def require_counts(
    responses: xr.DataArray, *, name: str = "responses", owner: str = "require_counts"
) -> None:
    """Raise unless ``responses`` hold spike counts with their means (Fano factors need them).

    Data marked ``attrs["mean_subtracted"] = 1`` (residuals such as the Semedo et al. 2019
    sample, where the per-condition mean, i.e. the PSTH, has been removed) carry no
    information about the mean count, so the Fano factor :math:`F = \\sigma^2 / \\mu` is
    undefined for them. Noise correlations and covariances remain exact.

    ``owner`` is the public function named in the error (a caller checking its own argument
    passes its name).

    Raises
    ------
    ValueError
        If the data are marked as mean-subtracted, or the mark is not 0/1 (e.g. the string "1").
    """
    from neurovar.stats._util import require_counts as _require_counts

    _require_counts(responses, name, owner)


def _check_session(session: str) -> None:
    if session not in _COWLEY_SESSIONS:
        raise InvalidParameterError(
            f"The 'session' parameter must be one of {sorted(_COWLEY_SESSIONS)!r}. "
            f"Got {session!r} instead."
        )


def load_cowley_v4(
    session: str = "210325", *, data_home: str | os.PathLike[str] | None = None
) -> xr.DataArray:
    """Awake macaque V4 spike counts to natural images (Cowley, Stan, Pillow & Smith 2023).

    Parameters
    ----------
    session
        ``"210325"`` (50 neurons, 640 images shown 6-10 times, images available through
        :func:`load_cowley_v4_images`) or ``"201016"`` (82 neurons, 600 images shown 5-9
        times; its images are not public).
    data_home
        Cache folder, see :func:`neurovar.cortex.fetch`.

    Returns
    -------
    xarray.DataArray
        Spike counts in 100 ms bins with dims ``("trial", "stimulus", "unit")``; ``trial`` is
        the repeat slot (10 slots, NaN where an image had fewer repeats). Stimulus coords
        ``stimulus_id`` (0-based image index), ``image_file`` (``"image0001.jpg"``...),
        ``n_repeats``; unit coords ``unit_id`` and ``area`` (``"V4"``). ``attrs`` carry the
        source URL, commit, sha256, licence, citation, count window and units.

    Notes
    -----
    The file stores ``(neurons, images, repeat slots)``; here it is transposed, not altered.
    The NaN pattern is the same for all neurons of a session (they were recorded together).

    References
    ----------
    Cowley, B. R., Stan, P. L., Pillow, J. W. & Smith, M. A. (2023). Compact deep neural
    network models of visual cortex. bioRxiv 2023.11.
    """
    _check_session(session)
    name = f"cowley2023_v4/responses_{session}.npy"
    path = fetch(name, data_home=data_home)
    raw = np.load(path, allow_pickle=False)  # (neurons, images, repeat slots)
    n_units, n_images, _ = raw.shape
    remote = REGISTRY[name]
    animal, has_images = _COWLEY_SESSIONS[session]
    da = from_array(
        raw,
        dims=(UNIT, STIMULUS, TRIAL),
        stimulus_ids=np.arange(n_images),
        unit_ids=np.array([f"{session}_{i:03d}" for i in range(n_units)]),
        area="V4",
        count_window="100 ms",
        attrs={
            "dataset": "cowley2023_v4",
            "session": session,
            "animal": animal,
            "species": "macaque",
            "preparation": "awake",
            "source": remote.url,
            "commit": remote.commit,
            "sha256": remote.sha256,
            "licence": remote.licence,
            "citation": COWLEY_CITATION,
            "images_available": int(has_images),
        },
    )
    return da.assign_coords(
        image_file=(STIMULUS, [f"image{i + 1:04d}.jpg" for i in range(n_images)])
    )


def load_cowley_v4_images(
    session: str = "210325", *, data_home: str | os.PathLike[str] | None = None
) -> torch.Tensor:
    """The natural images shown in a Cowley et al. (2023) V4 session, as a float tensor.

    Parameters
    ----------
    session
        Only ``"210325"`` has public images.
    data_home
        Cache folder, see :func:`neurovar.cortex.fetch`.

    Returns
    -------
    torch.Tensor
        ``float32`` tensor of shape ``(640, 3, 112, 112)`` with values in ``[0, 1]``
        (RGB, decoded from the JPEGs with PIL); image ``i`` is stimulus ``i`` of
        :func:`load_cowley_v4`. Resize it to a model's input size with
        ``torch.nn.functional.interpolate``.
    """
    import torch
    from PIL import Image

    _check_session(session)
    if not _COWLEY_SESSIONS[session][1]:
        available = sorted(s for s, (_, ok) in _COWLEY_SESSIONS.items() if ok)
        raise InvalidParameterError(
            f"The 'session' parameter must be a session with public images, one of "
            f"{available!r}. Got {session!r} instead (its images were not released)."
        )
    path = fetch(f"cowley2023_v4/images_{session}.zip", data_home=data_home)
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith(".jpg"))
        expected = [f"image{i + 1:04d}.jpg" for i in range(len(names))]
        if [n.rsplit("/", 1)[-1] for n in names] != expected:
            raise OSError(f"Unexpected image file names in {path}: {names[:3]}...")
        arrays = []
        for n in names:
            with Image.open(io.BytesIO(zf.read(n))) as img:
                arrays.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    stacked = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(stacked))


def load_semedo_v1v2(
    *,
    data_home: str | os.PathLike[str] | None = None,
    bins: str = "separate",
) -> dict[str, xr.DataArray]:
    """Anesthetized macaque V1 and V2 residuals, 400 repeats of one drifting grating.

    Sample data of Semedo, Zandvakili, Machens, Yu & Kohn (2019): the MATLAB file holds ``X``
    (79 V1 "source" neurons), ``Y_V1`` (31 other V1 neurons) and ``Y_V2`` (31 V2 neurons),
    each with 4000 rows = 400 trials x 10 consecutive time bins (trial-major). The values are
    spike counts minus the PSTH, i.e. minus the across-trial mean of each time bin.

    Parameters
    ----------
    data_home
        Cache folder, see :func:`neurovar.cortex.fetch`.
    bins
        ``"separate"`` (default): each time bin is one ``stimulus`` (10 stimuli, coord
        ``time_bin``). This is what the data are: residuals about a per-bin mean, exactly the
        role a stimulus condition plays in a noise-correlation analysis, so noise statistics
        computed per stimulus and averaged are per-bin statistics. ``"summed"``: residuals
        summed over the 10 bins, one ``stimulus`` (the whole-trial count residual; sums of
        residuals are residuals of sums, so this is exact), i.e. a 10x longer count window.

    Returns
    -------
    dict
        ``{"V1": DataArray, "V2": DataArray}`` with dims ``("trial", "stimulus", "unit")``:
        V1 has 110 units (unit coord ``population`` = ``"X"`` for the 79 source neurons and
        ``"Y_V1"`` for the 31 target neurons), V2 has 31. ``attrs["mean_subtracted"] = 1``,
        so :func:`require_counts` (and Fano-factor functions that call it) refuse them.

    Notes
    -----
    The sample file does not state the bin width; Semedo et al. (2019) analysed spike counts
    in 100 ms bins, so each bin is recorded as ``count_window="100 ms (per Semedo et al.
    2019)"`` and the summed version as ``"10 x 100 ms"``. Signal correlations are undefined
    here (all means are zero by construction).

    References
    ----------
    Semedo, J. D., Zandvakili, A., Machens, C. K., Yu, B. M. & Kohn, A. (2019). Cortical
    areas interact through a communication subspace. Neuron 102(1), 249-259.
    """
    from scipy.io import loadmat

    if bins not in ("separate", "summed"):
        raise InvalidParameterError(
            f"The 'bins' parameter must be 'separate' or 'summed'. Got {bins!r} instead."
        )
    name = "semedo2019_v1v2/sample_data.mat"
    path = fetch(name, data_home=data_home)
    mat = loadmat(path)
    n_trials, n_bins = 400, 10
    remote = REGISTRY[name]
    common = {
        "dataset": "semedo2019_v1v2",
        "species": "macaque",
        "preparation": "anesthetized",
        "stimulus": "drifting grating (one condition)",
        "source": remote.url,
        "commit": remote.commit,
        "sha256": remote.sha256,
        "licence": remote.licence,
        "citation": SEMEDO_CITATION,
    }

    def wrap(keys: Sequence[str], area: str) -> xr.DataArray:
        blocks = [np.asarray(mat[k], dtype=float).reshape(n_trials, n_bins, -1) for k in keys]
        data = np.concatenate(blocks, axis=2)
        population = np.concatenate([[k] * b.shape[2] for k, b in zip(keys, blocks)])
        within = np.concatenate([np.arange(b.shape[2]) for b in blocks])
        if bins == "summed":
            data = data.sum(axis=1, keepdims=True)
            stimulus_ids, window = ["grating"], "10 x 100 ms (summed bins)"
        else:
            stimulus_ids, window = (
                [f"bin{b}" for b in range(n_bins)],
                "100 ms (per Semedo et al. 2019)",
            )
        da = from_array(
            data,
            dims=(TRIAL, STIMULUS, UNIT),
            stimulus_ids=stimulus_ids,
            unit_ids=[f"{p}_{i:03d}" for p, i in zip(population, within)],
            area=area,
            count_window=window,
            units="spike count minus across-trial mean (residual)",
            mean_subtracted=True,
            attrs={**common, "bins": bins},
        )
        da = da.assign_coords(population=(UNIT, population))
        if bins == "separate":
            da = da.assign_coords(time_bin=(STIMULUS, np.arange(n_bins)))
        return da

    return {"V1": wrap(["X", "Y_V1"], "V1"), "V2": wrap(["Y_V2"], "V2")}
