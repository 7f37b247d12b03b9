# Sourced by the SynthSAEBench device scripts (gpu_synth_bench.sh, gpu_synth_probe.sh,
# gpu_synth_200m.sh), from the repository root with `wheels/` carried: installs the wheels
# (sae-lens and what it imports that the device image lacks) into $SITE once, and exports the
# environment the benchmarks run in. Sets PY (the interpreter; PYTHON overrides).
SITE=${SITE:-/tmp/synth-site}
PY=${PYTHON:-python3}
if ! PYTHONPATH=$SITE "$PY" -c "import sae_lens" 2>/dev/null; then
  started=$(date +%s)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" wheels/*.whl
  echo "wheels installed in $(($(date +%s) - started))s"
fi
export PYTHONPATH=src:$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_DISABLE=1
export PIVOTAL_SAE_CACHE=${PIVOTAL_SAE_CACHE:-/tmp/pivotal-sae-cache}
