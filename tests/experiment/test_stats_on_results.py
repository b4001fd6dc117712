"""``neurovar stats`` on the results table of a real run (issue 20).

The demo's own ``results.csv`` has columns that are NaN on some rows (alignment of ``none``,
EOT numbers of noise-off rows) and measurement columns (``ci_low``, ``clean_accuracy``) that
differ between conditions. The command printed in the README,

    neurovar stats results.csv --compare structured:pgd_ce isotropic --value accuracy
        --by regime noise_at_test target --pair-on seed strength

exited 2 with "'<' not supported between instances of 'float' and 'str'".
"""

from __future__ import annotations

import pandas as pd
import pytest

from neurovar.cli import main

COMMAND = ["--compare", "structured:pgd_ce", "isotropic", "--value", "accuracy",
           "--by", "regime", "noise_at_test", "target", "--pair-on", "seed", "strength"]


@pytest.fixture()
def table(tiny_run):
    out, _ = tiny_run
    df = pd.read_csv(out / "results.csv")
    assert df.isna().any().any(), "the real table has NaN cells: the case under test"
    return df


def test_readme_command_runs_on_a_real_results_table(tiny_run, table, tmp_path, capsys):
    out, _ = tiny_run
    dest = tmp_path / "stats.csv"
    assert main(["stats", str(out / "results.csv"), *COMMAND, "--out", str(dest)]) == 0
    got = pd.read_csv(dest)
    # one test per regime x noise flag x target that holds both conditions
    compared = table[table["condition"].isin(["structured:pgd_ce", "isotropic"])]
    groups = compared.groupby(["regime", "noise_at_test", "target"]).ngroups
    assert len(got) == groups
    # paired on (seed, strength): the mean difference is the mean of the per-pair differences
    r = got.iloc[0]
    sel = table[(table["regime"] == r["regime"]) & (table["noise_at_test"] == r["noise_at_test"])
                & (table["target"] == r["target"])]
    a = sel[sel["condition"] == "structured:pgd_ce"].set_index(["seed", "strength"])["accuracy"]
    b = sel[sel["condition"] == "isotropic"].set_index(["seed", "strength"])["accuracy"]
    assert r["n_a"] == len(a) and r["statistic"] == pytest.approx((a - b).mean())


def test_nan_label_column_does_not_break_the_row_type_check(table, tmp_path, capsys):
    """A label (string) column that is NaN on some rows: sorted as labels, named in words."""
    df = table.copy()
    df["attack_family"] = df["target_family"].where(df["target_family"] == "attack")
    # it varies within (regime, flag) groups: the rows are of two kinds, and the error says so
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    argv = ["stats", str(path), "--compare", "structured:pgd_ce", "isotropic", "--value",
            "accuracy", "--by", "regime", "noise_at_test", "--pair-on", "seed", "strength",
            "--out", str(tmp_path / "o.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not supported between" not in err
    assert "'attack_family' has 2 values (attack, nan)" in err
    assert "--by regime noise_at_test" in err and "target" in err


def test_several_magnitudes_and_layers_are_named_not_pooled(table, tmp_path, capsys):
    """A table of several magnitudes and layers: the pooled rows are named, and the suggested
    --by runs."""
    parts = []
    for m in (0.25, 0.5):
        for layer in ("relu2", "relu3"):
            parts.append(table.assign(magnitude=m, layer=layer,
                                      accuracy=(table["accuracy"] - m / 10).clip(0, 1)))
    wide = pd.concat(parts, ignore_index=True)
    path = tmp_path / "wide.csv"
    wide.to_csv(path, index=False)
    dest = tmp_path / "o.csv"
    assert main(["stats", str(path), *COMMAND, "--out", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "'magnitude' has 2 values" in err and "'layer' has 2 values" in err
    # measurements that differ between conditions are not mistaken for kinds of rows
    for col in ("ci_low", "clean_accuracy", "target_alignment", "fano_factor"):
        assert f"'{col}'" not in err
    assert not dest.exists()
    by = ["--by", "regime", "noise_at_test", "target", "magnitude", "layer"]
    assert main(["stats", str(path), *COMMAND, *by, "--out", str(dest)]) == 0
    got = pd.read_csv(dest)
    assert set(got["magnitude"]) == {0.25, 0.5} and set(got["layer"]) == {"relu2", "relu3"}


def test_unpaired_eps_grid_still_refused(tiny_run, capsys, tmp_path):
    """Without --pair-on strength, rows at different strengths are different quantities."""
    out, _ = tiny_run
    argv = ["stats", str(out / "results.csv"), "--compare", "structured:pgd_ce", "isotropic",
            "--value", "accuracy", "--by", "regime", "noise_at_test", "target",
            "--out", str(tmp_path / "o.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'strength'" in err and "'ci_low'" not in err


def test_a_group_without_partners_says_so_in_words(table, tmp_path, capsys):
    """A --by group where one condition has no rows (noise off for a network that only exists
    with noise, or a magnitude one condition never ran at) says there is nothing to compare,
    not the permutation test's refusal of an empty sample."""
    src = tmp_path / "results.csv"
    keep = table[~((table["condition"] == "isotropic") & (table["noise_at_test"] == False))]  # noqa: E712
    keep.to_csv(src, index=False)
    dest = tmp_path / "stats.csv"
    assert main(["stats", str(src), *COMMAND, "--out", str(dest)]) == 0
    got = pd.read_csv(dest)
    off = got[got["noise_at_test"] == False]  # noqa: E712
    assert len(off) and off["p_value"].isna().all()
    assert off["note"].str.contains(
        "has a 'isotropic' partner in this group: nothing to compare").all()
    assert "must be non-empty" not in capsys.readouterr().out
