"""Tests for the ``neurovar stats`` command (neurovar.cli.stats)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from neurovar.cli.stats import add_arguments, run
from neurovar.inference import correct_pvalues, permutation_test

REPO = Path(__file__).resolve().parents[2]


def _parser():
    parser = argparse.ArgumentParser(prog="neurovar stats")
    add_arguments(parser)
    return parser


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for layer, shift in [("conv1", -0.5), ("conv2", -0.3), ("fc", 0.0)]:
        for noise in ["structured", "isotropic", "none"]:
            for seed in range(8):
                base = 1.0 + (shift if noise == "structured" else 0.0)
                rows.append(
                    {
                        "layer": layer,
                        "noise": noise,
                        "seed": seed,
                        "fano": base + rng.normal(0, 0.2),
                    }
                )
    df = pd.DataFrame(rows)
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    return df, path


def test_run_matches_library_and_writes_csv(table, tmp_path, capsys):
    df, path = table
    out = tmp_path / "stats.csv"
    args = _parser().parse_args(
        [
            str(path),
            "--compare",
            "structured",
            "isotropic",
            "--by",
            "layer",
            "--n-permutations",
            "999",
            "--out",
            str(out),
        ]
    )
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "conv1" in printed and "p_corrected" in printed and f"wrote {out}" in printed
    res = pd.read_csv(out)
    assert list(res.layer) == ["conv1", "conv2", "fc"]
    assert (res.value == "fano").all() and (res.condition_column == "noise").all()
    for _, r in res.iterrows():
        sub = df[df.layer == r.layer]
        ref = permutation_test(
            sub[sub.noise == "structured"].fano.to_numpy(),
            sub[sub.noise == "isotropic"].fano.to_numpy(),
            n_permutations=999,
            rng=np.random.default_rng(0),
        )
        assert r.p_value == pytest.approx(float(ref.p_value))
        assert r.cohens_d == pytest.approx(float(ref.cohens_d))
        assert r.rank_biserial == pytest.approx(float(ref.rank_biserial))
        assert r.n_a == 8 and r.n_b == 8
    expected = correct_pvalues(xr.DataArray(res.p_value.to_numpy()), method="fdr_bh")
    np.testing.assert_allclose(res.p_corrected, expected.values)
    assert res.set_index("layer").loc["conv1", "p_corrected"] < 0.01
    assert res.set_index("layer").loc["conv1", "statistic"] < 0


def test_paired_on_seed_from_netcdf(table, tmp_path, capsys):
    df, _ = table
    ds = df.set_index(["layer", "noise", "seed"]).to_xarray()
    path = tmp_path / "results.nc"
    ds.to_netcdf(path)
    out = tmp_path / "paired.csv"
    args = _parser().parse_args(
        [
            str(path),
            "--compare",
            "structured",
            "isotropic",
            "--by",
            "layer",
            "--pair-on",
            "seed",
            "--out",
            str(out),
        ]
    )
    assert run(args) == 0
    res = pd.read_csv(out).set_index("layer")
    sub = df[df.layer == "fc"]
    ref = permutation_test(
        sub[sub.noise == "structured"].fano.to_numpy(),
        sub[sub.noise == "isotropic"].fano.to_numpy(),
        paired=True,
    )
    assert res.loc["fc", "p_value"] == pytest.approx(float(ref.p_value))
    assert bool(res.loc["fc", "exact"])  # 2**8 sign flips, enumerated


def test_user_errors_return_2(table, tmp_path, capsys):
    _, path = table
    p = _parser()
    assert run(p.parse_args([str(path), "--compare", "structured", "foo"])) == 2
    assert "no column contains both" in capsys.readouterr().err
    assert run(p.parse_args([str(tmp_path / "missing.csv"), "--compare", "a", "b"])) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        run(p.parse_args([str(path), "--compare", "structured", "isotropic", "--by", "area"])) == 2
    )
    assert "'area' not found" in capsys.readouterr().err
    assert (
        run(p.parse_args([str(path), "--compare", "structured", "isotropic", "--value", "noise"]))
        == 2
    )
    assert "not numeric" in capsys.readouterr().err


def test_untestable_group_is_reported_not_fatal(tmp_path, capsys):
    df = pd.DataFrame(
        {
            "area": ["V1"] * 20 + ["V4"] * 4,
            "cond": (["A", "B"] * 10) + ["A", "B", "A", "B"],
            "value": np.arange(24, dtype=float),
        }
    )
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "o.csv"
    code = run(
        _parser().parse_args(
            [
                str(path),
                "--compare",
                "A",
                "B",
                "--by",
                "area",
                "--out",
                str(out),
                "--n-permutations",
                "199",
            ]
        )
    )
    assert code == 0
    res = pd.read_csv(out).set_index("area")
    # issue 14: the exact attainable p-value is reported with the note, not NaN
    assert np.isfinite(res.loc["V1", "p_value"]) and np.isfinite(res.loc["V4", "p_value"])
    assert "cannot reach" in res.loc["V4", "note"]
    assert "note (V4)" in capsys.readouterr().out


def test_module_entry_point(table, tmp_path):
    _, path = table
    out = tmp_path / "sub.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neurovar.cli.stats",
            str(path),
            "--compare",
            "structured",
            "none",
            "--by",
            "layer",
            "--n-permutations",
            "199",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and len(pd.read_csv(out)) == 3


def test_through_the_neurovar_command(table, tmp_path, capsys):
    from neurovar.cli import main

    df, path = table
    out = tmp_path / "main.csv"
    argv = ["stats", str(path), "--compare", "structured", "none", "--by", "layer"]
    assert main([*argv, "--n-permutations", "199", "--seed", "3", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    res = pd.read_csv(out).set_index("layer")
    sub = df[df.layer == "conv2"]
    ref = permutation_test(
        sub[sub.noise == "structured"].fano.to_numpy(),
        sub[sub.noise == "none"].fano.to_numpy(),
        n_permutations=199,
        rng=np.random.default_rng(3),
    )
    assert res.loc["conv2", "p_value"] == pytest.approx(float(ref.p_value))
    assert res.loc["conv2", "cohens_d"] == pytest.approx(float(ref.cohens_d))
    # bad options are errors (exit 2), not a note repeated in every group
    assert main([*argv, "--n-permutations", "0", "--out", str(out)]) == 2
    assert "--n-permutations must be >= 1" in capsys.readouterr().err
    assert main([*argv, "--alpha", "5", "--out", str(out)]) == 2
    assert "--alpha must be in (0, 1)" in capsys.readouterr().err


def test_nan_needs_a_policy_and_unmatched_pairs_are_reported(table, tmp_path, capsys):
    from neurovar.cli import main

    df, _ = table
    df = df.copy()
    first = df.index[(df.layer == "conv1") & (df.noise == "structured")][0]
    df.loc[first, "fano"] = np.nan
    path = tmp_path / "nan.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "nan_stats.csv"
    argv = ["stats", str(path), "--compare", "structured", "isotropic", "--by", "layer"]
    argv += ["--n-permutations", "199", "--out", str(out)]
    assert main(argv) == 2
    assert "1 NaN" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--nan-policy", "omit"]) == 0
    res = pd.read_csv(out).set_index("layer")
    assert res.loc["conv1", "n_a"] == 7 and res.loc["conv2", "n_a"] == 8
    # paired on seed: a dropped row leaves its partner unmatched, which is said, not hidden
    df.drop(index=first).to_csv(path, index=False)
    assert main([*argv, "--pair-on", "seed"]) == 0
    printed = capsys.readouterr().out
    res = pd.read_csv(out).set_index("layer")
    assert res.loc["conv1", "n_a"] == 7 and np.isfinite(res.loc["conv1", "p_value"])
    assert "1 'isotropic' row(s) without a partner on 'seed'" in res.loc["conv1", "note"]
    assert "note (conv1)" in printed


def test_two_stage_fdr_uses_the_requested_alpha(tmp_path):
    from neurovar.cli import main

    base = np.linspace(-1, 1, 8)
    shifts = [0.0, 0.3, 0.5, 0.7, 0.9, 2.0]
    df = pd.DataFrame(
        [
            {"area": f"a{k}", "cond": c, "value": v}
            for k, shift in enumerate(shifts)
            for c, vals in (("A", base + shift), ("B", base))
            for v in vals
        ]
    )
    path, out = tmp_path / "fdr.csv", tmp_path / "fdr_stats.csv"
    df.to_csv(path, index=False)
    argv = ["stats", str(path), "--compare", "A", "B", "--by", "area", "--out", str(out)]
    assert (
        main([*argv, "--n-permutations", "1999", "--correction", "fdr_tsbh", "--alpha", "0.2"]) == 0
    )
    res = pd.read_csv(out)
    p = xr.DataArray(res.p_value.to_numpy())
    np.testing.assert_allclose(
        res.p_corrected, correct_pvalues(p, method="fdr_tsbh", alpha=0.2).values
    )
    # the two-stage adjustment depends on alpha, so this checks that --alpha reached it
    assert not np.allclose(res.p_corrected, correct_pvalues(p, method="fdr_tsbh").values)


def _robustness_table(tmp_path, n_seeds=5):
    """Rows of different kinds (metric x attack) for two noise conditions and 5 seeds."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(n_seeds):
        for metric, attack, base in [
            ("clean", "none", 0.9),
            ("adversarial", "pgd", 0.3),
            ("adversarial", "square", 0.5),
            ("worst_case", "ensemble", 0.25),
        ]:
            level = base + rng.normal(0, 0.02)
            rows.append(
                {
                    "seed": seed,
                    "metric": metric,
                    "attack": attack,
                    "noise": "structured",
                    "value": level + 0.05,
                }
            )
            rows.append(
                {
                    "seed": seed,
                    "metric": metric,
                    "attack": attack,
                    "noise": "isotropic",
                    "value": level,
                }
            )
    df = pd.DataFrame(rows)
    path = tmp_path / "robustness.csv"
    df.to_csv(path, index=False)
    return df, path


