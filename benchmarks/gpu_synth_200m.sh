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
# PROBE=0 skips the TF32 probe (TF32 stays off). TUNE_RUNS="arch args;arch args;..." tunes each
# entry in its own run instead of TUNE_ARCH/TUNE_ARGS (results in $OUT/tune0, tune1, ...; an
# entry may be a SAELens reference). MAIN_FROM_TUNE=1 then trains, on the published world, the
# entry of ours with the best F1 on the tuning world, for MAIN_TRAIN_S seconds at the rate it
# trained there (rounded down to 10M samples, at most MAIN_SAMPLES); the choice is kept in
# benchmarks/out/synth200m/main for `resume`; with MAIN_MIN_F1=x it trains none unless that F1
# reaches x.
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
if [ "${PHASE:-first}" = first ] && [ "${PROBE:-1}" = 0 ]; then
  : >"$STATE/tf32"
elif [ "${PHASE:-first}" = first ]; then
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
fi
if [ "${PHASE:-first}" = first ]; then
  if [ "${SAELENS_PROBE_SAMPLES:-0}" -gt 0 ]; then
    # SAELens's BatchTopK as published (bfloat16 autocast) beside ours, same world and samples.
    bench --world "${TUNE_WORLD:-synthsaebench-16k-seed43}" --arch saelens-batchtopk batchtopk \
      --l0 25 --budget-samples "$SAELENS_PROBE_SAMPLES" --stats-samples 2000 \
      --eval-samples 20000 --out "$OUT/speed"
  fi
  tune() {  # tune <out> <arch...> [args...]: one tuning run on the tuning world
    local out=$1; shift
    # shellcheck disable=SC2046
    bench --world "${TUNE_WORLD:-synthsaebench-16k-seed43}" --l0 25 \
      --budget-samples "${TUNE_SAMPLES:-15000000}" --lr-decay 0.2 --readouts trained global latent \
      --stats-samples 20000 --out "$out" $(cat "$STATE/tf32") --arch "$@"
  }
  IFS=';' read -ra runs <<<"${TUNE_RUNS:-}"
  [ ${#runs[@]} -gt 0 ] || runs=("${TUNE_ARCH:-matryoshka matryoshka-batchtopk} ${TUNE_ARGS:-}")
  for i in "${!runs[@]}"; do
    echo "tuning run $i: ${runs[$i]}"
    # shellcheck disable=SC2086
    tune "$OUT/tune$i" ${runs[$i]}
  done
  rm -f "$STATE/main"
  if [ "${MAIN_FROM_TUNE:-0}" = 1 ]; then
    "$PY" - "$OUT" "${MAIN_TRAIN_S:?}" "${MAIN_SAMPLES:-200000000}" "${runs[@]}" >"$STATE/main" <<'PY'
import json, os, sys
from pathlib import Path
out, train_s, most, runs = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
best = None
for i, run in enumerate(runs):
    path = out / f"tune{i}" / "results.json"
    if run.split()[0].startswith("saelens") or not path.exists():
        continue
    for row in json.loads(path.read_text())["rows"]:
        if "+" not in row["arch"] and "f1" in row and (best is None or row["f1"] > best[0]):
            best = (row["f1"], row["samples_per_s"], row["arch"], " ".join(run.split()[1:]))
if best is None or best[0] < float(os.environ.get("MAIN_MIN_F1", "0")):
    sys.exit(0)  # no main run: nothing of ours was tuned, or nothing beat the bar
f1, rate, arch, extra = best
samples = min(most, max(10_000_000, int(rate * train_s) // 10_000_000 * 10_000_000))
print(f"MAIN_ARCH='{arch}' MAIN_ARGS='{extra}' MAIN_SAMPLES={samples}")
PY
    if [ ! -s "$STATE/main" ]; then
      echo "no tuned run of ours (or none reached F1 ${MAIN_MIN_F1:-0}): no run on the published world"
      rm -f "$OUT"/*/results.md
      exit 0
    fi
  fi
elif [ ! -d "$STATE/ckpt" ]; then
  echo "no checkpoint under $STATE/ckpt: the machine was given back; start again with PHASE=first" >&2
  exit 1
fi
if [ -s "$STATE/main" ]; then
  echo "chosen on the tuning world: $(cat "$STATE/main")"
  # shellcheck disable=SC1091
  . "$STATE/main"
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
