#!/usr/bin/env bash
# The checks that need a CUDA device, as one script for a GPU machine that has PyTorch but no network:
# wheels of the missing pure dependencies travel in .whl/ (see the device notes in docs/scaling.md).
#   bash benchmarks/gpu_check.sh [OUTDIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-/tmp/gpu_check}}; mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L | tee "$out/device.txt"
python3 -c "import torch, transformers, zarr, xarray, dask; print('torch', torch.__version__, 'transformers', transformers.__version__, 'zarr', zarr.__version__, 'xarray', xarray.__version__, 'dask', dask.__version__)" | tee -a "$out/device.txt"
python3 -m pytest -q -ra -m gpu -p no:cacheprovider tests/ 2>&1 | tee "$out/gpu_tests.txt"
python3 benchmarks/random_model.py /tmp/rand-640 --layers 18 --hidden 640 --intermediate 2048 --heads 4
python3 benchmarks/random_model.py /tmp/rand-2048 --layers 16 --hidden 2048 --intermediate 8192 --heads 16
# the disk's own speed (a plain sequential write of 4 GB, synced), then the write path without the model:
# with extraction vs the bare forward below, this says which of the two bounds a GPU run
python3 - <<'PY' 2>&1 | tee "$out/disk.txt"
import os, time
block = os.urandom(64 << 20)
started = time.perf_counter()
with open("/tmp/actstore-disk-test", "wb") as f:
    for _ in range(64):
        f.write(block)
    os.fsync(f.fileno())
seconds = time.perf_counter() - started
os.unlink("/tmp/actstore-disk-test")
print(f"disk: plain sequential write of 4.3 GB to /tmp, synced: {4.295 / seconds:.2f} GB/s")
PY
python3 benchmarks/write_path.py --layers 17 --d-model 2048 --tokens 65536 --repeats 2 2>&1 | grep -v "Loading weights" \
  | tee "$out/write_path.txt"
for spec in /tmp/rand-640:179 /tmp/rand-2048:60; do
  python3 benchmarks/extract_overhead.py --model ${spec%:*} --dataset django-ui --limit ${spec#*:} --batch-size 64 \
    --repeats 3 --device cuda --compute-dtype bfloat16 2>&1 | grep -v "Loading weights" | tee -a "$out/extract_overhead.txt"
done
