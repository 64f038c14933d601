"""Which rule should choose the linear probe's regularisation: validation accuracy or cross-entropy?

Never reads a test split: the probe's path (15 strengths, as ``fit_linear_probe`` fits it) is fitted
on the training split; each rule picks ``C`` on one half of the validation split and is scored
(accuracy) on the other half, both halves in turn, over several seeds (each seed its own splits).
Rules: ``acc`` (highest accuracy, ties to the larger C), ``acc_then_loss`` (highest accuracy, ties
by lower cross-entropy, then smaller C: the former rule), ``loss`` (lowest cross-entropy: the rule
now in use).

Usage: python benchmarks/bench_probe_selection.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_linear_probe import features  # noqa: E402  (the same cached features)

import transferkit.evaluation.linear_probe as lp  # noqa: E402
from transferkit.data import load_source, make_splits  # noqa: E402
from transferkit.evaluation.features import FeatureCache  # noqa: E402

RULES = {"acc": lambda s: max(range(len(s)), key=lambda i: (s[i][0], i)),
         "acc_then_loss": lambda s: max(range(len(s)), key=lambda i: (s[i][0], -s[i][1], -i)),
         "loss": lambda s: min(range(len(s)), key=lambda i: (s[i][1], i))}


def held_out_accuracy(source, per_class, size: int, seed: int, has_test: bool, cache) -> dict[str, list[float]]:
    s = make_splits(source.train.targets, val_split=0.15, test_split=0.2, seed=seed, has_test=has_test,
                    per_class=per_class, classes=source.classes)
    (x, y), (xv, yv) = features(cache, source.train, s.train, size), features(cache, source.train, s.val, size)
    mu, sigma = lp._standardiser(x, "global")
    fits = list(lp._path((x - mu) / sigma, y, 10, lp.DEFAULT_CS, 1000, 1e-4))
    zv = (xv - mu) / sigma
    perm = torch.randperm(len(yv), generator=torch.Generator().manual_seed(seed))
    halves, out = (perm[: len(perm) // 2], perm[len(perm) // 2:]), {k: [] for k in RULES}
    for a, b in (halves, halves[::-1]):
        pick = [lp._score(v, c, zv[a], yv[a]) for v, c, _, _ in fits]
        score = [lp._score(v, c, zv[b], yv[b]) for v, c, _, _ in fits]
        for name, rule in RULES.items():
            out[name].append(score[rule(pick)][0])
    return out


def main() -> None:
    cache = FeatureCache()
    print("| data | " + " | ".join(RULES) + " |\n|---|" + "---|" * len(RULES))
    for what, spec, per_class, size, seeds, has_test in [
            ("digits 64 px", "builtin:digits", None, 64, range(5), False),
            ("digits 96 px", "builtin:digits", None, 96, range(5), False),
            ("Fashion-MNIST 10/class 224 px", "builtin:fashion-mnist", 10, 224, range(5), True),
            ("Fashion-MNIST 100/class 224 px", "builtin:fashion-mnist", 100, 224, range(3), True)]:
        source, res = load_source(spec), {k: [] for k in RULES}
        for seed in seeds:
            for k, v in held_out_accuracy(source, per_class, size, seed, has_test, cache).items():
                res[k] += v
        print(f"| {what} ({len(seeds)} seeds) | " + " | ".join(f"{np.mean(v):.4f} ± {np.std(v):.4f}"
                                                            for v in res.values()) + " |")


if __name__ == "__main__":
    main()
