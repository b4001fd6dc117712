"""Start-up time of the ``neurovar`` command: ``neurovar --help`` vs ``import neurovar``.

Each command runs in a fresh interpreter (``python -c ...`` or ``python -m neurovar.cli``),
``--repeats`` times, the commands interleaved round by round so that load on a shared machine
hits all of them alike; the table gives the median and the minimum wall time of the
subprocess, and which heavy modules the command left in ``sys.modules``. ``--before DIR``
adds the same commands run on another copy of the package (e.g. the previous commit,
extracted with ``git archive COMMIT neurovar | tar -x -C DIR``), so that the gain is measured
on the same machine in the same rounds.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cli_startup.py
    git archive HEAD~3 neurovar | tar -x -C /tmp/before
    PYTHONPATH=. .venv/bin/python benchmarks/bench_cli_startup.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cli_startup.md"
HEAVY = ("torch", "torchvision", "xarray", "scipy", "sklearn", "pandas", "matplotlib")

PROBE = (
    "import sys, runpy\n"
    "sys.argv = {argv!r}\n"
    "try:\n"
    "    {body}\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('LOADED ' + ','.join(m for m in {heavy!r} if m in sys.modules) + '\\n')\n"
)

COMMANDS: dict[str, tuple[list[str], str]] = {
    "python -c pass": (["python"], "pass"),
    "python -c 'import neurovar'": (["python"], "import neurovar"),
    "neurovar --help": (["neurovar", "--help"], "runpy.run_module('neurovar.cli', run_name='__main__')"),
    "neurovar run --help": (
        ["neurovar", "run", "--help"], "runpy.run_module('neurovar.cli', run_name='__main__')"),
    "neurovar stats --help": (
        ["neurovar", "stats", "--help"], "runpy.run_module('neurovar.cli', run_name='__main__')"),
    "python -c 'import neurovar.stats'": (["python"], "import neurovar.stats"),
    "python -c 'import torch'": (["python"], "import torch"),
}


def _time_once(argv: list[str], body: str, pythonpath: str) -> tuple[float, str]:
    code = PROBE.format(argv=argv, body=body, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    t0 = time.perf_counter()
    # cwd = the package's own root: ``python -c`` puts the cwd first on sys.path
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=pythonpath)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{proc.stderr}")
    loaded = next((ln[7:] for ln in proc.stderr.splitlines() if ln.startswith("LOADED ")), "?")
    return seconds, loaded or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--before", default=None, help="another copy of the package to compare")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    versions = {"this tree": str(ROOT)}
    if args.before:
        versions["before"] = str(Path(args.before).resolve())
    times: dict[tuple[str, str], list[float]] = {}
    loaded: dict[tuple[str, str], str] = {}
    for _ in range(args.repeats):
        for label, (argv, body) in COMMANDS.items():
            for version, path in versions.items():
                if version != "this tree" and label in ("python -c pass", "python -c 'import torch'"):
                    continue
                s, mods = _time_once(argv, body, path)
                times.setdefault((label, version), []).append(s)
                loaded[(label, version)] = mods

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# `neurovar` command start-up",
        "",
        f"{dt.date.today().isoformat()}, {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (shared with other work), {args.repeats} rounds, commands "
        f"interleaved, load average {load:.1f} at the end. Wall time of a fresh interpreter "
        "running the command (seconds); on a loaded machine the minimum is the better estimate.",
        "",
        "Command: `PYTHONPATH=. python benchmarks/bench_cli_startup.py"
        + (" --before DIR`" if args.before else "`"),
        "",
        "| command | package | median s | min s | heavy modules loaded |",
        "|---|---|---:|---:|---|",
    ]
    for (label, version), ts in times.items():
        lines.append(
            f"| `{label}` | {version} | {statistics.median(ts):.2f} | {min(ts):.2f} | "
            f"{loaded[(label, version)]} |"
        )
    lines += [
        "",
        "`neurovar --help`, `neurovar run --help` and `import neurovar` load only the standard "
        "library and the package's `_version`: the subpackages and the re-exported functions "
        "are imported on first use (PEP 562 `__getattr__`), the subcommand's options are added "
        "only for the subcommand named on the command line, and the `da.nv` accessor is "
        "registered by a one-shot import hook right after xarray is imported. `neurovar stats "
        "--help` still imports the statistics stack (its `--statistic` and `--correction` "
        "choices come from `neurovar.inference`), never torch.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
