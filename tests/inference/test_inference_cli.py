"""Tests for the ``neurovar stats`` command (neurovar.inference._cli)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from neurovar.inference import correct_pvalues, permutation_test
from neurovar.inference._cli import add_arguments, run

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
    assert np.isfinite(res.loc["V1", "p_value"]) and np.isnan(res.loc["V4", "p_value"])
    assert "cannot reach" in res.loc["V4", "note"]
    assert "note (V4)" in capsys.readouterr().out


def test_module_entry_point(table, tmp_path):
    _, path = table
    out = tmp_path / "sub.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neurovar.inference._cli",
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
