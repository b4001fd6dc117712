"""Fuzz the public API with bad values, one parameter at a time, and classify what happens.

Every function and class in every ``__all__`` of the package (``tests/api_cases.public_api``)
that has a tiny valid call (``tests/api_cases.cases``) gets, for each parameter whose kind can
be read from its name, default or annotation, the wrong types and out-of-range values of
``api_cases.BAD_VALUES`` plus, for counts, ``10**12`` (a would-be hang). Each call is
classified as

- **clear**: ``ValueError``/``TypeError`` (``InvalidParameterError`` counted separately) whose
  message names the parameter;
- **unclear**: any other exception, or a ``ValueError``/``TypeError`` not naming it;
- **silent**: the call returned (the bad value was accepted);
- **progress**: the call did not finish within ``--timeout`` seconds but was showing a live
  tqdm progress bar (a loop as long as the caller asked for, visibly running, with its ETA,
  and stopped cleanly by the alarm as by Ctrl-C);
- **hang**: the call did not finish within ``--timeout`` seconds and showed no progress
  (SIGALRM).

Unclear errors of the wrong class (not ``ValueError``/``TypeError``: ``AttributeError``,
``RuntimeError``, ``KeyError`` ... from deep inside) are also counted as **crash**.

Then the scenarios of issue 21 (``tests/api_cases.SCENARIOS``): settings that do not fit
together, experiment objects built by hand, NaN data and the patterns of torchvision's models,
each classified as clear (an error naming the expected key or parameter) / works (a correct
result where one is possible) / unclear / crash / silent / hang.

Counts go to ``benchmarks/results/fuzz_api.md``.

Usage::

    PYTHONPATH=$PWD python benchmarks/fuzz_api.py [--timeout 10] [--budget 300] [--out FILE]

To measure another checkout (e.g. the commit before a change) with the same table, put that
checkout first on ``PYTHONPATH``; the table itself is read from this repository's ``tests/``.
``NEUROVAR_MAX_BYTES`` is set to 2 GiB (unless already set) so that a bad count can never
make this script allocate more than that on a shared machine.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("NEUROVAR_MAX_BYTES", str(2 * 2**30))

import api_cases  # noqa: E402


class _Timeout(BaseException):
    pass


class _TimeoutWithProgress(_Timeout):
    pass


def _live_bars() -> list:
    """tqdm bars alive, enabled and already shown (a bar with ``delay`` shows only after it)."""
    from tqdm.std import tqdm

    now = time.time()
    return [
        bar
        for bar in list(tqdm._instances)
        if not bar.disable and bar.n > 0 and now >= bar.start_t + getattr(bar, "delay", 0)
    ]


def _alarm(_signum, _frame):
    raise _TimeoutWithProgress if _live_bars() else _Timeout


def classify(run, pname, value, timeout):
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(**{pname: value})
        return "silent", ""
    except _TimeoutWithProgress:
        return "progress", f"still running after {timeout} s, with a progress bar"
    except _Timeout:
        return "hang", f"no result within {timeout} s"
    except (ValueError, TypeError) as err:
        named = f"'{pname}'" in str(err) or f'"{pname}"' in str(err)
        if not named:
            return "unclear", f"{type(err).__name__}: {str(err)[:160]}"
        is_ipe = type(err).__name__ == "InvalidParameterError"
        return ("clear_ipe" if is_ipe else "clear"), ""
    except Exception as err:  # noqa: BLE001
        return "unclear", f"crash: {type(err).__name__}: {str(err)[:160]}"
    finally:
        signal.alarm(0)


def classify_scenario(call, expect, timeout):
    """clear / works / unclear / crash / silent / hang for one scenario of issue 21."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
        if callable(expect):
            return ("works", "") if expect(out) else ("silent", f"wrong result {out!r}"[:160])
        return "silent", "accepted"
    except _Timeout:
        return "hang", f"no result within {timeout} s"
    except (ValueError, TypeError) as err:
        if not callable(expect) and expect in str(err):
            return "clear", ""
        return "unclear", f"{type(err).__name__}: {str(err)[:160]}"
    except Exception as err:  # noqa: BLE001
        return "crash", f"{type(err).__name__}: {str(err)[:160]}"
    finally:
        signal.alarm(0)


