#!/usr/bin/env bash
# One short check of neurovar on a CUDA machine (under 8 minutes), printing one table.
#
# The machine has its own python3 with torch, torchvision, numpy, scipy, pandas, xarray,
# scikit-learn, statsmodels, matplotlib, tqdm and h5py, and no package registry. What it lacks
# comes along as wheels in .whl/ (made here by benchmarks/gpu_wheels.sh) and is installed with
# `pip install --no-index --no-deps --target /tmp/site`; torch is never reinstalled, and
# neurovar runs from the source tree (PYTHONPATH=.).
#
# Steps (each under its own time limit, all under one budget; a failing step does not stop
# the others):
#   wheels      install .whl/*.whl into /tmp/site
#   deps        every requirement of the carried wheels is met; neurovar and its peers import
#   cuda_tests  the test paths that involve the device: CUDA generators, EOT folding,
#               recording, ResNet-18 (CIFAR) -- pytest -k "cuda or eot or fold or device"
#   executor    tests/experiment/test_executor.py (dask LocalCluster, killed worker ...)
#   gpu_quick   benchmarks/gpu_quick.py: CUDA generators, EOT folding, recording and
#               noise-overhead timings, EOT-PGD vs torchattacks, the first cells of the
#               cifar10-resnet18 config on synthetic CIFAR files (in-process and local:1)
#   bench_*     the recording, noise-overhead and EOT-PGD benchmarks in a quick mode (run from
#               a copy, so benchmarks/results/ is not overwritten)
#
# Usage:
#   bash benchmarks/gpu_wheels.sh            # here, where pip reaches the registry
#   bash benchmarks/gpu_check.sh             # there (CUDA); results in $OUT/gpu_check or a temp dir
#   bash benchmarks/gpu_check.sh --cpu       # dry run of every step on the CPU, small sizes
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (seconds, default 450; 3x that
# and 3x every step's limit with --cpu),
# GPU_CHECK_SITE (default /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
MODE=cuda
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; elif [ -n "${1:-}" ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2; exit 2
fi
PY="${PYTHON:-python3}"
if [ "$MODE" = cpu ]; then SCALE=3; else SCALE=1; fi  # a CPU dry run: 3x every time limit
BUDGET="${GPU_CHECK_BUDGET:-$((450 * SCALE))}"
SITE="${GPU_CHECK_SITE:-/tmp/site}"
START=$(date +%s)
RES="${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}/gpu_check"
mkdir -p "$RES"
LOG="$RES/log.txt"
: > "$LOG"
SUMMARY="$RES/summary.md"
printf '| step | status | seconds | last line |\n|---|---|---:|---|\n' > "$SUMMARY"
FAILED=0
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export PYTHONPATH="$REPO"

step() {  # step NAME LIMIT_SECONDS CMD...
  local name="$1" limit="$2"; shift 2
  local now left t0 rc dt status last
  now=$(date +%s); left=$((BUDGET - (now - START)))
  if [ "$left" -lt 20 ]; then
    printf '| %s | SKIP | 0 | budget of %ss used up |\n' "$name" "$BUDGET" >> "$SUMMARY"; return
  fi
  limit=$((limit * SCALE))
  [ "$limit" -gt "$left" ] && limit="$left"
  echo "===== $name (limit ${limit}s): $*" >> "$LOG"
  echo "[gpu_check] $name ..." >&2
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$RES/.step.log" 2>&1
  rc=$?
  dt=$(($(date +%s) - t0))
  cat "$RES/.step.log" >> "$LOG"
  case $rc in
    0) status=PASS ;;
    124|137) status="TIMEOUT (${limit}s)"; FAILED=1 ;;
    *) status="FAIL (rc $rc)"; FAILED=1 ;;
  esac
  last=$(grep -v '^\s*$' "$RES/.step.log" | grep -v -E 'INFO|WARNING - ' | tail -n 1 | tr '|' '/' | cut -c1-150)
  printf '| %s | %s | %s | %s |\n' "$name" "$status" "$dt" "$last" >> "$SUMMARY"
  rm -f "$RES/.step.log"
}

# ------------------------------------------------------------------------- wheels
PY312=$("$PY" -c 'import sys; print(int(sys.version_info[:2] == (3, 12)))')
PLATFORMS=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
           manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done
