#!/usr/bin/env bash
# One device call: where a SynthSAEBench step goes (benchmarks/synth_throughput.py, with the CUDA
# graph of the step checked against the eager step), then our Matryoshka at L0 25 on as many
# samples as ${SECS:-380} s of training hold at the measured rate (at most 200M, the published
# budget; BUDGET=n sets it, RUN_ARCH="a b" trains others). `wheels/` carried. Results under $OUT.
set -uo pipefail
# shellcheck source=benchmarks/synth_device_env.sh
. benchmarks/synth_device_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" benchmarks/synth_throughput.py --out "$OUT" --chunks 16 --samples 1000000 \
  --arch ${PROBE_ARCH:-matryoshka} 2>&1 | grep -v Orthogonal | tee "$OUT/thr.log"
read -r RATE GRAPH < <("$PY" - "$OUT/throughput.json" <<'PY' || echo "238000 off"
import json, sys
rows = json.load(open(sys.argv[1]))
check = [r for r in rows if r["what"] == "graph vs eager (matryoshka)"]
ok = bool(check) and check[0]["max_relative_difference"] < 1e-3
trains = [r["samples_per_s"] for r in rows if r["what"].startswith("train_on_world (matryoshka")
          and (ok or "graph" not in r["what"]) and "TF32" not in r["what"]]
print(int(max(trains)), "on" if ok else "off")
PY
)
BUDGET=${BUDGET:-$("$PY" -c "print(min(200, max(5, int($RATE * ${SECS:-380} / 1e6))) * 1000000)")}
FLAG=""; [ "$GRAPH" = on ] && FLAG=--cuda-graph
echo "matryoshka: $RATE samples/s, CUDA graph $GRAPH; training ${RUN_ARCH:-matryoshka} on $BUDGET"
# shellcheck disable=SC2086
OUT=$OUT/bench bash benchmarks/gpu_synth_bench.sh --arch ${RUN_ARCH:-matryoshka} --l0 25 \
  --budget-samples "$BUDGET" $FLAG ${BENCH_ARGS:-} 2>&1 | grep -v Orthogonal
