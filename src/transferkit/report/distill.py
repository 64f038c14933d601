"""``transferkit distill``'s report: teacher vs student (vs the student alone) in accuracy, size and
speed, as a table and a chart, the student's per-class scores and most confident mistakes; and the leaderboard of ``distill --loss a,b --seeds N``."""

from __future__ import annotations

from pathlib import Path

from transferkit.report.gallery import mistakes_section
from transferkit.report.plots import new_figure, save_png

DISTILL_SHOWN = ("loss", "alpha", "temperature", "teacher_model", "teacher_image_size", "model", "model_args",
                 "weights", "strategy", "image_size", "epochs", "teacher_accuracy", "student_accuracy",
                 "student_alone_accuracy", "student_macro_f1", "student_val_accuracy", "student_alone_val_accuracy",
                 "train_seconds", "seed", "train_images", "unlabelled_images", "augment", "test_images")


def _rows(metrics: dict) -> list[tuple[str, float | None, int, float, int]]:
    """(who, accuracy, params, images/s, input px): teacher, student, and the student alone when known."""
    rows = [("teacher", metrics["teacher_accuracy"], metrics["teacher_params"], metrics["teacher_images_per_second"],
             metrics["teacher_image_size"]),
            (f"student ({metrics['loss']})", metrics["student_accuracy"], metrics["student_params"],
             metrics["student_images_per_second"], metrics["image_size"])]
    if metrics.get("student_alone_accuracy") is not None:
        rows.append(("student alone", metrics["student_alone_accuracy"], metrics["student_params"],
                     metrics["student_images_per_second"], metrics["image_size"]))
    return rows


def distill_sections(metrics: dict) -> list[str]:
    """Markdown: the teacher/student table and what distillation bought."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["", "## Teacher and student", "", "| model | test accuracy % | parameters | images/s (CPU, batch 32) | "
             "input px |", "|---|---|---|---|---|"]
    lines += [f"| {who} | {pct(acc)} | {params:,} | {ips:.0f} | {px} |" for who, acc, params, ips, px in _rows(metrics)]
    alone, student = metrics.get("student_alone_accuracy"), metrics["student_accuracy"]
    if alone is not None and student is not None:
        lines += ["", f"Distillation ({metrics['loss']}): {100 * (student - alone):+.1f} points over the same "
                      "student trained alone with the same budget."]
    speed = metrics["student_images_per_second"] / max(metrics["teacher_images_per_second"], 1e-9)
    lines += ["", f"The student has {metrics['student_params'] / metrics['teacher_params']:.2f}x the teacher's "
                  f"parameters and runs {speed:.2f}x as many images per second."]
    return lines + student_errors(metrics)


def student_errors(metrics: dict) -> list[str]:
    """Markdown: the student's per-class test scores and most confident test mistakes (absent in older runs)."""
    from transferkit.evaluation.metrics import per_class_table
    from transferkit.report.markdown import calibration_lines

    lines = calibration_lines(metrics.get("calibration"))
    lines += per_class_table(metrics["test_per_class"], "student, test") if metrics.get("test_per_class") else []
    if metrics.get("test_mistakes") is not None:
        lines += mistakes_section(metrics["test_mistakes"], "test", metrics.get("gradcam_note"))
    return lines


def plot_distill(metrics: dict, path: Path) -> Path:
    """Two panels: test accuracy and images/s of the teacher, the student, the student alone."""
    rows = _rows(metrics)
    names = [r[0] for r in rows]
    colours = ["tab:grey", "tab:blue", "tab:orange"][: len(rows)]
    fig = new_figure(figsize=(9, 3.6))
    acc_ax, speed_ax = fig.subplots(1, 2)
    acc_ax.bar(names, [100 * (r[1] or 0) for r in rows], color=colours)
    acc_ax.set_ylabel("test accuracy (%)")
    low = min(100 * (r[1] or 0) for r in rows)
    acc_ax.set_ylim(max(0, low - 10), 100)
    speed_ax.bar(names, [r[3] for r in rows], color=colours)
    speed_ax.set_ylabel("images/s (CPU, batch 32)")
    for ax in (acc_ax, speed_ax):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"distill ({metrics['loss']}): {metrics['teacher_model']} -> {metrics['model']}")
    return save_png(fig, path)


def write_distill_leaderboard(path: Path, result: dict, chart: str | None = None) -> Path:
    """``leaderboard.md`` (and ``leaderboard.html``) of ``distill --loss a,b``: one row per loss, best student
    validation accuracy first, test accuracy beside it, each loss against the student alone (paired by seed, on
    test) and the teacher."""
    from transferkit.report.compare import percent, ranking_note
    from transferkit.report.markdown import relative_link, verdict_lines
    from transferkit.report.html import write_html
    from transferkit.rundir import atomic_write

    board = result["leaderboard"]
    lines = [f"# transferkit distill: {result['teacher_model']} -> {result['model']} on {result['data']}",
             *verdict_lines(result), "",
             f"Teacher test accuracy {percent(result['teacher_accuracy'])}% (mean over the seeds' test images). "
             f"Student arguments: "
             f"{result['model_args'] or '-'}. Seeds: {', '.join(map(str, result['seeds']))}; every loss of a seed "
             "ran on the same splits and images.", "",
             "| # | loss | student val accuracy % (mean ± std) | student test accuracy % (mean ± std) | "
             "Δ student alone (test points, paired) | train s | images/s student / teacher | size px | epochs | "
             "seeds |", "|---|---|---|---|---|---|---|---|---|---|", *_distill_rows(board), "",
             ranking_note(board, "student_val_accuracy", "the student's validation accuracy (mean over seeds)",
                          "test accuracy (and Δ student alone)")]
    if chart:
        lines += ["", f"![student accuracy and training time per loss]({relative_link(chart, path)})"]
    lines += ["", "`none` is the student trained alone with the same budget. Each run's report, weights and logs: "
                  "`runs/<loss>-seed<N>/`.", ""]
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines)))
    write_html(Path(path))
    return Path(path)


def _distill_rows(board: list[dict]) -> list[str]:
    from transferkit.report.compare import percent

    lines = []
    for i, r in enumerate(board, 1):
        delta = ("-" if r["loss"] == "none" or r["delta_alone"] is None
                 else f"{100 * r['delta_alone']:+.1f} ± {100 * (r['delta_alone_std'] or 0):.1f}")
        lines.append(f"| {i} | {r['loss']} | {percent(r['student_val_accuracy_mean'], r['student_val_accuracy_std'])} "
                     f"| {percent(r['student_accuracy_mean'], r['student_accuracy_std'])} | "
                     f"{delta} | {r['train_seconds_mean']:.0f} | {r['student_images_per_second_mean']:.0f} / "
                     f"{r['teacher_images_per_second_mean']:.0f} | {r['image_size']} | {r['epochs']} | {r['runs']} |")
    return lines
