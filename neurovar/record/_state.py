"""Resuming a recording store: the fingerprint of a call and the random state at chunk ends.

``record_activations(store=..., resume=True)`` continues an interrupted store exactly (the
finished store is bit-identical to an uninterrupted one). Two things make that possible:

- a *fingerprint* of the call, stored in the root attrs when the store is started: a dict
  ``{component: value or sha256}`` (stimuli, coordinates, layers, model state, seed, ...), so a
  resume can refuse a different call and name what differs;
- a *snapshot* of every random state the recording draws from, stored with every chunk
  written: torch's CPU generator (dropout), the CUDA generator of the device, and every noise
  module's ``get_rng_state()`` and buffers (running estimates), in the order of
  :func:`neurovar._torch.noise_modules`. It is serialised with :func:`torch.save` and read back
  with ``torch.load(..., weights_only=True)`` (tensors, numbers, str, lists and dicts only;
  never a pickle of arbitrary objects).

A noise module whose state holds a caller's :class:`torch.Generator` (``rng=None`` and a module
built with ``rng=<torch.Generator>``) or a frozen draw cannot be restored exactly; the snapshot
then says why instead. This module imports only the bottom floor.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._torch import noise_modules

__all__ = [
    "digest",
    "snapshot",
    "restore",
    "site_text",
    "parse_site",
    "writer_mark",
    "now_text",
    "live_writer",
]

_SAFE_SCALARS = (type(None), bool, int, float, str)


def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj`` to the hash ``h`` with type tags and lengths (no ambiguous concatenation)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy() if t.numel() else b""  # hashed in place, no copy
        h.update(f"T{t.dtype}{tuple(obj.shape)}{len(raw)}:".encode())
        h.update(raw)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            _feed(h, repr(obj.tolist()))
        else:
            raw = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)
            h.update(f"A{obj.dtype.str}{obj.shape}{raw.size}:".encode())
            h.update(raw)
    elif isinstance(obj, Mapping):
        h.update(f"M{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, str(key))
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    else:
        text = repr(obj).encode()
        h.update(f"S{type(obj).__name__}{len(text)}:".encode())
        h.update(text)


def digest(*parts: Any) -> str:
    """sha256 (hex) of tensors, arrays, mappings, sequences and scalars, bytes and layout."""
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()


#: The "site" of a recording that runs one forward pass per trial (randomness drawn once per
#: pass, which trials folded into one batch would share).
PER_TRIAL = ("", "trial")


def site_text(site: tuple[str, str] | None) -> str:
    """``"input"``, ``"trial"`` (:data:`PER_TRIAL`) or ``"layer:kind"`` (the format of the
    ``branch_site`` attr)."""
    if site == PER_TRIAL:
        return "trial"
    return "input" if site is None else f"{site[0]}:{site[1]}"


def parse_site(text: str) -> tuple[str, str] | None:
    """Inverse of :func:`site_text`."""
    if text == "input":
        return None
    if text == "trial":
        return PER_TRIAL
    name, kind = text.rsplit(":", 1)
    return name, kind


def _unsafe(obj: Any) -> str | None:
    """What in ``obj`` would not load with ``weights_only=True`` (or a live generator)."""
    if isinstance(obj, torch.Generator):
        return "a torch.Generator"
    if isinstance(obj, torch.Tensor) or isinstance(obj, _SAFE_SCALARS):
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            why = _unsafe(key) or _unsafe(value)
            if why:
                return why
        return None
    if isinstance(obj, (list, tuple)):
        for value in obj:
            why = _unsafe(value)
            if why:
                return why
        return None
    return f"a {type(obj).__name__}"


def _not_exact(module: nn.Module, state: Any) -> str:
    """Why ``module``'s random state cannot be saved and restored exactly ("" if it can)."""
    name = type(module).__name__
    if bool(getattr(module, "frozen", False)) or (
        isinstance(state, dict) and state.get("frozen_draw") is not None
    ):
        return f"the noise module {name} is frozen (freeze/frozen_noise), and its replayed draw is not saved"
    why = _unsafe(state)
    if why == "a torch.Generator":
        return (
            f"the noise module {name} draws from a torch.Generator given as its rng (a live "
            "object of the caller's, not saved with the store); pass an int rng to "
            "record_activations, or build the module with an int rng"
        )
    if why:
        return f"the random state of the noise module {name} holds {why}, which is not saved"
    return ""