if ! ls .whl/*.whl > /dev/null 2>&1; then
  printf '| wheels | FAIL | 0 | no .whl/*.whl: run benchmarks/gpu_wheels.sh first (and carry .whl) |\n' >> "$SUMMARY"
  FAILED=1
elif [ "$PY312" = 1 ]; then
  step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE:$REPO"
else
  # not CPython 3.12 (a CPU dry run here): install the cp312 wheels into the folder all the
  # same, to prove the set installs, but run with this interpreter's own packages
  step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" --python-version 3.12 --implementation cp --only-binary=:all: \
    "${PLATFORMS[@]}" .whl/*.whl
fi

# ------------------------------------------------------------------------- deps
step deps 120 "$PY" - "$SITE" "$PY312" <<'EOF'
"""Every requirement of the carried wheels is met by the folder or by the environment."""
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

site, real = Path(sys.argv[1]), sys.argv[2] == "1"
env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "extra": ""}
carried = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions(path=[str(site)])}
# what the GPU machine's image has (device notes), for a dry run on another interpreter
IMAGE = set(map(canonicalize_name, """torch torchvision numpy scipy pandas scikit-learn
statsmodels matplotlib tqdm h5py cloudpickle msgpack psutil toolz pyyaml jinja2 click fsspec
sortedcontainers urllib3 requests packaging pillow scikit-image opencv-python-headless
typing-extensions""".split()))
missing = []
for name, dist in sorted(carried.items()):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        dep = canonicalize_name(req.name)
        if dep == "opencv-python":  # imported as cv2: the headless build provides it
            dep = "opencv-python-headless"
        if dep in carried:
            have = Version(carried[dep].version)
        elif real:
            try:
                have = Version(md.version(dep))
            except md.PackageNotFoundError:
                missing.append(f"{name} needs {text}: not installed")
                continue
        else:
            if dep not in IMAGE:
                missing.append(f"{name} needs {text}: neither carried nor in the image")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            missing.append(f"{name} needs {text}: found {have}")
if missing:
    print("\n".join(missing))
    sys.exit(1)
mods = ["neurovar", "neurovar.experiment.executor", "distributed", "zarr", "h5netcdf",
        "pydantic", "torchattacks", "xarray"]
import importlib
vers = []
for m in mods:
    mod = importlib.import_module(m)
    vers.append(f"{m} {getattr(mod, '__version__', '')}".strip())
try:  # a peer of the corruption tests only (they skip without it); needs setuptools
    import imagecorruptions  # noqa: F401
except ImportError as err:
    vers.append(f"(imagecorruptions not importable: {err})")
import torch
print(f"{len(carried)} wheels, requirements met; torch {torch.__version__}, cuda "
      f"{torch.cuda.is_available()}; " + ", ".join(vers[2:]))
EOF

# ------------------------------------------------------------------------- tests
if [ "$MODE" = cuda ]; then DEV=cuda; QUICK=""; else DEV=cpu; QUICK="--quick"; fi
step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider -x tests/noise tests/perturb \
  tests/test_record.py tests/test_models_resnet.py -k "cuda or eot or fold or device or resnet"
step executor 240 "$PY" -m pytest -q -p no:cacheprovider -x tests/experiment/test_executor.py

# ------------------------------------------------------------------------- benchmarks
step gpu_quick 300 "$PY" benchmarks/gpu_quick.py --device "$DEV" $QUICK --out "$RES/gpu_quick.md"
BENCH=$(mktemp -d /tmp/gpu_check_bench.XXXXXX)
mkdir -p "$BENCH/results"
cp benchmarks/bench_record.py benchmarks/bench_noise_forward.py benchmarks/bench_eot_pgd.py "$BENCH/"
if [ "$MODE" = cuda ]; then EOT_ARGS=(--repeats 2 --n 128); else EOT_ARGS=(--repeats 1 --n 16); fi
step bench_noise_forward 90 "$PY" "$BENCH/bench_noise_forward.py" --quick --device "$DEV" \
  --out "$BENCH/results/noise_forward.md"
step bench_eot_pgd 90 "$PY" "$BENCH/bench_eot_pgd.py" "${EOT_ARGS[@]}"
step bench_record 90 "$PY" "$BENCH/bench_record.py"
cp "$BENCH"/results/*.md "$RES/" 2>/dev/null
rm -rf "$BENCH"

# ------------------------------------------------------------------------- the table
{
  echo
  echo "neurovar gpu_check ($MODE mode), $(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - START)) s of ${BUDGET} s"
  command -v nvidia-smi > /dev/null && nvidia-smi -L 2>/dev/null | head -n 2
  echo
} >> "$SUMMARY"
if [ -f "$RES/gpu_quick.md" ]; then
  { echo "gpu_quick:"; echo; cat "$RES/gpu_quick.md"; } >> "$SUMMARY"
fi
cat "$SUMMARY"
echo
echo "details: $LOG; benchmark tables: $(ls "$RES"/*.md | tr '\n' ' ')"
exit $FAILED
