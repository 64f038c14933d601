#!/usr/bin/env bash
# One GPU call (device tool): engine checks on CUDA (issue 8) and SimCLR on all Fashion-MNIST training
# images from random init and from ImageNet weights (issue 13), each stopped after SSL_SECONDS and
# finalised from its last checkpoint (--resume --epochs <done>). Results in $OUT; the backbones are
# evaluated on the CPU afterwards (benchmarks/RESULTS.md, "pretrain").
# Env: SSL_SECONDS (default 200), SSL_EPOCHS (default 10), ACC (default gpu), WORKERS (14).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRANSFERKIT_CACHE=/tmp/tkcache
LOGS=${TMPDIR:-/tmp}; ACC=${ACC:-gpu}; SECONDS_EACH=${SSL_SECONDS:-200}; EPOCHS=${SSL_EPOCHS:-10}; WORKERS=${WORKERS:-14}
tk() { python3 -m transferkit.cli "$@"; }
log() { echo "$*" | tee -a "$OUT/checks.txt"; }
check() {  # name, command...: exit code and wall time, one line each
  local name=$1; shift; local t0=$(date +%s%N)
  "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
  log "$(printf '%-14s rc=%s %6d ms %s' "$name" "$rc" "$(( ($(date +%s%N) - t0) / 1000000 ))" \
         "$(grep -ho 'test accuracy [0-9.]*' $LOGS/$name.log | head -1)")"
  [ "$rc" = 0 ] || tail -3 "$LOGS/$name.log" >> "$OUT/checks.txt"
}
ssl() {  # name, weights
  local name=$1 weights=$2 run=/tmp/ssl/$1
  timeout -s INT "$SECONDS_EACH" python3 -m transferkit.cli pretrain --data builtin:fashion-mnist --method simclr \
    --weights "$weights" --image-size 32 --batch-size 512 --workers "$WORKERS" --epochs "$EPOCHS" \
    --accelerator "$ACC" --out "$run" --no-progress > "$LOGS/$name.log" 2>&1
  if [ ! -f "$run/metrics.json" ] && [ -f "$run/checkpoints/last.ckpt" ]; then  # stopped: finalise what trained
    local done=$(python3 -c "import torch; print(torch.load('$run/checkpoints/last.ckpt', map_location='cpu', weights_only=False)['epoch'] + 1)")
    tk pretrain --out "$run" --resume --epochs "$done" --accelerator "$ACC" --no-progress >> "$LOGS/$name.log" 2>&1
  fi
  mkdir -p "$OUT/$name"
  cp "$run"/model.safetensors "$run"/model.json "$run"/metrics.json "$OUT/$name/" 2>/dev/null
  log "$name: $(python3 -c "import json; m=json.load(open('$run/metrics.json')); print(m['epochs'], 'epochs,', m['train_images'], 'images,', m['train_seconds'], 's, kNN', m['knn_accuracy_before'], '->', m['knn_accuracy'])" 2>&1 | tail -1)"
  grep -iE "error|Traceback" "$LOGS/$name.log" | head -3 >> "$OUT/checks.txt"
}
log "$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo no GPU)"
log "$(python3 -c 'import torch, lightning, timm, lightly; print("torch", torch.__version__, "lightning", lightning.__version__, "timm", timm.__version__, "lightly", lightly.__version__)')"
ssl simclr-scratch-gpu none &
D="--data builtin:digits --per-class 20 --epochs 2 --no-progress"
check plain tk finetune $D --strategy full --out /tmp/g/plain
check bf16-mixed tk finetune $D --strategy full --precision bf16-mixed --out /tmp/g/bf16
check probe-cuda tk finetune $D --strategy linear-probe --accelerator "$ACC" --out /tmp/g/probe
python3 -c "
import numpy as np; from PIL import Image; from sklearn.datasets import load_digits; import os
os.makedirs('/tmp/g/img', exist_ok=True); d = load_digits()
[Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(f'/tmp/g/img/{i}.png') for i in range(4)]"
check predict-cuda tk predict /tmp/g/plain /tmp/g/img --device cuda --format json
check pretrain-bf16 tk pretrain --data builtin:digits --images 200 --epochs 1 --image-size 32 --precision bf16-mixed \
  --accelerator "$ACC" --out /tmp/g/pt --no-progress
check ft-from-pt tk finetune $D --weights /tmp/g/pt --strategy full --image-size 32 --out /tmp/g/ftpt
wait
ssl simclr-imagenet-gpu packaged
for f in /tmp/simclr-*.log; do echo "== $f"; grep -v "Tip" "$f" | tail -4; done >> "$OUT/checks.txt"
ls -R "$OUT" >> "$OUT/checks.txt"
cat "$OUT/checks.txt"
