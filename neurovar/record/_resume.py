"""Resuming a store: the fingerprint of a recording call and the checks before continuing it."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import noise_modules
from .._validation import param_error
from .._version import __version__
from . import _state as _store
from ._inputs import _OWNER
from ._sites import _BATCHNORM_TYPES, _describe_noise, _stochastic_sites

#: Root attrs of a store streamed by ``record_activations(store=...)`` that track its progress:
#: chunks are written in order, so ``chunks_written`` of ``n_chunks`` says exactly which
#: stimuli are on disk; ``complete`` is set to 1 last. ``fingerprint`` (JSON) identifies the
#: call that started the store, ``resume_state`` holds the random states after the chunks
#: written (updated together with ``chunks_written``, in one write), ``not_resumable`` says why
#: a store cannot be resumed exactly ("" when it can); see :mod:`neurovar.record._state`. ``writer``
#: (JSON: pid, host, start) names the process writing the store ("" once it finished or
#: failed) and ``heartbeat`` the time of its last chunk. They are removed on loading.
_PROGRESS_ATTRS = (
    "neurovar_complete",
    "neurovar_chunks_written",
    "neurovar_n_chunks",
    "neurovar_chunk_stimuli",
    "neurovar_fingerprint",
    "neurovar_resume_state",
    "neurovar_not_resumable",
    "neurovar_writer",
    "neurovar_heartbeat",
)

#: What each fingerprint component of a store means, for the error of a refused resume.
_FINGERPRINT_WORDS = {
    "stimuli": "the stimuli differ from those the store was started with",
    "stimulus_coords": "the labels or stimulus_coords differ from those the store was started with",
    "layers": "the layers differ",
    "n_trials": "n_trials differs",
    "batch_size": "batch_size differs",
    "branch": "branch differs",
    "seed": "the seed differs",
    "model": "the model's weights or buffers differ from those the store was started with",
    "modes": "the train/eval modes of the model's modules differ",
    "noise_config": "the noise configuration (noise modules, their seeds, active dropout) differs",
    "device": "the device differs",
    "model_id": "model_id differs",
    "versions": "the neurovar or torch version differs",
}
#: Components stored as plain values (shown in the error); the others are sha256 digests.
_FINGERPRINT_SHOWN = (
    "layers",
    "n_trials",
    "batch_size",
    "branch",
    "seed",
    "device",
    "model_id",
    "versions",
)


def _fingerprint(
    model: nn.Module,
    x_all: torch.Tensor,
    stim_coords: Mapping[str, np.ndarray],
    layers: list[str],
    n_trials: int,
    batch_size: int,
    branch: str,
    rng: Any,
    seed: int,
    dev: torch.device,
    model_id: str | None,
) -> dict[str, str]:
    """What identifies a recording call (see :data:`_FINGERPRINT_WORDS`).

    It cannot see changes to the model's *code* or to state kept outside tensors and plain
    attributes; resume a store only with the model it was started with.
    """
    noise = [
        (type(m).__name__, dict(m.state_dict())) for m in noise_modules(model)
    ]  # hook noise modules are not in the model's state_dict
    # BatchNorm runs in eval mode inside every recording: its own flag does not matter
    modes = [
        (name, m.training)
        for name, m in model.named_modules()
        if not isinstance(m, _BATCHNORM_TYPES)
    ]
    return {
        "stimuli": _store.digest(x_all),
        "stimulus_coords": _store.digest(dict(stim_coords)),
        "layers": json.dumps(layers),
        "n_trials": str(n_trials),
        "batch_size": str(batch_size),
        "branch": branch,
        "seed": "rng=None" if rng is None else str(seed),
        "model": _store.digest(type(model).__name__, dict(model.state_dict()), noise),
        "modes": _store.digest(modes),
        "noise_config": _store.digest(_noise_identity(model, seeded=rng is not None)),
        # the device type: "cuda" and "cuda:0" are one device for the same call
        "device": dev.type,
        "model_id": model_id or type(model).__name__,
        "versions": f"neurovar {__version__}, torch {torch.__version__}",
    }


def _callable_name(obj: Any) -> str:
    """``module.qualname`` of a function or of an object's class (a ``repr`` may hold a memory
    address, which differs between processes)."""
    target = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _plain_attrs(obj: Any) -> dict[str, Any]:
    """The scalar instance attributes of ``obj`` (e.g. a custom noise's ``std``)."""
    plain = (type(None), bool, int, float, str)
    return {
        key: value
        for key, value in sorted(getattr(obj, "__dict__", {}).items())
        if isinstance(value, plain) and key != "seed"
    }


def _noise_identity(model: nn.Module, *, seeded: bool) -> dict[str, Any]:
    """What the recorded noise depends on, per active stochastic site, for the fingerprint.

    The sites of :func:`noise_config`, each noise described more fully: for neurovar noise
    modules their ``config()`` plus ``momentum`` and ``track_snr``; for any other noise (a
    custom module or a plain function) its qualified name, its scalar attributes and, for a
    module, its tensors. The modules' own seeds are left out when ``rng`` is given (the
    recording then reseeds every module from ``rng``); active dropout by its ``repr``.
    """

    def identity(noise: Any) -> Any:
        described = _describe_noise(noise)
        if isinstance(described, dict):  # a neurovar noise module's config()
            if seeded:
                described.pop("seed", None)
            described["momentum"] = getattr(noise, "momentum", None)
            described["track_snr"] = getattr(noise, "track_snr", None)
            return described
        described = {"callable": _callable_name(noise), **_plain_attrs(noise)}
        if isinstance(noise, nn.Module):
            described["state"] = dict(noise.state_dict())
        return described

    return _stochastic_sites(model, identity)


def _root_attrs(path: Path) -> dict[str, Any] | None:
    """Root attrs of the zarr store at ``path``, or None if it is not one."""
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # noqa: BLE001  (not a zarr group: a file, a folder of something else)
        return None


def _stored_seed(previous: Mapping[str, Any]) -> int:
    """The seed a store was recorded with (0 for a foreign store, refused by its fingerprint)."""
    try:
        return int(previous.get("seed", 0))
    except (TypeError, ValueError):
        return 0


def _check_fingerprint(previous: Mapping[str, Any], now: Mapping[str, str], path: Path) -> None:
    """Refuse to resume (or return) a store started by a different call; names what differs."""
    try:
        stored = json.loads(previous["neurovar_fingerprint"])
    except (KeyError, TypeError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        diffs = ["the store carries no fingerprint of the call that wrote it (an older neurovar)"]
    else:
        diffs = []
        for key, words in _FINGERPRINT_WORDS.items():
            if stored.get(key) != now[key]:
                if key in _FINGERPRINT_SHOWN:
                    words += f" (the store: {stored.get(key)}, this call: {now[key]})"
                diffs.append(words)
    if diffs:
        raise param_error(
            "resume",
            _OWNER,
            "True only with the arguments, model and seed the store was started with",
            f"resume=True for {str(path)!r}, but " + "; ".join(diffs),
            raw=True,
            hint="Nothing on disk was changed; pass overwrite=True to replace the store, or "
            "choose another path.",
        )


def _resume_snapshot(previous: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The saved random states of an incomplete store, or an error saying why it has none."""
    reason = str(previous.get("neurovar_not_resumable", ""))
    payload = None
    if not reason:
        try:
            payload = _store.load_snapshot(str(previous.get("neurovar_resume_state", "")))
        except Exception:  # noqa: BLE001  (missing, damaged or foreign data)
            reason = "its saved random state is missing or cannot be read"
        else:
            if int(payload["chunks"]) != int(previous["neurovar_chunks_written"]):
                reason = "its saved random state does not belong to the chunks written"
    if reason:
        raise param_error(
            "resume",
            _OWNER,
            "True only for a store that can be resumed exactly",
            f"resume=True for {str(path)!r}, which cannot be: {reason}",
            raw=True,
            hint="Nothing on disk was changed; pass overwrite=True to record it again.",
        )
    assert payload is not None  # internal invariant: no reason means a payload was read
    return payload
