#!/usr/bin/env bash
# Two SynthSAEBench runs side by side on one GPU (each process alone leaves the GPU idle between
# kernel launches). Builds and caches the world once, then runs benchmarks/synth_sae_bench.py
# twice in parallel, arguments "$A" and "$B", into $OUT/a and $OUT/b. `wheels/` carried.
set -euo pipefail
OUT=${OUT:-benchmarks/out/synth-pair}
SITE=${SITE:-/tmp/synth-site}
PY=${PYTHON:-python3}
mkdir -p "$OUT/a" "$OUT/b"
PYTHONPATH=$SITE "$PY" -c "import sae_lens" 2>/dev/null ||
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" wheels/*.whl
export PYTHONPATH=src:$SITE PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_DISABLE=1
export PIVOTAL_SAE_CACHE=${PIVOTAL_SAE_CACHE:-/tmp/pivotal-sae-cache}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
"$PY" -c "from pivotal_sae.toy.worlds import load_world; load_world('synthsaebench-16k', device='cuda')" 2>/dev/null
# shellcheck disable=SC2086
"$PY" benchmarks/synth_sae_bench.py --out "$OUT/a" $A >"$OUT/a/log.txt" 2>&1 &
# shellcheck disable=SC2086
"$PY" benchmarks/synth_sae_bench.py --out "$OUT/b" $B >"$OUT/b/log.txt" 2>&1 &
wait
tail -n 8 "$OUT/a/log.txt" "$OUT/b/log.txt"
