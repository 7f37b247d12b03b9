#!/usr/bin/env bash
# Our Matryoshka at the published budget (200M samples, L0 25, lr 3e-4 decayed over the last
# 20 %) on SynthSAEBench-16k, over two device calls on one warm machine (`wheels/` carried):
#
#   PHASE=first  bash benchmarks/gpu_synth_200m.sh   # probe, choose, start the 200M run
#   PHASE=resume bash benchmarks/gpu_synth_200m.sh   # the same run resumed, finished, scored
#
# `first` times training with and without TF32 (benchmarks/synth_throughput.py) and keeps TF32
# if it is at least 10 % faster; then it chooses the readout (src/pivotal_sae/toy/readout.py) on
# a world of the same recipe with another seed (synthsaebench-16k-seed43), never on the
# published one: Matryoshka and Matryoshka-BatchTopK at ${TUNE_SAMPLES:-15000000} samples,
# scored under every readout. Then it trains on the published world until ${CALL_S:-540} s from
# its start, leaving a checkpoint under benchmarks/out/ckpt (kept only while the machine stays
# warm: call `resume` at once). `resume` finishes the run and scores it under every readout.
# TUNE_ARCH/TUNE_ARGS and MAIN_ARCH/MAIN_ARGS change what is tuned and what is run (e.g.
# MAIN_ARCH=matryoshka-batchtopk MAIN_ARGS="--aux-k 512"); give `resume` the same MAIN_* values.
# SAELENS_PROBE_SAMPLES=n (first phase) also times SAELens's BatchTopK as published beside ours.
set -uo pipefail
began=$(date +%s)
OUT=${OUT:?set OUT to the folder for results}
# shellcheck source=benchmarks/synth_device_env.sh
. benchmarks/synth_device_env.sh
STATE=benchmarks/out/synth200m
mkdir -p "$STATE"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
# A CPU dry run: TUNE_WORLD/MAIN_WORLD=synthsaebench-small, EXTRA="--device cpu --width 64 ..."
# shellcheck disable=SC2086
bench() { "$PY" benchmarks/synth_sae_bench.py "$@" ${EXTRA:-} 2>&1 | grep -v Orthogonal; }
if [ "${PHASE:-first}" = first ]; then
  "$PY" benchmarks/synth_throughput.py --out "$OUT" --chunks 16 --samples "${THR_SAMPLES:-1000000}" \
    --arch matryoshka --world "${MAIN_WORLD:-synthsaebench-16k}" 2>&1 | grep -v Orthogonal
  "$PY" - "$OUT/throughput.json" >"$STATE/tf32" <<'PY'
import json, sys
rows = {r["what"]: r.get("samples_per_s", 0) for r in json.load(open(sys.argv[1]))}
eager = rows.get("train_on_world (matryoshka)", 0)
tf32 = rows.get("train_on_world (matryoshka, TF32)", 0)
print("--tf32" if tf32 >= 1.1 * eager else "")
PY
  echo "TF32 choice: '$(cat "$STATE/tf32")'"
  if [ "${SAELENS_PROBE_SAMPLES:-0}" -gt 0 ]; then
    # SAELens's BatchTopK as published (bfloat16 autocast) beside ours, same world and samples.
    bench --world "${TUNE_WORLD:-synthsaebench-16k-seed43}" --arch saelens-batchtopk batchtopk \
      --l0 25 --budget-samples "$SAELENS_PROBE_SAMPLES" --stats-samples 2000 \
      --eval-samples 20000 --out "$OUT/speed"
  fi
  # shellcheck disable=SC2046
  bench --world "${TUNE_WORLD:-synthsaebench-16k-seed43}" --arch ${TUNE_ARCH:-matryoshka matryoshka-batchtopk} --l0 25 \
    --budget-samples "${TUNE_SAMPLES:-15000000}" --lr-decay 0.2 --readouts trained global latent \
    --latent-report --stats-samples 20000 --out "$OUT/tune" $(cat "$STATE/tf32") ${TUNE_ARGS:-}
elif [ ! -d "$STATE/ckpt" ]; then
  echo "no checkpoint under $STATE/ckpt: the machine was given back; start again with PHASE=first" >&2
  exit 1
fi
left=$((${CALL_S:-540} - ($(date +%s) - began) - 40))
left=$((left > 1 ? left : 1))
echo "training the published world for at most ${left}s"
# shellcheck disable=SC2046
bench --world "${MAIN_WORLD:-synthsaebench-16k}" --arch ${MAIN_ARCH:-matryoshka} --l0 25 \
  --budget-samples "${MAIN_SAMPLES:-200000000}" --lr-decay 0.2 --train-seconds "$left" --checkpoint-dir "$STATE/ckpt" \
  --readouts trained global latent --latent-report --out "$OUT/main" $(cat "$STATE/tf32") \
  ${MAIN_ARGS:-}
ls -la "$STATE/ckpt" 2>/dev/null
# At most 8 files come back from a device call: the tables are in the log and results.json.
rm -f "$OUT"/*/results.md
