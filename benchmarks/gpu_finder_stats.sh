#!/usr/bin/env bash
# The absorption finder's statistics at 65,536 latents on one GPU (issue 15): the partial
# finder's scan (twice, for the spread) and the per-token-id firing counts behind the
# token-conditioned expectation. Output under $OUT when set (the device tool), else benchmarks/out.
set -euo pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
for run in 1 2; do
  "$PY" benchmarks/partial_finder_speed.py --latents 65536 --dim 2304 2>&1 | tee -a "$OUT/partial_finder_speed.txt"
done
"$PY" benchmarks/token_firing_speed.py --latents 65536 --tokens 10000000 2>&1 | tee "$OUT/token_firing_speed.txt"
# The job's co-occurrence step with and without the firing per token id, on a Gemma-2-2B-shaped
# model (needs typer and jaxtyping: source benchmarks/synth_device_env.sh with wheels/ carried).
"$PY" benchmarks/cooccurrence_model_speed.py --preset gemma2-2b --device cuda --batch-size 64 \
  --contexts 4096 --reference-contexts 8 2>&1 | tee "$OUT/cooccurrence_model_speed.txt"
