"""Tiny experiment configs (seconds per grid) and a minimal TOML writer."""

from __future__ import annotations

import copy

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "layers": ["relu3"],
    "regimes": ["test-time", "train-time"],
    "conditions": ["none", "isotropic", "rotated", "structured"],
    "magnitudes": [0.5],
    "device": "cpu",
    "data": {"n_fit": 48, "n_eval": 20},
    "model": {"channels": [4, 8], "hidden": 16},
    "training": {"epochs": 3, "finetune_epochs": 1},
    "evaluation": {
        "steps": 2, "n_queries": 8, "eot_samples": 2, "n_evaluations": 2,
        "n_record_trials": 3, "n_record_stimuli": 8, "n_bootstrap": 199,
        "n_permutations": 199,
    },
    "sources": [
        {"family": "attack", "name": "pgd_ce", "strength": 0.1},
        {"family": "corruption", "name": "gaussian_noise", "strength": 3},
    ],
    "targets": [
        {"family": "attack", "norm": "linf", "strengths": [0.05, 0.1]},
        {"family": "corruption", "name": "gaussian_noise", "strengths": [1, 3]},
    ],
}


def tiny_config(**changes):
    """A copy of the tiny config with top-level keys replaced."""
    cfg = copy.deepcopy(TINY)
    cfg.update(changes)
    return cfg


def to_toml(cfg: dict) -> str:
    """Minimal TOML writer for the configs of these tests."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in cfg.items() if not isinstance(v, (dict, list))
             or (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    for k, v in cfg.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


