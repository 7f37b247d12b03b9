#!/usr/bin/env bash
# The GPU figures of docs/BENCHMARKS.md in one go, on a machine with torch and transformers
# (no sae_lens needed). Each benchmark prints a line for people and a JSON line; logs go to
# $OUT (default benchmarks/out). Run from the repository root:
#
#     bash benchmarks/gpu_all.sh            # or: OUT=/tmp/figures bash benchmarks/gpu_all.sh
#     ONLY="ablation pairs" bash benchmarks/gpu_all.sh   # some of them
set -uo pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS ARGS...: one benchmark with a time limit, logged
  local name=$1 limit=$2
  shift 2
  [[ -z ${ONLY:-} || " $ONLY " == *" $name "* ]] || return 0
  echo "== $name: $*" | tee -a "$OUT/all.log"
  timeout "$limit" "$PY" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v '^{' | tee -a "$OUT/all.log"
  grep '^{' "$OUT/$name.log" >>"$OUT/results.jsonl"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# Gemma-2-2B-shaped model in bf16, 65,536-latent JumpReLU SAEs at L0 ~ 70.
step cooccurrence_b16 240 benchmarks/cooccurrence_model_speed.py --preset gemma2-2b --device cuda
step cooccurrence_b64 240 benchmarks/cooccurrence_model_speed.py --preset gemma2-2b --device cuda \
  --batch-size 64 --contexts 4096 --reference-contexts 8
step cooccurrence_counts_only 240 benchmarks/cooccurrence_model_speed.py --preset gemma2-2b \
  --device cuda --no-examples
step ablation 300 benchmarks/ablation_speed.py --preset gemma2-2b --device cuda
# The same in float32: bf16 rounding swamps a random model's effects, so exactness is judged here.
step ablation_fp32 300 benchmarks/ablation_speed.py --preset gemma2-2b --device cuda \
  --dtype float32 --contexts 16 --reference-contexts 2
step pairs 300 benchmarks/pairs_speed.py --device cuda --rows 65536 --reader 65536 \
  --reference-rows 64 --max-pairs 100000
step counter_kernels 240 benchmarks/cooccurrence_speed.py --device cuda --d-sae 65536 \
  --dtype bfloat16 --l0-min 60 --l0-max 80 --contexts 2048 --reference-contexts 64 \
  --compare-kernels
