"""Export a finished run in RobustBench's ``model_info`` format.

RobustBench (Croce et al. 2021) keeps one JSON per model and threat model,
``model_info/<dataset>/<Linf|L2|corruptions>/<model>.json``, with the fields ``link``,
``name``, ``authors``, ``additional_data``, ``number_forward_passes``, ``dataset``,
``venue``, ``architecture``, ``eps``, ``clean_acc``, ``reported``, ``autoattack_acc`` (or
``external`` for an evaluation that is not AutoAttack), ``corruptions_acc`` and
``footnote``; accuracies are percent strings with two decimals (``"79.28"``). The
corruption accuracy it ranks by is the plain mean over the 15 CIFAR-10-C corruptions x 5
severities (75 numbers), and the 75 numbers themselves go to
``model_info/<dataset>/corruptions/unaggregated_results.csv`` (two header rows: corruption,
severity; one row per model; fractions).

:func:`export_robustbench` writes the same layout for every model of a run folder: one model
per ``(regime, condition, magnitude, layer, noise_at_test)`` of the grid, its accuracies the
mean over the run's seeds (each seed is a separately trained network; the per-seed values are
kept). neurovar's numbers are not RobustBench's protocol, and every file says how:

- the robust accuracy is the per-image worst case of the config's attack ensemble (named in
  ``footnote`` and ``neurovar.attacks``, with each attack's own accuracy), so it goes to
  ``external``; ``autoattack_acc`` stays ``null`` unless the ensemble is AutoAttack;
- a model evaluated with its noise on is *randomised*: one prediction is one stochastic forward
  pass (``number_forward_passes`` 1), attacked with EOT gradients and evaluated repeatedly (an
  image counts as robust only if it survives every evaluation); ``neurovar.randomized`` says so;
- the corruptions are neurovar's re-implementation applied to the run's test images
  (:func:`neurovar.perturb.corrupt`), not the released CIFAR-10-C files; ``corruptions_acc``
  is given only when all 75 (corruption, severity) pairs were evaluated, otherwise it is
  ``null`` and ``neurovar.corruptions_acc_partial`` is the mean over those that were.

Everything neurovar adds is under the key ``neurovar``, which RobustBench's tools ignore.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurovar._io import atomic_path
from neurovar._validation import InvalidParameterError

__all__ = [
    "CIFAR10C_CORRUPTIONS",
    "SEVERITIES",
    "THREAT_MODELS",
    "cifar10c_mean",
    "export_robustbench",
    "format_eps",
]

#: The 15 CIFAR-10-C corruptions, in the column order of RobustBench's unaggregated table.
CIFAR10C_CORRUPTIONS: tuple[str, ...] = (
    "shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur",
    "brightness", "fog", "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast",
    "jpeg_compression", "elastic_transform",
)
#: Severities of CIFAR-10-C.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: neurovar's attack norms -> RobustBench's threat-model folder names.
THREAT_MODELS: dict[str, str] = {"linf": "Linf", "l2": "L2"}

_ARCHITECTURES = {"small_cnn": "SmallCNN", "resnet18_cifar": "ResNet-18"}
_AUTOATTACK = {"autoattack", "autoattack_standard", "autoattack_rand"}


def format_eps(eps: float) -> str:
    """RobustBench's way of writing a budget: ``"8/255"`` when it is k/255, else the number."""
    k = eps * 255
    if k > 0 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _pct(x: float | None) -> str | None:
    return None if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def cifar10c_mean(accuracy: Mapping[tuple[str, int], float]) -> tuple[float | None, float, int]:
    """RobustBench's corruption summary of ``{(corruption, severity): accuracy}``.

    Returns ``(mean over all 75 pairs or None if any is missing, mean over the pairs present,
    number of pairs present)``. Pairs outside the 15 x 5 grid are ignored.
    """
    values = [accuracy[(c, s)] for c in CIFAR10C_CORRUPTIONS for s in SEVERITIES
              if (c, s) in accuracy and math.isfinite(accuracy[(c, s)])]
    partial = float(np.mean(values)) if values else float("nan")
    full = partial if len(values) == len(CIFAR10C_CORRUPTIONS) * len(SEVERITIES) else None
    return full, partial, len(values)


