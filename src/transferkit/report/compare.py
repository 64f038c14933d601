"""``transferkit compare`` output: the leaderboard (Markdown) and its bar chart (PNG)."""

from __future__ import annotations

from pathlib import Path

from transferkit.report.html import write_html
from transferkit.report.markdown import relative_link
from transferkit.report.plots import new_figure, save_png
from transferkit.rundir import atomic_write


def percent(v: float | None, std: float | None = None) -> str:
    """A fraction as percent with one decimal, ``± std`` when given; ``-`` for a missing value."""
    if v is None:
        return "-"
    return f"{100 * v:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * v:.1f}"


def ranking_note(board: list[dict], rank: str, what: str, reported: str) -> str:
    """The line under a leaderboard saying what ranked it (``rank``: a validation score) and what is only reported."""
    if any(r[f"{rank}_mean"] is not None for r in board):
        return f"Ranked by {what}; {reported} is reported, never used to choose."
    return f"No {what} (empty validation split): the rows are in run order, unranked; {reported} is reported only."


def leaderboard_table(board: list[dict]) -> list[str]:
    """Markdown rows: one per strategy, best validation accuracy first; test accuracy beside it."""
    best = board[0]["val_accuracy_mean"] if board else None
    show_forgetting = any(r["forgetting"] is not None for r in board)
    head = ["#", "strategy", "val accuracy % (mean ± std)", "Δ best val (points)", "test accuracy % (mean ± std)",
            "train s", "trainable params", "size px", "epochs", *(["forgetting %"] if show_forgetting else []),
            "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(board, 1):
        val = r["val_accuracy_mean"]
        delta = "-" if val is None or best is None else f"{100 * (val - best):+.1f}"
        frac = 100 * r["trainable_params"] / r["total_params"]
        cells = [str(i), r["strategy"], percent(val, r["val_accuracy_std"]), delta,
                 percent(r["test_accuracy_mean"], r["test_accuracy_std"]),
                 f"{r['train_seconds_mean']:.0f}", f"{r['trainable_params']:,} ({frac:.1f}%)",
                 str(r["image_size"]), str(r["epochs"]),
                 *([percent(r["forgetting"])] if show_forgetting else []), str(r["runs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_leaderboard(path: Path, result: dict, chart: str | None = None) -> Path:
    """``leaderboard.md``: settings, the table, the pixel baseline, the WiSE-FT curve and the advice;
    ``leaderboard.html`` beside it."""
    board = result["leaderboard"]
    lines = [f"# transferkit compare: {result['data']} ({result['model']})", "",
             f"Per class: {result['per_class'] or 'all'} training images; seeds: "
             f"{', '.join(map(str, result['seeds']))}. Every strategy ran on the same splits per seed.", "",
             *leaderboard_table(board), "",
             ranking_note(board, "val_accuracy", "validation accuracy (mean over seeds)", "test accuracy")]
    baselines = [r["pixel_baseline_accuracy"] for r in board if r.get("pixel_baseline_accuracy") is not None]
    if baselines:
        lines += ["", f"Baseline to beat: logistic regression on raw pixels, {100 * baselines[0]:.1f}% test "
                      "accuracy (same splits, mean over seeds; scored on test only, so a report, not a choice)."]
    if any(r["forgetting"] is not None for r in board):
        lines += ["", "Forgetting = 1 − agreement of the fine-tuned backbone + original source head with the "
                      "pretrained model's top-1 source class on held-out images (0 = none)."]
    for name, curve in result.get("wise_curve", {}).items():
        lines += ["", f"## WiSE-FT alpha curve ({name})", "",
                  "| alpha | test accuracy % | source agreement % |", "|---|---|---|"]
        for p in curve:
            lines.append(f"| {p['alpha']:g} | {percent(p.get('test_accuracy'), p.get('test_accuracy_std'))} | "
                         f"{percent(p.get('source_agreement'), p.get('source_agreement_std'))} |")
    lines += ["", "## Recommendation", "", result["recommendation"]]
    if chart:
        lines += ["", f"![accuracy and training time per strategy]({relative_link(chart, path)})"]
    lines += ["", "Each run's own report, weights and logs: `runs/<strategy>-seed<N>/`.", ""]
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines)))
    write_html(Path(path))
    return Path(path)


def plot_compare(board: list[dict], path: Path) -> Path:
    """Bars: mean test accuracy ± std per strategy in the leaderboard's (validation) order, the pixel
    baseline dashed, and training time."""
    base = next((r["pixel_baseline_accuracy"] for r in board if r.get("pixel_baseline_accuracy") is not None), None)
    return plot_scores(board, path, label="test accuracy (%; ranked by validation)",
                       baseline=(base, "raw-pixel logistic regression") if base is not None else None)


def plot_scores(board: list[dict], path: Path, *, name_key: str = "strategy", score: str = "test_accuracy",
                label: str = "test accuracy (%)", title: str = "transferkit compare",
                baseline: tuple[float, str] | None = None) -> Path:
    """Bars: mean ``score`` ± std per row of a leaderboard, in its order (``baseline``: a dashed line), and
    training time."""
    rows = [r for r in board if r[f"{score}_mean"] is not None][::-1]  # the leaderboard's first on top
    names = [r[name_key] for r in rows]
    fig = new_figure(figsize=(11, 0.45 * len(rows) + 1.8))
    ax_acc, ax_time = fig.subplots(1, 2, sharey=True)
    ax_acc.barh(names, [100 * r[f"{score}_mean"] for r in rows],
                xerr=[100 * (r[f"{score}_std"] or 0) for r in rows], color="tab:blue", capsize=3)
    if baseline is not None:
        ax_acc.axvline(100 * baseline[0], color="tab:red", linestyle="--", label=baseline[1])
        ax_acc.legend(loc="lower right", fontsize=8)
    ax_acc.set_xlabel(label)
    ax_acc.set_xlim(0, 100)
    ax_time.barh(names, [r["train_seconds_mean"] for r in rows], color="tab:gray")
    ax_time.set_xlabel("training time (s, mean)")
    for ax in (ax_acc, ax_time):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return save_png(fig, path)
