"""``transferkit adapt``'s report: the feature embedding before/after adaptation, the per-class target
scores, calibration error and most confident mistakes (the metrics table and plots go through ``write_report``)."""

from __future__ import annotations

from pathlib import Path

from transferkit.report.gallery import mistakes_section
from transferkit.report.plots import new_figure, save_png

ADAPT_SHOWN = ("method", "uses_target_labels", "strategy", "model", "weights", "image_size", "epochs", "trade_off",
               "source_accuracy", "source_val_accuracy", "target_accuracy", "target_macro_f1", "target_eval",
               "proxy_a_distance_before", "proxy_a_distance_after", "train_seconds", "seed",
               "source_train_images", "target_adapt_images", "target_test_images")


def pca_2d(x):
    """Rows of ``x`` (N, D) projected on their first two principal components (N, 2), numpy."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def plot_embedding(before: dict, after: dict, classes: list[str], path: Path) -> Path:
    """2 x 2 panels, columns before/after adaptation (one PCA each, fitted on both domains' features):
    top row coloured by domain, bottom row coloured by class (marker: o source, x target; an
    unlabelled target is grey). ``before``/``after``: ``{"source": (f, y), "target": (f, y)}``."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    fig = new_figure(figsize=(10, 9))
    axes = fig.subplots(2, 2)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for col, (title, feats) in enumerate((("before (pretrained)", before), ("after adaptation", after))):
        (f_s, y_s), (f_t, y_t) = feats["source"], feats["target"]
        z = pca_2d(np.concatenate([np.asarray(f_s), np.asarray(f_t)]))
        z_s, z_t = z[: len(f_s)], z[len(f_s):]
        top, bottom = axes[0, col], axes[1, col]
        top.scatter(*z_s.T, s=8, c="tab:blue", marker="o", label="source", alpha=0.6)
        top.scatter(*z_t.T, s=8, c="tab:orange", marker="x", label="target", alpha=0.6)
        top.set_title(f"{title}: by domain")
        top.legend(fontsize=8)
        bottom.scatter(*z_s.T, s=8, c=[cmap(int(c) % cmap.N) for c in np.asarray(y_s)], marker="o", alpha=0.6)
        labelled = len(y_t) and int(np.asarray(y_t).min()) >= 0
        bottom.scatter(*z_t.T, s=10, marker="x", alpha=0.7,
                       c=[cmap(int(c) % cmap.N) for c in np.asarray(y_t)] if labelled else "grey")
        bottom.set_title(f"{title}: by class (o source, x target)")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], color=cmap(i % cmap.N), marker="s", linestyle="", label=c)
               for i, c in enumerate(classes[:20])]
    fig.suptitle("pre-logits features, PCA to 2-D")
    fig.legend(handles=handles, loc="lower center", ncol=min(10, len(handles)), fontsize=8)
    return save_png(fig, path, rect=(0, 0.05, 1, 1))


def adapt_sections(metrics: dict) -> list[str]:
    """Markdown lines: what the target score means, the oracle's note, the per-class target scores, the
    target's calibration error and most confident mistakes."""
    from transferkit.evaluation.metrics import per_class_table

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    where = ("the target images it adapted on (transductive, as papers report)" if metrics["target_eval"] ==
             "transductive" else "held-out target images it never saw")
    lines = ["", f"Target accuracy is measured on {where}."]
    if metrics["uses_target_labels"]:
        lines.append("**oracle**: trained on the *labelled* target adaptation images — an upper bound, not an "
                     "adaptation method; every other method trains without target labels.")
    if not metrics["target_labelled"]:
        lines.append("The target has no labels: only the proxy A-distance (lower = domains less separable) "
                     "and the source scores are reported; tune on the source validation split and it.")
    if metrics.get("target_per_class"):
        lines += per_class_table(metrics["target_per_class"], "target test")
    elif metrics.get("per_class_target_accuracy"):  # a run written before target_per_class
        lines += ["", "## Per-class target accuracy", "", "| class | accuracy % |", "|---|---|"]
        lines += [f"| {c} | {pct(a)} |" for c, a in metrics["per_class_target_accuracy"].items()]
    calibration = metrics.get("calibration")
    if calibration and calibration.get("target_test_ece") is not None:
        lines += ["", "## Calibration (target test)", "",
                  f"ECE (15 bins, T = 1): {calibration['target_test_ece']:.4f}; {calibration['note']}."]
    if metrics.get("target_mistakes") is not None:
        lines += mistakes_section(metrics["target_mistakes"], "target test", metrics.get("gradcam_note"))
    return lines


#: What ranks the adapt leaderboard, and why not the target.
ADAPT_RANKING = ("source validation accuracy — the only labelled validation score that reads no target labels; "
                 "a weak proxy for the target (alignment can trade source accuracy for target accuracy), so the "
                 "order says which method still fits the source, not which adapts best")


def write_adapt_leaderboard(path: Path, result: dict, chart: str | None = None) -> Path:
    """``leaderboard.md`` (and ``leaderboard.html``) of ``adapt --method a,b,c``: one row per method, best
    source validation accuracy first (:data:`ADAPT_RANKING`); target accuracy reported beside it."""
    from transferkit.report.compare import ranking_note
    from transferkit.report.markdown import relative_link, verdict_lines
    from transferkit.report.html import write_html
    from transferkit.rundir import atomic_write

    board = result["leaderboard"]
    lines = [f"# transferkit adapt: {result['source']} -> {result['target']} ({result['model']})",
             *verdict_lines(result), "",
             f"Seeds: {', '.join(map(str, result['seeds']))}; every method ran on the same source splits and "
             f"target split per seed; target scored on {board[0]['target_eval'] if board else '-'} images.", "",
             "| # | method | source val accuracy % (mean ± std) | target accuracy % (mean ± std) | "
             "Δ source-only target (points) | source test accuracy % | proxy A before → after | train s | size px | "
             "epochs | seeds |", "|---|---|---|---|---|---|---|---|---|---|---|",
             *_adapt_rows(board), "",
             ranking_note(board, "source_val_accuracy", ADAPT_RANKING, "target accuracy"), "",
             "Proxy A-distance: 2 = the domains' features are linearly separable, 0 = not at all."]
    if chart:
        lines += ["", f"![target accuracy and training time per method]({relative_link(chart, path)})"]
    lines += ["", "Each run's own report, weights and logs: `runs/<method>-seed<N>/`.", ""]
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines)))
    write_html(Path(path))
    return Path(path)


def _adapt_rows(board: list[dict]) -> list[str]:
    from transferkit.report.compare import percent

    base = next((r["target_accuracy_mean"] for r in board if r["method"] == "source-only"), None)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = []
    for i, r in enumerate(board, 1):
        acc = r["target_accuracy_mean"]
        delta = "-" if acc is None or base is None else f"{100 * (acc - base):+.1f}"
        name = f"{r['method']} (reads target labels)" if r["uses_target_labels"] else r["method"]
        lines.append(f"| {i} | {name} | {percent(r['source_val_accuracy_mean'], r['source_val_accuracy_std'])} | "
                     f"{percent(acc, r['target_accuracy_std'])} | {delta} | "
                     f"{percent(r['source_accuracy_mean'])} | {fmt(r['proxy_a_distance_before_mean'])} → "
                     f"{fmt(r['proxy_a_distance_after_mean'])} | {r['train_seconds_mean']:.0f} | {r['image_size']} | "
                     f"{r['epochs']} | {r['runs']} |")
    return lines