def snapshot(
    model: nn.Module,
    device: torch.device,
    site: tuple[str, str] | None,
    chunks: int,
    initial: Mapping[int, torch.Tensor] | None = None,
) -> tuple[str, str]:
    """Every random state the recording draws from, after ``chunks`` chunks.

    Call it inside the recording's seeded block. Returns ``(state, reason)``: ``state`` is a
    base64 str for :func:`restore` and ``reason`` is "", or ``state`` is "" and ``reason`` says
    why the recording cannot be resumed exactly.

    A noise-module buffer is saved only if it differs from its value when the recording began
    (``initial``, keyed by ``id(buffer)``): running estimates are, a covariance factor of
    megabytes is not (it is in the store's fingerprint, so a resume starts from it anyway).
    """
    initial = initial or {}
    noise = []
    for module in noise_modules(model):
        state = module.get_rng_state()
        reason = _not_exact(module, state)
        if reason:
            return "", reason
        buffers = {
            name: buf.detach().cpu().clone()
            for name, buf in module.named_buffers()
            if id(buf) not in initial or not torch.equal(buf, initial[id(buf)])
        }
        noise.append({"rng": state, "buffers": buffers})
    payload = {
        "chunks": chunks,
        "site": site_text(site),
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "noise": noise,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii"), ""


def load_snapshot(text: str) -> dict[str, Any]:
    """The payload of :func:`snapshot` (``weights_only=True``: tensors and plain data only)."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    payload = torch.load(io.BytesIO(raw), weights_only=True)
    if not isinstance(payload, dict) or {"chunks", "site", "cpu", "cuda", "noise"} - set(payload):
        raise ValueError("not a recording snapshot")
    return payload


def restore(payload: Mapping[str, Any], model: nn.Module, device: torch.device) -> None:
    """Put the random states (and noise-module buffers) of a snapshot back, inside the
    recording's seeded block; the block restores the caller's states on exit as always."""
    modules = noise_modules(model)
    if len(modules) != len(payload["noise"]):
        raise ValueError(
            f"the model has {len(modules)} noise modules, the store was started with "
            f"{len(payload['noise'])}"
        )
    torch.set_rng_state(payload["cpu"])
    if payload["cuda"] is not None:
        torch.cuda.set_rng_state(payload["cuda"], device)
    with torch.no_grad():
        for module, saved in zip(modules, payload["noise"]):
            module.set_rng_state(saved["rng"])
            for name, buf in module.named_buffers():
                if name in saved["buffers"]:
                    buf.copy_(saved["buffers"][name])


# ------------------------------------------------------------------ the writing process
def now_text() -> str:
    """The current UTC time, ISO 8601 to the second (the heartbeat of a store)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first), or [] where there
    is no such file (not Linux, or no such process)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str:
    """When process ``pid`` started, as the kernel counts it (field 22 of /proc/PID/stat), or
    "" where that cannot be read; tells a live writer from a later process with its pid."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def writer_mark() -> str:
    """JSON naming this process as the writer of a store: pid, host, start of the process,
    and when the writing started (the ``neurovar_writer`` root attr)."""
    pid = os.getpid()
    return json.dumps(
        {
            "pid": pid,
            "host": socket.gethostname(),
            "process_start": _process_start(pid),
            "started": now_text(),
        }
    )


def live_writer(attrs: Mapping[str, Any]) -> tuple[str, bool] | None:
    """The process writing a store, if one may still be: ``(description, certain)``.

    ``certain`` is True when the writer is a live process of this host (its pid runs and
    started when the writer did), False when it is on another host (it cannot be checked).
    None when no writer is recorded or it is a process of this host that no longer runs.
    """
    try:
        mark = json.loads(str(attrs.get("neurovar_writer", "")))
        pid, host = int(mark["pid"]), str(mark["host"])
    except (TypeError, ValueError, KeyError):
        return None
    started = str(mark.get("started", "?"))
    beat = str(attrs.get("neurovar_heartbeat", "") or started)
    if host != socket.gethostname():
        return (
            f"process {pid} on host {host!r} since {started} (last chunk written at {beat})",
            False,
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return None  # killed, not yet reaped by its parent
    recorded_start = str(mark.get("process_start", ""))
    if recorded_start and len(fields) > 19 and fields[19] != recorded_start:
        return None  # the pid now belongs to a later process
    return f"process {pid} on this host since {started} (last chunk written at {beat})", True
