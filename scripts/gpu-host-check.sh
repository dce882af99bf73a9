#!/usr/bin/env bash
# The GPU checks on a host without a package index: the GPU tests, then the GPU benchmark.
#
# On a Linux x86_64 host with an NVIDIA GPU, CPython 3.12 and a CUDA build of torch (see
# scripts/offline-wheels.sh for what else it must hold), from the repository's root, with
# offline-wheels/ made by scripts/offline-wheels.sh copied there:
#   bash scripts/gpu-host-check.sh [OUTDIR]        (default ./gpu-check)
# OUTDIR gets tests.log, bench.log and the benchmark's gpu.{md,json}.
set -uo pipefail

OUT=$(realpath -m "${1:-gpu-check}")
[[ $# -gt 0 ]] && shift
mkdir -p "$OUT"
SITE=${SITE:-/tmp/hypersweep-site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    offline-wheels/*.whl || { echo "the wheels did not install" >&2; exit 2; }
export PYTHONPATH="$SITE:$PWD/platform:$PWD" PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY' || exit 2
import time
t = time.perf_counter()
import mlflow, optuna, ray, torch
from ray import tune  # noqa: F401
print(f"python imports {time.perf_counter() - t:.1f} s: torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU), ray {ray.__version__}, "
      f"mlflow {mlflow.__version__}, optuna {optuna.__version__}")
PY

rc=0
timeout "${TESTS_TIMEOUT:-200}" python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -q \
    2>&1 | tee "$OUT/tests.log" || rc=1
timeout "${BENCH_TIMEOUT:-330}" python3 -m benchmarks.gpu --out "$OUT" "$@" 2>&1 \
    | tee "$OUT/bench.log" || rc=1
exit $rc
