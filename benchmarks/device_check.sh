#!/usr/bin/env bash
# GPU checks of the engine (run on a lent GPU machine from the repository root; results in $OUT):
# the plain command on a GPU machine, bf16-mixed, FSDP (weights gathered before saving), the
# cached-feature probe on CUDA, predict on CUDA; then the digits and Fashion-MNIST sweeps.
set -u
export TRANSFERKIT_CACHE=/tmp/tkcache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tk() { python3 -m transferkit.cli "$@"; }
check() {  # name, command...
  local name=$1; shift
  local t0=$(date +%s%N)
  "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  printf '%-22s rc=%s %6d ms %s\n' "$name" "$rc" "$(( ($(date +%s%N) - t0) / 1000000 ))" \
    "$(grep -ho 'test accuracy [0-9.]*' "$OUT/$name.log" | head -1)" | tee -a "$OUT/gpu_checks.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu_checks.txt"
python3 -c "import torch, lightning, timm; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu_checks.txt"
(timeout 300 python3 benchmarks/sweep.py --grid digits --accelerator gpu --parallel 6 --out "$OUT/digits.jsonl" > "$OUT/sweep_digits.log" 2>&1; echo "digits sweep rc=$?" >> "$OUT/gpu_checks.txt") &
(timeout 300 python3 benchmarks/sweep.py --grid fm --accelerator gpu --parallel 6 --out "$OUT/fm.jsonl" > "$OUT/sweep_fm.log" 2>&1; echo "fm sweep rc=$?" >> "$OUT/gpu_checks.txt") &
D="--data builtin:digits --per-class 20 --epochs 2 --no-progress"
check plain-default tk finetune $D --strategy full --out /tmp/g/plain
python3 -c "import json; m=json.load(open('/tmp/g/plain/metrics.json')); print('plain run: test', m['test_accuracy'])" >> "$OUT/gpu_checks.txt" 2>&1
check bf16-mixed tk finetune $D --strategy full --precision bf16-mixed --out /tmp/g/bf16
check fsdp-1gpu tk finetune $D --strategy full --dist fsdp --out /tmp/g/fsdp
check probe-cuda tk finetune $D --strategy linear-probe --accelerator gpu --out /tmp/g/probe
check lora-gpu tk finetune $D --strategy lora --out /tmp/g/lora
check predict-cuda tk predict /tmp/g/fsdp /tmp/g --device cuda --format json
check rank-cuda tk rank --data builtin:digits --per-class 20 --device cuda --no-progress
wait
python3 benchmarks/sweep.py --summary "$OUT/digits.jsonl" > "$OUT/digits_summary.md" 2>&1
python3 benchmarks/sweep.py --summary "$OUT/fm.jsonl" > "$OUT/fm_summary.md" 2>&1
cat "$OUT/gpu_checks.txt" "$OUT/digits_summary.md" "$OUT/fm_summary.md"
