"""``distill --loss a,b,c --seeds N``: losses side by side, as ``compare`` puts strategies.

Each loss and seed is one ordinary ``distill`` run under ``<out>/runs/<loss>-seed<N>/``; a seed fixes
the splits, the unlabelled images, the student's init and the data order, so every loss of a seed
sees the same images. ``none`` (the student alone) is always run: the leaderboard reports each loss
against it, seed by seed. The leaderboard is ranked by the student's validation accuracy; test accuracy
(and the paired gain over the student alone on test) is reported, never used to rank. Reuses compare's
machinery (finished runs reused, interrupted ones resumed).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from transferkit.config import DistillConfig
from transferkit.engine.compare import grid_dir, grid_logging, mean_std, paired_diff, run_all, summarise
from transferkit.engine.distill import distill, load_teacher, with_defaults
from transferkit.errors import ConfigError
from transferkit.evaluation.baselines import grid_verdict
from transferkit.report.compare import plot_scores
from transferkit.report.distill import write_distill_leaderboard
from transferkit.rundir import MLFLOW_STORE, declare_kind, is_global_zero, write_json

#: Kept in each ``distill.json`` record (besides ``loss``, ``seed`` and ``run_dir``).
RECORD_KEYS = ("student_accuracy", "student_val_accuracy", "teacher_accuracy", "train_seconds", "image_size",
               "epochs", "alpha", "temperature", "student_params", "teacher_params", "student_images_per_second",
               "teacher_images_per_second", "teacher_model", "unlabelled_images")
OUTPUTS = ("distill.json", "leaderboard.md", "distill-compare.png", "leaderboard.html")
#: what a distill leaderboard owns (rundir.layout): its files, and its runs, each a distill run of its own
DISTILL_COMPARE_RUN = declare_kind("distill-compare", (*OUTPUTS, *MLFLOW_STORE, "runs/*/"), result=OUTPUTS[0])


def plan_runs(base: DistillConfig, losses: list[str], seeds: list[int], out: Path) -> list[tuple]:
    """``(loss, seed, config)`` per run, seed-major, ``none`` first; every option checked now."""
    if len(set(losses)) != len(losses):
        raise ConfigError(f"a loss is listed twice in {','.join(losses)}")
    losses = ["none", *(x for x in losses if x != "none")]
    values = {**base.model_dump(), "baseline": False, "baseline_run": None}
    return [(x, seed, DistillConfig.build(**{**values, "loss": x, "seed": seed,
                                             "out": str(out / "runs" / f"{x}-seed{seed}")}))
            for seed in seeds for x in losses]


def paired_delta(records: list[dict], loss: str) -> tuple[float | None, float | None]:
    """Mean ± std over seeds of (loss's student test accuracy - the student alone's), paired by seed: a report."""
    return paired_diff(records, loss, "none", name_key="loss", score="student_accuracy")[:2]


def leaderboard(records: list[dict]) -> list[dict]:
    """One row per loss, best mean student validation accuracy first; test accuracy and the paired test gain
    over the student alone (``delta_alone``) are carried, not ranked on."""
    board = summarise(records, name_key="loss", scores=("student_val_accuracy", "student_accuracy"),
                      rank="student_val_accuracy",
                      means=("train_seconds", "teacher_accuracy", "student_images_per_second",
                             "teacher_images_per_second"),
                      firsts=("image_size", "epochs", "alpha", "temperature", "student_params", "teacher_params",
                              "unlabelled_images"))
    for row in board:
        row["delta_alone"], row["delta_alone_std"] = (None, None) if row["loss"] == "none" else paired_delta(
            records, row["loss"])
    return board


def alone_verdict(records: list[dict]) -> str | None:
    """The losses that do not beat the student alone on test accuracy by more than the seed spread
    (validation alongside): ``evaluation.baselines.grid_verdict``."""
    return grid_verdict(records, "loss", "none", "student_accuracy", measure="test accuracy",
                        baseline_name="the student alone (none)", also=("student_val_accuracy", "on validation"))


def distill_compare(base: DistillConfig, losses: list[str], seeds: list[int], out: Path | str, *,
                    overwrite: bool = False, progress: bool = True, console: Console | None = None) -> dict:
    """Run every loss x seed (and ``none``) and write ``distill.json``, ``leaderboard.md`` and a chart into ``out``."""
    out = Path(out)
    base = with_defaults(base, load_teacher(base.teacher))  # the teacher checked, its data filled in, up front
    plan = plan_runs(grid_logging(base, out), losses, seeds, out)
    with grid_dir(out, DISTILL_COMPARE_RUN, plan, base, overwrite):
        records = run_all(plan, distill, progress, console or Console(), title="distill", name_key="loss",
                          score="student_accuracy", keys=RECORD_KEYS)
        if not is_global_zero():
            return {}
        board = leaderboard(records)
        result = {"data": base.data, "teacher": base.teacher, "teacher_model": records[0]["teacher_model"],
                  "teacher_accuracy": mean_std([r["teacher_accuracy"] for r in records])[0], "model": base.model,
                  "model_args": base.model_args,
                  "per_class": base.per_class, "seeds": seeds, "losses": [x for x, s, _ in plan if s == seeds[0]],
                  "records": records, "leaderboard": board, "baseline_verdict": alone_verdict(records)}
        plot_scores(board, out / OUTPUTS[2], name_key="loss", score="student_accuracy",
                    label="student test accuracy (%; ranked by validation)",
                    baseline=(result["teacher_accuracy"], "teacher"),
                    title=f"transferkit distill: {result['teacher_model']} -> {base.model}")
        write_distill_leaderboard(out / OUTPUTS[1], result, OUTPUTS[2])
        write_json(out / OUTPUTS[0], result)
    return result


__all__ = ["OUTPUTS", "RECORD_KEYS", "alone_verdict", "distill_compare", "leaderboard", "paired_delta", "plan_runs"]
