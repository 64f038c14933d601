"""``adapt --method a,b,c --seeds N``: methods side by side, as ``compare`` puts strategies.

Each method and seed is one ordinary ``adapt`` run under ``<out>/runs/<method>-seed<N>/``; a seed
fixes the source splits and the target's adaptation/test split, so every method of a seed sees
the same images. The records go to ``adapt.json``, the leaderboard (source validation and target
accuracy mean ± std, source test accuracy, proxy A-distance before/after, train time) to ``leaderboard.md`` with a bar
chart. Reuses compare's machinery: finished runs are reused and interrupted ones resumed.

The rows are ranked by *source validation* accuracy: the only labelled validation figure that reads
no target labels (the target's labelled images are its test split; a target validation split would
have to read them). It is a weak proxy for target accuracy — alignment can trade source accuracy for
target accuracy — and the leaderboard says so; target accuracy is reported, never used to rank.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from transferkit.config import AdaptConfig
from transferkit.engine.adapt import adapt, load_domains
from transferkit.engine.compare import grid_dir, grid_logging, run_all, summarise
from transferkit.errors import ConfigError
from transferkit.evaluation.baselines import grid_verdict
from transferkit.report.adapt import write_adapt_leaderboard
from transferkit.report.compare import plot_scores
from transferkit.rundir import MLFLOW_STORE, declare_kind, is_global_zero, write_json

#: Kept in each ``adapt.json`` record (besides ``method``, ``seed`` and ``run_dir``).
RECORD_KEYS = ("target_accuracy", "source_accuracy", "source_val_accuracy", "proxy_a_distance_before",
               "proxy_a_distance_after", "train_seconds", "image_size", "epochs", "trade_off", "target_eval",
               "uses_target_labels")
OUTPUTS = ("adapt.json", "leaderboard.md", "adapt.png", "leaderboard.html")
#: what an adapt leaderboard owns (rundir.layout): its files, and its runs, each an adapt run of its own
ADAPT_COMPARE_RUN = declare_kind("adapt-compare", (*OUTPUTS, *MLFLOW_STORE, "runs/*/"), result=OUTPUTS[0])


def plan_runs(base: AdaptConfig, methods: list[str], seeds: list[int], out: Path) -> list[tuple]:
    """``(method, seed, config)`` per run, seed-major; every option checked now (unknown methods too)."""
    if not methods or not seeds:
        raise ConfigError("adapt needs at least one method and one seed")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"a method is listed twice in {','.join(methods)}")
    values = base.model_dump()
    return [(m, seed, AdaptConfig.build(**{**values, "method": m, "seed": seed,
                                           "out": str(out / "runs" / f"{m}-seed{seed}")}))
            for seed in seeds for m in methods]


def leaderboard(records: list[dict]) -> list[dict]:
    """One row per method, best mean *source validation* accuracy first (the module's docstring says why);
    target accuracy is carried, not ranked on."""
    return summarise(records, name_key="method", scores=("source_val_accuracy", "target_accuracy"),
                     rank="source_val_accuracy",
                     means=("source_accuracy", "proxy_a_distance_before", "proxy_a_distance_after", "train_seconds"),
                     firsts=("image_size", "epochs", "trade_off", "target_eval", "uses_target_labels"))


def source_only_verdict(records: list[dict], methods: list[str]) -> dict:
    """``baseline_verdict``: the methods that do not beat source-only on target accuracy by more than the
    seed spread (``evaluation.baselines.grid_verdict``); ``baseline_note`` when source-only is not in the
    line-up (no verdict can be given)."""
    if "source-only" not in methods:
        return {"baseline_verdict": None, "baseline_note": "no baseline verdict: source-only is not in the line-up; "
                                                           "add it to --method to judge the others against it"}
    return {"baseline_verdict": grid_verdict(records, "method", "source-only", "target_accuracy",
                                             measure="target accuracy"), "baseline_note": None}


def adapt_compare(base: AdaptConfig, methods: list[str], seeds: list[int], out: Path | str, *,
                  overwrite: bool = False, progress: bool = True, console: Console | None = None) -> dict:
    """Run every ``methods`` x ``seeds`` and write ``adapt.json``, ``leaderboard.md``, ``adapt.png`` into ``out``."""
    out = Path(out)
    plan = plan_runs(grid_logging(base, out), methods, seeds, out)
    load_domains(next(cfg for m, _, cfg in plan if m == "oracle") if "oracle" in methods else plan[0][2])
    with grid_dir(out, ADAPT_COMPARE_RUN, plan, base, overwrite):
        records = run_all(plan, adapt, progress, console or Console(), title="adapt", name_key="method",
                          score="target_accuracy", keys=RECORD_KEYS)
        if not is_global_zero():
            return {}
        board = leaderboard(records)
        result = {"source": base.source, "target": base.target, "model": base.model, "per_class": base.per_class,
                  "seeds": seeds, "methods": methods, "records": records, "leaderboard": board,
                  **source_only_verdict(records, methods)}
        plot_scores(board, out / OUTPUTS[2], name_key="method", score="target_accuracy",
                    label="target accuracy (%; ranked by source validation)",
                    title=f"transferkit adapt: {base.source} -> {base.target}")
        write_adapt_leaderboard(out / OUTPUTS[1], result, OUTPUTS[2])
        write_json(out / OUTPUTS[0], result)
    return result


__all__ = ["OUTPUTS", "RECORD_KEYS", "adapt_compare", "leaderboard", "plan_runs"]
