"""Run reports: every plot is a real PNG, plotting leaves matplotlib's global state alone, links are relative."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from transferkit.report import plot_confusion, plot_learning_curve, plot_wise_curve, write_report
from transferkit.report.compare import plot_compare, write_leaderboard

SRC = str(Path(__file__).resolve().parents[1] / "src")

ROWS = [{"epoch": "0", "train_loss": "1.2", "train_acc": "0.5", "val_loss": "", "val_acc": ""},
        {"epoch": "0", "train_loss": "", "train_acc": "", "val_loss": "1.0", "val_acc": "0.6"},
        {"epoch": "1", "train_loss": "0.7", "train_acc": "0.8", "val_loss": "0.8", "val_acc": "0.75"}]
CONFUSION = [[5, 1, 0], [0, 6, 0], [2, 0, 4]]
CLASSES = ["cat", "dog", "bird"]
CURVE = [{"alpha": a, "test_accuracy": 0.6 + 0.3 * a, "source_agreement": 0.9 - 0.4 * a} for a in (0, 0.5, 1)]
BOARD = [{"strategy": s, "runs": 2, "val_accuracy_mean": acc, "val_accuracy_std": 0.01,
          "test_accuracy_mean": acc, "test_accuracy_std": 0.01,
          "train_seconds_mean": t, "trainable_params": p, "total_params": 3_400_000, "image_size": 64,
          "epochs": 6, "forgetting": None, "pixel_baseline_accuracy": 0.5}
         for s, acc, t, p in (("full", 0.95, 120.0, 3_400_000), ("linear-probe", 0.9, 10.0, 12_810))]
RESULT = {"data": "builtin:digits", "model": "efficientnet_lite0", "per_class": 10, "seeds": [0, 1],
          "leaderboard": BOARD, "recommendation": "full: best by 5 points."}


def plot_all(out: Path) -> dict[str, Path]:
    return {"learning": plot_learning_curve(ROWS, out / "learning_curve.png"),
            "confusion": plot_confusion(CONFUSION, CLASSES, out / "confusion_matrix.png"),
            "wise": plot_wise_curve(CURVE, out / "wise_curve.png"),
            "compare": plot_compare(BOARD, out / "compare.png")}


@pytest.mark.slow
def test_each_plot_is_a_png_of_the_figure_size(tmp_path):
    paths = plot_all(tmp_path)
    # figsize (inches) x 100 dpi; the confusion matrix is at least 4 inches square
    sizes = {"learning": (1000, 400), "confusion": (400, 400), "wise": (550, 400), "compare": (1100, 270)}
    for name, path in paths.items():
        with Image.open(path) as img:
            assert img.format == "PNG", name
            assert img.size == sizes[name], name
            colors = img.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colors is None or len(colors) > 10, f"{name} is blank"
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_plotting_over_an_existing_file_replaces_it(tmp_path):
    path = tmp_path / "wise_curve.png"
    path.write_text("old")
    plot_wise_curve(CURVE, path)
    with Image.open(path) as img:
        assert img.format == "PNG"


def run_fresh(code: str, env_backend: str | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (src first on the path, this folder in ``sys.argv[1]``);
    it prints one JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if env_backend:
        env["MPLBACKEND"] = env_backend
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


PLOT_EVERYTHING = """
    import json, sys, tempfile
    from pathlib import Path
    import matplotlib

    def backend():
        # the stored value: matplotlib.get_backend() would itself resolve (and import pyplot) while unset
        value = dict.__getitem__(matplotlib.rcParams, "backend")
        return value if isinstance(value, str) else "<auto, not yet resolved>"

    def state():
        return {"backend": backend(), "pyplot": "matplotlib.pyplot" in sys.modules}

    before = state()
    import transferkit.report
    import transferkit.report.compare
    after_import = state()
    sys.path.insert(0, sys.argv[1])
    from test_report import plot_all
    with tempfile.TemporaryDirectory() as d:
        plot_all(Path(d))
    print(json.dumps({"before": before, "after_import": after_import, "after_plot": state(),
                      "get_backend": matplotlib.get_backend() if "auto" not in backend() else None}))
"""


@pytest.mark.slow
def test_importing_and_plotting_leave_matplotlib_state_alone():
    r = run_fresh(PLOT_EVERYTHING)
    assert r["before"] == r["after_import"] == r["after_plot"]
    assert r["after_plot"]["pyplot"] is False


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["svg", "pdf"])
def test_a_users_backend_survives_plotting(backend):
    r = run_fresh(PLOT_EVERYTHING, env_backend=backend)
    assert r["before"] == r["after_plot"]
    assert r["get_backend"] == backend
    assert r["after_plot"]["pyplot"] is False


def test_importing_report_imports_nothing_heavy():
    r = run_fresh("""
        import json, sys
        import transferkit.report, transferkit.report.compare
        print(json.dumps(sorted(m for m in ("matplotlib", "numpy", "torch") if m in sys.modules)))
    """)
    assert r == []


def test_report_links_plots_relative_to_itself(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    paths = plot_all(run)
    report = write_report(run / "report.md", {"model": "efficientnet_lite0", "epochs": 1},
                          {"model": "efficientnet_lite0", "strategy": "full", "test_accuracy": 0.9},
                          {"Learning curve": paths["learning"].name,  # the engine passes names
                           "Confusion matrix (test)": paths["confusion"],  # an absolute path is made relative
                           "WiSE-FT alpha curve": Path(paths["wise"].name)})
    text = report.read_text()
    for name in ("learning_curve.png", "confusion_matrix.png", "wise_curve.png"):
        assert f"]({name})" in text
    assert str(tmp_path) not in text
    assert "test_accuracy | 0.9000" in text and "epochs: 1" in text


def test_report_links_plots_in_subfolders_relatively(tmp_path):
    (tmp_path / "plots").mkdir()
    png = plot_wise_curve(CURVE, tmp_path / "plots" / "wise.png")
    text = write_report(tmp_path / "report.md", {}, {}, {"WiSE": png}).read_text()
    assert "](plots/wise.png)" in text and str(tmp_path) not in text


def test_leaderboard_links_its_chart_relatively(tmp_path):
    chart = plot_compare(BOARD, tmp_path / "leaderboard.png")
    text = write_leaderboard(tmp_path / "leaderboard.md", RESULT, chart).read_text()
    assert "](leaderboard.png)" in text and str(tmp_path) not in text
    assert text.index("| 1 | full |") < text.index("| 2 | linear-probe |")
    assert "full: best by 5 points." in text
