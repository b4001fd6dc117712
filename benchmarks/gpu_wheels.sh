#!/usr/bin/env bash
# Download, into .whl/ (ignored by git), the wheels a CUDA machine without a package registry
# lacks to run neurovar from the source tree: benchmarks/gpu_check.sh installs them there with
# `pip install --no-index --find-links .whl --target /tmp/site`. torch/torchvision are never
# carried (the machine's own are used).
#
# Target: CPython 3.12, manylinux x86_64. That machine already has torch, torchvision, numpy,
# scipy, pandas, scikit-learn, statsmodels, matplotlib, tqdm, h5py, cloudpickle, msgpack,
# psutil, toolz, pyyaml, jinja2, click, fsspec, sortedcontainers, urllib3, requests, packaging,
# scikit-image, opencv-python-headless (see the device notes). Versions are pinned to the ones
# this project's test environment runs with. xarray and typing-extensions are carried although
# the machine has them: neurovar needs xarray >= 2024.10 (DataTree) and pydantic a recent
# typing-extensions, and the machine's versions are not known in advance.
#
# Usage: bash benchmarks/gpu_wheels.sh [PYTHON]     (PYTHON: an interpreter with pip; default
#        python3). Needs the package registry (run it here, not on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
DEST=.whl
mkdir -p "$DEST"

# name==version, one per line: every package neurovar and its tests import that the GPU machine
# lacks, with their own needs (pip download --no-deps fetches nothing by itself).
WHEELS=(
  dask==2026.8.0
  distributed==2026.8.0
  tornado==6.6.1
  tblib==3.2.2
  zict==3.0.0
  partd==1.4.2
  locket==1.0.0
  zarr==3.1.6
  numcodecs==0.16.6
  donfig==0.8.1.post1
  google-crc32c==1.9.0
  h5netcdf==1.8.3
  xarray==2026.9.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  packaging==26.4
  torchattacks==3.5.1
  imagecorruptions==1.1.2
)

PLATFORMS=()
for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
           manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done

for spec in "${WHEELS[@]}"; do
  name="${spec%%==*}"
  norm="$(echo "$name" | tr '-' '_' | tr 'A-Z' 'a-z')"
  version="${spec##*==}"
  if ls "$DEST"/"${norm}"-"${version}"-*.whl >/dev/null 2>&1; then
    continue  # already there
  fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$spec"
done

# one version of each package only: two versions stop the whole install
dups="$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z' 'a-z' | sort | uniq -d)"
if [ -n "$dups" ]; then
  echo "gpu_wheels.sh: several versions of: $dups -- remove the old ones from $DEST" >&2
  exit 1
fi
du -sh "$DEST"
ls "$DEST"
