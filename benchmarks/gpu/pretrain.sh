#!/usr/bin/env bash
# One short, prepared GPU benchmark (at most 8 minutes; the Python part capped at 450 s, each of its
# sections with a time budget and its results saved after every row): MOIRAI small and base at batch
# 32 in bf16-mixed, small in 32-bit + TF32: tokens/s, step time, peak GPU memory, MFU; the data loader
# alone with 0/4/8 workers against the trainer's samples/s (does the GPU wait on it?);
# trainer.compile=true (torch.compile) for small and base in bf16-mixed; last, `run_pretrain` for small
# under strategy ddp on one device, which must finish with the model exported; fine-tuning at
# moirai-1.1-R-base shapes (random weights), full against LoRA: step time, peak memory, trainable
# parameters (LoRA needs the peft, transformers, accelerate, tokenizers wheels in .whl/).
#
# Assumes a machine with Python 3.12, a recent torch and numpy 2, and no internet. Wheels the
# machine lacks travel in .whl/ (see docs/benchmarks.md for the pip download command):
# the ohlcv wheel itself (pip wheel --no-deps -w .whl .), uni2ts, gluonts, datasets (+ its small deps),
# polars, omegaconf, ta-lib, ...
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD}"
source benchmarks/gpu/wheels.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
PYTHONUNBUFFERED=1 timeout 450 python3 benchmarks/gpu/pretrain_gpu.py "$OUT/gpu_pretrain.json"
