"""``report.md`` (and ``report.html``): what was run, what it scored, and the plots."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import yaml

from transferkit.report.html import write_html
from transferkit.rundir import atomic_write

SHOWN = ("model", "weights", "strategy", "image_size", "epochs", "test_accuracy", "pixel_baseline_accuracy",
         "test_macro_f1",
         "val_accuracy", "train_seconds", "trainable_params", "total_params", "train_images",
         "val_images", "test_images", "seed", "source_agreement", "source_kl", "source_accuracy",
         "source_accuracy_pretrained", "wise_alpha", "test_accuracy_before_wise")


def relative_link(file: str | Path, report: Path) -> str:
    """``file`` as a POSIX path relative to the report's folder, so the run directory can be moved;
    percent-encoded (``my plot.png`` -> ``my%20plot.png``), so a name with spaces or brackets stays a link."""
    file = Path(file)
    if file.is_absolute():
        file = Path(os.path.relpath(file, Path(report).absolute().parent))
    return quote(file.as_posix())


def verdict_lines(metrics: dict) -> list[str]:
    """The baseline verdict (``baseline_verdict``: the method lost to its baseline) and the note saying
    why none could be given (``baseline_note``), as quoted Markdown lines for the top of a report."""
    return [line for key in ("baseline_verdict", "baseline_note") if metrics.get(key)
            for line in ("", f"> **{metrics[key]}**" if key == "baseline_verdict" else f"> {metrics[key]}")]


def calibration_lines(calibration: dict | None) -> list[str]:
    """Markdown: the fitted temperature and the ECE before/after it (``evaluation.calibration.calibrate``'s
    figures); nothing when the run fitted none."""
    if not calibration or calibration.get("temperature") is None:
        return []
    ece = lambda split: ("" if calibration.get(f"{split}_ece_before") is None else  # noqa: E731
                         f"{split} {calibration[f'{split}_ece_before']:.3f} -> {calibration[f'{split}_ece_after']:.3f}")
    shown = ", ".join(s for s in (ece("test"), ece("val")) if s)
    return ["", "## Calibration", "",
            f"Temperature T = {calibration['temperature']:.3f}, fitted on the validation split (minimum NLL); "
            "`predict`, `tk.load` and the ONNX export's `probabilities` output use softmax(logits / T). "
            f"Expected calibration error (15 bins), before -> after: {shown}."]


def write_report(path: Path, config: dict, metrics: dict, plots: dict[str, str | Path], *,
                 shown: tuple[str, ...] = SHOWN, title: str | None = None, sections: list[str] = ()) -> Path:
    """Markdown report with the metrics table (``shown`` keys), ``sections`` (Markdown lines), plots
    (linked relative to the report) and config; and the same as one self-contained page beside it
    (``report.html``, :func:`~transferkit.report.html.write_html`)."""
    title = title or f"transferkit run: {metrics.get('model')} / {metrics.get('strategy')}"
    lines = [f"# {title}", *verdict_lines(metrics), "", "## Metrics", "", "| metric | value |", "|---|---|"]
    for key in shown:
        if key in metrics:
            v = metrics[key]
            lines.append(f"| {key} | {v:.4f} |" if isinstance(v, float) else f"| {key} | {v} |")
    if metrics.get("pixel_baseline_accuracy") is not None and metrics.get("test_accuracy") is not None:
        gain = 100 * (metrics["test_accuracy"] - metrics["pixel_baseline_accuracy"])
        lines += ["", f"Transfer vs raw pixels: {gain:+.1f} points over logistic regression on pixels (both on "
                      "the test images; the pixel baseline is not scored on validation)."]
    if metrics.get("strategy_reason"):
        lines += ["", f"Strategy: {metrics['strategy_reason']}"]
    lines += list(sections)
    for heading, file in plots.items():
        lines += ["", f"## {heading}", "", f"![{heading}]({relative_link(file, path)})"]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines)))
    write_html(Path(path))
    return Path(path)