def test_rows_of_different_kinds_are_not_pooled(tmp_path, capsys):
    from neurovar.cli import main

    df, path = _robustness_table(tmp_path)
    out = tmp_path / "o.csv"
    argv = ["stats", str(path), "--compare", "structured", "isotropic", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'metric' has 3 values" in err and "'attack' has 4 values" in err
    assert "--by metric attack" in err and not out.exists()
    # the named --by runs, one test per kind of row; --pool pools on purpose
    assert main([*argv, "--by", "metric", "attack", "--pair-on", "seed"]) == 0
    assert len(pd.read_csv(out)) == 4
    assert main([*argv, "--pool", "--n-permutations", "199"]) == 0
    assert pd.read_csv(out).n_a.item() == len(df) // 2


def test_consistent_effect_gets_exact_p_statistic_and_effect_size(tmp_path):
    from neurovar.cli import main

    _, path = _robustness_table(tmp_path)
    out = tmp_path / "o.csv"
    argv = [
        "stats",
        str(path),
        "--compare",
        "structured",
        "isotropic",
        "--by",
        "metric",
        "attack",
        "--pair-on",
        "seed",
        "--out",
        str(out),
    ]
    with pytest.warns(RuntimeWarning, match="zero variance of the paired differences"):
        assert main(argv) == 0
    res = pd.read_csv(out)
    # 5 seeds, structured better by 0.05 in every seed: 2**5 = 32 sign flips, two-sided
    # p = 2/32 exactly, the difference itself, and an infinite d_z (no spread), not NaN / 6e15
    np.testing.assert_allclose(res.p_value, 0.0625)
    np.testing.assert_allclose(res.statistic, 0.05, rtol=1e-9)
    assert np.isposinf(res.cohens_d).all()
    assert res.note.str.contains("cannot reach p <= 0.05").all()
    assert res.note.str.contains("0.0625").all()


def test_cohens_d_of_constant_differences_is_inf_with_a_warning():
    from neurovar.inference import cohens_d

    a = np.array([0.85, 0.80, 0.75, 0.90, 0.70])
    with pytest.warns(RuntimeWarning, match="zero variance"):
        assert np.isposinf(float(cohens_d(a, a - 0.05, paired=True)))
    with pytest.warns(RuntimeWarning, match="zero variance"):
        assert np.isnan(float(cohens_d(a, a.copy(), paired=True)))
    with pytest.warns(RuntimeWarning, match="zero within-group variance"):
        assert np.isneginf(float(cohens_d(np.full(4, 0.1), np.full(4, 0.3))))
    b = a - 0.05 + np.array([0.01, -0.01, 0.0, 0.02, -0.02])  # real spread: an ordinary d
    assert 1 < float(cohens_d(a, b, paired=True)) < 10


def test_pair_on_several_columns(tmp_path):
    from neurovar.cli import main

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for example in range(6):
            base = rng.normal()
            rows.append(
                {
                    "seed": seed,
                    "example": example,
                    "noise": "structured",
                    "value": base + 0.5 + rng.normal(0, 0.1),
                }
            )
            rows.append({"seed": seed, "example": example, "noise": "isotropic", "value": base})
    df = pd.DataFrame(rows)
    path, out = tmp_path / "p.csv", tmp_path / "o.csv"
    df.to_csv(path, index=False)
    argv = ["stats", str(path), "--compare", "structured", "isotropic", "--out", str(out)]
    assert main([*argv, "--pair-on", "example"]) == 2  # 3 seeds share each example
    assert main([*argv, "--pair-on", "seed", "example", "--n-permutations", "999"]) == 0
    res = pd.read_csv(out)
    s = df[df.noise == "structured"].sort_values(["seed", "example"]).value.to_numpy()
    i = df[df.noise == "isotropic"].sort_values(["seed", "example"]).value.to_numpy()
    ref = permutation_test(s, i, paired=True, n_permutations=999, rng=np.random.default_rng(0))
    assert res.n_a.item() == 18
    assert res.p_value.item() == pytest.approx(float(ref.p_value))
    assert res.cohens_d.item() == pytest.approx(float(ref.cohens_d))


def test_requested_boolean_variable_is_the_one_tested(tmp_path):
    from neurovar.cli import main

    rng = np.random.default_rng(0)
    correct = np.stack([rng.random((4, 40)) < 0.8, rng.random((4, 40)) < 0.4])
    ds = xr.Dataset(
        {
            "worst_case_correct": (("noise", "seed", "example"), correct),
            "eps": ((), 0.03),
            "clean_accuracy": (("noise", "seed"), rng.random((2, 4))),
        },
        coords={"noise": ["structured", "isotropic"], "seed": np.arange(4)},
    )
    path, out = tmp_path / "rob.nc", tmp_path / "o.csv"
    ds.to_netcdf(path)
    argv = [
        "stats",
        str(path),
        "--variable",
        "worst_case_correct",
        "--compare",
        "structured",
        "isotropic",
        "--n-permutations",
        "999",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    res = pd.read_csv(out)
    assert res.value.item() == "worst_case_correct"
    np.testing.assert_allclose(res.mean_a.item(), correct[0].mean())
    np.testing.assert_allclose(res.mean_b.item(), correct[1].mean())
    assert res.p_value.item() < 0.01


def _spy_permutations(monkeypatch):
    """Count permutation tests run by the command (none may run when --out is bad)."""
    from neurovar.cli import stats as _cli

    calls = []
    real = _cli.permutation_test

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(_cli, "permutation_test", spy)
    return calls


@pytest.mark.parametrize("kind", ["folder", "missing_parent", "proc"])
def test_bad_out_is_refused_before_computing(tmp_path, capsys, monkeypatch, kind):
    from neurovar.cli import main

    _, path = _robustness_table(tmp_path)
    out = {"folder": tmp_path, "missing_parent": tmp_path / "nope" / "o.csv",
           "proc": Path("/proc/neurovar_stats.csv")}[kind]
    calls = _spy_permutations(monkeypatch)
    argv = ["stats", str(path), "--compare", "structured", "isotropic", "--by", "metric",
            "attack", "--pair-on", "seed", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurovar stats: error: --out") and "Traceback" not in err
    want = {"folder": "is a folder", "missing_parent": "does not exist",
            "proc": "cannot be written"}[kind]
    assert want in err
    assert calls == []  # refused before any test ran
    assert not (tmp_path / "nope").exists()
    # a good --out is written whole, with no temporary file left beside it
    good = tmp_path / "o.csv"
    assert main([*argv[:-1], str(good)]) == 0 and len(pd.read_csv(good)) == 4
    assert calls and not [p for p in tmp_path.iterdir() if p.name.startswith(".o.csv")]


def test_folder_as_input_is_a_clear_error(tmp_path, capsys):
    from neurovar.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.csv").write_text("a,b\n1,2\n")
    argv = ["stats", str(run_dir), "--compare", "x", "y", "--out", str(tmp_path / "o.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a results file" in err
    assert str(run_dir / "results.csv") in err and "Traceback" not in err


def test_unreadable_input_is_one_line_not_a_traceback(tmp_path, capsys):
    import os

    from neurovar.cli import main

    _, path = _robustness_table(tmp_path)
    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of their mode")
    path.chmod(0)
    try:
        argv = ["stats", str(path), "--compare", "structured", "isotropic"]
        assert main([*argv, "--out", str(tmp_path / "o.csv")]) == 2
        assert "Permission denied" in capsys.readouterr().err
    finally:
        path.chmod(0o644)


def test_grid_coordinates_are_not_pooled_when_conditions_do_not_share_them(tmp_path, capsys):
    """A real grid: isotropic at two magnitudes, the structured source fitted at one, both at
    the same eps grid. The eps and magnitude of isotropic's rows then repeat twice as often as
    structured's, so they are not 'crossed' by count; pooling them would compare structured at
    m = 2 with the mean of isotropic at m = 0.5 and 2. The command must refuse and name --by."""
    from neurovar.cli import main

    rng = np.random.default_rng(3)
    rows = []
    for seed in range(4):
        for eps in (0.05, 0.1, 0.2):
            rows.append({"seed": seed, "condition": "structured:pgd_ce", "magnitude": 2.0,
                         "target": "apgd@paper", "strength": eps,
                         "accuracy": 0.8 - eps + rng.normal(0, 0.01)})
            for m in (0.5, 2.0):
                rows.append({"seed": seed, "condition": "isotropic", "magnitude": m,
                             "target": "apgd@paper", "strength": eps,
                             "accuracy": 0.8 - m * eps + rng.normal(0, 0.01)})
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "o.csv"
    argv = ["stats", str(path), "--compare", "structured:pgd_ce", "isotropic",
            "--value", "accuracy", "--out", str(out)]
    assert main([*argv, "--by", "target"]) == 2
    err = capsys.readouterr().err
    assert "'magnitude' has 2 values" in err and "'strength' has 3 values" in err
    assert "--by target magnitude strength" in err and not out.exists()
    assert main([*argv, "--by", "target", "magnitude", "strength", "--pair-on", "seed",
                 "--n-permutations", "99"]) == 0
    res = pd.read_csv(out)
    tested = res[res.n_a > 0]
    # one test per (magnitude, eps) that both conditions have: structured only exists at m = 2
    assert sorted(tested.magnitude.unique()) == [2.0] and len(tested) == 3
    assert (tested.n_a == 4).all() and (tested.n_b == 4).all()
