"""The cell store: one folder per finished cell, written atomically; results assembled from it.

``DIR/cells/<cell_id>/`` holds ``result.nc`` (the cell's Dataset) and ``spec.json`` (its
coordinates and settings). A cell folder is written under a temporary name and renamed into
place, so a kill loses at most the cells that were running and never leaves a half-written
cell that looks finished. ``results.nc`` and ``results.csv`` are always assembled from
``cells/``, so :func:`assemble` (and ``neurovar report``) can rebuild them at any time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from neurovar._io import atomic_path
from neurovar._validation import InvalidParameterError, param_error

from .registry import GRID_DIMS  # the dims of the results (defined once, in the registry)

__all__ = ["write_cell", "is_done", "read_cell", "done_cells", "assemble", "results_table",
           "GRID_DIMS", "MissingFolderError", "CorruptCellError"]

#: A cell id is a plain folder name: no path separator, no ``..``, not hidden.
_CELL_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


class MissingFolderError(InvalidParameterError, FileNotFoundError):
    """A results folder that does not exist (both a ``ValueError`` and a
    ``FileNotFoundError``)."""


class CorruptCellError(ValueError):
    """A finished cell's file cannot be read (truncated, damaged, not netCDF / JSON)."""


def check_results_folder(out_dir: Any, *, owner: str, name: str = "out_dir") -> Path:
    """``out_dir`` as a Path to an existing folder, or a clear error saying what it is."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise param_error(name, owner, "a path to a results folder (str or Path)", out_dir)
    out = Path(out_dir)
    if not out.exists():
        raise MissingFolderError(
            f"The {name!r} parameter of {owner} must be an existing results folder. Got "
            f"{str(out)!r} instead: it does not exist.", name=name, owner=owner)
    if not out.is_dir():
        raise param_error(name, owner, "a results folder", str(out),
                          hint="It is a file, not a folder.")
    return out


def _check_cell_id(cell_id: Any, owner: str) -> str:
    if not (isinstance(cell_id, str) and _CELL_ID.match(cell_id) and ".." not in cell_id):
        raise param_error("cell_id", owner, "a plain cell folder name (letters, digits, '_', "
                          "'-', '.'; no path separator, no '..', not starting with '.')",
                          cell_id)
    return cell_id


def _cell_dir(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / "cells" / cell_id


def is_done(out_dir: str | Path, cell_id: str) -> bool:
    """Whether the cell's folder is complete (both files present, renamed into place).

    Raises
    ------
    MissingFolderError
        ``out_dir`` does not exist (a typo must not read as "nothing done yet").
    InvalidParameterError
        ``cell_id`` is not a plain folder name.
    """
    out = check_results_folder(out_dir, owner="is_done")
    d = _cell_dir(out, _check_cell_id(cell_id, "is_done"))
    return (d / "result.nc").is_file() and (d / "spec.json").is_file()


def write_cell(out_dir: str | Path, spec: Any, result: Any) -> Path:
    """Write a cell atomically (:func:`neurovar._io.atomic_path`): build a hidden sibling
    ``cells/.<id>.tmp-<random>/``, then rename it to ``cells/<id>/``. Writing a cell that exists
    replaces it (same content for the same spec; the old folder is deleted only once the new
    one is in place); an interrupted write leaves no ``cells/<id>/``.
    """
    cells = Path(out_dir) / "cells"
    final = cells / _check_cell_id(getattr(spec, "cell_id", None), "write_cell")
    with atomic_path(final, overwrite=True, owner="write_cell") as tmp:
        tmp.mkdir()
        result.dataset.to_netcdf(tmp / "result.nc", engine="h5netcdf")
        meta = {**spec.to_dict(), "info": result.info}
        (tmp / "spec.json").write_text(json.dumps(meta, indent=1, default=float))
    return final


def read_cell(out_dir: str | Path, cell_id: str) -> tuple[xr.Dataset, dict[str, Any]]:
    """The cell's Dataset (loaded into memory) and its ``spec.json``.

    Raises
    ------
    MissingFolderError
        ``out_dir`` does not exist.
    InvalidParameterError
        ``cell_id`` is not a plain folder name (``../x`` is refused, never followed).
    FileNotFoundError
        The cell is not finished (its folder or one of its two files is missing).
    CorruptCellError
        A file of the cell cannot be read; the message names the file and what is wrong.
    """
    out = check_results_folder(out_dir, owner="read_cell")
    d = _cell_dir(out, _check_cell_id(cell_id, "read_cell"))
    for name in ("result.nc", "spec.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"Cell {cell_id!r} of {str(out)!r} is not finished: "
                                    f"{str(d / name)!r} does not exist.")
    fix = (f"Delete the cell folder {str(d)!r} and run the experiment again into "
           f"{str(out)!r} to recompute this cell (the other cells are kept).")
    try:
        with xr.open_dataset(d / "result.nc", engine="h5netcdf") as ds:
            data = ds.load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        size = (d / "result.nc").stat().st_size
        why = (str(err).splitlines() or [""])[0]
        raise CorruptCellError(
            f"The cell file {str(d / 'result.nc')!r} ({size} bytes) cannot be read as netCDF: "
            f"it is truncated or damaged ({type(err).__name__}: {why}). {fix}"
        ) from err
    try:
        spec = json.loads((d / "spec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptCellError(
            f"The cell file {str(d / 'spec.json')!r} is not valid JSON ({err}): it is "
            f"truncated or damaged. {fix}"
        ) from err
    if not isinstance(spec, dict):
        raise CorruptCellError(f"The cell file {str(d / 'spec.json')!r} holds "
                               f"{type(spec).__name__}, not a JSON object. {fix}")
    return data, spec


def done_cells(out_dir: str | Path) -> list[str]:
    """Ids of the finished cells in ``out_dir/cells`` (temporary folders ignored).

    Raises
    ------
    MissingFolderError
        ``out_dir`` does not exist (a folder without ``cells/`` has no finished cell: ``[]``).
    """
    out = check_results_folder(out_dir, owner="done_cells")
    cells = out / "cells"
    if not cells.is_dir():
        return []
    return sorted(p.name for p in cells.iterdir() if not p.name.startswith(".")
                  and _CELL_ID.match(p.name) and ".." not in p.name
                  and is_done(out, p.name))


def assemble(out_dir: str | Path, specs: Sequence[Any], magnitudes: Sequence[float]) -> xr.Dataset:
    """Combine the finished cells of ``specs`` into one Dataset over :data:`GRID_DIMS`.

    Conditions that inject nothing (``none`` and the positive controls: one cell per seed,
    regime and layer, ``magnitude = 0``) are repeated for every magnitude. Missing cells and combinations that do not apply (noise off in the
    test-time regime) are NaN.
    """
    parts = []
    for spec in specs:
        if not is_done(out_dir, spec.cell_id):
            continue
        ds, _ = read_cell(out_dir, spec.cell_id)
        ds.attrs = {}
        grid = {d: ds.coords[d].values.item() for d in GRID_DIMS}
        ds = ds.drop_vars(list(GRID_DIMS))
        # a cell that injects nothing (none, positive controls) serves every magnitude
        mags = list(magnitudes) if float(grid["magnitude"]) == 0.0 else [grid["magnitude"]]
        for m in mags:
            coords = {**grid, "magnitude": float(m)}
            parts.append(ds.expand_dims({d: [coords[d]] for d in GRID_DIMS}))
    if not parts:
        raise FileNotFoundError(f"No finished cells under {str(Path(out_dir) / 'cells')!r}.")
    out = xr.combine_by_coords(parts, combine_attrs="drop", join="outer",
                               data_vars="all", coords="different", compat="no_conflicts")
    if "noise_at_test" in out.dims:
        out = out.sortby("noise_at_test", ascending=False)
    return out


def results_table(results: xr.Dataset) -> pd.DataFrame:
    """The run's ``results.csv``: accuracies, one row per cell x noise_at_test x target x
    strength.

    Columns: ``seed, regime, condition, magnitude, layer, noise_at_test, target,
    target_family, target_kind, target_protocol, strength, accuracy, n, ci_low, ci_high``
    (Wilson), the cell's ``clean_accuracy``, ``noise_to_signal`` (total noise variance over the
    clean activation variance of the layer as the network ended: the magnitude really reached),
    alignment with the target (``target_alignment``: noise variance along the target's top
    perturbation directions relative to isotropic noise; ``alignment_index``), the noise's
    ``participation_ratio``, the layer's ``trial_variance``, ``fano_factor`` (NaN where not
    defined; ``fano_reason`` says why) and ``noise_correlation``, and per attack target
    the ``pgd_ce`` accuracy and the ``square`` accuracy (masking diagnostics). Rows that do not
    apply (noise off in the test-time regime, padded strengths) are dropped. Readable by pandas,
    statsmodels and ``neurovar stats``.
    """
    from statsmodels.stats.proportion import proportion_confint

    acc = results["accuracy"]
    df = acc.to_dataframe().reset_index()  # carries the strength_value / target_* coords
    df = df[np.isfinite(df["accuracy"]) & np.isfinite(df["strength_value"])].copy()
    df = df.drop(columns=["strength"]).rename(columns={"strength_value": "strength"})
    keys = [*GRID_DIMS, "noise_at_test"]
    extra = []
    for var in ("clean_accuracy", "eot_gap", "gradient_snr"):
        extra.append(results[var].to_dataframe().reset_index()[[*keys, var]])
    for var in ("participation_ratio", "noise_to_signal", "trial_variance", "fano_factor",
                "fano_reason", "noise_correlation"):
        if var in results:
            extra.append(results[var].to_dataframe().reset_index()[[*GRID_DIMS, var]])
    for frame in extra:
        on = [k for k in keys if k in frame.columns]
        df = df.merge(frame, on=on, how="left")
    align = results[["target_alignment", "alignment_index"]].to_dataframe().reset_index()
    df = df.merge(align[[*GRID_DIMS, "target", "target_alignment", "alignment_index"]],
                  on=[*GRID_DIMS, "target"], how="left")
    n = int(results.sizes["stimulus"])
    df["n"] = n
    succ = np.round(df["accuracy"].to_numpy() * n).astype(int)
    low, high = proportion_confint(succ, n, alpha=0.05, method="wilson")
    df["ci_low"], df["ci_high"] = low, high
    for col in ("target_family", "target_kind", "target_protocol"):
        if col in df.columns or col not in results.coords:
            continue
        df = df.merge(results[col].to_dataframe().reset_index()[["target", col]], on="target")
    order = [*GRID_DIMS, "noise_at_test", "target", "target_family", "target_kind",
             "target_protocol", "strength", "accuracy", "n", "ci_low", "ci_high",
             "clean_accuracy", "noise_to_signal", "target_alignment", "alignment_index",
             "participation_ratio", "trial_variance", "fano_factor", "fano_reason",
             "noise_correlation", "eot_gap", "gradient_snr"]
    df = df[[c for c in order if c in df.columns]]
    df["noise_at_test"] = df["noise_at_test"].astype(bool)
    return df.sort_values([*GRID_DIMS, "noise_at_test", "target", "strength"]).reset_index(drop=True)


def to_tidy(results: xr.Dataset) -> pd.DataFrame:
    """Deprecated name of :func:`results_table` (one ``to_tidy`` in the package:
    :func:`neurovar.inference.to_tidy`, for any xarray result)."""
    import warnings

    warnings.warn("neurovar.experiment.to_tidy was renamed results_table (neurovar.inference."
                  "to_tidy is the general xarray -> DataFrame conversion); the old name will be "
                  "removed in the next release", FutureWarning, stacklevel=2)
    return results_table(results)
