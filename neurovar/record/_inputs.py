"""Checks of a recording call's inputs: the layers, the stimuli and their precision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from .._progress import check_progress
from .._torch import layer_names, model_dtype
from .._validation import (
    check_bool,
    check_instance,
    check_int,
    check_model_input,
    check_rng,
    param_error,
)

#: The function every error of a recording call names.
_OWNER = "record_activations"


def _check_layers(model: nn.Module, layers: Sequence[str] | str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
        raise param_error("layers", _OWNER, "a layer name or a sequence of layer names", layers)
    layers = list(layers)
    if not layers:
        raise param_error("layers", _OWNER, "a non-empty list of layer names", layers)
    valid = dict(model.named_modules())
    unknown = [name for name in layers if name not in valid or name == ""]
    if unknown:
        raise param_error(
            "layers",
            _OWNER,
            "dotted module names of the model",
            unknown,
            hint=f"Valid dotted module names are: {layer_names(model)!r}.",
        )
    if len(set(layers)) != len(layers):
        raise param_error(
            "layers", _OWNER, "a list of distinct layer names (a layer twice)", layers
        )
    return layers


def _to_tensor(stimuli: Any) -> torch.Tensor:
    if isinstance(stimuli, xr.DataArray):
        stimuli = stimuli.values
    if isinstance(stimuli, np.ndarray):
        stimuli = torch.from_numpy(stimuli)
    if not isinstance(stimuli, torch.Tensor):
        raise param_error(
            "stimuli",
            _OWNER,
            "a torch.Tensor or numpy array of shape (n_stimuli, ...)",
            type(stimuli).__name__,
            raw=True,
        )
    if stimuli.ndim < 2 or len(stimuli) == 0:
        raise param_error(
            "stimuli",
            _OWNER,
            "of shape (n_stimuli, ...) with n_stimuli >= 1",
            f"shape {tuple(stimuli.shape)}",
            raw=True,
        )
    if stimuli.is_complex() or stimuli.dtype == torch.bool:
        raise param_error(
            "stimuli", _OWNER, "a real-valued tensor", f"dtype {stimuli.dtype}", raw=True
        )
    stimuli = stimuli if stimuli.is_floating_point() else stimuli.float()
    _check_finite(stimuli, "")
    return stimuli


def _check_finite(stimuli: torch.Tensor, precision: str) -> None:
    """Refuse NaN or infinite stimuli (they would record as NaN activations, the value of an
    unwritten chunk); ``precision`` names the dtype they were cast to, if any."""
    finite = torch.isfinite(stimuli)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(stimuli).sum())
    n_inf = int((~finite).sum()) - n_nan
    first = int((~finite).flatten(1).any(dim=1).nonzero()[0, 0])
    raise param_error(
        "stimuli",
        _OWNER,
        "finite (no NaN or infinite values)" + precision,
        f"{n_nan} NaN and {n_inf} infinite values (the first in stimulus {first})",
        raw=True,
    )


@dataclass
class Call:
    """The checked arguments of one ``record_activations`` call (stimuli cast to the model's
    precision, one coordinate array per stimulus coordinate)."""

    layers: list[str]
    stimuli: torch.Tensor
    stim_coords: dict[str, np.ndarray]
    n_trials: int
    batch_size: int | str  # samples per pass, or "auto" (resolved by the recording)
    branch: str
    rng: Any
    overwrite: bool
    resume: bool
    model_id: str | None
    progress: bool | None

    @property
    def n_stim(self) -> int:
        return len(self.stimuli)


def check_call(
    model: nn.Module,
    stimuli: Any,
    *,
    layers: Sequence[str] | str,
    n_trials: Any,
    labels: Any,
    stimulus_coords: Any,
    batch_size: Any,
    branch: Any,
    rng: Any,
    overwrite: Any,
    resume: Any,
    model_id: Any,
    progress: Any,
) -> Call:
    """Check every argument of ``record_activations`` but ``store`` and ``device``, in the
    order of its signature; a bad one raises :class:`~neurovar._validation.InvalidParameterError`
    naming it."""
    check_instance(model, nn.Module, name="model", owner=_OWNER, expected="a torch.nn.Module")
    n_trials = check_int(n_trials, name="n_trials", owner=_OWNER, low=1)
    if isinstance(batch_size, str) and batch_size != "auto":
        raise param_error("batch_size", _OWNER, "an int >= 1 or 'auto'", batch_size)
    if not (isinstance(batch_size, str) and batch_size == "auto"):
        batch_size = check_int(batch_size, name="batch_size", owner=_OWNER, low=1)
    overwrite = check_bool(overwrite, name="overwrite", owner=_OWNER)
    resume = check_bool(resume, name="resume", owner=_OWNER)
    if resume and overwrite:
        raise param_error(
            "resume",
            _OWNER,
            "False when overwrite=True (resume=True continues an interrupted store, "
            "overwrite=True replaces it)",
            resume,
        )
    progress = check_progress(progress, owner=_OWNER)
    if model_id is not None and (not isinstance(model_id, str) or not model_id):
        raise param_error("model_id", _OWNER, "a non-empty str or None", model_id)
    if not isinstance(branch, str):
        raise param_error("branch", _OWNER, "'auto', 'input' or a layer name", branch)
    check_rng(rng, owner=_OWNER)
    layers = _check_layers(model, layers)
    x_all = _to_tensor(stimuli)
    dtype = model_dtype(model)
    if dtype is not None and x_all.dtype != dtype:
        x_all = x_all.to(dtype)  # float64/float16 stimuli run in the model's precision
        _check_finite(x_all, f" in the model's precision ({dtype}, after the cast)")
    check_model_input(model, x_all, name="stimuli", owner=_OWNER)  # rank and channels
    stim_coords = _stimulus_coords(len(x_all), labels, stimulus_coords)
    if branch not in ("auto", "input") and branch not in dict(model.named_modules()):
        raise param_error(
            "branch",
            _OWNER,
            "'auto', 'input' or a layer name",
            branch,
            hint=f"Valid layer names: {layer_names(model)!r}.",
        )
    return Call(
        layers, x_all, stim_coords, n_trials, batch_size, branch, rng, overwrite, resume,
        model_id, progress,
    )  # fmt: skip


def _stimulus_coords(n_stim: int, labels: Any, stimulus_coords: Any) -> dict[str, np.ndarray]:
    """``stimulus_id``, ``label`` (from ``labels``) and the ``stimulus_coords``, each checked to
    hold one value per stimulus."""
    stim_coords: dict[str, np.ndarray] = {"stimulus_id": np.arange(n_stim)}
    if labels is not None:
        lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if lab.shape != (n_stim,):
            raise param_error(
                "labels",
                _OWNER,
                f"of shape ({n_stim},) to match 'stimuli'",
                f"shape {lab.shape}",
                raw=True,
            )
        stim_coords["label"] = lab
    if stimulus_coords is not None and not isinstance(stimulus_coords, Mapping):
        raise param_error(
            "stimulus_coords", _OWNER, "a mapping {name: values} or None", stimulus_coords
        )
    for key, values in (stimulus_coords or {}).items():
        arr = np.asarray(values)
        if arr.shape != (n_stim,):
            raise param_error(
                f"stimulus_coords[{key!r}]",
                _OWNER,
                f"of shape ({n_stim},)",
                f"shape {arr.shape}",
                raw=True,
            )
        stim_coords[key] = arr
    return stim_coords
