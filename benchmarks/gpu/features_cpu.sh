#!/usr/bin/env bash
# benchmarks/features.py on a many-core machine (a GPU box's CPUs; about 2 minutes). On 2 cores the
# Polars-expression features are 1.9-3.8x faster than pandas for 1-100 assets (docs/benchmarks.md):
# Polars gains from running features side by side on more cores, which only a bigger machine shows.
#
# Same wheel set-up as pretrain.sh: wheels the machine lacks travel in .whl/ (ohlcv's own, polars,
# omegaconf, ta-lib, pluggy, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD}"
source benchmarks/gpu/wheels.sh
echo "cores: $(nproc)"
PYTHONUNBUFFERED=1 timeout 240 python3 benchmarks/features.py --repeat 3 2>&1 | tee "$OUT/features_cpu.txt"
