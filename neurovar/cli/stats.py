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
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .._io import atomic_path
from ..inference.effect_size import _cohens_d_np
from ..inference.multiple import PVALUE_METHODS, correct_pvalues
from ..inference.permutation import PERMUTATION_STATISTICS, permutation_test
from ..inference.tidy import to_tidy

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
        help="numeric or boolean column to compare (default: the --variable if one was "
        "given, else 'value', else the only numeric column left)",
    )
    parser.add_argument(
        "--pool",
        action="store_true",
        help="pool rows that differ in other label columns (e.g. metric, attack) into one "
        "test; without it such a table is refused and the needed --by is named",
    )
    parser.add_argument(
        "--pair-on",
        nargs="+",
        default=None,
        metavar="COL",
        help="pair A and B rows on these column(s) (e.g. seed, or seed example): paired test",
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
        help="netCDF/zarr input: data variable to compare (default: all, see --value); "
        "booleans (e.g. correct / not correct) are tested as proportions",
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
    parser.set_defaults(_run=run)


def _load(path: Path, variable: str | None) -> pd.DataFrame:
    if not path.exists():
        raise StatsInputError(f"results file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    is_zarr = suffix == ".zarr" or (
        path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())
    )
    if path.is_dir() and not is_zarr:
        hint = (
            f" It is a neurovar results folder: pass {str(path / 'results.csv')!r}."
            if (path / "results.csv").is_file()
            else ""
        )
        raise StatsInputError(
            f"results {str(path)!r} is a folder, not a results file (expected a .csv, .tsv, "
            f".nc file or a .zarr store).{hint}"
        )
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if is_zarr:
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
        labels = set(_labels(df[c]))
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
        if not (pd.api.types.is_numeric_dtype(df[value]) or pd.api.types.is_bool_dtype(df[value])):
            raise StatsInputError(
                f"--value {value!r} is not numeric or boolean (dtype {df[value].dtype})."
            )
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


def _labels(series: pd.Series) -> pd.Series:
    """``series`` as plain ``str`` labels, a missing value as ``"nan"``.

    ``Series.astype(str)`` keeps NaN as a float under pandas 3 (its string dtype has a missing
    value), so labels of a column with NaN would not sort or compare as strings.
    """
    return pd.Series(
        ["nan" if pd.isna(v) else str(v) for v in series.tolist()],
        index=series.index,
        dtype=object,
    )


def _match(series: pd.Series, label: str) -> pd.Series:
    return _labels(series) == label


def _smallest_p(n_a: int, n_b: int, paired: bool, n_permutations: int, alternative: str):
    """Number of distinct rearrangements and the smallest p-value the design can give."""
    n_distinct = 2**n_a if paired else math.comb(n_a + n_b, n_a)
    n_eff = min(n_distinct, n_permutations + 1)  # Monte Carlo: the observed counts once
    return n_distinct, (2.0 if alternative == "two-sided" else 1.0) / n_eff


def _samples(sub, args, column, value):
    """The A and B values of one group (matched on --pair-on when given) and a note."""
    a_label, b_label = args.compare
    is_a, is_b = _match(sub[column], a_label), _match(sub[column], b_label)
    if not args.pair_on:
        a = sub.loc[is_a, value].to_numpy(float)
        b = sub.loc[is_b, value].to_numpy(float)
        return a, b, ""
    keys = list(args.pair_on)
    a_rows = sub.loc[is_a, [*keys, value]]
    b_rows = sub.loc[is_b, [*keys, value]]
    for lab, rows in ((a_label, a_rows), (b_label, b_rows)):
        if rows.duplicated(subset=keys).any():
            raise StatsInputError(
                f"several {lab!r} rows share one value of {keys!r} within a group; pair on "
                "more columns (--pair-on seed example), add --by columns or aggregate first."
            )
    merged = a_rows.merge(b_rows, on=keys, suffixes=("_a", "_b"))
    a = merged[f"{value}_a"].to_numpy(float)
    b = merged[f"{value}_b"].to_numpy(float)
    unmatched = [
        f"{len(rows) - len(merged)} {lab!r} row(s)"
        for lab, rows in ((a_label, a_rows), (b_label, b_rows))
        if len(rows) > len(merged)
    ]
    on = keys[0] if len(keys) == 1 else keys
    note = f"{' and '.join(unmatched)} without a partner on {on!r} left out" if unmatched else ""
    return a, b, note


