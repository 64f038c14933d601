"""Run reports: PNG plots and ``report.md``."""

from transferkit.report.plots import plot_confusion, plot_learning_curve, plot_reliability, plot_wise_curve
from transferkit.report.markdown import write_report

__all__ = ["plot_confusion", "plot_learning_curve", "plot_reliability", "plot_wise_curve", "write_report"]
