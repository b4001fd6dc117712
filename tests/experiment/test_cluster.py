"""``neurovar run --cluster slurm|pbs|htcondor``: dask-jobqueue job scripts and a real run.

The end-to-end tests put stand-in queue commands first on PATH: ``sbatch`` / ``condor_submit``
run the submitted job script (or the submit file's ``Arguments``) on this machine in the
background, in its own process group, and print a job id as the real command does;
``scancel`` / ``condor_rm`` kill that process group. So a real dask worker starts from the
generated job script and connects to the scheduler over 127.0.0.1, and the cells run on it.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from experiment_helpers import tiny_config, to_toml
from pydantic import ValidationError

from neurovar._validation import InvalidParameterError
from neurovar.cli import main
from neurovar.experiment.cluster import ClusterConfig, cluster_config, cluster_kwargs, job_script

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- stand-in queue commands

SUBMIT = '''#!{python}
"""Stand-in {name}: run the job on this machine in the background; print a job id."""
import os, shlex, subprocess, sys
from pathlib import Path
state = Path(os.environ["NEUROVAR_FAKE_QUEUE"])
script = Path(sys.argv[-1]).read_text()
job = str(os.getpid())
(state / f"job-{{job}}.script").write_text(script)
if {condor!r}:
    args = next(l for l in script.splitlines() if l.startswith("Arguments = "))
    args = args[len("Arguments = "):].strip()[1:-1].replace('""', '"')
    # HTCondor's new syntax: whitespace-separated, '...' groups with '' as a literal quote
    argv = shlex.split(args.replace("''", "'\\\\''"))
    cmd = ["/bin/sh", *argv]
else:
    cmd = ["bash", sys.argv[-1]]
log = open(state / f"job-{{job}}.log", "w")
proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        start_new_session=True)
(state / f"job-{{job}}.pid").write_text(str(proc.pid))
print({answer})
'''

CANCEL = '''#!{python}
"""Stand-in {name}: kill the job's process group."""
import os, signal, sys
from pathlib import Path
state = Path(os.environ["NEUROVAR_FAKE_QUEUE"])
for job in sys.argv[1:]:
    pid = state / f"job-{{job.split('.')[0]}}.pid"
    if pid.exists():
        try:
            os.killpg(int(pid.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        (state / f"job-{{job.split('.')[0]}}.cancelled").write_text("")
'''


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_queue(tmp_path, monkeypatch):
    """Stand-in sbatch/scancel/condor_submit/condor_rm first on PATH; their state folder."""
    bin_dir = tmp_path / "bin"
    state = tmp_path / "queue"
    bin_dir.mkdir()
    state.mkdir()
    py = sys.executable
    _write_exe(bin_dir / "sbatch", SUBMIT.format(
        python=py, name="sbatch", condor=False, answer='f"Submitted batch job {job}"'))
    _write_exe(bin_dir / "scancel", CANCEL.format(python=py, name="scancel"))
    _write_exe(bin_dir / "condor_submit", SUBMIT.format(
        python=py, name="condor_submit", condor=True,
        answer='f"Submitting job(s).\\n1 job(s) submitted to cluster {job}."'))
    _write_exe(bin_dir / "condor_rm", CANCEL.format(python=py, name="condor_rm"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NEUROVAR_FAKE_QUEUE", str(state))
    # the jobs' workers import this checkout's neurovar and the test helpers
    paths = [str(ROOT), str(ROOT / "tests" / "experiment"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    return state


def _jobs(state: Path) -> list[str]:
    return sorted(p.stem for p in state.glob("job-*.script"))


def _wait_cancelled(state: Path, jobs: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((state / f"{j}.cancelled").exists() for j in jobs):
            return
        time.sleep(0.1)


# ---------------------------------------------------------------- the config model


def test_cluster_config_is_strict_frozen_and_described():
    cfg = ClusterConfig()
    assert cfg.system is None and cfg.jobs == 1 and cfg.worker_processes == 1
    with pytest.raises(ValidationError, match="frozen"):
        cfg.jobs = 3
    assert all(f.description for f in ClusterConfig.model_fields.values())
    with pytest.raises(InvalidParameterError, match="unknown key 'cluster.nodes'"):
        cluster_config({"nodes": 3})
    with pytest.raises(InvalidParameterError, match="cluster.jobs"):
        cluster_config({"system": "slurm"}, jobs=0)
    with pytest.raises(InvalidParameterError, match="cluster.memory"):
        cluster_config(memory="lots")
    with pytest.raises(InvalidParameterError, match="'processes' parameter.*at most 'cores'"):
        cluster_config(cores=2, processes=3)
    with pytest.raises(InvalidParameterError, match="'processes' parameter.*'gpus'"):
        cluster_config(cores=4, processes=2, gpus=1)
    # flags override the table, None flags do not
    cfg = cluster_config({"system": "pbs", "cores": 8, "queue": "long"}, cores=4, queue=None)
    assert (cfg.system, cfg.cores, cfg.queue, cfg.worker_processes) == ("pbs", 4, "long", 4)
    assert cluster_config(cores=8, gpus=1).worker_processes == 1


def test_slurm_job_script_has_every_directive():
    cfg = cluster_config(system="slurm", cores=4, memory="8GB", walltime="00:30:00",
                         account="proj7", queue="gpu", gpus=1,
                         extra_directives=("--constraint=a100",),
                         prologue=("module load cuda",), scheduler_host="127.0.0.1")
    script = job_script(cfg)
    lines = script.splitlines()
    for directive in ("#SBATCH -J neurovar", "#SBATCH -p gpu", "#SBATCH -A proj7",
                      "#SBATCH --cpus-per-task=4", "#SBATCH -t 00:30:00",
                      "#SBATCH --gres=gpu:1", "#SBATCH --constraint=a100"):
        assert directive in lines, directive
    assert any(ln.startswith("#SBATCH --mem=") for ln in lines)
    worker = next(ln for ln in lines if "dask_worker" in ln)
    assert lines.index("module load cuda") < lines.index(worker)
    assert "--resources GPU=1" in worker and "--nthreads 4" in worker
    assert worker.startswith(sys.executable) and "tcp://127.0.0.1:" in worker


def test_cpu_jobs_run_one_single_threaded_worker_per_core():
    script = job_script(cluster_config(system="slurm", cores=3, scheduler_host="127.0.0.1"))
    worker = next(ln for ln in script.splitlines() if "dask_worker" in ln)
    assert "--nworkers 3" in worker and "--nthreads 1" in worker
    assert "--resources" not in worker


def test_pbs_and_htcondor_job_scripts():
    pbs = job_script(cluster_config(system="pbs", cores=4, memory="16GB", gpus=2, queue="q",
                                    account="a1", processes=1, scheduler_host="127.0.0.1"))
    assert "#PBS -q q" in pbs and "#PBS -A a1" in pbs and "#PBS -l walltime=01:00:00" in pbs
    assert "#PBS -l select=1:ncpus=4:mem=15GB:ngpus=2" in pbs
    condor = job_script(cluster_config(system="htcondor", cores=2, gpus=1, account="grp",
                                       extra_directives=("getenv = True",),
                                       scheduler_host="127.0.0.1"))
    lines = condor.splitlines()
    assert "request_gpus = 1" in lines and "accounting_group = grp" in lines
    assert "getenv = True" in lines and "Executable = /bin/sh" in lines
    with pytest.raises(InvalidParameterError, match="HTCondor has no queues"):
        cluster_kwargs(cluster_config(system="htcondor", queue="long"))
    with pytest.raises(InvalidParameterError, match="'key = value'"):
        cluster_kwargs(cluster_config(system="htcondor", extra_directives=("--bad",)))


# ---------------------------------------------------------------- the command line


def _tiny(tmp_path: Path, cluster_table: str = "") -> Path:
    cfg = tiny_config(seeds=[0], regimes=["test-time"], conditions=["none", "isotropic"])
    path = tmp_path / "tiny.toml"
    path.write_text(to_toml(cfg) + cluster_table)
    return path


def test_print_job_script_reads_the_cluster_table_and_flags(tmp_path, capsys):
    table = textwrap.dedent('''
        [cluster]
        system = "slurm"
        cores = 2
        account = "from-table"
        queue = "short"
        extra_directives = ["--exclusive"]
        ''')
    config = _tiny(tmp_path, table)
    out = tmp_path / "out"
    code = main(["run", str(config), "--out", str(out), "--print-job-script",
                 "--queue", "long", "--walltime", "02:00:00", "--scheduler-host", "127.0.0.1"])
    assert code == 0
    script = capsys.readouterr().out
    assert "#SBATCH -A from-table" in script  # from the table
    assert "#SBATCH -p long" in script and "#SBATCH -p short" not in script  # flag wins
    assert "#SBATCH -t 02:00:00" in script and "#SBATCH --exclusive" in script
    assert not out.exists()  # nothing ran


def test_bad_cluster_options_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    config = _tiny(tmp_path, '\n[cluster]\nsystem = "slurm"\nnodes = 4\n')
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    assert "unknown key 'cluster.nodes'" in capsys.readouterr().err
    plain = _tiny(tmp_path)
    assert main(["run", str(plain), "--out", str(out), "--jobs", "3"]) == 2
    assert "need --cluster" in capsys.readouterr().err
    assert main(["run", str(plain), "--out", str(out), "--cluster", "slurm",
                 "--scheduler", "local:1"]) == 2
    assert "exclusive" in capsys.readouterr().err
    assert not out.exists()


def _results(out: Path) -> xr.Dataset:
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        return ds.load()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The tiny grid run in-process: what every queue run must equal."""
    tmp = tmp_path_factory.mktemp("inproc")
    config = _tiny(tmp)
    assert main(["run", str(config), "--out", str(tmp / "out"), "--no-progress"]) == 0
    return _results(tmp / "out")


@pytest.mark.slow
@pytest.mark.parametrize("system", ["slurm", "htcondor"])
def test_run_on_a_stand_in_queue_equals_in_process(system, fake_queue, tmp_path, in_process,
                                                   capsys):
    config = _tiny(tmp_path)
    out = tmp_path / "out"
    extra = ["--job-directive", "getenv = True"] if system == "htcondor" else []
    code = main(["run", str(config), "--out", str(out), "--no-progress", "--cluster", system,
                 "--jobs", "1", "--cores", "2", "--memory", "8GB", "--walltime", "00:10:00",
                 "--scheduler-host", "127.0.0.1", "--cluster-timeout", "120", *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"submitted 1 {system} job(s)" in err and "first worker connected" in err
    jobs = _jobs(fake_queue)
    assert len(jobs) == 1
    script = (fake_queue / f"{jobs[0]}.script").read_text()
    if system == "slurm":
        assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH -t 00:10:00" in script
    else:
        assert "getenv = True" in script and "MY.DaskWorkerCores = 2" in script
    assert "tcp://127.0.0.1:" in script and "--nworkers 2" in script
    # the job's worker really ran cells: its log shows it connected to the loopback scheduler
    log = (fake_queue / f"{jobs[0]}.log").read_text()
    assert "Registered to:" in log and "tcp://127.0.0.1:" in log
    # the jobs are cancelled when the run ends
    _wait_cancelled(fake_queue, jobs)
    assert all((fake_queue / f"{j}.cancelled").exists() for j in jobs)
    # same numbers as in-process, bitwise
    ours = _results(out)
    assert set(ours.data_vars) == set(in_process.data_vars)
    for name in in_process.data_vars:
        a, b = in_process[name].values, ours[name].values
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), name
        else:
            assert np.array_equal(a, b), name
    assert (out / "report.md").is_file()


def test_a_refused_submission_or_a_missing_queue_is_an_error_not_a_hang(tmp_path, monkeypatch,
                                                                        capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "sbatch", "#!/bin/sh\necho 'sbatch: error: Invalid account' >&2\n"
                                   "exit 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = _tiny(tmp_path)
    out = tmp_path / "out"
    t0 = time.monotonic()
    code = main(["run", str(config), "--out", str(out), "--cluster", "slurm", "--jobs", "2",
                 "--scheduler-host", "127.0.0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.monotonic() - t0 < 60
    assert err[-1].startswith("neurovar run: error: sbatch refused")
    assert not out.exists()  # nothing written: the cluster is checked first
    if __import__("shutil").which("qsub") is None:
        assert main(["run", str(config), "--out", str(out), "--cluster", "pbs",
                     "--scheduler-host", "127.0.0.1"]) == 2
        assert "'qsub' is not on PATH" in capsys.readouterr().err
