"""Quick checks and timings on a CUDA device (or the CPU with ``--device cpu``), one table.

Part of ``benchmarks/gpu_check.sh``. Every section runs on its own (a failure is a FAIL row
with the error, the next section still runs):

- ``cuda_generators``: seeded noise modules on the device draw the same numbers twice, other
  seeds differ, and the caller's global (CUDA) RNG state is unchanged;
- ``eot_folding``: PGD's EOT draws folded into the batch equal the loop on a deterministic
  model, and stay in the eps-ball on a stochastic one (``eot_batch="auto"``);
- ``record``: ``record_activations`` of ResNet-18 (CIFAR) with noise at ``layer2``, branching at
  the noise site vs folding at the input (time, reproducibility);
- ``noise_overhead``: forward time of ResNet-18 (CIFAR) without noise, with isotropic noise at
  ``layer2`` and with channel-covariance noise at ``layer2`` and ``layer3``;
- ``eot_pgd``: neurovar PGD (EOT k=8, 10 steps) vs torchattacks ``EOTPGD`` on ResNet-18 with
  noise at ``layer2`` (time, accuracy after the attack; k=2, 2 steps with ``--quick``);
- ``cifar_cells``: the shipped ``cifar10-resnet18`` config on tiny synthetic CIFAR-10 files
  (budget cut down), its first cells in-process and on a ``local:1`` dask cluster (whose worker
  advertises ``GPU=1`` where CUDA is available), results compared bitwise.

Run: ``python benchmarks/gpu_quick.py [--device cuda|cpu] [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROWS: list[tuple[str, str, str, str]] = []


def section(name):
    def deco(fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            try:
                value, note = fn(*a, **kw)
                status = "PASS"
            except Exception as err:  # noqa: BLE001 - reported in the table
                traceback.print_exc()
                value, note, status = "", f"{type(err).__name__}: {err}"[:160], "FAIL"
            ROWS.append((name, status, value, f"{note} ({time.perf_counter() - t0:.1f} s)"))
            print(f"[gpu_quick] {name}: {status} {value} {note}", flush=True)

        return run

    return deco


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timeit(fn, dev, repeats=3):
    fn()
    sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def seeded(cls, *args, seed, **kw):
    """A noise module seeded by ``rng=`` (or ``seed=`` in versions before the rename)."""
    try:
        return cls(*args, rng=seed, **kw)
    except TypeError:
        return cls(*args, seed=seed, **kw)


def resnet(dev):
    from neurovar.models import resnet18_cifar

    return resnet18_cifar(rng=0).to(dev).eval()


@section("cuda_generators")
def check_generators(dev):
    from neurovar.noise import CovarianceNoise, IsotropicNoise

    before = torch.get_rng_state()
    before_cuda = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None
    x = torch.zeros(16, 8, 4, 4, device=dev)
    a = seeded(IsotropicNoise, 0.5, seed=0).to(dev)(x)
    b = seeded(IsotropicNoise, 0.5, seed=0).to(dev)(x)
    c = seeded(IsotropicNoise, 0.5, seed=1).to(dev)(x)
    cov = np.eye(8) + 0.5
    d1 = seeded(CovarianceNoise, cov, seed=3, share="channel").to(dev)(x)
    d2 = seeded(CovarianceNoise, cov, seed=3, share="channel").to(dev)(x)
    assert a.device.type == dev.type and d1.device.type == dev.type
    assert torch.equal(a, b) and torch.equal(d1, d2), "same seed, different draws"
    assert not torch.equal(a, c), "different seeds, same draws"
    assert torch.equal(before, torch.get_rng_state()), "global CPU RNG changed"
    if before_cuda is not None:
        assert torch.equal(before_cuda, torch.cuda.get_rng_state(dev)), "global CUDA RNG changed"
    emp = torch.cov(d1.permute(1, 0, 2, 3).reshape(8, -1)).cpu().numpy()
    return f"cov err {np.abs(emp - cov).max():.2f}", "reproducible, global RNG untouched"


@section("eot_folding")
def check_eot(dev, n):
    from neurovar.noise import IsotropicNoise, inject_noise
    from neurovar.perturb import PGD

    g = torch.Generator().manual_seed(0)
    det = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 32 * 32, 10)).to(dev).eval()
    x = torch.rand(n, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (n,), generator=g).to(dev)
    loop = PGD(det, eps=0.03, eot_samples=4, eot_batch=1, rng=3, device=dev)(x, y)
    fold = PGD(det, eps=0.03, eot_samples=4, eot_batch=4, rng=3, device=dev)(x, y)
    diff = float((loop - fold).abs().max())
    assert diff <= 1e-5, f"folded EOT differs from the loop by {diff}"
    with inject_noise(det, {"0": seeded(IsotropicNoise, 0.3, seed=0)}):
        adv = PGD(det, eps=0.03, eot_samples=8, rng=4, device=dev)(x, y)
    assert float((adv - x).abs().max()) <= 0.03 + 1e-6 and 0 <= float(adv.min()) <= float(adv.max()) <= 1
    return f"max |loop-fold| {diff:.1e}", "deterministic: fold == loop; stochastic: in eps-ball"


@section("record")
def check_record(dev, n, trials):
    from neurovar.noise import IsotropicNoise, inject_noise
    from neurovar.record import record_activations

    model = resnet(dev)
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(layers=["layer3"], n_trials=trials, rng=0, progress=False, device=dev,
              batch_size=max(trials * 8, 64))
    with inject_noise(model, {"layer2": seeded(IsotropicNoise, 0.3, seed=0)}):
        t_branch = timeit(lambda: record_activations(model, x, branch="auto", **kw), dev, 2)
        t_fold = timeit(lambda: record_activations(model, x, branch="input", **kw), dev, 2)
        a = record_activations(model, x, branch="auto", **kw)["layer3"]["activation"].values
        b = record_activations(model, x, branch="auto", **kw)["layer3"]["activation"].values
    rep = float(np.abs(a - b).max())
    var = float(a.var(axis=0).mean())
    assert var > 0, "noise at layer2 did not reach layer3"
    return (f"branch {t_branch:.2f} s, fold {t_fold:.2f} s ({t_fold / t_branch:.1f}x)",
            f"{n} stimuli x {trials} trials, repeat max diff {rep:.1e}")


@section("noise_overhead")
def check_overhead(dev, batch):
    from neurovar.noise import CovarianceNoise, IsotropicNoise, inject_noise

    model = resnet(dev)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(dev)
    rng = np.random.default_rng(0)

    def cov(c):
        a = rng.standard_normal((c, c))
        return a @ a.T / c + np.eye(c)

    with torch.no_grad():
        t0 = timeit(lambda: model(x), dev, 5)
        with inject_noise(model, {"layer2": seeded(IsotropicNoise, 0.1, seed=0).to(dev)}):
            t_iso = timeit(lambda: model(x), dev, 5)
        with inject_noise(model, {
            "layer2": seeded(CovarianceNoise, cov(128), seed=1, share="channel").to(dev),
            "layer3": seeded(CovarianceNoise, cov(256), seed=2, share="channel").to(dev),
        }):
            t_cov = timeit(lambda: model(x), dev, 5)
    return (f"{1000 * t0:.1f} / {1000 * t_iso:.1f} / {1000 * t_cov:.1f} ms",
            f"batch {batch}: none / isotropic layer2 / channel-cov layer2+3 "
            f"(+{100 * (t_cov / t0 - 1):.0f}%)")


@section("eot_pgd")
def check_eot_pgd(dev, n, steps, k):
    import torchattacks

    from neurovar.noise import IsotropicNoise, inject_noise
    from neurovar.perturb import PGD

    model = resnet(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g).to(dev)
    y = torch.randint(0, 10, (n,), generator=g).to(dev)
    eps = 8 / 255
    with inject_noise(model, {"layer2": seeded(IsotropicNoise, 0.3, seed=0).to(dev)}):
        def ours():
            return PGD(model, eps=eps, alpha=eps / 4, steps=steps, eot_samples=k, rng=0,
                       device=dev)(x, y)

        def theirs():
            atk = torchattacks.EOTPGD(model, eps=eps, alpha=eps / 4, steps=steps, eot_iter=k)
            return atk(x, y)

        t_ours = timeit(ours, dev, 1)
        t_theirs = timeit(theirs, dev, 1)
        adv_ours, adv_theirs = ours(), theirs()  # attacks need autograd: outside no_grad
        with torch.no_grad():
            acc_ours = float((model(adv_ours).argmax(1) == y).float().mean())
            acc_theirs = float((model(adv_theirs).argmax(1) == y).float().mean())
    return (f"neurovar {t_ours:.2f} s vs torchattacks {t_theirs:.2f} s ({t_theirs / t_ours:.2f}x)",
            f"{n} images, k={k}, {steps} steps; acc after {acc_ours:.2f} / {acc_theirs:.2f} "
            "(untrained net)")


def write_fake_cifar(root: Path, n: int) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         "labels": [int(v) for v in rng.integers(0, 10, size=n)]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def small_cifar_config(root: Path, device: str, *, tiny: bool = False):
    """The shipped cifar10-resnet18 config with the budget cut to seconds per cell on a GPU
    (every source and target kept); ``tiny``: the smallest sizes, one source and one strength
    of each family, and CE-PGD alone, for a CPU dry run."""
    import tomllib

    from neurovar.experiment.config import CONFIG_DIR, parse_config

    data = tomllib.loads((CONFIG_DIR / "cifar10-resnet18.toml").read_text())
    data["device"] = device
    data["threads"] = 2
    n_fit, n_eval, n_rec = (8, 2, 2) if tiny else (32, 16, 8)
    data["data"].update(root=str(root), verify=False, n_fit=n_fit, n_eval=n_eval)
    data["training"].update(epochs=1, finetune_epochs=1, batch_size=32)
    data["evaluation"].update(steps=1 if tiny else 2, n_queries=2 if tiny else 10,
                              eot_samples=1 if tiny else 2, n_evaluations=1 if tiny else 2,
                              n_record_trials=2 if tiny else 3, n_record_stimuli=n_rec,
                              n_bootstrap=99, n_permutations=99, batch_size=32)
    if tiny:  # one source and one strength of each family: a CPU cell in seconds
        first: dict = {}
        for src in data["sources"]:
            first.setdefault(src["family"], src)
        data["sources"] = list(first.values())
        targets: dict = {}
        for t in data["targets"]:
            targets.setdefault(t["family"], {**t, "strengths": t["strengths"][-1:]})
        data["targets"] = list(targets.values())
        data["evaluation"]["attacks"] = ["pgd_ce"]
    return parse_config(data, source="cifar10-resnet18 (reduced)")


@section("cifar_cells")
def check_cifar(dev, n_cells, tiny):
    import xarray as xr

    from neurovar.experiment import plan
    from neurovar.experiment.executor import run_cells

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_fake_cifar(tmp / "data", 8 if tiny else 64)
        cfg = small_cifar_config(tmp / "data", "cuda" if dev.type == "cuda" else "cpu", tiny=tiny)
        specs = plan(cfg)
        first = specs[:n_cells]
        t0 = time.perf_counter()
        here = run_cells(first, tmp / "inproc", progress=False)
        t_here = time.perf_counter() - t0
        assert here.ok, here.summary()
        note = f"{len(specs)} cells in the grid; resources {first[0].resources}"
        try:
            import distributed  # noqa: F401
        except ImportError:
            return f"{t_here / n_cells:.1f} s/cell in-process", note + "; no distributed"
        t0 = time.perf_counter()
        there = run_cells(first, tmp / "cluster", scheduler="local:1", progress=False)
        t_there = time.perf_counter() - t0
        assert there.ok, there.summary()
        for s in first:
            a = xr.load_dataset(tmp / "inproc" / "cells" / s.cell_id / "result.nc")
            b = xr.load_dataset(tmp / "cluster" / "cells" / s.cell_id / "result.nc")
            same = set(a.variables) == set(b.variables) and all(
                a[v].values.tobytes() == b[v].values.tobytes() for v in a.variables)
            assert same, f"cell {s.cell_id}: numbers differ between in-process and local:1"
            untimed = [{k: v for k, v in json.loads(d.attrs.get("info", "{}")).items()
                        if not k.endswith("seconds")} for d in (a, b)]
            assert untimed[0] == untimed[1], f"cell {s.cell_id}: info differs"
            rest = [{k: v for k, v in d.attrs.items() if k != "info"} for d in (a, b)]
            assert rest[0] == rest[1], f"cell {s.cell_id}: attrs differ"
    return (f"{t_here / n_cells:.1f} s/cell in-process, {t_there:.0f} s on local:1",
            note + "; identical cell for cell")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CPU dry run)")
    parser.add_argument("--cells", type=int, default=2, help="CIFAR config cells to run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dev = torch.device(args.device)
    warnings.simplefilter("ignore", FutureWarning)
    small = args.quick or dev.type == "cpu"
    torch.set_num_threads(2 if small else max(1, torch.get_num_threads()))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    ROWS.append(("device", "INFO", name, f"torch {torch.__version__}, Python {sys.version.split()[0]}"))
    check_generators(dev)
    check_eot(dev, 8 if small else 64)
    check_record(dev, 8 if small else 256, 3 if small else 20)
    check_overhead(dev, 8 if small else 256)
    check_eot_pgd(dev, 4 if small else 128, 2 if small else 10, 2 if small else 8)
    check_cifar(dev, 1 if small else args.cells, small)
    lines = ["| check | status | value | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in ROWS]
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    sys.exit(1 if any(r[1] == "FAIL" for r in ROWS) else 0)


if __name__ == "__main__":
    main()