def run_scenarios(timeout):
    """Counts per class of scenario and the lines of the ones not clear."""
    by_class = collections.defaultdict(collections.Counter)
    bad = []
    for cls, label, call, expect in api_cases.SCENARIOS:
        outcome, detail = classify_scenario(call, expect, timeout)
        by_class[cls][outcome] += 1
        if outcome not in ("clear", "works"):
            bad.append((cls, label, outcome, detail))
    return by_class, bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=int, default=10, help="seconds per call (hang above)")
    ap.add_argument("--budget", type=float, default=300, help="total seconds, then stop")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fuzz_api.md")
    ap.add_argument("--label", default="", help="what was measured (e.g. a commit)")
    args = ap.parse_args(argv)

    import neurovar

    api = api_cases.public_api()
    table = api_cases.cases()
    counts = collections.Counter()
    by_kind = collections.defaultdict(collections.Counter)
    problems = []
    huge_counts = collections.Counter()
    huge_problems = []
    no_case = [q for q in api if table.get(q) is None]
    start = time.monotonic()
    n_objects = 0
    stopped = False
    for qual, obj in sorted(api.items()):
        factory = table.get(qual)
        if factory is None:
            continue
        try:
            run = factory()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run()
        except Exception as err:  # noqa: BLE001  (the valid call itself fails: report it)
            problems.append(
                (qual, "-", "-", "valid call fails", f"{type(err).__name__}: {err}"[:160])
            )
            continue
        n_objects += 1
        for p in api_cases.init_params(obj):
            kind = api_cases.param_kind(p)
            if kind is None:
                continue
            values = [*api_cases.BAD_VALUES[kind]["type"], *api_cases.BAD_VALUES[kind]["range"]]
            if kind == "int":
                values.append(api_cases.HUGE)
            for value in values:
                huge = kind == "int" and value == api_cases.HUGE
                if time.monotonic() - start > args.budget:
                    stopped = True
                    break
                outcome, detail = classify(run, p.name, value, args.timeout)
                if huge:  # a huge count may be valid: it must only end quickly and clearly
                    huge_counts[outcome] += 1
                    if outcome in ("hang", "unclear", "progress"):
                        huge_problems.append((qual, p.name, repr(value), outcome, detail))
                    continue
                counts[outcome] += 1
                by_kind[kind][outcome] += 1
                if outcome not in ("clear", "clear_ipe"):
                    problems.append((qual, p.name, repr(value), outcome, detail))
            if stopped:
                break
        if stopped:
            break
    elapsed = time.monotonic() - start
    total = sum(counts.values())
    clear = counts["clear"] + counts["clear_ipe"]
    lines = [
        "# Fuzz of the public API: bad values one parameter at a time",
        "",
        f"Measured: {args.label or 'neurovar ' + neurovar.__version__ + ' at ' + str(Path(neurovar.__file__).parent)}",
        f"Command: `PYTHONPATH=<checkout> python benchmarks/fuzz_api.py --timeout {args.timeout}"
        f" --budget {args.budget:g}` ({elapsed:.0f} s{', stopped at the budget' if stopped else ''}).",
        "",
        f"{len(api)} public functions and classes; {n_objects} with a tiny valid call were fuzzed "
        f"({len(no_case)} without one are listed in tests/test_validation.py::NO_CASE).",
        "",
        "| outcome | count |",
        "|---|---:|",
        f"| bad values tried | {total} |",
        f"| clear error naming the parameter | {clear} |",
        f"| ... of which InvalidParameterError | {counts['clear_ipe']} |",
        f"| unclear error | {counts['unclear']} |",
        f"| ... of which an exception of the wrong class (crash) | {sum(1 for p in problems if p[4].startswith('crash'))} |",
        f"| silent acceptance | {counts['silent']} |",
        f"| hang (> {args.timeout} s) | {counts['hang']} |",
        "",
        "By kind of parameter (clear / unclear / silent / hang):",
        "",
        "| kind | clear | unclear | silent | hang |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, c in sorted(by_kind.items()):
        lines.append(
            f"| {kind} | {c['clear'] + c['clear_ipe']} | {c['unclear']} | {c['silent']} | {c['hang']} |"
        )
    hc = huge_counts
    lines += [
        "",
        f"Counts of {api_cases.HUGE:.0e} for every int parameter (may be valid; each must end "
        f"within {args.timeout} s with a result or an error naming the parameter):",
        "",
        "| outcome | count |",
        "|---|---:|",
        f"| huge counts tried | {sum(hc.values())} |",
        f"| clear error naming the parameter | {hc['clear'] + hc['clear_ipe']} |",
        f"| finished with a result | {hc['silent']} |",
        f"| unclear error (e.g. MemoryError, torch allocator) | {hc['unclear']} |",
        f"| still running after {args.timeout} s, showing a progress bar | {hc['progress']} |",
        f"| hang (> {args.timeout} s, no progress shown) | {hc['hang']} |",
    ]
    by_class, scen_bad = run_scenarios(args.timeout)
    outcomes = ("clear", "works", "unclear", "crash", "silent", "hang")
    lines += [
        "",
        f"Scenarios of issue 21 (`tests/api_cases.SCENARIOS`, {sum(sum(c.values()) for c in by_class.values())} "
        "in all): clear = an error naming the key or parameter; works = a correct result; "
        "crash = an exception of the wrong class",
        "",
        "| class | " + " | ".join(outcomes) + " |",
        "|---|" + "---:|" * len(outcomes),
    ]
    for cls, c in by_class.items():
        lines.append(f"| {cls} | " + " | ".join(str(c[o]) for o in outcomes) + " |")
    total_c = collections.Counter()
    for c in by_class.values():
        total_c.update(c)
    lines.append("| all | " + " | ".join(str(total_c[o]) for o in outcomes) + " |")
    lines += ["", "| scenario | class | outcome | detail |", "|---|---|---|---|"]
    for cls, label, outcome, detail in scen_bad:
        detail = detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {label} | {cls} | {outcome} | {detail} |")
    lines += [
        "",
        "## Not clear",
        "",
        "| object | parameter | value | outcome | detail |",
        "|---|---|---|---|---|",
    ]
    for qual, pname, value, outcome, detail in problems + huge_problems:
        detail = detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {qual} | {pname} | {value} | {outcome} | {detail} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(line for line in lines if not line.startswith("| neurovar")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
