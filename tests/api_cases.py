"""Tiny valid calls for every function and class of the public API, and bad values per parameter.

Shared by ``tests/test_validation.py`` (which asserts every bad value raises
:class:`neurovar._validation.InvalidParameterError` naming the parameter and its owner) and
``benchmarks/fuzz_api.py`` (which classifies what happens for each bad value).

``public_api()`` enumerates every function and class in every ``__all__`` of the package.
``CASES`` maps a public object's qualified name to a factory returning ``run``: a callable that
takes keyword overrides and performs one tiny valid call (for a class: construct it, then use
it, as scikit-learn validates at ``fit``).
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import math
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

import neurovar

#: Modules not enumerated: command-line front ends and the demo (their own tests cover them),
#: and the private floors.
EXCLUDED_MODULES = (
    "neurovar.cli", "neurovar.demo", "neurovar.report", "neurovar.report_reproduction",
    "neurovar.perturb.apgd",  # deprecated re-exports
)


def public_api() -> dict[str, Any]:
    """``{"module.name": object}`` for every function and class in every ``__all__``."""
    names = ["neurovar"] + [m.name for m in pkgutil.walk_packages(neurovar.__path__, "neurovar.")]
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for mod_name in names:
        if mod_name.startswith(EXCLUDED_MODULES) or any(
            p.startswith("_") for p in mod_name.split(".")[1:]
        ):
            continue
        mod = importlib.import_module(mod_name)
        for attr in getattr(mod, "__all__", ()):
            obj = getattr(mod, attr, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
                if inspect.isclass(obj) and issubclass(obj, BaseException):
                    continue
                seen.add(id(obj))
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


def init_params(obj: Any) -> list[inspect.Parameter]:
    """Parameters of a function, or of a class's ``__init__`` including those it passes through
    ``**kwargs`` to its bases (PGD -> Attack), first definition wins; ``self`` left out."""
    if not inspect.isclass(obj):
        return [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
    out, seen = [], set()
    for klass in obj.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name != "self" and p.name not in seen:
                seen.add(p.name)
                out.append(p)
    return out


# ----------------------------------------------------------------------------- tiny data
def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=4):
    return torch.rand(n, 1, 8, 8, generator=_gen())


def labels(n=4):
    return torch.arange(n) % 3


def small_model(dropout=0.0):
    from neurovar.models import SmallCNN

    return SmallCNN(channels=(2, 2), hidden=4, n_classes=3, dropout=dropout).eval()


def responses(n_trials=6, n_stim=3, n_units=4, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.poisson(3.0, size=(n_trials, n_stim, n_units)).astype(float)
    return xr.DataArray(data, dims=("trial", "stimulus", "unit"))


def covariance(n=4, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 2 * n))
    c = a @ a.T / (2 * n)
    return xr.DataArray(c, dims=("unit", "unit_j"))


def samples(n=8, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.standard_normal(n) + shift, dims=("sample",))


def binary_table(n_groups=4, n_per=12, seed=0):
    """Long 0/1 table (seed x condition x example) for the binomial models."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = [
        {"seed": g, "condition": c, "correct": int(rng.random() < (0.4 if c == "a" else 0.7))}
        for g in range(n_groups)
        for c in ("a", "b")
        for _ in range(n_per)
    ]
    return pd.DataFrame(rows)


def _call(func, *args, **fixed):
    def run(**over):
        return func(*args, **{**fixed, **over})

    return run


def _attack(cls, **fixed):
    def run(**over):
        kw = {"model": small_model(), **fixed, **over}
        model = kw.pop("model")
        x, y = kw.pop("images", images()), kw.pop("labels", labels())
        return cls(model, **kw)(x, y)

    return run


def _noise(cls, *args, **fixed):
    def run(**over):
        kw = {**fixed, **over}
        pos = [kw.pop(p) if p in kw else a for p, a in zip(_positional(cls), args, strict=False)]
        module = cls(*pos, **kw)
        return module(torch.rand(2, 4, generator=_gen()))

    return run


def _positional(obj) -> list[str]:
    sig = inspect.signature(obj)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


def _positional_call(func, *args, **fixed):
    """Like :func:`_call`, but positional arguments can be overridden by name too."""

    def run(**over):
        kw = {**fixed, **over}
        names = _positional(func)
        pos = [kw.pop(n) if n in kw else a for n, a in zip(names, args, strict=False)]
        return func(*pos, **kw)

    return run


# ----------------------------------------------------------------------------- tiny experiment
#: A tiny experiment grid (3 cells, seconds): one seed, the test-time regime, ``none``,
#: ``isotropic`` and ``structured`` (one corruption source), an attack and a corruption target.
TINY_EXPERIMENT: dict[str, Any] = {
    "name": "api-cases",
    "seeds": [0],
    "layers": ["relu3"],
    "regimes": ["test-time"],
    "conditions": ["none", "isotropic", "structured"],
    "magnitudes": [0.5],
    "device": "cpu",
    "data": {"n_fit": 8, "n_eval": 4},
    "model": {"channels": [2, 2], "hidden": 4},
    "training": {"epochs": 1, "finetune_epochs": 1},
    "evaluation": {
        "attacks": ["fgsm"], "steps": 1, "n_queries": 2, "eot_samples": 1, "n_evaluations": 1,
        "n_record_trials": 2, "n_record_stimuli": 4, "n_bootstrap": 99, "n_permutations": 99,
    },
    "sources": [{"family": "corruption", "name": "gaussian_noise", "strength": 1}],
    "targets": [
        {"family": "attack", "norm": "linf", "strengths": [0.05]},
        {"family": "corruption", "name": "gaussian_noise", "strengths": [1]},
    ],
}

