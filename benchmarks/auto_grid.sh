#!/usr/bin/env bash
# The auto grid on this CPU: auto against the strategies, 3 seeds, same splits per seed
# (Fashion-MNIST 10, 100 and 500 labels per class, 100 test images per class); digits is the main
# job's table (bench_main_job.py). `full` at 10/100 per class is in benchmarks/compare/engine2-fm10|fm100
# (its code did not change since); at 500 per class auto's fine-tuning run is full with the bottom
# groups frozen. Usage: bash benchmarks/auto_grid.sh OUT   (about 1 h on 2 cores)
set -euo pipefail
out=${1:-runs/auto-grid}
transferkit compare --data builtin:fashion-mnist --per-class 500 --test-per-class 100 --seeds 3 \
  --strategies linear-probe,auto --out "$out/fm500" --no-progress
transferkit compare --data builtin:fashion-mnist --per-class 100 --test-per-class 100 --seeds 3 \
  --strategies linear-probe,auto --out "$out/fm100" --no-progress
transferkit compare --data builtin:fashion-mnist --per-class 10 --test-per-class 100 --seeds 3 \
  --strategies linear-probe,auto,freeze,lp-ft,gradual,l2sp,lora --out "$out/fm10" --no-progress