def _target_norms(config: Mapping[str, Any]) -> dict[str, str]:
    """Target id -> norm, for the attack targets of the resolved config."""
    out = {}
    for t in config.get("targets", []) or []:
        if t.get("family") != "attack":
            continue
        norm = str(t.get("norm", "linf")).lower()
        out[t.get("id") or f"adversarial_{norm}"] = norm
    return out


def _target_attacks(config: Mapping[str, Any], target: str) -> list[str]:
    default = list((config.get("evaluation") or {}).get("attacks") or [])
    for t in config.get("targets", []) or []:
        tid = t.get("id") or (f"adversarial_{str(t.get('norm', 'linf')).lower()}"
                              if t.get("family") == "attack" else t.get("name"))
        if tid == target and t.get("attacks"):
            return list(t["attacks"])
    return default


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else "-" for ch in str(text))


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path, overwrite=True, owner="export_robustbench") as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _seed_values(da) -> dict[str, float]:
    return {str(int(s)): float(v) for s, v in zip(da["seed"].values, np.asarray(da.values))
            if math.isfinite(float(v))}


def export_robustbench(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    prefix: str | None = None,
) -> list[Path]:
    """Write RobustBench ``model_info`` JSONs for every model of a finished run.

    Parameters
    ----------
    run_dir
        A results folder of ``neurovar run`` (with ``results.nc`` and ``experiment.json``).
    out_dir
        Where to write ``<dataset>/<Linf|L2|corruptions>/<model>.json`` and
        ``<dataset>/corruptions/unaggregated_results.csv``; default ``run_dir/robustbench``.
    prefix
        Start of every model name; default ``"neurovar_<run name>"``.

    Returns
    -------
    list of pathlib.Path
        The files written, JSONs first (sorted), then the unaggregated table if any.

    Raises
    ------
    InvalidParameterError
        ``run_dir`` is not a finished run folder.
    """
    import pandas as pd
    import xarray as xr

    run = Path(run_dir)
    if not (run / "results.nc").is_file() or not (run / "experiment.json").is_file():
        raise InvalidParameterError(
            "The 'run_dir' parameter of export_robustbench must be a finished run folder of "
            f"'neurovar run' (with results.nc and experiment.json). Got {str(run_dir)!r} "
            "instead.")
    meta = json.loads((run / "experiment.json").read_text(encoding="utf-8"))
    config = meta.get("config", {})
    with xr.open_dataset(run / "results.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    out = Path(out_dir) if out_dir is not None else run / "robustbench"
    dataset = str((config.get("data") or {}).get("name", "unknown"))
    arch_key = str((config.get("model") or {}).get("name", ""))
    architecture = _ARCHITECTURES.get(arch_key, arch_key or None)
    prefix = prefix if prefix is not None else f"neurovar_{_slug(config.get('name', 'run'))}"
    evaluation = config.get("evaluation") or {}
    norms = _target_norms(config)
    families = dict(zip(ds["target"].values.tolist(), ds["target_family"].values.tolist()))
    attack_targets = [t for t, f in families.items() if f == "attack"]
    corruption_targets = [t for t, f in families.items()
                          if f == "corruption" and t in CIFAR10C_CORRUPTIONS]
    written: list[Path] = []
    unaggregated: dict[str, dict[tuple[str, int], float]] = {}

    for regime in ds["regime"].values.tolist():
        for condition in ds["condition"].values.tolist():
            mags = ds["magnitude"].values.tolist()
            for magnitude in (mags[:1] if condition == "none" else mags):
                for layer in ds["layer"].values.tolist():
                    for noise_on in ds["noise_at_test"].values.tolist():
                        sel = dict(regime=regime, condition=condition, magnitude=magnitude,
                                   layer=layer, noise_at_test=noise_on)
                        clean = ds["clean_accuracy"].sel(sel)
                        if not np.isfinite(clean.values).any():
                            continue  # does not apply (e.g. noise off in the test-time regime)
                        randomized = bool(noise_on) and condition != "none"
                        parts = [prefix, regime, condition, layer]
                        if condition != "none":
                            parts.append(f"m{magnitude:g}")
                        parts.append("noise-on" if noise_on else "noise-off")
                        model = "_".join(_slug(p) for p in parts)
                        net = architecture or "network"
                        what = (f"{net} without noise (regime {regime})" if condition == "none"
                                else f"{net} with {condition} noise at {layer} (regime "
                                f"{regime}, magnitude {magnitude:g}), noise "
                                f"{'on' if noise_on else 'off'} at test")
                        common = {
                            "run": config.get("name"),
                            "config_hash": meta.get("config_hash"),
                            "regime": regime, "condition": condition,
                            "magnitude": float(magnitude), "layer": layer,
                            "noise_at_test": bool(noise_on), "randomized": randomized,
                            "seeds": [int(s) for s in ds["seed"].values],
                            "n_examples_per_seed": int(ds.sizes.get("stimulus", 0)),
                            "clean_acc_per_seed": _seed_values(clean),
                        }
                        clean_mean = float(np.nanmean(clean.values))
                        written += _attack_files(
                            ds, sel, attack_targets, norms, config, evaluation, out, dataset,
                            model, what, architecture, clean_mean, common, randomized)
                        if corruption_targets:
                            path, table = _corruption_file(
                                ds, sel, corruption_targets, out, dataset, model, what,
                                architecture, clean_mean, common, randomized)
                            written.append(path)
                            unaggregated[model] = table
    written.sort()
    if unaggregated:
        cols = pd.MultiIndex.from_tuples(
            [(c, s) for c in CIFAR10C_CORRUPTIONS for s in SEVERITIES])
        frame = pd.DataFrame([[row.get(k, np.nan) for k in cols] for row in unaggregated.values()],
                             index=list(unaggregated), columns=cols)
        path = out / dataset / "corruptions" / "unaggregated_results.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path)
        written.append(path)
    return written


def _base(dataset, what, architecture, clean_mean) -> dict[str, Any]:
    return {
        "link": None,
        "name": what,
        "authors": None,
        "additional_data": False,
        # one prediction = one forward pass (a stochastic one when randomised)
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": None,
        "architecture": architecture,
        "eps": None,
        "clean_acc": _pct(clean_mean),
        "reported": None,
    }


def _attack_files(ds, sel, targets, norms, config, evaluation, out, dataset, model, what,
                  architecture, clean_mean, common, randomized) -> list[Path]:
    written = []
    for target in targets:
        norm = norms.get(target) or ("l2" if target.endswith("l2") else "linf")
        threat = THREAT_MODELS.get(norm)
        if threat is None:
            continue
        acc = ds["accuracy"].sel(sel).sel(target=target)
        eps_values = ds["strength_value"].sel(target=target).values
        finite = [i for i, e in enumerate(eps_values) if math.isfinite(float(e))]
        for i in finite:
            eps = float(eps_values[i])
            at = acc.isel(strength=i)
            robust = float(np.nanmean(at.values))
            if not math.isfinite(robust):
                continue
            attacks = _target_attacks(config, target)
            per_attack = ds["attack_accuracy"].sel(sel).sel(target=target).isel(strength=i)
            attack_acc = {str(a): float(np.nanmean(per_attack.sel(attack=a).values))
                          for a in per_attack["attack"].values
                          if np.isfinite(per_attack.sel(attack=a).values).any()}
            attacks = [a for a in attacks if a in attack_acc] or list(attack_acc)
            is_aa = bool(attacks) and set(attacks) <= _AUTOATTACK
            name = model if len(finite) == 1 else f"{model}_eps-{_slug(format_eps(eps))}"
            eot = int(evaluation.get("eot_samples", 1)) if randomized else 1
            reps = int(evaluation.get("n_evaluations", 1)) if randomized else 1
            footnote = (
                f"neurovar evaluation, not RobustBench's protocol: per-image worst case of "
                f"{', '.join(attacks)} at {threat} eps {format_eps(eps)}"
                + (f"; randomised model (noise on at test): gradients averaged over {eot} EOT "
                   f"draws, {reps} repeated evaluations, an image counts as robust only if it "
                   "survives all of them" if randomized else "")
                + f"; mean over {len(common['seeds'])} seeds of "
                f"{common['n_examples_per_seed']} test images.")
            data = _base(dataset, what, architecture, clean_mean)
            data.update({
                "eps": format_eps(eps),
                "autoattack_acc": _pct(robust) if is_aa else None,
                "external": None if is_aa else _pct(robust),
                "footnote": footnote,
                "neurovar": {
                    **common,
                    "threat_model": threat, "eps_value": eps, "target": target,
                    "robust_acc": robust,
                    "robust_acc_per_seed": _seed_values(at),
                    "attacks": attacks,
                    "attack_acc": attack_acc,
                    "worst_case": "per image, over the attacks"
                                  + (" and the repeated evaluations" if randomized else ""),
                    "eot_samples": eot, "n_evaluations": reps,
                    "steps": evaluation.get("steps"), "n_queries": evaluation.get("n_queries"),
                },
            })
            path = out / dataset / threat / f"{name}.json"
            _write_json(path, data)
            written.append(path)
    return written


def _corruption_file(ds, sel, targets, out, dataset, model, what, architecture, clean_mean,
                     common, randomized) -> tuple[Path, dict[tuple[str, int], float]]:
    table: dict[tuple[str, int], float] = {}
    per_seed: dict[str, dict[str, float]] = {}
    for target in targets:
        acc = ds["accuracy"].sel(sel).sel(target=target)
        severities = ds["strength_value"].sel(target=target).values
        for i, sev in enumerate(severities):
            if not math.isfinite(float(sev)) or float(sev) != int(sev):
                continue
            value = float(np.nanmean(acc.isel(strength=i).values))
            if math.isfinite(value):
                table[(target, int(sev))] = value
                per_seed[f"{target}/{int(sev)}"] = _seed_values(acc.isel(strength=i))
    full, partial, n = cifar10c_mean(table)
    total = len(CIFAR10C_CORRUPTIONS) * len(SEVERITIES)
    footnote = (
        "neurovar evaluation: corruptions of neurovar.perturb.corrupt applied to the run's "
        f"{dataset} test images (not the released CIFAR-10-C files)"
        + ("" if full is not None else
           f"; only {n} of the {total} (corruption, severity) pairs were evaluated, so "
           "corruptions_acc is not given (see neurovar.corruptions_acc_partial)")
        + ("; randomised model (noise on at test): accuracy of one stochastic pass per "
           "image, averaged over repeated evaluations" if randomized else "")
        + f"; mean over {len(common['seeds'])} seeds.")
    data = _base(dataset, what, architecture, clean_mean)
    data.update({
        "corruptions_acc": _pct(full),
        "footnote": footnote,
        "neurovar": {
            **common,
            "threat_model": "corruptions",
            "corruptions_acc_partial": partial,
            "n_pairs": n, "n_pairs_total": total,
            "complete": full is not None,
            "accuracy": {f"{c}/{s}": v for (c, s), v in sorted(table.items())},
            "accuracy_per_seed": per_seed,
            "summary": "mean over the 15 CIFAR-10-C corruptions x 5 severities, as RobustBench",
        },
    })
    path = out / dataset / "corruptions" / f"{model}.json"
    _write_json(path, data)
    return path, table
