#!/usr/bin/env bash
# The auto grid on this CPU: auto against every registered strategy, the same splits per seed
# (Fashion-MNIST 10, 100 and 500 labels per class with 100 test images per class; digits with its
# own 20% test split). SEEDS (default 3) seeds each; a rerun reuses finished runs, so SEEDS=1
# first and SEEDS=3 later costs nothing twice. RESULTS.md's table was assembled from several
# runs of these commands (benchmarks/compare/engine2-*). Usage: [SEEDS=3] bash benchmarks/auto_grid.sh OUT
# (about 4.5 h on 2 cores with 3 seeds; Fashion-MNIST 500/class is two thirds of it)
set -euo pipefail
out=${1:-runs/auto-grid}
seeds=${SEEDS:-3}
all=auto,linear-probe,full,freeze,lp-ft,gradual,l2sp,lora
transferkit compare --data builtin:digits --seeds "$seeds" --strategies $all --out "$out/digits" --no-progress
for n in 10 100 500; do
  transferkit compare --data builtin:fashion-mnist --per-class $n --test-per-class 100 --seeds "$seeds" \
    --strategies $all --out "$out/fm$n" --no-progress
done
