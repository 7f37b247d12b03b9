#!/usr/bin/env bash
# SynthSAEBench on one GPU, one command: install the carried wheels (sae-lens and what it imports
# that the device image lacks), then run benchmarks/synth_sae_bench.py writing into $OUT.
# Arguments go to the benchmark, e.g. (from the repository root, `wheels/` carried):
#
#     bash benchmarks/gpu_synth_bench.sh --budget-samples 10000000 --l0 25 --max-seconds 540
#
# Make the wheels once, where there is network: the pip download line in benchmarks/synth_wheels.txt
# (docs/toy.md, "SynthSAEBench on a GPU").
set -euo pipefail
OUT=${OUT:-benchmarks/out/synth}
mkdir -p "$OUT"
# shellcheck source=benchmarks/synth_device_env.sh
. benchmarks/synth_device_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt" || true
"$PY" benchmarks/synth_sae_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
