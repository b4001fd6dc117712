"""The shipped cifar10-resnet18 config: validates, plans the full grid, runs its first cell on
tiny synthetic CIFAR-10 files written here (nothing is downloaded)."""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from neurovar.experiment import ConfigError, load_config, plan, read_cell
from neurovar.experiment.config import CONFIG_DIR, parse_config
from neurovar.experiment.executor import run_cells

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SHIPPED = CONFIG_DIR / "cifar10-resnet18.toml"


def write_fake_cifar(root: Path, n: int = 4) -> Path:
    """torchvision's on-disk CIFAR-10 layout with ``n`` random images per batch file."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         "labels": [int(v) for v in rng.integers(0, 10, size=n)]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return root


@pytest.fixture(scope="module")
def shipped() -> dict:
    return tomllib.loads(SHIPPED.read_text())


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"))


def test_shipped_config_is_the_full_grid(shipped, cifar_root):
    data = copy.deepcopy(shipped)
    data["data"].update(root=str(cifar_root), verify=False)
    cfg = parse_config(data)
    assert cfg.model.name == "resnet18_cifar" and cfg.data.name == "cifar10"
    assert cfg.layers == ("layer2", "layer3") and cfg.device == "cuda"
    assert len(cfg.seeds) == 5 and len(cfg.regimes) == 3 and len(cfg.magnitudes) == 3
    kinds = {s.kind for s in cfg.sources}
    assert kinds == {"adversarial", "naturalistic"} and len(cfg.sources) == 8
    specs = plan(cfg)
    conds = cfg.expanded_conditions()
    controls = [c for c in conds if c.startswith("augment-")]
    n_noisy = len(conds) - 1 - len(controls)  # "none" has one cell for every magnitude
    # the positive controls: one cell each in the two train-time regimes
    assert len(specs) == 5 * 2 * 3 * (1 + 3 * n_noisy) + 5 * 2 * 2 * len(controls) == 1060
    assert sorted(controls) == ["augment-adversarial", "augment-gaussian"]
    assert len({s.cell_id for s in specs}) == len(specs)
    assert all(s.resources == {"GPU": 1.0} for s in specs)  # GPU cells on a dask cluster


def test_shipped_config_only_lacks_the_local_data(shipped):
    """Everything in the shipped file validates; only the data folder must exist locally."""
    if Path(shipped["data"]["root"]).expanduser().is_dir():
        pytest.skip("this machine has CIFAR-10 at the shipped root")
    with pytest.raises(ConfigError) as err:
        load_config("cifar10-resnet18")
    assert len(err.value.problems) == 1 and "data.root" in err.value.problems[0]


def test_first_cell_runs_on_synthetic_cifar(shipped, cifar_root, tmp_path):
    """The first cell of the shipped grid (seed 0, layer2, test-time, none) end to end on the
    CPU: the shipped model, data loader, layers, regimes and conditions, with the budget cut to
    the minimum and one source and one strength of each family (a full CIFAR cell takes
    minutes on a CPU; benchmarks/gpu_check.sh runs the first cells with every source and
    target on a GPU)."""
    data = copy.deepcopy(shipped)
    data.update(device="cpu", threads=1)
    data["data"].update(root=str(cifar_root), verify=False, n_fit=8, n_eval=2)
    data["training"].update(epochs=1, batch_size=16)
    data["evaluation"].update(attacks=["pgd_ce"], steps=1, n_queries=2, eot_samples=1,
                              n_evaluations=1, n_record_trials=2, n_record_stimuli=2,
                              n_bootstrap=99, n_permutations=99)
    first_of = {}
    for s in data["sources"]:
        first_of.setdefault(s["family"], s)
    data["sources"] = list(first_of.values())
    targets = {}
    for t in data["targets"]:
        targets.setdefault(t["family"], {**t, "strengths": t["strengths"][-1:]})
    data["targets"] = list(targets.values())
    cfg = parse_config(data)
    first = plan(cfg)[0]
    assert (first.seed, first.layer, first.regime, first.condition) == (0, "layer2", "test-time", "none")
    outcome = run_cells([first], tmp_path / "out", progress=False)
    assert outcome.ok, outcome.failed
    ds, meta = read_cell(tmp_path / "out", first.cell_id)
    assert meta["cell_id"] == first.cell_id
    acc = ds["accuracy"].values
    assert np.isfinite(acc).any() and np.nanmin(acc) >= 0 and np.nanmax(acc) <= 1
    assert set(ds["target"].values) == {t.target_id for t in cfg.targets}
