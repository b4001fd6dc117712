"""Saving and loading recordings (netCDF or zarr), and refusing an unfinished store."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import xarray as xr

from .._validation import check_bool, check_instance, param_error
from ..dims import STIMULUS
from . import _state as _store
from ._layout import _drop_unit_index, _index_units
from ._resume import _PROGRESS_ATTRS


def save_recording(tree: xr.DataTree, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save a recording (DataTree) to netCDF (``.nc``, h5netcdf engine) or zarr (``.zarr``).

    Round trips through :func:`load_recording` are exact: values, dtypes, coords and attrs.
    An existing path is an error unless ``overwrite=True``.
    """
    from .._io import atomic_path

    owner = "save_recording"
    check_instance(tree, xr.DataTree, name="tree", owner=owner, expected="an xarray.DataTree")
    overwrite = check_bool(overwrite, name="overwrite", owner=owner)
    if not isinstance(path, (str, Path)):
        raise param_error(
            "path", owner, "a path (str or pathlib.Path) ending in '.nc' or '.zarr'", path
        )
    path = Path(path)
    if path.suffix not in (".nc", ".zarr"):
        raise param_error("path", owner, "a path ending in '.nc' or '.zarr'", str(path))
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"The 'path' {str(path)!r} already exists; pass overwrite=True to replace it. Nothing was written."
        )
    from .._io import encode_tree_attrs

    plain = encode_tree_attrs(tree.map_over_datasets(_drop_unit_index), owner=owner)
    # written to a temporary sibling and renamed into place: a failed save leaves nothing
    # behind, and a failed overwrite leaves the old file as it was
    with atomic_path(path, overwrite=overwrite, owner=owner) as tmp:
        if path.suffix == ".nc":
            plain.to_netcdf(tmp, engine="h5netcdf", mode="w")
        else:
            plain.to_zarr(tmp, mode="w-", consolidated=False)
    return path


class IncompleteRecordingError(RuntimeError):
    """A store streamed by ``record_activations(store=...)`` was not finished (the recording
    raised or was killed); its unwritten stimuli would read as NaN."""


def load_recording(
    path: str | Path,
    *,
    chunks: Mapping[str, int] | None = None,
    allow_incomplete: bool = False,
) -> xr.DataTree:
    """Open a recording written by :func:`save_recording` or ``record_activations(store=...)``.

    Data are opened lazily with dask (``chunks={}`` uses the on-disk chunks); ``channel`` is
    made a selectable index again.

    A store streamed by ``record_activations(store=...)`` records its progress in its root
    attrs (chunks written, in order; a completion flag written last). An interrupted store
    (exception in a hook, ``kill -9``) raises :class:`IncompleteRecordingError` naming how
    many stimuli are missing, because its unwritten stimuli read as NaN, which is also what
    legitimate trial padding looks like. ``allow_incomplete=True`` opens it anyway with a
    :class:`RuntimeWarning`, keeping only the stimuli that were written.

    While a recording writes a store, the store names its writer (pid, host, when it started)
    and the time of its last chunk; a store that a live process of this host is still writing
    is reported as such ("being written by process N ... since ..."), not as interrupted, and
    ``record_activations(..., resume=True)`` (or ``overwrite=True``) refuses it until that
    process ends. A writer on another host cannot be checked: the message names it.
    """
    owner = "load_recording"
    allow_incomplete = check_bool(allow_incomplete, name="allow_incomplete", owner=owner)
    if not isinstance(path, (str, Path)):
        raise param_error("path", owner, "a path (str or pathlib.Path)", path)
    if chunks is not None and not isinstance(chunks, Mapping):
        raise param_error("chunks", owner, "a mapping {dim: chunk size} or None", chunks)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"The 'path' parameter of load_recording: {str(path)!r} does not exist."
        )
    if path.suffix == ".zarr":
        tree = xr.open_datatree(path, engine="zarr", chunks=dict(chunks or {}), consolidated=False)
    else:
        tree = xr.open_datatree(path, engine="h5netcdf", chunks=dict(chunks or {}))
    from .._io import decode_tree_attrs

    tree = decode_tree_attrs(tree)
    if "neurovar_complete" in tree.attrs:
        tree = _check_complete(tree, path, allow_incomplete)
    return tree.map_over_datasets(_index_units)


def _check_complete(tree: xr.DataTree, path: Path, allow_incomplete: bool) -> xr.DataTree:
    attrs = dict(tree.attrs)
    complete = int(attrs.get("neurovar_complete", 1))
    n_chunks = int(attrs.get("neurovar_n_chunks", 0))
    written = int(attrs.get("neurovar_chunks_written", n_chunks))
    per_chunk = int(attrs.get("neurovar_chunk_stimuli", 1))
    reason = str(attrs.get("neurovar_not_resumable", ""))
    writer = None if complete else _store.live_writer(attrs)
    for key in _PROGRESS_ATTRS:
        attrs.pop(key, None)
    tree.attrs = attrs
    if complete:
        return tree
    layers = [name for name in tree.children if "activation" in tree[name].ds]
    n_stim = int(tree[layers[0]].ds.sizes[STIMULUS]) if layers else 0
    n_ok = min(n_stim, written * per_chunk)
    finish = (
        f"It cannot be resumed ({reason}): record it again (overwrite=True)"
        if reason
        else "record_activations(..., store=path, resume=True) with the same arguments "
        "finishes it exactly"
    )
    if writer is not None and writer[1]:
        message = (
            f"The recording store {str(path)!r} is incomplete: it is being written by "
            f"{writer[0]}, and {n_ok} of {n_stim} stimuli ({written} of {n_chunks} chunks) are "
            "written so far. Wait for that process to finish, or pass allow_incomplete=True to "
            f"open the {n_ok} stimuli written so far."
        )
    else:
        unsure = (
            f" It was being written by {writer[0]}, which cannot be checked from this host: if "
            "that process still runs, wait for it instead of resuming."
            if writer is not None
            else ""
        )
        message = (
            f"The recording store {str(path)!r} is incomplete: {n_stim - n_ok} of {n_stim} "
            f"stimuli ({n_chunks - written} of {n_chunks} chunks) were never written, because "
            f"the recording was interrupted. {finish}; or pass allow_incomplete=True to open "
            f"the {n_ok} stimuli that were written.{unsure}"
        )
    if not allow_incomplete:
        raise IncompleteRecordingError(message)
    warnings.warn(message + " Only those are returned.", RuntimeWarning, stacklevel=3)
    tree = tree.isel({STIMULUS: slice(0, n_ok)})
    tree.attrs = {**attrs, "incomplete": 1}
    return tree
