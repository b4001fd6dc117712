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
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["write_cell", "is_done", "read_cell", "done_cells", "assemble", "to_tidy",
           "GRID_DIMS"]

#: Dims of the assembled results, in order.
GRID_DIMS: tuple[str, ...] = ("seed", "regime", "condition", "magnitude", "layer")


def _cell_dir(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / "cells" / cell_id


def is_done(out_dir: str | Path, cell_id: str) -> bool:
    """Whether the cell's folder is complete (both files present, renamed into place)."""
    d = _cell_dir(Path(out_dir), cell_id)
    return (d / "result.nc").is_file() and (d / "spec.json").is_file()


def write_cell(out_dir: str | Path, spec: Any, result: Any) -> Path:
    """Write a cell atomically: build ``cells/.<id>.<random>.tmp/``, then rename it to
    ``cells/<id>/``. Writing a cell that exists replaces it atomically (same content for the
    same spec); an interrupted write leaves only a ``.tmp`` folder, ignored and cleaned later.
    """
    cells = Path(out_dir) / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    final = cells / spec.cell_id
    tmp = cells / f".{spec.cell_id}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        result.dataset.to_netcdf(tmp / "result.nc", engine="h5netcdf")
        meta = {**spec.to_dict(), "info": result.info}
        (tmp / "spec.json").write_text(json.dumps(meta, indent=1, default=float))
        if final.exists():  # a rerun of a finished cell: swap, then drop the old copy
            old = cells / f".{spec.cell_id}.{uuid.uuid4().hex[:8]}.old"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_cell(out_dir: str | Path, cell_id: str) -> tuple[xr.Dataset, dict[str, Any]]:
    """The cell's Dataset (loaded into memory) and its ``spec.json``."""
    d = _cell_dir(Path(out_dir), cell_id)
    with xr.open_dataset(d / "result.nc", engine="h5netcdf") as ds:
        data = ds.load()
    return data, json.loads((d / "spec.json").read_text())


def done_cells(out_dir: str | Path) -> list[str]:
    """Ids of the finished cells in ``out_dir/cells`` (temporary folders ignored)."""
    cells = Path(out_dir) / "cells"
    if not cells.is_dir():
        return []
    return sorted(p.name for p in cells.iterdir() if not p.name.startswith(".")
                  and is_done(out_dir, p.name))


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


def to_tidy(results: xr.Dataset) -> pd.DataFrame:
    """Tidy table of accuracies: one row per cell x noise_at_test x target x strength.

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