_EXPERIMENT: dict[str, Any] = {}


def scratch_dir() -> Path:
    """A temporary folder for the cases that write files (removed at exit)."""
    if "scratch" not in _EXPERIMENT:
        path = Path(tempfile.mkdtemp(prefix="neurovar-api-cases-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _EXPERIMENT["scratch"] = path
    return _EXPERIMENT["scratch"]


def tiny_experiment() -> dict[str, Any]:
    """The tiny grid run once into a scratch folder: config, folder, specs, results, analysis."""
    if "out" not in _EXPERIMENT:
        from neurovar import experiment

        cfg = experiment.load_config(TINY_EXPERIMENT)
        out = scratch_dir() / "run"
        outcome = experiment.run(cfg, out, progress=False)
        assert outcome.ok, outcome.failed
        results = outcome.results
        _EXPERIMENT.update(
            cfg=cfg,
            out=out,
            specs=experiment.plan(cfg),
            results=results,
            tm=experiment.transfer_matrix(results, cfg),
            cost=experiment.clean_cost(results),
            masking=experiment.masking_diagnostics(results, cfg)[0],
            link=experiment.link_model(results, cfg),
        )
    return _EXPERIMENT


def _cases() -> dict[str, Callable[[], Callable[..., Any]]]:
    from neurovar import (
        _torch,
        cortex,
        dims,
        experiment,
        inference,
        models,
        noise,
        perturb,
        plot,
        record,
        report,
        stats,
    )
    from neurovar.datasets import load_digits
    from neurovar.experiment import setup

    tiny_data = None

    def digits():
        nonlocal tiny_data
        if tiny_data is None:
            d = load_digits()
            tiny_data = type(d)(
                x_train=d.x_train[:32],
                y_train=d.y_train[:32] % 3,
                x_test=d.x_test[:8],
                y_test=d.y_test[:8] % 3,
                name=d.name,
                classes=d.classes[:3],
            )
        return tiny_data

    resp = responses()
    rob = None

    def robustness():
        nonlocal rob
        if rob is None:
            rob = perturb.evaluate_robustness(
                small_model(),
                images(),
                labels(),
                eps=[0.0, 0.05],
                attacks=["fgsm"],
                n_evaluations=1,
                rng=0,
            )
        return rob

    S = "neurovar.stats"
    return {
        # ------------------------------------------------------------ record
        "neurovar.record.record_activations": lambda: _positional_call(
            record.record_activations,
            small_model(),
            images(),
            layers=["fc1"],
            n_trials=2,
            rng=0,
            progress=False,
        ),
        "neurovar.record.save_recording": None,  # path-based: covered by tests/test_record_faults.py
        "neurovar.record.load_recording": None,  # idem
        "neurovar.dims.unit_coords": lambda: _positional_call(dims.unit_coords, "fc1", (4,)),
        "neurovar._torch.layer_names": lambda: _positional_call(_torch.layer_names, small_model()),
        "neurovar._torch.find_noise_hooks": lambda: _positional_call(
            _torch.find_noise_hooks, small_model()
        ),
        "neurovar.record.find_noise_site": lambda: _positional_call(
            record.find_noise_site, small_model(), images(1)
        ),
        # ------------------------------------------------------------ stats
        f"{S}.variability.fano_factor": lambda: _positional_call(stats.fano_factor, resp),
        f"{S}.variability.mean_matched_fano_factor": lambda: _positional_call(
            stats.mean_matched_fano_factor,
            responses(n_stim=6, n_units=6),
            n_bins=2,
            n_resamples=2,
            rng=0,
        ),
        f"{S}.correlation.noise_correlation": lambda: _positional_call(
            stats.noise_correlation, resp
        ),
        f"{S}.correlation.signal_correlation": lambda: _positional_call(
            stats.signal_correlation, resp
        ),
        f"{S}.covariance.noise_covariance": lambda: _positional_call(stats.noise_covariance, resp),
        f"{S}.spectrum.eigenspectrum": lambda: _positional_call(stats.eigenspectrum, covariance()),
        f"{S}.spectrum.participation_ratio": lambda: _positional_call(
            stats.participation_ratio, covariance()
        ),
        f"{S}.spectrum.power_law_exponent": lambda: _positional_call(
            stats.power_law_exponent, covariance()
        ),
        f"{S}.alignment.variance_along": lambda: _positional_call(
            stats.variance_along, covariance(), xr.DataArray(np.ones(4), dims=("unit",))
        ),
        f"{S}.alignment.alignment_index": lambda: _positional_call(
            stats.alignment_index, covariance(), covariance(seed=1), n_components=2
        ),
        f"{S}.alignment.principal_angles": lambda: _positional_call(
            stats.principal_angles,
            xr.DataArray(np.eye(4)[:, :2], dims=("unit", "k")),
            xr.DataArray(np.eye(4)[:, 1:3], dims=("unit", "k")),
        ),
        f"{S}.information.linear_fisher_information": lambda: _positional_call(
            stats.linear_fisher_information,
            responses(n_trials=12).isel(stimulus=0),
            responses(n_trials=12, seed=1).isel(stimulus=0),
            delta_s=1.0,
        ),
        f"{S}.information.differential_correlation_strength": lambda: _positional_call(
            stats.differential_correlation_strength,
            responses(n_trials=12).isel(stimulus=0),
            responses(n_trials=12, seed=1).isel(stimulus=0),
        ),
        f"{S}.shared.shared_variance": lambda: _positional_call(
            stats.shared_variance, responses(n_trials=10), n_factors=1, n_folds=2, rng=0
        ),
        # ------------------------------------------------------------ inference
        "neurovar.inference.permutation.permutation_test": lambda: _positional_call(
            inference.permutation_test,
            samples(),
            samples(shift=1.0, seed=1),
            n_permutations=99,
            rng=0,
        ),
        "neurovar.inference.bootstrap.bootstrap_ci": lambda: _positional_call(
            inference.bootstrap_ci, samples(), n_resamples=99, rng=0
        ),
        "neurovar.inference.effect_size.cohens_d": lambda: _positional_call(
            inference.cohens_d, samples(), samples(shift=1.0, seed=1)
        ),
        "neurovar.inference.effect_size.rank_biserial": lambda: _positional_call(
            inference.rank_biserial, samples(), samples(shift=1.0, seed=1)
        ),
        "neurovar.inference.multiple.correct_pvalues": lambda: _positional_call(
            inference.correct_pvalues, xr.DataArray([0.01, 0.2, 0.03], dims=("test",))
        ),
        # ------------------------------------------------------------ noise
        "neurovar.noise.models.IsotropicNoise": lambda: _noise(noise.IsotropicNoise, 0.1, rng=0),
        "neurovar.noise.models.DiagonalNoise": lambda: _noise(
            noise.DiagonalNoise, np.ones(4), rng=0
        ),
        "neurovar.noise.models.CovarianceNoise": lambda: _noise(
            noise.CovarianceNoise, covariance().values, rng=0
        ),
        "neurovar.noise.models.LowRankNoise": lambda: _noise(
            noise.LowRankNoise, np.ones((4, 1)), rng=0
        ),
        "neurovar.noise.models.PoissonLikeNoise": lambda: _noise(
            noise.PoissonLikeNoise, 1.0, rng=0
        ),
        "neurovar.noise.factor.FactorCovariance": lambda: _positional_call(
            noise.FactorCovariance, np.ones(4), np.ones((4, 1))
        ),
        "neurovar.noise.controls.random_orthogonal": lambda: _positional_call(
            noise.random_orthogonal, 4, rng=0
        ),
        "neurovar.noise.controls.match_total_variance": lambda: _positional_call(
            noise.match_total_variance, covariance().values, 2.0
        ),
        "neurovar.noise.controls.rotate_spectrum": lambda: _positional_call(
            noise.rotate_spectrum, covariance().values, rng=0
        ),
        "neurovar.noise.controls.matched_controls": lambda: _positional_call(
            noise.matched_controls, covariance().values, rng=0
        ),
        "neurovar.noise.controls.noise_from_covariance": lambda: _positional_call(
            noise.noise_from_covariance, covariance().values
        ),
        "neurovar.noise.fit.collect_layer_activations": lambda: _positional_call(
            noise.collect_layer_activations, small_model(), images(), layer="fc1"
        ),
        "neurovar.noise.fit.layer_total_variance": lambda: _positional_call(
            noise.layer_total_variance, small_model(), images(), layer="fc1"
        ),
        "neurovar.noise.fit.layer_activation_covariance": lambda: _positional_call(
            noise.layer_activation_covariance, small_model(), images(), layer="fc1"
        ),
        "neurovar.noise.fit.fit_perturbation_covariance": lambda: _positional_call(
            noise.fit_perturbation_covariance, small_model(), images(), images() * 0.9, layer="fc1"
        ),
        # ------------------------------------------------------------ perturb
        "neurovar.perturb.attacks.fgsm.FGSM": lambda: _attack(perturb.FGSM, eps=0.05, rng=0),
        "neurovar.perturb.attacks.pgd.PGD": lambda: _attack(perturb.PGD, eps=0.05, steps=2, rng=0),
        "neurovar.perturb.attacks.apgd.APGD": lambda: _attack(perturb.APGD, eps=0.05, steps=2,
                                                      restarts=1, rng=0),
        "neurovar.perturb.attacks.targeted_pgd.TargetedPGD": lambda: _attack(
            perturb.TargetedPGD, eps=0.05, steps=2, n_target_classes=2, rng=0
        ),
        "neurovar.perturb.attacks.square.Square": lambda: _attack(
            perturb.Square, eps=0.05, n_queries=3, rng=0
        ),
        "neurovar.perturb.adapters.TorchattacksAttack": lambda: (
            lambda **over: perturb.TorchattacksAttack(
                over.pop("attack", "FGSM"),
                over.pop("model", small_model()),
                **{"eps": 0.05, "rng": 0, **over},
            )(images(), labels())
        ),
        "neurovar.perturb.corruptions.corrupt": lambda: _positional_call(
            perturb.corrupt, images(), "gaussian_noise", severity=1, rng=0
        ),
        "neurovar.perturb.imagenet_c.corrupt_paper": lambda: _positional_call(
            perturb.corrupt_paper,
            torch.rand(2, 1, 28, 28, generator=_gen()),
            "contrast",
            severity=1,
            rng=0,
        ),
        "neurovar.perturb.corruptions.modify": lambda: _positional_call(
            perturb.modify, images(), "contrast", strength=0.5, rng=0
        ),
        "neurovar.perturb.evaluate.robust_accuracy": lambda: _positional_call(
            perturb.robust_accuracy, small_model(), None, images(), labels(), n_evaluations=1, rng=0
        ),
        "neurovar.perturb.evaluate.evaluate_robustness": lambda: _positional_call(
            perturb.evaluate_robustness,
            small_model(),
            images(),
            labels(),
            eps=[0.05],
            attacks=["fgsm"],
            n_evaluations=1,
            rng=0,
        ),
        "neurovar.perturb._stochastic.randomness_check": lambda: _positional_call(
            perturb.randomness_check, small_model(), images(), rng=0
        ),
        "neurovar.perturb._stochastic.is_stochastic": lambda: _positional_call(
            perturb.is_stochastic, small_model(), images(), rng=0
        ),
        "neurovar.perturb.diagnostics.gradient_snr": lambda: _positional_call(
            perturb.gradient_snr,
            small_model(0.5).train(),
            images(),
            labels(),
            eot_samples=(1, 2),
            n_repeats=2,
            rng=0,
        ),
        "neurovar.perturb.masking.check_robustness_result": lambda: _positional_call(
            perturb.check_robustness_result, robustness(), n_classes=3, warn=False
        ),
        # ------------------------------------------------------------ models, datasets
        "neurovar.models.SmallCNN": lambda: (
            lambda **over: models.SmallCNN(**{"channels": (2, 2), "hidden": 4, **over})(images())
        ),
        "neurovar.models.PrebleCNN": lambda: (
            lambda **over: models.PrebleCNN(**{"rng": 0, **over})(torch.zeros(2, 1, 28, 28))
        ),
        "neurovar.models.MeanLogits": lambda: (
            lambda **over: models.MeanLogits(**{"model": small_model(), "n_passes": 3,
                                                **over})(images())
        ),
        "neurovar.models.layers_after": lambda: _positional_call(
            models.layers_after, small_model(), "relu2"
        ),
        "neurovar.models.gaussian_augmentation": lambda: _call(
            models.gaussian_augmentation, sigma=0.3
        ),
        "neurovar.models.adversarial_augmentation": lambda: _call(
            models.adversarial_augmentation, eps=0.1, steps=1
        ),
        "neurovar.datasets.load_mnist_embedded": lambda: _call(
            __import__("neurovar.datasets", fromlist=["x"]).load_mnist_embedded,
            test_per_class=100,
        ),
        "neurovar.experiment.reproduction.crossed_bootstrap": lambda: _positional_call(
            __import__("neurovar.experiment.reproduction", fromlist=["x"]).crossed_bootstrap,
            np.ones((2, 5)), n_resamples=9,
        ),
        "neurovar.models.train": lambda: _positional_call(
            models.train, small_model(), digits(), epochs=1, batch_size=16
        ),
        "neurovar.models.evaluate_accuracy": lambda: _positional_call(
            models.evaluate_accuracy, small_model(), images(), labels()
        ),
        "neurovar.datasets.load_digits": lambda: _call(load_digits),
        # ------------------------------------------------------------ cortex
        "neurovar.cortex.loaders.from_array": lambda: _positional_call(
            cortex.from_array, np.ones((3, 2, 4))
        ),
        "neurovar.cortex.loaders.require_counts": lambda: _positional_call(
            cortex.require_counts, resp
        ),
        # ------------------------------------------------------------ plot
        "neurovar.plot.plot_variance_vs_mean": lambda: _positional_call(
            plot.plot_variance_vs_mean, resp
        ),
        "neurovar.plot.plot_noise_correlations": lambda: _positional_call(
            plot.plot_noise_correlations, stats.noise_correlation(resp), bins=5
        ),
        "neurovar.plot.plot_spectrum": lambda: _positional_call(plot.plot_spectrum, covariance()),
        "neurovar.plot.plot_robustness": lambda: _positional_call(
            plot.plot_robustness, robustness()
        ),
        "neurovar.perturb.evaluate.attack_names": lambda: _call(perturb.attack_names),
        "neurovar.perturb.evaluate.get_attack_factory": lambda: _positional_call(
            perturb.get_attack_factory, "fgsm"
        ),
        "neurovar.perturb.evaluate.register_attack": lambda: _positional_call(
            # re-registers a built-in attack with its own factory: the registry is unchanged
            perturb.register_attack,
            "fgsm",
            perturb.get_attack_factory("fgsm"),
            overwrite=True,
        ),
        "neurovar.perturb.evaluate.unregister_attack": lambda: (
            lambda **over: (
                perturb.register_attack("api_case_attack", perturb.get_attack_factory("fgsm")),
                perturb.unregister_attack(**{"name": "api_case_attack", **over}),
            )
        ),
        "neurovar.perturb.evaluate.robustness_table": lambda: _positional_call(
            perturb.robustness_table, robustness()
        ),
        "neurovar.perturb.diagnostics.eot_check": lambda: _positional_call(
            perturb.eot_check,
            small_model(0.5).train(),
            images(),
            labels(),
            eps=0.05,
            eot_samples=(1, 2),
            steps=1,
            n_evaluations=1,
            rng=0,
        ),
        # ------------------------------------------------------------ new in this round
        f"{S}.covariance.signal_covariance": lambda: _positional_call(
            stats.signal_covariance, resp
        ),
        f"{S}.alignment.top_subspace": lambda: _positional_call(
            stats.top_subspace, covariance(), n_components=2
        ),
        f"{S}.covariance.shrinkage_covariance": lambda: _positional_call(
            stats.covariance.shrinkage_covariance,
            np.random.default_rng(0).standard_normal((10, 3)),
            dof=9.0,
            estimator="ledoit_wolf",
        ),
        "neurovar.noise.fit.perturbation_directions": lambda: _positional_call(
            noise.perturbation_directions, small_model(), images(), images() * 0.9, layer="fc1"
        ),
        "neurovar.noise.controls.register_noise_kind": lambda: _positional_call(
            # re-registers a shipped kind with its own factory: the registry is unchanged
            noise.register_noise_kind,
            "isotropic",
            noise.controls.NOISE_KINDS["isotropic"],
            overwrite=True,
        ),
        "neurovar.inference.binomial.fit_binomial_model": lambda: _positional_call(
            inference.fit_binomial_model,
            binary_table(),
            "correct ~ condition",
            groups="seed",
        ),
        "neurovar.perturb.spec.Perturbation": lambda: (
            lambda **over: perturb.spec.Perturbation(
                **{"family": "attack", "name": "pgd_ce", "strength": 0.05, "steps": 2, **over}
            ).apply(images(), labels(), model=small_model(), rng=0)
        ),
        "neurovar.perturb.spec.TargetSpec": lambda: (
            lambda **over: perturb.spec.evaluate_target(
                small_model(),
                images(),
                labels(),
                perturb.spec.TargetSpec(
                    **{"family": "corruption", "name": "gaussian_noise", "strengths": (1,), **over}
                ),
                rng=0,
            )
        ),
        "neurovar.perturb.spec.evaluate_target": lambda: _positional_call(
            perturb.spec.evaluate_target,
            small_model(),
            images(),
            labels(),
            perturb.spec.TargetSpec("attack", "ensemble", (0.05,), attacks=("fgsm",)),
            steps=2,
            n_queries=3,
            rng=0,
        ),
        "neurovar.perturb.spec.perturbation_names": lambda: _positional_call(
            perturb.spec.perturbation_names, "corruption"
        ),
        "neurovar.cortex.reference.count_window_ms": lambda: _positional_call(
            cortex.count_window_ms, "10 x 100 ms"
        ),
        "neurovar.cortex.reference.match_reference": lambda: _positional_call(
            cortex.match_reference,
            cortex.load_reference_values(),
            statistic="r_sc",
            area="V4",
            count_window="100 ms",
        ),
        "neurovar.cortex.cache.data_home_candidates": lambda: _positional_call(
            cortex.data_home_candidates, data_home=scratch_dir()
        ),
        "neurovar.cortex.cache.find_data_home": lambda: _positional_call(
            cortex.find_data_home, "cowley2023_v4", data_home=scratch_dir()
        ),
        "neurovar.cortex.compare.compare": lambda: _positional_call(
            cortex.compare,
            responses(n_stim=4, n_units=5),
            responses(n_stim=4, n_units=5, seed=1),
            n_resamples=20,
            rng=0,
        ),
        "neurovar.plot.plot_comparison": lambda: _positional_call(
            plot.plot_comparison,
            cortex.compare(
                responses(n_stim=4, n_units=5),
                responses(n_stim=4, n_units=5, seed=1),
                n_resamples=20,
                rng=0,
            ),
        ),
        "neurovar.experiment.executor.run_cells": lambda: _positional_call(
            # in-process over the finished shared run: every cell is skipped
            experiment.executor.run_cells,
            tiny_experiment()["specs"],
            tiny_experiment()["out"],
            progress=False,
        ),
        "neurovar.experiment.executor.parse_scheduler": lambda: _positional_call(
            experiment.executor.parse_scheduler, "local:2"
        ),
        "neurovar.models.resnet18_cifar": lambda: (
            lambda **over: models.resnet18_cifar(**{"n_classes": 3, "rng": 0, **over}).eval()(
                torch.rand(1, over.get("in_channels", 3), 8, 8, generator=_gen())
            )
        ),
        # ------------------------------------------------------------ experiment, report
        "neurovar.experiment.config.load_config": lambda: _positional_call(
            experiment.load_config, TINY_EXPERIMENT
        ),
        "neurovar.experiment.config.shipped_configs": lambda: _call(experiment.shipped_configs),
        "neurovar.experiment.config.config_hash": lambda: _positional_call(
            experiment.config_hash, experiment.load_config(TINY_EXPERIMENT)
        ),
        "neurovar.experiment.grid.plan": lambda: _positional_call(
            experiment.plan, TINY_EXPERIMENT
        ),
        "neurovar.experiment.grid.stream_seed": lambda: _positional_call(
            experiment.stream_seed, 0, "cell", "test-time", "isotropic"
        ),
        "neurovar.experiment.setup.build_model": lambda: _positional_call(
            setup.build_model, experiment.load_config(TINY_EXPERIMENT), rng=0
        ),
        "neurovar.experiment.setup.load_data": lambda: _positional_call(
            setup.load_data, experiment.load_config(TINY_EXPERIMENT)
        ),
        "neurovar.experiment.setup.resolve_config_device": lambda: _positional_call(
            setup.resolve_config_device, "cpu"
        ),
        "neurovar.experiment.cell.base_network": lambda: _positional_call(
            experiment.cell.base_network,
            experiment.load_config(TINY_EXPERIMENT),
            0,
            torch.device("cpu"),
        ),
        "neurovar.experiment.cell.compute_cell": lambda: _positional_call(
            experiment.compute_cell, tiny_experiment()["specs"][0]
        ),
        "neurovar.experiment.cell.run_cell": lambda: _positional_call(
            # rewrites the finished cell of the shared run (atomically, same content)
            experiment.run_cell,
            tiny_experiment()["specs"][0],
            tiny_experiment()["out"],
        ),
        "neurovar.experiment.store.write_cell": lambda: _positional_call(
            experiment.write_cell,
            scratch_dir() / "written",
            tiny_experiment()["specs"][0],
            experiment.CellResult(
                tiny_experiment()["specs"][0].cell_id,
                *experiment.read_cell(tiny_experiment()["out"], tiny_experiment()["specs"][0].cell_id),
            ),
        ),
        "neurovar.experiment.store.read_cell": lambda: _positional_call(
            experiment.read_cell, tiny_experiment()["out"], tiny_experiment()["specs"][0].cell_id
        ),
        "neurovar.experiment.store.is_done": lambda: _positional_call(
            experiment.is_done, tiny_experiment()["out"], tiny_experiment()["specs"][0].cell_id
        ),
        "neurovar.experiment.store.done_cells": lambda: _positional_call(
            experiment.done_cells, tiny_experiment()["out"]
        ),
        "neurovar.experiment.store.assemble": lambda: _positional_call(
            experiment.assemble,
            tiny_experiment()["out"],
            tiny_experiment()["specs"],
            tiny_experiment()["cfg"].magnitudes,
        ),
        "neurovar.experiment.store.results_table": lambda: _positional_call(
            experiment.results_table, tiny_experiment()["results"]
        ),
        "neurovar.experiment.runner.run": lambda: _positional_call(
            # resumes the finished shared run: every cell is skipped, results re-assembled
            experiment.run,
            tiny_experiment()["cfg"],
            tiny_experiment()["out"],
            progress=False,
        ),
        "neurovar.experiment.runner.prepare_folder": lambda: _positional_call(
            experiment.runner.prepare_folder, tiny_experiment()["out"], tiny_experiment()["cfg"]
        ),
        "neurovar.experiment.runner.collect": lambda: _positional_call(
            experiment.collect, tiny_experiment()["out"], tiny_experiment()["cfg"]
        ),
        "neurovar.experiment.analysis.transfer_matrix": lambda: _positional_call(
            experiment.transfer_matrix, tiny_experiment()["results"], tiny_experiment()["cfg"]
        ),
        "neurovar.experiment.analysis.claims": lambda: _positional_call(
            experiment.claims, tiny_experiment()["results"], tiny_experiment()["cfg"]
        ),
        "neurovar.experiment.analysis.clean_cost": lambda: _positional_call(
            experiment.clean_cost, tiny_experiment()["results"]
        ),
        "neurovar.experiment.analysis.masking_diagnostics": lambda: _positional_call(
            experiment.masking_diagnostics, tiny_experiment()["results"], tiny_experiment()["cfg"]
        ),
        "neurovar.experiment.analysis.link_model": lambda: _positional_call(
            experiment.link_model, tiny_experiment()["results"], tiny_experiment()["cfg"]
        ),
        "neurovar.experiment.analysis.is_diagonal": lambda: _positional_call(
            experiment.is_diagonal,
            experiment.load_config(TINY_EXPERIMENT),
            "gaussian_noise",
            "gaussian_noise",
        ),
        "neurovar.experiment.report.plot_robustness_curves": lambda: _positional_call(
            report.plot_robustness_curves,
            tiny_experiment()["results"],
            regime="test-time",
            noise_at_test=True,
        ),
        "neurovar.experiment.report.plot_transfer_matrix": lambda: _positional_call(
            report.plot_transfer_matrix, tiny_experiment()["tm"]
        ),
        "neurovar.experiment.report.plot_alignment_gain": lambda: _positional_call(
            report.plot_alignment_gain, *tiny_experiment()["link"]
        ),
        "neurovar.experiment.report.plot_clean_cost": lambda: _positional_call(
            report.plot_clean_cost, tiny_experiment()["cost"]
        ),
        "neurovar.experiment.report.plot_masking": lambda: _positional_call(
            report.plot_masking, tiny_experiment()["masking"]
        ),
    }


_CACHE: dict[str, Any] = {}


def cases() -> dict[str, Callable[[], Callable[..., Any]] | None]:
    if not _CACHE:
        _CACHE.update(_cases())
    return _CACHE


# ----------------------------------------------------------------------------- bad values
#: Parameter names never fuzzed generically, with the reason (see also SKIP in the test).
FREE_TEXT = {
    "title",
    "label",
    "name",
    "model_id",
    "node_column",
    "formula",
    "groups",
    "layer",
    "units",
    "owner",
}


def param_kind(p: inspect.Parameter) -> str | None:
    """Kind of a parameter from its name, default and annotation, or None (not fuzzed)."""
    ann = str(p.annotation)
    default = p.default
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
        return None
    if p.name == "rng":
        return "rng"
    if p.name == "device":
        return "device"
    if p.name.endswith("_dim"):
        return "dim"
    if isinstance(default, (bool, np.bool_)) or ann == "bool":
        return "bool"
    if ann.replace(" ", "") in ("bool|None", "None|bool", "Optional[bool]"):
        return "optional_bool"
    if isinstance(default, int) or ann.startswith("int"):
        return "int"
    if isinstance(default, float) or ann.startswith("float"):
        return "float"
    if isinstance(default, str) and p.name not in FREE_TEXT:
        return "choice"
    return None


BAD_VALUES: dict[str, dict[str, list[Any]]] = {
    # kind: {"type": wrong types, "range": out-of-range values}
    "bool": {"type": ["False", None], "range": [2]},
    "optional_bool": {"type": ["False"], "range": [2]},
    "int": {"type": ["3", 2.5], "range": [-1]},
    "float": {"type": ["0.5"], "range": [math.nan]},
    "rng": {"type": ["seed", 2.5], "range": [-1]},
    "device": {"type": [3], "range": ["bogus"]},
    "dim": {"type": [3.5], "range": ["bogus"]},
    "choice": {"type": [3], "range": ["bogus"]},
}

#: Values that must not hang or exhaust memory (each must end quickly with an error or a result).
HUGE = 10**12


def owner_names(qualname: str) -> tuple[str, ...]:
    """Names an error may use for the owner of ``qualname``'s parameters."""
    return (qualname.rsplit(".", 1)[-1],)


def model_factory() -> nn.Module:
    return small_model()


# ----------------------------------------------------------------------------- scenarios
# Issue 21's classes of bad input that one bad parameter at a time does not reach: settings
# that do not fit together, experiment objects built by hand, NaN data, and the patterns of
# models written by others (torchvision's). Each scenario is (class, label, call, expect):
# ``expect`` a str that the error (ValueError/TypeError) must contain (the parameter or key it
# names), or a predicate that the call's result must satisfy (the case "works correctly").
# ``benchmarks/fuzz_api.py`` counts them; ``tests/test_bad_input.py`` requires each.


def _config_problem(**change: Any) -> Callable[[], Any]:
    import copy

    def call():
        from neurovar.experiment.config import parse_config

        cfg = copy.deepcopy(TINY_EXPERIMENT)
        for key, value in change.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return parse_config(cfg)

    return call


def _spec(**change: Any) -> Callable[[], Any]:
    def call():
        import dataclasses

        from neurovar import experiment

        spec = experiment.plan(TINY_EXPERIMENT)[0]
        return dataclasses.replace(spec, **change)

    return call


def _dataset(**change: Any) -> Callable[[], Any]:
    def call():
        from neurovar.datasets import ImageDataset

        fields = dict(x_train=images(6), y_train=labels(6), x_test=images(), y_test=labels(),
                      name="t", classes=("a", "b", "c"))
        fields.update(change)
        return ImageDataset(**fields)

    return call


def _nan_images(n=4):
    x = images(n)
    x[1, 0, 2, 3] = float("nan")
    return x


class _ReusedReLU(nn.Module):
    """torchvision's BasicBlock pattern: one ``self.relu`` called twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
            self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 8 * 8, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.conv1(x))
        h = self.relu(self.conv2(h) + h)
        return self.fc(h.flatten(1))


class _StochasticPrefix(nn.Module):
    """EfficientNet's pattern: randomness the library does not know about (a train-mode
    dropout, like ``StochasticDepth``) upstream of an injected noise site."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.drop = nn.Dropout(0.5)
            self.act = nn.Tanh()
            self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.act(self.drop(self.conv(x))).flatten(1))


