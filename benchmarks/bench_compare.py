"""Strategies side by side (issue 3, Q1): accuracy, cost and forgetting relative to ``full``.

Reads the ``compare.json`` of one or more finished ``transferkit compare`` runs and
prints, per data size, each strategy's mean ± std test accuracy, its difference
from ``full`` in points, its training time as a ratio of ``full``'s, its trainable
fraction and, when measured, its forgetting. Run the compares first, e.g.::

    transferkit compare --data builtin:fashion-mnist --per-class 10 --test-per-class 100 --seeds 3 --out cmp/fm10
    transferkit compare --data builtin:fashion-mnist --per-class 100 --test-per-class 100 --seeds 3 --out cmp/fm100
    transferkit compare --data builtin:fashion-mnist --per-class 50 --test-per-class 100 --seeds 3 \\
        --strategies full,full+lwf,l2sp --source-eval --wise-curve 0,0.25,0.5,0.75,1 --out cmp/forget50

Usage: python benchmarks/bench_compare.py cmp/fm10 cmp/fm100 cmp/forget50
       python benchmarks/bench_compare.py benchmarks/compare/fm500.json   (the recorded results)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transferkit.report.compare import percent


def table(result: dict) -> list[str]:
    board = result["leaderboard"]
    scored = [r for r in board if r["test_accuracy_mean"] is not None]
    full = next((r for r in scored if r["strategy"] == "full"), scored[0])
    forgetting = any(r["forgetting"] is not None for r in board)
    lines = [f"### {result['data']}, {result['per_class']} per class, seeds {result['seeds']}", "",
             "| strategy | test acc % | Δ vs full (pts) | train s | time vs full | trainable % |"
             + (" forgetting % |" if forgetting else ""),
             "|---|---|---|---|---|---|" + ("---|" if forgetting else "")]
    for r in scored:
        lines.append(f"| {r['strategy']} | {percent(r['test_accuracy_mean'], r['test_accuracy_std'])} | "
                     f"{100 * (r['test_accuracy_mean'] - full['test_accuracy_mean']):+.1f} | "
                     f"{r['train_seconds_mean']:.0f} | {r['train_seconds_mean'] / max(full['train_seconds_mean'], 1e-9):.2f}× | "
                     f"{100 * r['trainable_params'] / r['total_params']:.1f} |"
                     + (f" {percent(r['forgetting'])} |" if forgetting else ""))
    base = next((r["pixel_baseline_accuracy"] for r in board if r.get("pixel_baseline_accuracy") is not None), None)
    if base is not None:
        lines += ["", f"Raw-pixel logistic regression: {percent(base)}%."]
    for name, curve in result.get("wise_curve", {}).items():
        lines += ["", f"WiSE-FT alpha curve ({name}): " + ", ".join(
            f"α={p['alpha']:g}: acc {percent(p.get('test_accuracy'))} / agreement {percent(p.get('source_agreement'))}"
            for p in curve)]
    return lines + ["", result["recommendation"], ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", type=Path, help="transferkit compare --out folders or compare.json files")
    for p in ap.parse_args().paths:
        print("\n".join(table(json.loads((p if p.suffix == ".json" else p / "compare.json").read_text()))))


if __name__ == "__main__":
    main()
