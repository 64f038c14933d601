"""Run named grids of ``finetune`` runs (settings × seeds) in parallel processes; one JSON
line per run. Used to choose defaults on *validation* accuracy over seeds and to measure
``auto`` against the other strategies (benchmarks/RESULTS.md).

    python benchmarks/sweep.py --grid digits --parallel 2 --out digits.jsonl
    python benchmarks/sweep.py --grid fm --accelerator gpu --parallel 8 --out fm.jsonl
    python benchmarks/sweep.py --summary digits.jsonl      # mean ± std per setting
    python benchmarks/sweep.py --grid augment --parallel 2 --out augment.jsonl   # --augment/--mixup/... defaults
    python benchmarks/sweep.py --grid augment --limit 1 --out one.jsonl          # the first job only (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time

SEEDS5, SEEDS3 = (0, 1, 2, 3, 4), (0, 1, 2)
# the main job's candidates (transferkit finetune --data builtin:digits): lp-ft / full settings
DIGITS = [{"strategy": "auto"},
          {"strategy": "lp-ft", "image_size": 96, "lr": 3e-3},
          {"strategy": "lp-ft", "image_size": 96, "lr": 3e-3, "bn": "freeze"},
          {"strategy": "lp-ft", "image_size": 96, "lr": 3e-3, "freeze_groups": 5},
          {"strategy": "lp-ft", "image_size": 96, "lr": 3e-3, "freeze_groups": 5, "epochs": 4},
          {"strategy": "full", "image_size": 96, "lr": 1e-2, "freeze_groups": 5},
          {"strategy": "full", "image_size": 96, "lr": 1e-2, "freeze_groups": 5, "epochs": 4},
          {"strategy": "linear-probe"}]
# the auto grid: Fashion-MNIST 10 / 100 / 500 per class (official test set) and digits
FM_VARIANTS = [{"image_size": 96, "lr": 3e-3}, {"image_size": 96, "lr": 3e-3, "freeze_groups": 5}]
# the augment grid (issue 26): the training basics, each against the current default (augment light, no flip),
# on Fashion-MNIST 100/class (full at 96 px, as benchmarks/compare/fm100-bss-surgical) and digits (its default
# finetune settings); chosen on validation accuracy over seeds 0-2, never on test
AUGMENT_SETTINGS = [{"augment": "light"}, {"augment": "randaugment"}, {"augment": "trivialaugment"},
                    {"augment": "light", "hflip": 0.5}, {"augment": "light", "mixup": 0.2},
                    {"augment": "light", "cutmix": 1.0}]
AUGMENT_DATA = [{"data": "builtin:fashion-mnist", "per_class": 100, "test_per_class": 300, "strategy": "full",
                 "image_size": 96},
                {"data": "builtin:digits"}]


def grid(name: str) -> list[dict]:
    if name == "digits":
        return [{"data": "builtin:digits", **s, "seed": seed} for s in DIGITS for seed in SEEDS5]
    if name == "fm":
        jobs = []
        for n in (10, 100, 500):
            base = {"data": "builtin:fashion-mnist", "per_class": n, "test_per_class": 300}
            for strategy in ("linear-probe", "full"):
                jobs += [{**base, "strategy": strategy, "seed": s} for s in SEEDS3]
            for v in FM_VARIANTS if n > 10 else [{}]:
                for strategy in ("auto", "lp-ft") if n > 10 else ("auto",):
                    jobs += [{**base, "strategy": strategy, **v, "seed": s} for s in SEEDS3]
        return jobs
    if name == "augment":  # flips only on Fashion-MNIST (photos of clothes); digits are not flip-invariant
        return [{**base, **s, "seed": seed} for seed in SEEDS3 for base in AUGMENT_DATA for s in AUGMENT_SETTINGS
                if "hflip" not in s or base["data"] != "builtin:digits"]  # seeds outermost: a partial grid is usable
    raise SystemExit(f"unknown grid {name}")


def run_one(job: tuple[dict, str, int]) -> dict:
    settings, accelerator, threads = job
    import torch

    torch.set_num_threads(threads)
    from transferkit import FinetuneConfig, finetune

    with tempfile.TemporaryDirectory() as tmp:
        cfg = FinetuneConfig(out=os.path.join(tmp, "run"), accelerator=accelerator, **settings)
        t = time.perf_counter()
        try:
            m = finetune(cfg, progress=False)
        except Exception as e:  # noqa: BLE001  (a sweep records failures and goes on)
            return {**settings, "error": f"{type(e).__name__}: {e}"}
    keys = ("strategy", "val_accuracy", "test_accuracy", "pixel_baseline_accuracy", "train_seconds",
            "probe_val_accuracy", "strategy_reason", "image_size", "epochs")
    calibration = {k: v for k, v in (m.get("calibration") or {}).items() if "ece" in k or k == "temperature"}
    return {**settings, "resolved": {k: m.get(k) for k in keys} | {"calibration": calibration},
            "wall_seconds": round(time.perf_counter() - t, 1)}


def summary(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = json.dumps({k: v for k, v in r.items() if k not in ("seed", "resolved", "wall_seconds", "error")},
                         sort_keys=True)
        groups.setdefault(key, []).append(r)
    print("| setting | n | val (mean ± std) | test (mean ± std) | min test | pixels | train s |")
    print("|---|---|---|---|---|---|---|")
    for key, rs in groups.items():
        ok = [r["resolved"] for r in rs if "resolved" in r]
        if not ok:
            print(f"| {key} | 0 | failed: {rs[0].get('error')} |")
            continue
        ms = lambda k: (statistics.mean(r[k] for r in ok), statistics.stdev(r[k] for r in ok) if len(ok) > 1 else 0)  # noqa: E731
        (v, vs), (t, ts) = ms("val_accuracy"), ms("test_accuracy")
        px = [r["pixel_baseline_accuracy"] for r in ok if r.get("pixel_baseline_accuracy") is not None]
        print(f"| {key} | {len(ok)} | {v:.4f} ± {vs:.4f} | {t:.4f} ± {ts:.4f} | {min(r['test_accuracy'] for r in ok):.4f} "
              f"| {statistics.mean(px) if px else float('nan'):.4f} | {statistics.mean(r['train_seconds'] for r in ok):.1f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--grid", default="digits")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--out", default="sweep.jsonl")
    p.add_argument("--summary")
    p.add_argument("--limit", type=int, help="run only the first N jobs of the grid(s)")
    a = p.parse_args()
    if a.summary:
        return summary(a.summary)
    jobs = [(s, a.accelerator, a.threads) for name in a.grid.split(",") for s in grid(name)][:a.limit]
    with mp.get_context("spawn").Pool(a.parallel) as pool, open(a.out, "a") as fh:
        for r in pool.imap_unordered(run_one, jobs):
            fh.write(json.dumps(r) + "\n")
            fh.flush()


if __name__ == "__main__":
    main()