def _record_reused(inject: bool) -> Callable[[], Any]:
    def call():
        from neurovar import record_activations
        from neurovar.noise import IsotropicNoise, inject_noise

        model = _ReusedReLU().eval()
        if not inject:
            return record_activations(model, images(), layers="relu", n_trials=2, rng=0,
                                      progress=False)
        with inject_noise(model, {"relu": IsotropicNoise(1.0, rng=0)}):
            return record_activations(model, images(), layers="fc", n_trials=2, rng=0,
                                      progress=False)

    return call


def _upstream_randomness_kept() -> Callable[[], Any]:
    def call():
        from neurovar import record_activations
        from neurovar.noise import IsotropicNoise, inject_noise

        model = _StochasticPrefix().train()
        with inject_noise(model, {"act": IsotropicNoise(0.1, rng=0)}):
            tree = record_activations(model, images(), layers="drop", n_trials=4, rng=0,
                                      progress=False)
        return float(tree["drop"]["activation"].std("trial").mean())

    return call


def _store_call(name: str, *args: Any) -> Callable[[], Any]:
    def call():
        from neurovar.experiment import store

        return getattr(store, name)(*args)

    return call


def _read_cell_escape():
    from neurovar.experiment import store

    folder = scratch_dir() / "escape"
    (folder / "cells").mkdir(parents=True, exist_ok=True)
    return store.read_cell(folder, "../../etc")


