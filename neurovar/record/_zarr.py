"""Streaming a recording to a zarr store, chunk of stimuli by chunk, with its progress marks."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._validation import check_memory, param_error
from ..dims import STIMULUS, TRIAL, UNIT
from . import _state as _store
from ._inputs import _OWNER
from ._resume import _root_attrs


def _check_size(
    out: Mapping[str, torch.Tensor], n_trials: int, n_stim: int, store: Path | None
) -> None:
    """Refuse a recording whose result cannot fit in memory (or on disk for a store)."""
    n_units = sum(int(np.prod(t.shape[2:])) for t in out.values())
    n_bytes = 4.0 * n_trials * n_stim * n_units
    if store is None:
        check_memory(
            n_bytes, name="n_trials", owner=_OWNER, value=n_trials, what="the recorded activations"
        )
        return
    import shutil

    free = shutil.disk_usage(store.parent if store.parent.exists() else Path(".")).free
    if n_bytes > free:
        raise param_error(
            "n_trials",
            _OWNER,
            "small enough for the store to fit on disk",
            n_trials,
            hint=f"The store needs about {n_bytes / 2**30:.3g} GiB, {free / 2**30:.3g} GiB are free.",
        )


def _init_store(
    path: Path,
    datasets: Mapping[str, xr.Dataset],
    *,
    n_chunks: int,
    stim_chunk: int,
    fingerprint: Mapping[str, str],
    state: str,
    not_resumable: str,
) -> None:
    """Write metadata and coordinates of every layer; the activations follow region by region.

    The root attrs mark the store incomplete until :func:`_mark_complete` runs; ``state`` is
    the random state before the first chunk (see :data:`_PROGRESS_ATTRS`).
    """
    root_attrs = {k: v for k, v in next(iter(datasets.values())).attrs.items() if k != "layer"}
    root_attrs.update(
        neurovar_complete=0,
        neurovar_chunks_written=0,
        neurovar_n_chunks=n_chunks,
        neurovar_chunk_stimuli=stim_chunk,
        neurovar_fingerprint=json.dumps(dict(fingerprint), sort_keys=True),
        neurovar_resume_state=state,
        neurovar_not_resumable=not_resumable,
        neurovar_writer=_store.writer_mark(),
        neurovar_heartbeat=_store.now_text(),
    )
    xr.Dataset(attrs=root_attrs).to_zarr(path, mode="w-", consolidated=False)
    for name, ds in datasets.items():
        ds.to_zarr(path, group=name, mode="w-", compute=False, consolidated=False)


def _set_root_attrs(path: Path, **attrs: Any) -> None:
    import zarr

    zarr.open_group(str(path), mode="r+").attrs.update(attrs)


def _write_region(
    path: Path,
    chunk: Mapping[str, np.ndarray],
    a: int,
    b: int,
    n_done: int,
    state: str,
    not_resumable: str,
) -> None:
    for name, values in chunk.items():
        part = xr.Dataset({"activation": ((TRIAL, STIMULUS, UNIT), values)})
        part.to_zarr(path, group=name, region={STIMULUS: slice(a, b)}, consolidated=False)
    # only after every layer's region; the count and the random state after it in one
    # (atomic) write of the root metadata, so they always agree
    _set_root_attrs(
        path,
        neurovar_chunks_written=n_done,
        neurovar_resume_state=state,
        neurovar_not_resumable=not_resumable,
        neurovar_heartbeat=_store.now_text(),
    )


def _mark_complete(path: Path) -> None:
    # no writer and no time left behind: a finished store does not depend on when or by whom
    _set_root_attrs(
        path,
        neurovar_complete=1,
        neurovar_resume_state="",
        neurovar_writer="",
        neurovar_heartbeat="",
    )


def _release_writer(path: Path) -> None:
    """After a failed recording: this process no longer writes the store at ``path`` (if it
    is there and names this process as its writer), so it reads as interrupted, resumable."""
    attrs = _root_attrs(path)
    if attrs is None:
        return
    try:
        mark = json.loads(str(attrs.get("neurovar_writer", "")))
    except ValueError:
        return
    if isinstance(mark, dict) and mark.get("pid") == os.getpid():
        with contextlib.suppress(Exception):  # never mask the recording's own error
            _set_root_attrs(path, neurovar_writer="")


def _writer_error(attrs: Mapping[str, Any] | None, path: Path, flag: str) -> None:
    """Refuse ``flag`` (resume or overwrite) while another process is writing the store."""
    if attrs is None or int(attrs.get("neurovar_complete", 1)):
        return
    writer = _store.live_writer(attrs)
    if writer is None or not writer[1]:
        return
    raise param_error(
        flag,
        _OWNER,
        "True only for a store that no process is writing",
        f"{flag}=True for {str(path)!r}, which is being written by {writer[0]}",
        raw=True,
        hint="Nothing on disk was changed; wait for that process to finish (a second writer "
        "would interleave its chunks with the first's), or stop it first.",
    )


def check_store(store: Any, *, overwrite: bool, resume: bool) -> Path | None:
    """The ``store`` path of a recording call (None for an in-memory recording).

    Refuses a path that is not a ``.zarr`` one and an existing path unless ``overwrite`` or
    ``resume`` (naming an interrupted store and a store that another process is writing).
    """
    if store is None:
        return None
    if not isinstance(store, (str, Path)):
        raise param_error("store", _OWNER, "a path (str or pathlib.Path) ending in '.zarr'", store)
    store_path = Path(store)
    if store_path.suffix != ".zarr":
        raise param_error(
            "store",
            _OWNER,
            "a path ending in '.zarr' (streamed chunk by chunk)",
            str(store),
            hint="Use save_recording(tree, 'file.nc') for netCDF.",
        )
    old = _root_attrs(store_path) if store_path.exists() else None
    if store_path.exists() and not overwrite and not resume:
        unfinished = old is not None and not int(old.get("neurovar_complete", 1))
        writer = _store.live_writer(old) if unfinished else None
        if writer is not None and writer[1]:
            raise FileExistsError(
                f"The 'store' path {str(store_path)!r} already exists and is being "
                f"written by {writer[0]}; wait for it to finish, or choose another path. "
                "Nothing was written."
            )
        raise FileExistsError(
            f"The 'store' path {str(store_path)!r} already exists"
            + (
                " and is an interrupted, incomplete recording; pass resume=True (with the "
                "same arguments) to finish it, "
                if unfinished
                else "; pass "
            )
            + "overwrite=True to replace it or choose another path. Nothing was written."
        )
    _writer_error(old, store_path, "resume" if resume else "overwrite")
    return store_path
