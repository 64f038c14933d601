"""``transferkit tta`` output: the error table per corruption x method (Markdown) and its heat map (PNG)."""

from __future__ import annotations

from pathlib import Path

from transferkit.report.compare import percent
from transferkit.report.html import write_html
from transferkit.report.markdown import verdict_lines
from transferkit.report.plots import new_figure, save_png
from transferkit.rundir import atomic_write


def error_grid(metrics: dict) -> tuple[list[str], list[str], list[list[float | None]]]:
    """``(methods, corruptions, error[method][corruption])`` from ``metrics.json``'s cells."""
    cells = metrics["cells"]
    methods = list(dict.fromkeys(c["method"] for c in cells))
    corruptions = list(dict.fromkeys(c["corruption"] for c in cells))
    acc = {(c["method"], c["corruption"]): c["accuracy"] for c in cells}
    grid = [[None if acc[m, k] is None else 1 - acc[m, k] for k in corruptions] for m in methods]
    return methods, corruptions, grid


def plot_error_heatmap(metrics: dict, path: Path) -> Path:
    """Error % per corruption (columns) x method (rows), annotated, with each row's mean."""
    import numpy as np

    methods, corruptions, grid = error_grid(metrics)
    values = np.array([[np.nan if v is None else 100 * v for v in row] for row in grid])
    values = np.column_stack([values, values.mean(axis=1)])
    fig = new_figure(figsize=(1.2 + 0.62 * values.shape[1], 1.4 + 0.45 * len(methods)))
    ax = fig.subplots()
    im = ax.imshow(values, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [k.replace("_", " ") for k in corruptions] + ["mean"],
                  rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods)
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if v > np.nanmean(values) else "black")
    fig.colorbar(im, ax=ax, label="error %")
    ax.set_title(f"error % (batch {metrics['batch_size']}, {metrics['stream']})", fontsize=9)
    return save_png(fig, path)


def error_table(metrics: dict) -> list[str]:
    """Markdown: one row per method, error % per corruption, the mean and the change against none."""
    methods, corruptions, grid = error_grid(metrics)
    head = ["method", *corruptions, "mean error %", "Δ none (points)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {m: None if None in row else sum(row) / len(row) for m, row in zip(methods, grid)}
    for m, row in zip(methods, grid):
        delta = "-" if means[m] is None or means["none"] is None else f"{100 * (means[m] - means['none']):+.1f}"
        lines.append("| " + " | ".join([m, *(percent(v) for v in row), percent(means[m]), delta]) + " |")
    return lines


def write_tta_report(folder: Path, config: dict, metrics: dict) -> Path:
    """``report.md`` (and ``tta.png`` when the stream is labelled) in ``folder``; ``report.html`` beside it."""
    folder = Path(folder)
    sev = f", severity {metrics['severity']}" if metrics["severity"] else ""
    lines = [f"# transferkit tta: {config['data']}{sev}", *verdict_lines(metrics), "",
             f"Run: `{Path(config['run']).name}`; batch size {metrics['batch_size']}, seed {metrics['seed']}, "
             f"{metrics['images_per_corruption']} images per corruption, stream: {metrics['stream']}"
             f"{', episodic' if metrics['episodic'] else ''}. Online accuracy: {metrics['online']}.", ""]
    if metrics["labelled"]:
        lines += error_table(metrics)
        chart = plot_error_heatmap(metrics, folder / "tta.png")
        lines += ["", f"![error per corruption and method]({chart.name})"]
    else:
        lines += ["The stream has no labels: no accuracy to report."]
    kept = [c for c in metrics["cells"] if "kept_fraction" in c]
    if kept:
        lines += ["", "EATA kept (reliable and non-redundant) fraction of the samples: "
                  + ", ".join(f"{c['corruption']} {100 * c['kept_fraction']:.0f}%" for c in kept) + "."]
    lines.append("")
    atomic_write(folder / "report.md", lambda p: p.write_text("\n".join(lines)))
    write_html(folder / "report.md")
    return folder / "report.md"
