"""The one validation layer, and a test generated over the whole public API.

For every function and class in every ``__all__`` (``api_cases.public_api``) with a tiny valid
call in ``api_cases.CASES``, each parameter whose kind can be read from its name, default or
annotation (flag, int, float, choice, rng, device, dim name) gets wrong types and an
out-of-range value, one at a time; each must raise ``InvalidParameterError`` whose message
names the parameter and its owner.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from api_cases import BAD_VALUES, cases, init_params, owner_names, param_kind, public_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurovar import _validation as v
from neurovar._validation import InvalidParameterError

# ----------------------------------------------------------------------------- the checkers


def test_message_shape_and_error_class():
    with pytest.raises(InvalidParameterError) as info:
        v.check_real(-0.1, name="eps", owner="PGD", low=0, high=1)
    assert (
        str(info.value) == "The 'eps' parameter of PGD must be a float in [0, 1]. Got -0.1 instead."
    )
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    assert (info.value.name, info.value.owner) == ("eps", "PGD")


@pytest.mark.parametrize("bad", ["False", "True", 0, 1, None, 1.0, np.array([True])])
def test_check_bool_refuses_everything_but_bools(bad):
    with pytest.raises(InvalidParameterError, match="'flag' parameter of f must be a bool"):
        v.check_bool(bad, name="flag", owner="f")
    assert v.check_bool(np.bool_(False), name="flag", owner="f") is False


def test_numbers():
    assert v.check_int(np.int64(3), name="n", owner="f", low=1) == 3
    for bad in (2.5, True, "3", -1, 10):
        with pytest.raises(InvalidParameterError, match="'n' parameter of f must be an int in"):
            v.check_int(bad, name="n", owner="f", low=0, high=5)
    for bad in (math.nan, math.inf, -math.inf, "0.5", True, None):
        with pytest.raises(InvalidParameterError, match="'x' parameter"):
            v.check_real(bad, name="x", owner="f")
    assert v.check_real(math.inf, name="x", owner="f", allow_inf=True) == math.inf
    with pytest.raises(InvalidParameterError, match=r"in \(0, 1\)"):
        v.check_real(0, name="x", owner="f", low=0, high=1, low_open=True, high_open=True)


def test_choice_rng_device_dims():
    with pytest.raises(InvalidParameterError, match="one of \\('a', 'b'\\). Got 'c'"):
        v.check_choice("c", name="m", owner="f", options=("a", "b"))
    with pytest.raises(InvalidParameterError):
        v.check_choice(np.array(["a"]), name="m", owner="f", options=("a",))
    with pytest.raises(InvalidParameterError):
        v.check_choice(True, name="m", owner="f", options=(1, 2))  # True == 1, but not a choice
    for bad in ("seed", 2.5, -1, True):
        with pytest.raises(InvalidParameterError, match="'rng' parameter of f"):
            v.check_rng(bad, owner="f")
    assert v.check_rng(torch.Generator(), owner="f") is not None
    with pytest.raises(InvalidParameterError, match="'device' parameter of f"):
        v.check_device("bogus", owner="f")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="CUDA is not available"):
            v.check_device("cuda", owner="f")
    assert v.check_device("cpu", owner="f") == torch.device("cpu")
    with pytest.raises(
        InvalidParameterError, match="'unit_dim' parameter of f .* different from trial_dim"
    ):
        v.check_dim_names({"trial_dim": "trial", "unit_dim": "trial"}, owner="f")
    with pytest.raises(
        InvalidParameterError, match="'unit_dim' parameter of f must be a dimension of"
    ):
        v.check_dim_names({"unit_dim": "neuron"}, owner="f", have=("trial", "unit"))


def test_arrays_tensors_memory(monkeypatch):
    with pytest.raises(InvalidParameterError, match="1 NaN and 1 infinite"):
        v.check_array([1.0, np.nan, np.inf], name="x", owner="f")
    with pytest.raises(InvalidParameterError, match="non-empty"):
        v.check_array([], name="x", owner="f")
    with pytest.raises(InvalidParameterError, match="a floating-point tensor"):
        v.check_tensor(torch.ones(2, dtype=torch.int64), name="x", owner="f", floating=True)
    with pytest.raises(InvalidParameterError, match=r"in the range \[0, 1\]"):
        v.check_tensor(torch.tensor([0.5, 2.0]), name="x", owner="f", low=0, high=1)
    with pytest.raises(InvalidParameterError, match="non-finite"):
        v.check_tensor(torch.tensor([0.5, math.nan]), name="x", owner="f", low=0, high=1)
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", "1000")
    v.check_memory(999, name="n", owner="f", value=1)
    with pytest.raises(InvalidParameterError, match="'n' parameter of f must be small enough"):
        v.check_memory(1001, name="n", owner="f", value=10**9)


def test_memory_limit_is_a_fraction_of_available_memory_unless_overridden(monkeypatch):
    monkeypatch.delenv("NEUROVAR_MAX_BYTES", raising=False)
    monkeypatch.setattr(v._arrays, "available_memory", lambda: 8000)
    assert v.memory_limit(0.5) == 4000 and v.memory_limit(0.25) == 2000
    v.check_memory(4000, name="n", owner="f", value=1)  # check_memory uses the same limit
    with pytest.raises(InvalidParameterError, match=r"limit 3\.9\d* KiB"):
        v.check_memory(4001, name="n", owner="f", value=1)
    monkeypatch.setenv("NEUROVAR_MAX_BYTES", "1000")
    assert v.memory_limit(0.5) == 1000.0 and v.memory_limit(0.1) == 1000.0


def test_one_covariance_check_with_one_message_shape():
    c = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
    sym, evals, evecs = v.check_covariance_matrix(c, name="cov", owner="f")
    np.testing.assert_allclose(evecs @ np.diag(evals) @ evecs.T, c, atol=1e-12)
    assert np.all(np.diff(evals) >= 0) and np.array_equal(sym, c)
    _, values_only, none = v.check_covariance_matrix(c, name="cov", owner="f", eigenvectors=False)
    assert none is None and np.allclose(values_only, evals)
    # rounding error passes (and is symmetrised away), beyond the tolerances is an error
    tiny = c + 1e-9 * np.triu(np.ones((3, 3)), 1)
    sym, _, _ = v.check_covariance_matrix(tiny, name="cov", owner="f")
    assert np.array_equal(sym, sym.T)
    with pytest.raises(
        InvalidParameterError,
        match=r"^The 'cov' parameter of f must be a symmetric matrix \(max \|C - C\^T\| / max "
        r"\|C\| <= 1e-06\)\. Got a matrix with relative asymmetry 0\.25 instead\.$",
    ):
        v.check_covariance_matrix(c + np.triu(0.5 * np.ones((3, 3)), 1), name="cov", owner="f")
    _, evals, _ = v.check_covariance_matrix(np.diag([2.0, 1.0, -1e-6]), name="c", owner="f")
    assert evals[0] == -1e-6  # within -psd_tol * max |lambda|: passes, unclipped
    with pytest.raises(InvalidParameterError, match="smallest eigenvalue -3e-06"):
        v.check_covariance_matrix(np.diag([2.0, 1.0, -3e-6]), name="c", owner="f")
    with pytest.raises(InvalidParameterError) as info:
        v.check_covariance_matrix(-c, name="cov", owner="f")
    assert str(info.value).startswith(
        "The 'cov' parameter of f must be a positive semi-definite matrix (smallest eigenvalue "
        ">= -1e-06 x largest |eigenvalue|). Got a matrix with smallest eigenvalue -2."
    ) and str(info.value).endswith("Fit it with a shrinkage estimator or clip its eigenvalues.")
    assert info.value.name == "cov" and info.value.owner == "f"
    with pytest.raises(InvalidParameterError, match="a non-empty square 2-D matrix"):
        v.check_covariance_matrix(np.ones((2, 3)), name="cov", owner="f")


def test_statistics_and_noise_models_refuse_a_non_covariance_alike():
    from neurovar import stats
    from neurovar.noise import CovarianceNoise, LowRankNoise, rotate_spectrum

    bad = -np.diag([3.0, 2.0, 1.0])
    da = xr.DataArray(bad, dims=("unit", "unit_j"))
    messages = []
    for call, owner, name in [
        (lambda: stats.participation_ratio(da), "participation_ratio", "cov"),
        (lambda: CovarianceNoise(bad), "CovarianceNoise", "cov_matrix"),
        (
            lambda: LowRankNoise.from_covariance(bad, 1),
            "LowRankNoise.from_covariance",
            "cov_matrix",
        ),
        (lambda: rotate_spectrum(bad, rng=0), "rotate_spectrum", "noise_or_cov"),
    ]:
        with pytest.raises(InvalidParameterError) as info:
            call()
        prefix = f"The '{name}' parameter of {owner} must be "
        assert str(info.value).startswith(prefix), str(info.value)
        messages.append(str(info.value)[len(prefix) :])
    assert len(set(messages)) == 1, messages  # one check, one message


# ----------------------------------------------------------------------------- generated

#: Public objects without a generic valid call, and why (each is tested elsewhere).
NO_CASE = {
    "neurovar.datasets.load_fashion_mnist": "reads files: tests/test_datasets.py",
    "neurovar.experiment.protocols.paper_attack": "needs an experiment config: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.protocols.evaluate_paper_target": "needs an experiment config: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.protocols.evaluate_adaptive_target": "needs an experiment config: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.registry.Regime": "a record type of the registry",
    "neurovar.experiment.registry.Condition": "a record type of the registry",
    "neurovar.experiment.registry.MagnitudeRule": "a record type of the registry",
    "neurovar.experiment.registry.Protocol": "a record type of the registry",
    "neurovar.experiment.registry.StructureContext": "a record type of the registry",
    "neurovar.experiment.registry.register_regime": "registry: tests/experiment/"
    "test_paper_protocol.py",
    "neurovar.experiment.registry.register_condition": "registry: tests/experiment/"
    "test_paper_protocol.py",
    "neurovar.experiment.registry.register_magnitude_rule": "registry: tests/experiment/"
    "test_paper_protocol.py",
    "neurovar.experiment.registry.parse_condition": "raises KeyError for the config's checks",
    "neurovar.experiment.registry.condition_colour": "a lookup with a default colour",
    "neurovar.experiment.registry.condition_label": "a lookup with the name as default",
    "neurovar.experiment.registry.suggest": "a string helper of the error messages",
    "neurovar.experiment.reproduction.reference_table": "reads the shipped table",
    "neurovar.experiment.reproduction.condition_accuracy": "needs a run's results: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.reproduction.paper_comparison": "needs a run's results: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.reproduction.reproduction_claims": "needs a run's results: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.reproduction.ReproductionClaim": "a record type of the report",
    "neurovar.experiment.reproduction.matched_clean_gain": "needs a run's results: "
    "tests/experiment/test_reproduction_inference.py",
    "neurovar.experiment.reproduction.protocol_excess": "per-image gaps of a run: "
    "tests/experiment/test_reproduction_inference.py",
    "neurovar.perturb.attacks.apgd.apgd_checkpoints": "a schedule of integers: tests/perturb/test_apgd.py",
    "neurovar.experiment.report.reproduction_section": "writes a report: tests/experiment/"
    "test_paper_protocol.py",
    "neurovar.experiment.report.plot_protocol_curves": "figures of a run: tests/experiment/"
    "test_paper_protocol.py",
    "neurovar.experiment.report.plot_target_curves": "figures of a run: tests/experiment/"
    "test_paper_protocol.py",
    "neurovar.experiment.report.plot_source_target_heatmap": "figures of a run: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.report.plot_positive_controls": "figures of a run: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.report.plot_magnitude_sweep": "figures of a run: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.experiment.report.plot_robustness_vs_clean": "figures of a run: "
    "tests/experiment/test_paper_protocol.py",
    "neurovar.record.save_recording": "writes files: tests/test_record_faults.py",
    "neurovar.record.load_recording": "reads files: tests/test_record_faults.py",
    "neurovar.cortex.cache.RemoteFile": "a record type (frozen dataclass) of the data registry",
    "neurovar.cortex.cache.fetch": "network/cache: tests/cortex/test_cortex_fetch.py",
    "neurovar.cortex.cache.data_home_path": "path resolution only",
    "neurovar.cortex.cache.sha256sum": "hashes a file",
    "neurovar.cortex.loaders.load_cowley_v4": "needs the cortical data files",
    "neurovar.cortex.loaders.load_cowley_v4_images": "needs the cortical data files",
    "neurovar.cortex.loaders.load_semedo_v1v2": "needs the cortical data files",
    "neurovar.cortex.nwb.load_nwb": "needs an NWB file: tests/cortex/test_cortex_nwb.py",
    "neurovar.cortex.nwb.counts_from_nwbfile": "needs an NWB file: tests/cortex/test_cortex_nwb.py",
    "neurovar.cortex.reference.load_reference_values": "reads the shipped table",
    "neurovar.datasets.ImageDataset": "a plain dataclass container",
    "neurovar.experiment.cluster.ClusterConfig": "a pydantic model: tests/experiment/test_cluster.py",
    "neurovar.experiment.cluster.cluster_config": "validates a table: tests/experiment/test_cluster.py",
    "neurovar.experiment.cluster.cluster_kwargs": "takes a ClusterConfig: tests/experiment/test_cluster.py",
    "neurovar.experiment.cluster.make_cluster": "starts a scheduler: tests/experiment/test_cluster.py",
    "neurovar.experiment.cluster.job_script": "takes a ClusterConfig: tests/experiment/test_cluster.py",
    "neurovar.experiment.cluster.open_cluster": "submits jobs: tests/experiment/test_cluster.py",
    "neurovar.experiment.robustbench.cifar10c_mean": "takes a mapping: tests/experiment/test_robustbench.py",
    "neurovar.experiment.robustbench.export_robustbench": "needs a run folder: tests/experiment/test_robustbench.py",
    "neurovar.experiment.robustbench.format_eps": "string helper",
    "neurovar.datasets.load_mnist": "needs MNIST files: tests/test_datasets.py",
    "neurovar.datasets.load_cifar10": "needs CIFAR-10 files: tests/test_datasets.py",
    "neurovar.dims.check_dims": "a checker itself (called by every statistic)",
    "neurovar.dims.check_responses": "a checker itself (called by every statistic)",
    "neurovar.dims.pair_dim": "string helper",
    "neurovar.inference.tidy.to_tidy": "takes any result object",
    "neurovar.inference.mixed.fit_mixed_model": "needs a data frame and formula",
    "neurovar.inference.mixed.MixedModelResult": "a result container",
    "neurovar.models.TrainHistory": "a result container",
    "neurovar._torch.resolve_device": "the device rule itself (check_device with a model)",
    "neurovar.noise.models.NoiseModule": "abstract base class",
    "neurovar.noise.inject.inject_noise": "takes a mapping of modules: tests/noise/test_noise_inject.py",
    "neurovar.noise.inject.NoiseInjection": "created by inject_noise",
    "neurovar.noise.inject.NoiseHook": "created by inject_noise",
    "neurovar.noise.inject.frozen_noise": "context manager over noise modules",
    "neurovar.noise.inject.suspend_noise": "context manager over a model",
    "neurovar.noise.fit.scale_to_activation_variance": "needs a fitted noise module",
    "neurovar.noise.fit.NoiseCalibration": "a result container",
    "neurovar.noise.controls.diagonal_control": "one positional argument only",
    "neurovar.noise.controls.isotropic_control": "one positional argument only",
    "neurovar.perturb.attacks._base.Attack": "abstract base class",
    "neurovar.perturb.adapters.torchattacks_names": "no parameters",
    "neurovar.perturb.corruptions.Corruption": "a registry record",
    "neurovar.perturb.diagnostics.NoiseFreeTwin": "a model wrapper (model only)",
    "neurovar.perturb.diagnostics.FrozenNoiseTwin": "a model wrapper",
    "neurovar.perturb.diagnostics.twin_transfer": "owned by another branch (perturb13), slow",
    "neurovar.perturb.attacks.resolve_eot_batch": "internal helper exported for attacks",
    "neurovar.perturb.evaluate.correct_matrix": "internal helper of robust_accuracy",
    "neurovar.plot.plot_robustness_comparison": "like plot_robustness",
    "neurovar.plot.plot_corruptions": "slow (every corruption)",
    "neurovar.stats.accessor.NeurovarAccessor": "the .nv accessor forwards to the statistics",
    "neurovar.inference.binomial.BinomialModelResult": "a result container",
    "neurovar.perturb.evaluate.AttackFactory": "a typing.Protocol (the factory signature)",
    "neurovar.perturb.masking.RobustnessDiagnosis": "a result container",
    # the experiment: record types, and pydantic models whose validation is pydantic's own
    # (every key checked, extra keys forbidden: tests/experiment/test_config.py)
    "neurovar.experiment.config.ExperimentConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.DataConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.ModelConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.TrainingConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.FitConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.EvaluationConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.SourceConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.TargetConfig": "pydantic model: tests/experiment/test_config.py",
    "neurovar.experiment.config.validate_cell_spec": "takes a CellSpec, checked field by field: "
    "tests/experiment/test_config_validation.py and the CellSpec scenarios of api_cases",
    "neurovar.experiment.grid.CellSpec": "a record type built by plan() (frozen dataclass)",
    "neurovar.experiment.grid.SharedTask": "a record type built by cell.shared_work() (frozen "
    "dataclass): tests/experiment/test_shared_work.py",
    "neurovar.experiment.cell.CellResult": "a result container of compute_cell",
    "neurovar.experiment.runner.RunOutcome": "a result container of run",
    "neurovar.experiment.executor.GridOutcome": "a result container of run_cells",
    "neurovar.experiment.executor.local_cluster": "starts dask worker processes: "
    "tests/experiment/test_executor.py",
    "neurovar.experiment.analysis.Claim": "a result container of claims",
    "neurovar.experiment.report.write_report": "writes every figure of a finished run (seconds): "
    "tests/experiment/test_run.py::test_report_rebuilds_from_cells",
    "neurovar.experiment.report.report_main": "the report command (prints, returns an exit status): "
    "tests/experiment/test_folder_errors.py",
    "neurovar.experiment.runner.run_lock": "a context manager over a folder's lock: "
    "tests/experiment/test_run_lock.py",
}

#: (qualified name, parameter) pairs where a generic bad value is not meaningful.
SKIP = {
    # bool-like switches whose None means "auto"
    ("neurovar.noise.fit.fit_perturbation_covariance", "ddof"): "None picks per method; ints >= 0",
    # the eot_samples of gradient_snr is a sequence, not an int
    ("neurovar.perturb.diagnostics.gradient_snr", "eot_samples"): "a sequence of ints",
    # floats where NaN is refused but negative values are meaningful are still fuzzed with NaN;
    # strings that are free text are never fuzzed (api_cases.FREE_TEXT)
    ("neurovar.perturb.evaluate.evaluate_robustness", "eot_samples"): "int or 'auto'",
    ("neurovar.noise.models.IsotropicNoise", "std"): "fuzzed below through noise params",
    ("neurovar.stats.variability.mean_matched_fano_factor", "condition"): "a coordinate name",
    ("neurovar.plot.plot_noise_correlations", "bins"): "int or a sequence of edges",
    ("neurovar.perturb.attacks.fgsm.FGSM", "eot_batch"): "int or 'auto'",
    ("neurovar.perturb.attacks.pgd.PGD", "eot_batch"): "int or 'auto'",
    ("neurovar.perturb.attacks.targeted_pgd.TargetedPGD", "eot_batch"): "int or 'auto'",
    ("neurovar.perturb.attacks.square.Square", "eot_batch"): "int or 'auto'",
}


def generated_cases():
    api = public_api()
    table = cases()
    out = []
    for qual, obj in sorted(api.items()):
        if qual in NO_CASE or table.get(qual) is None:
            continue
        for p in init_params(obj):
            kind = param_kind(p)
            if kind is None or (qual, p.name) in SKIP:
                continue
            for which, values in BAD_VALUES[kind].items():
                for value in values:
                    out.append(
                        pytest.param(
                            qual,
                            p.name,
                            value,
                            id=f"{qual.split('.')[-1]}-{p.name}-{which}-{value!r}",
                        )
                    )
    return out


def test_every_public_object_has_a_case_or_a_reason():
    api = public_api()
    table = cases()
    missing = [q for q in api if q not in NO_CASE and table.get(q) is None]
    assert not missing, (
        f"add a tiny valid call to api_cases.CASES or a reason to NO_CASE: {missing}"
    )
    stale = [q for q in list(NO_CASE) + list(table) if q not in api]
    assert not stale, f"names no longer public: {stale}"


_RUNS: dict[str, object] = {}


def _runner(qual):
    if qual not in _RUNS:
        _RUNS[qual] = cases()[qual]()
    return _RUNS[qual]


@pytest.mark.parametrize("qual", sorted(q for q, f in cases().items() if f is not None))
def test_valid_call_works(qual):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _runner(qual)()


@pytest.mark.parametrize(("qual", "param", "value"), generated_cases())
def test_bad_value_is_a_clear_error(qual, param, value):
    run = _runner(qual)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InvalidParameterError) as info:
            run(**{param: value})
    message = str(info.value)
    assert f"'{param}'" in message, message
    assert any(owner in message for owner in owner_names(qual)), message


# ----------------------------------------------------------------------------- statistics fuzz

_FINITE = st.floats(-1e6, 1e6, allow_nan=False, width=64)
_ANY = st.one_of(_FINITE, st.just(math.nan), st.just(math.inf), st.just(0.0))


@st.composite
def response_arrays(draw):
    t = draw(st.integers(0, 5))
    s = draw(st.integers(0, 3))
    u = draw(st.integers(0, 4))
    values = draw(st.lists(_ANY, min_size=t * s * u, max_size=t * s * u))
    data = np.asarray(values, dtype=float).reshape(t, s, u)
    return xr.DataArray(data, dims=("trial", "stimulus", "unit"))


def _stats_calls():
    from neurovar import stats

    return {
        "fano_factor": lambda r: stats.fano_factor(r),
        "noise_correlation": lambda r: stats.noise_correlation(r),
        "signal_correlation": lambda r: stats.signal_correlation(r),
        "noise_covariance": lambda r: stats.noise_covariance(r),
        "eigenspectrum": lambda r: stats.eigenspectrum(stats.noise_covariance(r)),
        "participation_ratio": lambda r: stats.participation_ratio(stats.noise_covariance(r)),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resp=response_arrays(), which=st.sampled_from(sorted(_stats_calls())))
def test_statistics_fuzz(resp, which):
    """No exception other than InvalidParameterError, and NaN/inf output only with a warning."""
    call = _stats_calls()[which]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = call(resp)
        except InvalidParameterError:
            return
    values = np.asarray(out.values, dtype=float)
    if values.size and not np.all(np.isfinite(values)):
        assert any(issubclass(w.category, RuntimeWarning) for w in caught), (
            f"{which} returned non-finite values without a warning for input\n{resp.values!r}"
        )


# ----------------------------------------------------------------------------- declarative layer
@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        (v.Interval(__import__("numbers").Integral, 1, None), [1, np.int64(7), 10**12],
         [0, True, 1.0, "2", None, np.float64(3)]),
        (v.Interval(__import__("numbers").Real, 0, 1, closed="right"), [1, 0.5, np.float32(0.2)],
         [0, 0.0, 1.0001, math.nan, True, "0.5", math.inf]),
        (v.Interval(__import__("numbers").Real, None, None, allow_inf=True), [-math.inf, 3],
         [math.nan, False]),
        (v.Options(str, ("linf", "l2")), ["linf", "l2"], ["l3", None, 1, ["linf"]]),
    ],
)
def test_constraints_accept_exactly_their_values(constraint, good, bad):
    assert all(constraint.is_satisfied_by(g) for g in good)
    assert not any(constraint.is_satisfied_by(b) for b in bad)


def test_interval_describes_its_bounds_and_refuses_an_empty_interval():
    from numbers import Integral, Real

    assert str(v.Interval(Integral, 1, None)) == "an int in [1, inf)"
    assert str(v.Interval(Real, 0, 1, closed="neither")) == "a float in (0, 1)"
    assert str(v.Interval(Real, 0, 1, closed="left")) == "a float in [0, 1)"
    with pytest.raises(ValueError, match="empty interval"):
        v.Interval(Real, 2, 1)


def test_check_param_lists_every_accepted_form_and_suggests_a_close_option():
    with pytest.raises(InvalidParameterError) as info:
        v.check_param("isotropc", [v.Options(str, ("isotropic", "diagonal")), None],
                      name="kind", owner="f")
    assert str(info.value) == (
        "The 'kind' parameter of f must be one of ['isotropic', 'diagonal'] or None. Got "
        "'isotropc' instead. (did you mean 'isotropic'?)")
    assert v.check_param(None, [v.Options(str, ("a",)), None], name="kind", owner="f") is None


def test_validate_params_checks_defaults_and_keywords_before_the_body_runs():
    from numbers import Real

    ran = []

    @v.validate_params({"eps": [v.Interval(Real, 0, 1, closed="right")], "cb": [callable, None],
                        "flag": ["boolean"], "rng": ["random_state"]})
    def f(eps, cb=None, *, flag=False, rng=None):
        ran.append(eps)
        return eps

    assert f(0.5, flag=True, rng=np.random.default_rng(0)) == 0.5
    for kwargs, name in (({"eps": 0}, "eps"), ({"eps": 0.1, "cb": 3}, "cb"),
                         ({"eps": 0.1, "flag": 1}, "flag"), ({"eps": 0.1, "rng": -1}, "rng")):
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of .*f must be"):
            f(**kwargs)
    assert ran == [0.5]  # no failing call reached the body

    with pytest.raises(ValueError, match="no parameter"):
        v.validate_params({"epz": [float]})(lambda eps: eps)


def test_the_old_homes_hold_no_generic_checker_any_more():
    """stats/_util, noise/_utils, inference/_validation and perturb/_utils hold only the rules
    of their package: every int, real and choice check calls _validation directly."""
    from neurovar.inference import _validation as inf
    from neurovar.noise import _utils as nu
    from neurovar.perturb import _utils as pu
    from neurovar.stats import _util as su

    gone = {
        su: ("check_int", "check_real", "check_option"),
        nu: ("check_int", "check_nonneg_float", "check_seed"),
        inf: ("check_choice", "check_positive_int", "check_unit_interval",
              "check_confidence_level"),
        pu: ("check_number", "check_choice"),
    }
    for module, names in gone.items():  # an import of the _validation function is no wrapper
        left = [n for n in names if getattr(module, n, None) not in (None, getattr(v, n, None))]
        assert not left, (module.__name__, left)
    # one argument order: perturb has no owner-first adapter any more
    assert not hasattr(pu, "param_error") or pu.param_error is v.param_error


def test_the_behaviour_of_the_old_helpers_lives_in_the_validation_layer():
    """What the removed helpers added is an option or a function of _validation, with their
    messages: noise's 0-d arrays and tensors (check_real(coerce=True)), inference's confidence
    level (check_confidence_level), perturb's choice among strs (Options(str, ...))."""

    def msg(call):
        with pytest.raises(InvalidParameterError) as info:
            call()
        return str(info.value)

    assert v.check_real(np.float64(0.5), name="x", owner="f", low=0, coerce=True) == 0.5
    assert v.check_real(np.array(2.0), name="x", owner="f", low=0, coerce=True) == 2.0
    out = v.check_real(torch.tensor(0.25), name="x", owner="f", low=0, coerce=True)
    assert out == 0.25 and type(out) is float
    assert v.check_real(None, name="x", owner="f", coerce=True, allow_none=True) is None
    for bad in ("0.5", b"1", True, np.bool_(False), [1.0, 2.0], object()):
        assert msg(lambda bad=bad: v.check_real(bad, name="x", owner="f", low=0, coerce=True)) \
            == f"The 'x' parameter of f must be a float in [0, inf). Got {v.describe(bad)} instead."
    assert msg(lambda: v.check_real(torch.tensor(-1.0), name="std", owner="IsotropicNoise",
                                    low=0, low_open=True, coerce=True)) == (
        "The 'std' parameter of IsotropicNoise must be a float in (0, inf). Got -1.0 instead.")
    # without coerce a 0-d array is refused, as before
    with pytest.raises(InvalidParameterError):
        v.check_real(np.array(2.0), name="x", owner="f", low=0)

    assert v.check_confidence_level(0.9, owner="f") == 0.9
    for bad in (0, 1, 1.5, "0.9", True, float("nan")):
        assert msg(lambda bad=bad: v.check_confidence_level(bad, owner="f")) == (
            "The 'confidence_level' parameter of f must be a float in (0, 1). "
            f"Got {v.describe(bad)} instead.")

    assert msg(lambda: v.check_param("Linf", [v.Options(str, ("linf", "l2"))], name="norm",
                                     owner="PGD")) == (
        "The 'norm' parameter of PGD must be one of ['linf', 'l2']. Got 'Linf' instead. "
        "(did you mean 'linf'?)")


def test_an_automatic_bar_shows_at_once_with_its_total_when_the_work_is_large():
    from neurovar.perturb._utils import AUTO_PROGRESS_DELAY_S, progress_bar

    with progress_bar(total=10**9, desc="PGD", progress=None, unit="pass") as big:
        assert not big.disable and big.delay == 0 and big.total == 10**9
    with progress_bar(total=40, desc="PGD", progress=None, unit="pass") as small:
        assert small.delay == AUTO_PROGRESS_DELAY_S
    with progress_bar(total=10**9, desc="PGD", progress=False, unit="pass") as off:
        assert off.disable
