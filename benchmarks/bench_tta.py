"""Test-time adaptation on Fashion-MNIST-C (issue 11): the corruption table at severity 5 and 3,
the batch-size table and the continual stream, for none / bn / tent / eata, on several seeds.

    python benchmarks/bench_tta.py --run RUN --out OUT [--images 1000] [--seeds 0,1,2] [--parts all]

RUN: a finetune run trained on clean Fashion-MNIST (see benchmarks/RESULTS.md, "tta"). Every cell is
one ``transferkit tta`` command (kept under OUT/<part>/seed<N>/); the seed fixes the stream's images,
order and corruption noise. ``--parts`` picks among prior (BN prior chosen on the four held-out
corruptions, never on the benchmark's fifteen), sev5, sev3, batch, continual.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

METHODS = "none,bn,tent,eata"
BATCH_CORRUPTIONS = "gaussian_noise,defocus_blur,fog,jpeg_compression"  # noise, blur, weather, digital


def tta(run: str, out: Path, *args: str) -> dict:
    """One ``transferkit tta`` (reused when its metrics.json exists)."""
    if not (out / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "transferkit.cli", "tta", run, "--data", "builtin:fashion-mnist",
               "--out", str(out), "--overwrite", "--no-progress", *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return json.loads((out / "metrics.json").read_text())


def mean_std(values: list[float]) -> str:
    pct = [100 * v for v in values]
    std = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return f"{statistics.mean(pct):.1f} ± {std:.1f}"


def errors(results: list[dict]) -> dict[str, list[float]]:
    """method -> mean error over the corruptions, one value per seed."""
    return {m: [1 - r["mean_accuracy"][m] for r in results] for m in results[0]["mean_accuracy"]}


def table(title: str, columns: list[str], rows: dict[str, list[str]]) -> None:
    print(f"\n{title}\n\n| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--images", default="1000", help="stream images per corruption: severity 5")
    p.add_argument("--images-small", default="500", help="the same for the prior, severity 3, batch and "
                   "continual parts")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--parts", default="prior,sev5,sev3,batch,continual")
    p.add_argument("--batch-sizes", default="1,4,16,64,200")
    p.add_argument("--priors", default="0,4,16,64")
    p.add_argument("--methods", default=METHODS, help="the methods of every part but prior (e.g. none,tent,eata,sar)")
    p.add_argument("--continual-batch", default="64", help="the continual stream's batch size")
    a = p.parse_args()
    seeds, parts, out = a.seeds.split(","), a.parts.split(","), Path(a.out)
    common = ["--images", a.images, "--method", a.methods]
    small = ["--images", a.images_small, "--method", a.methods]
    if "prior" in parts:  # chosen on the held-out corruptions only, with BN adaptation (no gradient)
        rows = {}
        for bs in a.batch_sizes.split(","):
            for prior in a.priors.split(","):
                res = [tta(a.run, out / "prior" / f"bs{bs}-n{prior}-seed{s}", "--images", a.images_small,
                           "--method", "none,bn", "--corruptions", "extra",
                           "--batch-size", bs, "--bn-prior", prior, "--seed", s) for s in seeds]
                for m, errs in errors(res).items():
                    rows.setdefault(f"{m}, N={prior}", []).append(mean_std(errs))
        table("BN prior N on the held-out corruptions (speckle noise, Gaussian blur, spatter, saturate), "
              "severity 5, mean error %", [f"batch {b}" for b in a.batch_sizes.split(",")], rows)
    for sev in ("5", "3"):
        if f"sev{sev}" not in parts:
            continue
        res = [tta(a.run, out / f"sev{sev}" / f"seed{s}", *(common if sev == "5" else small), "--corruptions", "all",
                   "--severity", sev,
                   "--seed", s) for s in seeds]
        names = res[0]["corruptions"]
        rows = {m: [mean_std([1 - next(c["accuracy"] for c in r["cells"] if (c["method"], c["corruption"]) == (m, k))
                              for r in res]) for k in names] for m in res[0]["mean_accuracy"]}
        for m, errs in errors(res).items():
            rows[m].append(mean_std(errs))
        table(f"Severity {sev}, batch 64, error % (mean over seeds {a.seeds})", [*names, "mean"], rows)
    if "batch" in parts:
        rows = {}
        for bs in a.batch_sizes.split(","):
            res = [tta(a.run, out / "batch" / f"bs{bs}-seed{s}", *small, "--corruptions", BATCH_CORRUPTIONS,
                       "--batch-size", bs, "--seed", s) for s in seeds]
            for m, errs in errors(res).items():
                rows.setdefault(m, []).append(mean_std(errs))
        table(f"Batch size, severity 5, mean error % over {BATCH_CORRUPTIONS}", a.batch_sizes.split(","), rows)
    if "continual" in parts:
        res = [tta(a.run, out / "continual" / f"bs{a.continual_batch}-seed{s}", *small, "--corruptions", "all",
                   "--continual", "--batch-size", a.continual_batch, "--seed", s) for s in seeds]
        rows = {m: [mean_std(errs)] for m, errs in errors(res).items()}
        table(f"Continual stream (15 corruptions in turn, {a.images_small} images each, severity 5, batch "
              f"{a.continual_batch}, never "
              "reset), mean error %",
              ["mean error %"], rows)


if __name__ == "__main__":
    main()