def _experiment_call(name: str, *args: Any) -> Callable[[], Any]:
    def call():
        from neurovar import experiment

        return getattr(experiment, name)(*args)

    return call


def _calibration(**change: Any) -> Callable[[], Any]:
    def call():
        from neurovar.noise import NoiseCalibration

        fields = dict(layer="fc1", m=0.5, activation_variance=2.0, noise_variance=1.0, snr=2.0,
                      snr_db=3.0, scale=0.7)
        fields.update(change)
        return NoiseCalibration(**fields)

    return call


def _warns(call: Callable[[], Any]) -> Callable[[], list[str]]:
    """The messages of the warnings ``call`` raises."""
    def run():
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [str(w.message) for w in caught]

    return run


def _bootstrap(**kw: Any) -> Callable[[], Any]:
    def call():
        from neurovar.inference import bootstrap_ci

        return bootstrap_ci(samples(20), dim="sample", rng=0, **kw)

    return call


SCENARIOS: list[tuple[str, str, Callable[[], Any], Any]] = [
    # settings that do not fit together (each valid alone), checked before any work
    ("combination", "CIFAR ResNet on digits", _config_problem(model={"name": "resnet18_cifar"}),
     "key 'model.name'"),
    ("combination", "n_fit beyond the data", _config_problem(data={"n_fit": 100000}),
     "key 'data.n_fit'"),
    ("combination", "n_eval beyond the data", _config_problem(data={"n_eval": 100000}),
     "key 'data.n_eval'"),
    ("combination", "n_record_stimuli beyond n_eval",
     _config_problem(evaluation={"n_record_stimuli": 50}), "key 'evaluation.n_record_stimuli'"),
    ("combination", "n_target_classes beyond the classes",
     _config_problem(evaluation={"n_target_classes": 20}), "key 'evaluation.n_target_classes'"),
    ("combination", "duplicate magnitudes", _config_problem(magnitudes=[0.5, 0.5]),
     "key 'magnitudes'"),
    ("combination", "magnitude as a string", _config_problem(magnitudes=["0.5"]),
     "key 'magnitudes[0]'"),
    ("combination", "n_eval as a string", _config_problem(data={"n_eval": "90"}),
     "key 'data.n_eval'"),
    ("combination", "a bool as a count", _config_problem(evaluation={"steps": True}),
     "key 'evaluation.steps'"),
    ("combination", "misspelt key", _config_problem(magnitude=[0.5]), "did you mean 'magnitudes'"),
    ("combination", "misspelt regime", _config_problem(regimes=["test_time"]),
     "did you mean 'test-time'"),
    ("combination", "square with an l2 target",
     _config_problem(evaluation={"attacks": ["square"]},
                     targets=[{"family": "attack", "norm": "l2", "strengths": [0.5]}]),
     "'square' supports only norm 'linf'"),
    ("combination", "mix without the units rule", _config_problem(conditions=["mix:0.5:*"]),
     "key 'conditions[0]'"),
    ("combination", "structured without sources",
     _config_problem(sources=[], conditions=["structured"]), "key 'sources'"),
    # experiment objects built by hand, and experiment functions given the wrong thing
    ("experiment object", "ExperimentConfig(regimes=('bogus',))",
     lambda: __import__("neurovar.experiment", fromlist=["x"]).ExperimentConfig(
         **{**TINY_EXPERIMENT, "regimes": ("bogus",)}), "key 'regimes[0]'"),
    ("experiment object", "DataConfig(n_eval='90')",
     lambda: __import__("neurovar.experiment.config", fromlist=["x"]).DataConfig(n_eval="90"),
     "key 'n_eval'"),
    ("experiment object", "CellSpec regime", _spec(regime="bogus"), "'regime'"),
    ("experiment object", "CellSpec cell_id ../", _spec(cell_id="../x"), "'cell_id'"),
    ("experiment object", "CellSpec condition", _spec(condition="zz"), "'condition'"),
    ("experiment object", "CellSpec seed", _spec(seed=-1), "'seed'"),
    ("experiment object", "CellSpec magnitude", _spec(magnitude=float("nan")), "'magnitude'"),
    ("experiment object", "ImageDataset float64",
     _dataset(x_train=images(6).double()), "'x_train'"),
    ("experiment object", "ImageDataset labels beyond classes",
     _dataset(y_test=torch.full((4,), 7)), "'y_test'"),
    ("experiment object", "ImageDataset one label short", _dataset(y_train=labels(5)),
     "'y_train'"),
    ("experiment object", "ImageDataset name None", _dataset(name=None), "'name'"),
    ("experiment object", "NoiseCalibration m < 0", _calibration(m=-1.0), "'m'"),
    ("experiment object", "NoiseCalibration layer None", _calibration(layer=None), "'layer'"),
    ("experiment object", "is_done on a missing folder",
     _store_call("is_done", "/no/such/folder", "abc"), "'out_dir'"),
    ("experiment object", "done_cells on a missing folder",
     _store_call("done_cells", "/no/such/folder"), "'out_dir'"),
    ("experiment object", "read_cell ../../", _read_cell_escape, "'cell_id'"),
    ("experiment object", "plan(None)", _experiment_call("plan", None), "a path"),
    ("experiment object", "plan({'bogus': 1})", _experiment_call("plan", {"bogus": 1}),
     "unknown key 'bogus'"),
    ("experiment object", "compute_cell(None)", _experiment_call("compute_cell", None), "'spec'"),
    ("experiment object", "compute_cell('x')", _experiment_call("compute_cell", "x"), "'spec'"),
    ("experiment object", "link_model(None, None)",
     _experiment_call("link_model", None, None), "parameter of link_model"),
    ("experiment object", "run(None, out)",
     lambda: __import__("neurovar.experiment", fromlist=["x"]).run(None, scratch_dir() / "r0"),
     "a path"),
    # NaN / wrong-kind data reaching torch
    ("NaN data", "record_activations NaN stimuli",
     lambda: __import__("neurovar", fromlist=["x"]).record_activations(
         small_model(), _nan_images(), layers="relu3", n_trials=2, progress=False), "'stimuli'"),
    ("NaN data", "evaluate_accuracy NaN images",
     lambda: __import__("neurovar.models", fromlist=["x"]).evaluate_accuracy(
         small_model(), _nan_images(), labels()), "'images'"),
    ("NaN data", "fit_perturbation_covariance NaN images",
     lambda: __import__("neurovar.noise", fromlist=["x"]).fit_perturbation_covariance(
         small_model(), _nan_images(), images(), layer="relu3"), "_images'"),
    ("NaN data", "evaluate_accuracy float64 images",
     lambda: __import__("neurovar.models", fromlist=["x"]).evaluate_accuracy(
         small_model(), images().double(), labels()), "'images'"),
    ("NaN data", "evaluate_accuracy 2 channels for a 1-channel model",
     lambda: __import__("neurovar.models", fromlist=["x"]).evaluate_accuracy(
         small_model(), torch.rand(4, 2, 8, 8), labels()), "'images'"),
    ("NaN data", "record_activations 3-D stimuli",
     lambda: __import__("neurovar", fromlist=["x"]).record_activations(
         small_model(), torch.rand(4, 8, 8), layers="relu3", n_trials=2, progress=False),
     "'stimuli'"),
    # a warning that names the problem (the limits would be the most extreme resamples)
    ("NaN data", "BCa at 0.999 from 99 resamples",
     _warns(_bootstrap(n_resamples=99, confidence_level=0.999, method="BCa")),
     lambda messages: any("n_resamples=99 is too few" in m for m in messages)),
    # models written by others: torchvision's patterns
    ("model pattern", "record a module called twice (BasicBlock relu)", _record_reused(False),
     "relu"),
    ("model pattern", "noise at a module called twice", _record_reused(True), "relu"),
    ("model pattern", "randomness upstream of a noise site (StochasticDepth)",
     _upstream_randomness_kept(), lambda sd: sd > 0),
]
