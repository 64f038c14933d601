#!/usr/bin/env bash
# The auto grid on this CPU: auto vs the linear probe vs full fine-tuning, 3 seeds, same splits
# (Fashion-MNIST 10 and 100 labels per class, 100 test images per class). Usage: bash benchmarks/auto_grid.sh OUT
set -euo pipefail
out=${1:-runs/auto-grid}
for n in 10 100; do
  transferkit compare --data builtin:fashion-mnist --per-class "$n" --test-per-class 100 --seeds 3 \
    --strategies linear-probe,full,auto --out "$out/fm$n" --no-progress
done