def _descriptives(a, b, paired):
    """Sizes, means, the mean difference and Cohen's d: reported even when no test can run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if paired:
            keep = ~(np.isnan(a) | np.isnan(b))
            a, b = a[keep], b[keep]
        else:
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        d = _cohens_d_np(a, b, paired=paired) if min(a.size, b.size) >= 2 else np.nan
    return {
        "n_a": int(a.size),
        "n_b": int(b.size),
        "mean_a": float(np.mean(a)) if a.size else np.nan,
        "mean_b": float(np.mean(b)) if b.size else np.nan,
        "cohens_d": float(d),
    }


def _compare_group(sub, args, column, value):
    a, b, note = _samples(sub, args, column, value)
    paired = bool(args.pair_on)
    notes = [note] if note else []
    alpha = args.alpha
    if args.nan_policy == "omit":
        keep_a = ~np.isnan(a) & (~np.isnan(b) if paired else True)
        keep_b = ~np.isnan(b) & (~np.isnan(a) if paired else True)
        n_a, n_b = int(keep_a.sum()), int(keep_b.sum())
    else:
        n_a, n_b = a.size, b.size
    if min(n_a, n_b) == 0:
        # a group where one side has no (paired) rows: nothing to compare, said in words
        # rather than as the permutation test's refusal of an empty sample
        if paired:
            notes.append(f"no {args.compare[0]!r} row has a {args.compare[1]!r} partner in "
                         "this group: nothing to compare")
        else:
            empty = [lab for lab, n in zip(args.compare, (n_a, n_b)) if n == 0]
            notes.append(f"no {' or '.join(repr(e) for e in empty)} rows in this group: "
                         "nothing to compare")
        desc = _descriptives(a, b, paired)
        return {**desc, "statistic": np.nan, "p_value": np.nan, "note": "; ".join(notes)}
    if min(n_a, n_b) >= 2:
        n_distinct, smallest = _smallest_p(n_a, n_b, paired, args.n_permutations, args.alternative)
        if smallest > alpha:
            kind = f"{n_a} pairs" if paired else f"{n_a} + {n_b} samples"
            notes.append(
                f"this design cannot reach p <= {args.alpha:g}: with {kind} there are "
                f"{n_distinct} distinct rearrangements"
                + (
                    ""
                    if n_distinct <= args.n_permutations
                    else f" and --n-permutations {args.n_permutations}"
                )
                + f", so the smallest attainable {args.alternative} p-value is "
                f"{smallest:.4g}; the p-value shown is "
                + ("the exact one" if n_distinct <= args.n_permutations else "the Monte Carlo one")
                + ", with the statistic and effect size, so that a consistent effect stays "
                "visible. Collect more seeds or samples to test it."
            )
            # permutation_test refuses such designs; here the p-value is wanted anyway
            alpha = min(max(smallest, alpha), 1.0 - 1e-12)
    try:
        res = permutation_test(
            a,
            b,
            statistic=args.statistic,
            paired=paired,
            n_permutations=args.n_permutations,
            alternative=args.alternative,
            nan_policy=args.nan_policy,
            alpha=alpha,
            rng=np.random.default_rng(args.seed),
        )
    except ValueError as err:
        desc = _descriptives(a, b, paired)
        stat = desc["mean_a"] - desc["mean_b"] if args.statistic == "mean_difference" else np.nan
        if paired and args.statistic == "mean_difference":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                stat = float(np.nanmean(a - b)) if a.size else np.nan
        return {**desc, "statistic": stat, "p_value": np.nan, "note": "; ".join([*notes, str(err)])}
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
        "note": "; ".join(notes),
    }


def _crossed(labels, df, by, is_a, is_b) -> bool:
    """Whether, in some ``--by`` group, the A and B rows take the same several values of
    ``labels`` equally often (a setting crossed with the conditions, like an eps grid). The
    grid coordinates of an experiment's table are settings by name (see
    :func:`_row_type_columns`), crossed or not."""
    groups = df.groupby(by, dropna=False).groups.values() if by else [df.index]
    for idx in groups:
        idx = pd.Index(idx)
        ca = labels[idx][is_a[idx]].value_counts()
        cb = labels[idx][is_b[idx]].value_counts()
        if len(ca) > 1 and ca.sort_index().equals(cb.sort_index()):
            return True
    return False


def _row_type_columns(df, column, value, by, pair_on, a_label, b_label):
    """Label columns whose several values mark rows of different kinds (metric, attack, eps).

    ``df`` holds the compared (A or B) rows. A column qualifies when it varies among rows that
    one test would pool as samples of one quantity (the rows of one ``--by`` group and one
    condition) and some value repeats within such rows (so it is not a per-sample
    identifier). A string, categorical or boolean column counts; a float column counts only
    when it looks like a setting crossed with the conditions (A and B rows take the same
    values equally often, like an eps grid), not a measurement (``ci_low``,
    ``clean_accuracy``, which differ between conditions), or when it is one of the float grid
    coordinates of an experiment's ``results.csv`` (``magnitude``, ``strength``,
    ``noise_at_test``: settings by definition, crossed or not). ``--by`` and ``--pair-on`` columns
    never count. Integer columns (seed, example, unit) are sample identifiers.
    Missing values count as one value ``"nan"`` (pandas 3 keeps NaN a float in
    ``astype(str)``, which made the labels unsortable).
    """
    out = []
    by = list(by)
    cond = _labels(df[column])
    # the per-cell measurements of an experiment's results.csv are never kinds of rows, whatever
    # their values happen to be (equal clean accuracies of two conditions are a coincidence)
    measurements = {"n", "ci_low", "ci_high", "clean_accuracy", "noise_to_signal",
                    "target_alignment", "alignment_index", "participation_ratio",
                    "trial_variance", "fano_factor", "fano_reason", "noise_correlation",
                    "eot_gap", "gradient_snr"}
    # the float grid coordinates of an experiment's results.csv: settings even where the two
    # conditions do not share them (isotropic at m = 0.5 and 2 against a source fitted at 2 only)
    settings = {"magnitude", "strength", "noise_at_test"}
    is_a, is_b = cond == a_label, cond == b_label
    within = [df[c] for c in by]
    for c in df.columns:
        if c in by or c in pair_on or c in (column, value) or c in measurements:
            continue
        col = df[c]
        is_float = pd.api.types.is_float_dtype(col)
        is_label = not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
        if not (is_float or is_label):
            continue
        labels = _labels(col)
        n_values = labels.nunique(dropna=False)
        if n_values < 2 or n_values >= len(df):
            continue
        cells = labels.groupby([*within, cond], dropna=False)
        if not bool((cells.nunique() > 1).any()):
            continue  # constant within every group and condition: pools nothing
        if not bool(cells.apply(lambda x: x.duplicated().any()).any()):
            continue  # a per-sample identifier
        if (is_float and not is_label and c not in settings
                and not _crossed(labels, df, by, is_a, is_b)):
            continue  # a measurement, not a setting
        out.append((c, sorted(labels.unique())))
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``neurovar stats`` with parsed ``args``; returns the exit status (2: a user error,
    reported in one line without a traceback)."""
    try:
        return _run(args)
    except (StatsInputError, ValueError, TypeError) as err:
        print(f"neurovar stats: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # unreadable input, output that cannot be written
        where = f" ({err.filename!r})" if getattr(err, "filename", None) else ""
        print(f"neurovar stats: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


def _output_path(args: argparse.Namespace, path: Path) -> Path:
    """The output CSV, checked before anything is computed: not a folder, in a folder that
    exists and where a file can be created (a probe file is created and removed)."""
    out = Path(args.out) if args.out else Path.cwd() / f"{path.stem}_stats.csv"
    if out.is_dir():
        raise StatsInputError(
            f"--out {str(out)!r} is a folder; give a file name, e.g. "
            f"{str(out / (path.stem + '_stats.csv'))!r}."
        )
    parent = out.parent
    if not parent.exists():
        raise StatsInputError(
            f"--out {str(out)!r}: its folder {str(parent)!r} does not exist; create it first."
        )
    if not parent.is_dir():
        raise StatsInputError(f"--out {str(out)!r}: {str(parent)!r} is not a folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise StatsInputError(
            f"--out {str(out)!r} cannot be written: no file can be created in {str(parent)!r} "
            f"({err.strerror or err})."
        ) from err
    return out


def _write_csv(table: pd.DataFrame, out: Path) -> None:
    """Write ``table`` to ``out`` atomically (the package's one atomic write,
    :func:`neurovar._io.atomic_path`: a temporary sibling renamed into place)."""
    with atomic_path(out, overwrite=True, make_parents=False, owner="neurovar stats") as tmp:
        with open(tmp, "w", newline="") as fh:
            table.to_csv(fh, index=False)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse bad options before any group is tested (they are not per-group problems)."""
    if args.n_permutations < 1:
        raise StatsInputError(f"--n-permutations must be >= 1. Got {args.n_permutations}.")
    if not 0 < args.alpha < 1:
        raise StatsInputError(f"--alpha must be in (0, 1). Got {args.alpha}.")


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    path = Path(args.results)
    out = _output_path(args, path)  # before computing: a bad --out must not waste the run
    df = _load(path, args.variable)
    # one column or several (a Namespace built by hand may hold a plain string)
    pair_on = [args.pair_on] if isinstance(args.pair_on, str) else list(args.pair_on or [])
    args.pair_on = pair_on or None
    for c in [*args.by, *pair_on]:
        if c not in df.columns:
            raise StatsInputError(f"column {c!r} not found; columns are {list(df.columns)!r}.")
    a_label, b_label = args.compare
    if a_label == b_label:
        raise StatsInputError(f"--compare needs two different labels; got {a_label!r} twice.")
    keys = set(args.by) | set(pair_on)
    column = _condition_column(df, a_label, b_label, args.column, skip=keys)
    requested = args.value
    if requested is None and args.variable is not None:
        requested = args.variable  # a requested variable is what is tested, never another
    value = _value_column(df, requested, used=keys | {column})
    compared = _match(df[column], a_label) | _match(df[column], b_label)
    if not args.pool:
        mixed = _row_type_columns(
            df.loc[compared], column, value, args.by, pair_on, a_label, b_label
        )
        if mixed:
            listed = "; ".join(
                f"{c!r} has {len(v)} values ({', '.join(v[:5])}{', ...' if len(v) > 5 else ''})"
                for c, v in mixed
            )
            by = " ".join([*args.by, *(c for c, _ in mixed)])
            raise StatsInputError(
                f"the compared rows differ in {listed}: they look like different quantities "
                f"(metrics, attacks, targets), which one test must not pool. Test each group "
                f"with --by {by}, or pass --pool if pooling them is really intended."
            )
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
        row.update(_compare_group(sub, args, column, value))
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
    _write_csv(table, out)
    shown = [c for c in table.columns if c not in ("condition_column", "a", "b", "value", "note")]
    print(
        f"{a_label} vs {b_label} on {column!r}, value {value!r}"
        f"{', paired on ' + repr(pair_on) if pair_on else ''}; "
        f"permutation test ({args.statistic}, {args.alternative}), {args.correction} correction"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for _, r in table[table["note"].astype(str) != ""].iterrows():
        print(f"note ({', '.join(str(r[c]) for c in args.by)}): {r['note']}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m neurovar.cli.stats ...``."""
    parser = argparse.ArgumentParser(prog="neurovar stats")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
