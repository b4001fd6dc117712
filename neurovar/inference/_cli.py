"""``neurovar stats``: compare two conditions in a results table from the command line.

Example::

    neurovar stats results.csv --compare structured isotropic --by layer --value fano_factor

reads a tidy table (CSV) or an xarray file (netCDF ``.nc`` or a ``.zarr`` store, converted with
:func:`neurovar.inference.to_tidy`), runs one permutation test per ``--by`` group comparing the
rows whose condition column equals A with those equal to B, corrects the p-values across
groups, prints a table and writes it as CSV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .multiple import PVALUE_METHODS, correct_pvalues
from .permutation import PERMUTATION_STATISTICS, permutation_test
from .tidy import to_tidy

__all__ = ["add_arguments", "run", "main"]


class StatsInputError(ValueError):
    """A user error in the ``stats`` command line (reported without a traceback)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``neurovar stats`` options to ``parser``."""
    parser.description = (
        "Compare two conditions (A vs B) in a results table with permutation tests, one per "
        "group, reporting effect sizes and multiple-comparison-corrected p-values."
    )
    parser.add_argument(
        "results", help="tidy CSV table, or netCDF (.nc) / zarr (.zarr) results file"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        required=True,
        help="the two condition labels to compare (statistic = A - B)",
    )
    parser.add_argument(
        "--by",
        nargs="+",
        default=[],
        metavar="COL",
        help="column(s) defining groups; one test per group (default: one test overall)",
    )
    parser.add_argument(
        "--column",
        default=None,
        metavar="COL",
        help="column holding the labels A and B (default: the one column containing both)",
    )
    parser.add_argument(
        "--value",
        default=None,
        metavar="COL",
        help="numeric column to compare (default: 'value', else the only numeric column left)",
    )
    parser.add_argument(
        "--pair-on",
        default=None,
        metavar="COL",
        help="pair A and B rows on this column (e.g. seed, stimulus_id): paired test",
    )
    parser.add_argument(
        "--statistic",
        default="mean_difference",
        choices=sorted(PERMUTATION_STATISTICS),
        help="test statistic (default: mean_difference)",
    )
    parser.add_argument(
        "--alternative", default="two-sided", choices=["two-sided", "greater", "less"]
    )
    parser.add_argument("--n-permutations", type=int, default=9999)
    parser.add_argument(
        "--correction",
        default="fdr_bh",
        choices=list(PVALUE_METHODS),
        help="multiple-comparison correction across groups (default: fdr_bh)",
    )
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--nan-policy",
        default="raise",
        choices=["raise", "omit"],
        help="NaN in the value column: error (default) or drop those rows",
    )
    parser.add_argument(
        "--variable",
        default=None,
        help="netCDF/zarr input: data variable to use (default: all, see --value)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed for the permutations (default: 0)"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="CSV",
        help="output CSV (default: <results stem>_stats.csv in the current directory)",
    )


def _load(path: Path, variable: str | None) -> pd.DataFrame:
    if not path.exists():
        raise StatsInputError(f"results file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if suffix == ".zarr" or (
        path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())
    ):
        ds = xr.open_zarr(path)
    elif suffix in (".nc", ".nc4", ".netcdf", ".h5", ".cdf"):
        ds = xr.open_dataset(path)
    else:
        raise StatsInputError(
            f"results file {str(path)!r} has an unknown type; expected .csv, .tsv, .nc or .zarr."
        )
    with ds:
        ds = ds.load()
    return to_tidy(ds, variables=variable)


def _condition_column(df: pd.DataFrame, a: str, b: str, column: str | None, skip) -> str:
    if column is not None:
        if column not in df.columns:
            raise StatsInputError(
                f"--column {column!r} is not a column; columns are {list(df.columns)!r}."
            )
        return column
    hits = []
    for c in df.columns:
        if c in skip:
            continue
        labels = set(df[c].astype(str))
        if a in labels and b in labels:
            hits.append(c)
    if len(hits) != 1:
        raise StatsInputError(
            f"could not find the column holding {a!r} and {b!r}: "
            + (f"several match {hits!r}" if hits else "no column contains both")
            + "; pass --column."
        )
    return hits[0]


def _value_column(df: pd.DataFrame, value: str | None, used) -> str:
    if value is not None:
        if value not in df.columns:
            raise StatsInputError(
                f"--value {value!r} is not a column; columns are {list(df.columns)!r}."
            )
        if not pd.api.types.is_numeric_dtype(df[value]):
            raise StatsInputError(f"--value {value!r} is not numeric (dtype {df[value].dtype}).")
        return value
    if "value" in df.columns and "value" not in used:
        return "value"
    numeric = [c for c in df.columns if c not in used and pd.api.types.is_numeric_dtype(df[c])]
    if len(numeric) > 1:  # integer columns are usually identifiers (seed, unit, trial)
        floats = [c for c in numeric if pd.api.types.is_float_dtype(df[c])]
        numeric = floats if len(floats) == 1 else numeric
    if len(numeric) != 1:
        raise StatsInputError(
            f"pass --value: candidate numeric columns are {numeric!r}."
            if numeric
            else "no numeric column to compare; pass --value."
        )
    return numeric[0]


def _match(series: pd.Series, label: str) -> pd.Series:
    return series.astype(str) == label


def _compare_group(sub, args, column, value):
    a_label, b_label = args.compare
    is_a, is_b = _match(sub[column], a_label), _match(sub[column], b_label)
    if args.pair_on:
        a_rows = sub.loc[is_a, [args.pair_on, value]]
        b_rows = sub.loc[is_b, [args.pair_on, value]]
        for lab, rows in ((a_label, a_rows), (b_label, b_rows)):
            if rows[args.pair_on].duplicated().any():
                raise StatsInputError(
                    f"several {lab!r} rows share one {args.pair_on!r} value within a group; "
                    "add --by columns or aggregate first."
                )
        merged = a_rows.merge(b_rows, on=args.pair_on, suffixes=("_a", "_b"))
        a = merged[f"{value}_a"].to_numpy(float)
        b = merged[f"{value}_b"].to_numpy(float)
        unmatched = [
            f"{len(rows) - len(merged)} {lab!r} row(s)"
            for lab, rows in ((a_label, a_rows), (b_label, b_rows))
            if len(rows) > len(merged)
        ]
        note = (
            f"{' and '.join(unmatched)} without a partner on {args.pair_on!r} left out"
            if unmatched
            else ""
        )
    else:
        a = sub.loc[is_a, value].to_numpy(float)
        b = sub.loc[is_b, value].to_numpy(float)
        note = ""
    res = permutation_test(
        a,
        b,
        statistic=args.statistic,
        paired=bool(args.pair_on),
        n_permutations=args.n_permutations,
        alternative=args.alternative,
        nan_policy=args.nan_policy,
        alpha=args.alpha,
        rng=np.random.default_rng(args.seed),
    )
    return {
        "n_a": int(res.n_a),
        "n_b": int(res.n_b),
        "mean_a": float(res.mean_a),
        "mean_b": float(res.mean_b),
        "statistic": float(res.statistic),
        "p_value": float(res.p_value),
        "cohens_d": float(res.cohens_d),
        "rank_biserial": float(res.rank_biserial),
        "exact": bool(res.attrs["exact"]),
        "note": note,
    }


def run(args: argparse.Namespace) -> int:
    """Run ``neurovar stats`` with parsed ``args``; returns the exit status."""
    try:
        return _run(args)
    except (StatsInputError, ValueError, TypeError) as err:
        print(f"neurovar stats: error: {err}", file=sys.stderr)
        return 2


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad options before any group is tested (they are not per-group problems)."""
    if args.n_permutations < 1:
        raise StatsInputError(f"--n-permutations must be >= 1. Got {args.n_permutations}.")
    if not 0 < args.alpha < 1:
        raise StatsInputError(f"--alpha must be in (0, 1). Got {args.alpha}.")


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    path = Path(args.results)
    df = _load(path, args.variable)
    for c in [*args.by, *([args.pair_on] if args.pair_on else [])]:
        if c not in df.columns:
            raise StatsInputError(f"column {c!r} not found; columns are {list(df.columns)!r}.")
    a_label, b_label = args.compare
    if a_label == b_label:
        raise StatsInputError(f"--compare needs two different labels; got {a_label!r} twice.")
    keys = set(args.by) | ({args.pair_on} if args.pair_on else set())
    column = _condition_column(df, a_label, b_label, args.column, skip=keys)
    value = _value_column(df, args.value, used=keys | {column})
    compared = _match(df[column], a_label) | _match(df[column], b_label)
    n_nan = int(df.loc[compared, value].isna().sum())
    if n_nan and args.nan_policy == "raise":
        raise StatsInputError(
            f"the value column {value!r} has {n_nan} NaN in the {a_label!r}/{b_label!r} rows. "
            "Remove them, or pass --nan-policy omit to drop those rows."
        )
    rows = []
    groups = df.groupby(args.by, sort=True, dropna=False) if args.by else [((), df)]
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(args.by, key, strict=True))
        row.update({"condition_column": column, "a": a_label, "b": b_label, "value": value})
        try:
            row.update(_compare_group(sub, args, column, value))
        except ValueError as err:
            if args.by:  # one untestable group should not hide the others
                row.update({"p_value": np.nan, "note": str(err)})
            else:
                raise
        rows.append(row)
    table = pd.DataFrame(rows)
    p = xr.DataArray(table["p_value"].to_numpy(float), dims=("group",))
    table.insert(
        table.columns.get_loc("p_value") + 1,
        "p_corrected",
        correct_pvalues(p, method=args.correction, alpha=args.alpha).values,
    )
    table["correction"] = args.correction
    table["alternative"] = args.alternative
    table["statistic_name"] = args.statistic
    out = Path(args.out) if args.out else Path.cwd() / f"{path.stem}_stats.csv"
    table.to_csv(out, index=False)
    shown = [c for c in table.columns if c not in ("condition_column", "a", "b", "value", "note")]
    print(
        f"{a_label} vs {b_label} on {column!r}, value {value!r}"
        f"{', paired on ' + repr(args.pair_on) if args.pair_on else ''}; "
        f"permutation test ({args.statistic}, {args.alternative}), {args.correction} correction"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for _, r in table[table["note"].astype(str) != ""].iterrows():
        print(f"note ({', '.join(str(r[c]) for c in args.by)}): {r['note']}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m neurovar.inference._cli ...``."""
    parser = argparse.ArgumentParser(prog="neurovar stats")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
