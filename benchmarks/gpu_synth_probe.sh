set -uo pipefail
SITE=/tmp/synth-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE wheels/*.whl
export PYTHONPATH=src:$SITE PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_DISABLE=1 PIVOTAL_SAE_CACHE=/tmp/psc
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
python3 benchmarks/synth_throughput.py --out $OUT --chunks 4 16 64 --samples 1000000 --arch topk matryoshka 2>&1 | tee $OUT/thr.log
RATE=$(python3 -c "import json;r=json.load(open('$OUT/throughput.json'));print(max(x['samples_per_s'] for x in r if x['what']=='train_on_world (matryoshka)'))")
BUDGET=$(python3 -c "print(max(5,int($RATE*${SECS:-280}/1e6))*1000000)")
echo "matryoshka budget $BUDGET"
OUT=$OUT/bench bash benchmarks/gpu_synth_bench.sh --arch matryoshka --l0 25 --budget-samples $BUDGET --max-seconds 0
