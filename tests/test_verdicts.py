"""Baselines that speak: the verdict rule on hand-written numbers; each command's verdict on a real run
where the method loses to its baseline (metrics.json, the top of the report, the summary); every
summary line naming the run directory relative to the working directory (absolute outside it)."""

import json
import os
import shutil

import pytest

from conftest import write_digit_folder
from transferkit.evaluation.baselines import grid_verdict, verdict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in ``tmp_path`` with a fresh choice of the default run directory: ``run_path`` decides
    ``runs/<...>`` once per process (TRANSFERKIT_RUN_DIR); set-then-delete so the teardown removes
    what the command sets."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRANSFERKIT_RUN_DIR", "unset")
    monkeypatch.delenv("TRANSFERKIT_RUN_DIR")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _the_run(cwd, prefix):
    (run,) = [p for p in (cwd / "runs").iterdir() if p.name.startswith(prefix)]
    return run


def _says(out, metrics, run):
    """The verdict is one line of the summary, and the first thing the report says after its title."""
    assert metrics["baseline_verdict"].startswith("baseline wins: ")
    assert metrics["baseline_verdict"] in out.splitlines(), out
    head = (run / "report.md").read_text().splitlines()[:4]
    assert f"> **{metrics['baseline_verdict']}**" in head, head


# ----------------------------------------------------------------------------- the rule
def test_verdict_rule_on_hand_written_numbers():
    assert verdict("soft distillation", 0.811, "the student alone", 0.861) == (
        "baseline wins: soft distillation does not beat the student alone on test accuracy "
        "(81.1% vs 86.1%, -5.0 points, one run)")
    assert verdict("m", 0.86, "b", 0.85) is None                       # one run: any gain is a win
    assert verdict("m", 0.85, "b", 0.85).endswith("(85.0% vs 85.0%, +0.0 points, one run)")  # a tie is not
    assert verdict("m", 0.86, "b", 0.85, spread=0.02, seeds=3) == (
        "baseline wins: m does not beat b on test accuracy (86.0% vs 85.0%, +1.0 ± 2.0 points, paired over 3 seeds)")
    assert verdict("m", 0.88, "b", 0.85, spread=0.02, seeds=3) is None  # +3 > 2: beyond the spread
    assert verdict("m", None, "b", 0.85) is None and verdict("m", 0.8, "b", None) is None  # nothing to judge
    assert verdict("m", 0.7, "b", 0.8, measure="kNN validation accuracy", detail="validation 1% vs 2%").endswith(
        "on kNN validation accuracy (70.0% vs 80.0%, -10.0 points, one run); validation 1% vs 2%")


def test_grid_verdict_pairs_by_seed_and_uses_the_seed_spread():
    acc = {"base": (0.50, 0.60, 0.70), "a": (0.55, 0.65, 0.75), "b": (0.60, 0.55, 0.75)}
    records = [{"m": m, "seed": s, "acc": v[s], "val": v[s] - 0.1 * (m == "b")} for m, v in acc.items()
               for s in range(3)]
    # a: +5 on every seed (spread 0): a win. b: +10, -5, +5 -> mean +3.3, sample std 7.6: inside the spread.
    assert grid_verdict(records, "m", "base", "acc", measure="accuracy", also=("val", "on validation")) == (
        "baseline wins: b does not beat base on accuracy by more than the seed spread "
        "(b +3.3 ± 7.6 points, paired over 3 seeds); on validation: b -6.7 ± 7.6 points")
    assert grid_verdict([r for r in records if r["m"] != "base"], "m", "base", "acc", measure="accuracy") is None
    one_seed = [r for r in records if r["seed"] == 1]
    assert grid_verdict(one_seed, "m", "base", "acc", measure="accuracy", baseline_name="the baseline") == (
        "baseline wins: b does not beat the baseline on accuracy (b -5.0 points, one run)")


def test_summary_paths_are_relative_below_the_working_directory_and_absolute_outside(tmp_path, monkeypatch):
    from transferkit.cli import _shown

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert _shown(tmp_path / "cwd" / "runs" / "r1") == os.path.join("runs", "r1")
    assert _shown("runs/r1") == os.path.join("runs", "r1")
    assert _shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    assert _shown("../elsewhere") == str(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- finetune
@pytest.mark.slow
def test_finetune_that_loses_to_raw_pixels_says_so_and_names_its_run_directory(run_cli, in_tmp_cwd):
    """A random-init model trained one epoch at LR 1e-6 (chance) against logistic regression on the
    pixels of 5 digits per class; no --out: the summary names runs/<...> relative to the cwd."""
    code, out, err = run_cli("finetune", "--data", "builtin:digits", "--model", "test_efficientnet", "--weights",
                             "none", "--strategy", "full", "--epochs", 1, "--lr", 1e-6, "--image-size", 32,
                             "--per-class", 5, "--test-per-class", 10, "--batch-size", 16, "--no-progress")
    assert code == 0, err
    run = _the_run(in_tmp_cwd, "test_efficientnet-full-")
    assert f"-> {os.path.join('runs', run.name)}" in out and "-> None" not in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["test_accuracy"] < 0.4 < 0.8 < m["pixel_baseline_accuracy"]  # the construction holds
    assert m["baseline_verdict"].startswith("baseline wins: full (test_efficientnet) does not beat logistic "
                                            "regression on raw pixels on test accuracy")
    assert f"({100 * m['test_accuracy']:.1f}% vs {100 * m['pixel_baseline_accuracy']:.1f}%" in m["baseline_verdict"]
    _says(out, m, run)


# ----------------------------------------------------------------------------- distill, tta: a wrong teacher
@pytest.fixture(scope="module")
def wrong_teacher(tmp_path_factory):
    """Digits 0, 1, 2 (30 each) and a linear probe trained on them with the class folders rotated
    (0's images filed as 1, ...): confidently wrong on the true labels, right on its own (rotated) data."""
    from transferkit.config import FinetuneConfig
    from transferkit.engine.finetune import finetune

    root = tmp_path_factory.mktemp("verdicts")
    digits = write_digit_folder(root / "digits", per_class=30)
    for src, dst in (("0", "1"), ("1", "2"), ("2", "0")):
        shutil.copytree(digits / src, root / "rotated" / dst)
    finetune(FinetuneConfig(data=str(root / "rotated"), strategy="linear-probe", image_size=64, val_split=0.2,
                            baseline=False, out=str(root / "teacher")), progress=False)
    return root


@pytest.mark.slow
def test_distill_from_a_wrong_teacher_loses_to_the_student_alone(run_cli, in_tmp_cwd, wrong_teacher):
    """--alpha 1: the student learns the teacher's rotated labels only; alone, it learns the true ones."""
    code, out, err = run_cli("distill", "--teacher", wrong_teacher / "teacher", "--data", wrong_teacher / "digits",
                             "--student", "resnet10t", "--image-size", 16, "--epochs", 4, "--batch-size", 16,
                             "--val-split", 0.2, "--alpha", 1, "--baseline", "--no-progress")
    assert code == 0, err
    run = _the_run(in_tmp_cwd, "resnet10t-distill-soft-")
    assert f"-> {os.path.join('runs', run.name)}" in out
    m = json.loads((run / "metrics.json").read_text())
    alone = json.loads((run / "student-alone" / "metrics.json").read_text())
    assert m["teacher_accuracy"] < 0.2 and m["student_accuracy"] < alone["student_accuracy"]
    assert (m["student_alone_accuracy"], m["student_alone_val_accuracy"]) == (alone["student_accuracy"],
                                                                              alone["student_val_accuracy"])
    assert m["baseline_verdict"].startswith("baseline wins: soft distillation does not beat the student alone on "
                                            "test accuracy")
    assert (f"; validation {100 * m['student_val_accuracy']:.1f}% vs {100 * alone['student_val_accuracy']:.1f}%"
            in m["baseline_verdict"])
    _says(out, m, run)


@pytest.mark.slow
def test_tta_that_hurts_a_model_on_its_own_clean_data_says_so(run_cli, in_tmp_cwd, wrong_teacher):
    """BatchNorm statistics from batches of 2 test images (--bn-prior 0) on data the model already
    fits: the unadapted model wins."""
    code, out, err = run_cli("tta", wrong_teacher / "teacher", "--data", wrong_teacher / "rotated", "--method", "bn",
                             "--bn-prior", 0, "--batch-size", 2, "--images", 24, "--out", "tta", "--no-progress")
    assert code == 0, err
    m = json.loads((in_tmp_cwd / "tta" / "metrics.json").read_text())
    assert m["accuracy_after"] < m["accuracy_before"]
    loss = 100 * (m["accuracy_after"] - m["accuracy_before"])
    assert m["baseline_verdict"] == ("baseline wins: bn does not beat no adaptation (none) on online accuracy "
                                     f"(mean over the stream) (bn {loss:+.1f} points, one run)")
    _says(out, m, in_tmp_cwd / "tta")
    assert f"-> {os.path.join('tta', 'report.html')}" in out


# ----------------------------------------------------------------------------- pretrain
@pytest.mark.slow
def test_pretrain_that_spoils_its_starting_weights_says_so(run_cli, in_tmp_cwd):
    """One epoch of SimCLR at LR 1.0 from the packaged ImageNet weights: kNN accuracy falls."""
    write_digit_folder(in_tmp_cwd / "digits", per_class=40)
    code, out, err = run_cli("pretrain", "--data", "digits", "--model", "efficientnet_lite0", "--weights", "packaged",
                             "--image-size", 32, "--batch-size", 16, "--images", 32, "--monitor-images", 30,
                             "--epochs", 1, "--knn-k", 5, "--lr", 1.0, "--no-progress")
    assert code == 0, err
    run = _the_run(in_tmp_cwd, "efficientnet_lite0-pretrain-simclr-")
    shown = os.path.join("runs", run.name)
    assert f"-> {shown}" in out and f"next: transferkit finetune --weights {shown} " in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["knn_accuracy"] < m["knn_accuracy_before"]
    assert m["baseline_verdict"] == ("baseline wins: simclr pretraining does not beat its starting weights on kNN "
                                     f"validation accuracy ({100 * m['knn_accuracy']:.1f}% vs "
                                     f"{100 * m['knn_accuracy_before']:.1f}%, "
                                     f"{100 * (m['knn_accuracy'] - m['knn_accuracy_before']):+.1f} points, one run)")
    _says(out, m, run)


# ----------------------------------------------------------------------------- adapt
ADAPT = ("--model", "test_efficientnet", "--weights", "none", "--image-size", 32, "--batch-size", 16,
         "--val-split", 0.2, "--no-progress")


@pytest.mark.slow
def test_one_adapt_run_says_it_has_no_source_only_figure(run_cli, in_tmp_cwd):
    write_digit_folder(in_tmp_cwd / "digits", per_class=10)
    shutil.copytree(in_tmp_cwd / "digits", in_tmp_cwd / "digits-copy")  # the same images, another folder
    code, out, err = run_cli("adapt", "--source", "digits", "--target", "digits-copy", "--method", "coral", "--epochs", 1,
                             *ADAPT)
    assert code == 0, err
    run = _the_run(in_tmp_cwd, "test_efficientnet-coral-")
    assert f"-> {os.path.join('runs', run.name)}" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["baseline_verdict"] is None and "source-only is not in this run" in m["baseline_note"]
    assert m["baseline_note"] in out.splitlines() and f"> {m['baseline_note']}" in (run / "report.md").read_text()


def _colour_folder(root, per_class=20):
    """Three trivially separable classes: red, green and blue 32 px squares with seeded pixel noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, rgb in (("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.asarray(rgb)[None, None] + rng.normal(0, 20, (32, 32, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_adapt_without_a_domain_shift_cannot_beat_source_only(run_cli, in_tmp_cwd):
    """Target = source, three solid colours: nothing to adapt to, and source-only scores every held-out
    target image, so CORAL can at best tie it — and a tie is not a win."""
    _colour_folder(in_tmp_cwd / "colours")
    shutil.copytree(in_tmp_cwd / "colours", in_tmp_cwd / "colours-copy")  # the same images, another folder
    code, out, err = run_cli("adapt", "--source", "colours", "--target", "colours-copy", "--method", "source-only,coral",
                             "--epochs", 20, "--out", "board", *ADAPT)
    assert code == 0, err
    saved = json.loads((in_tmp_cwd / "board" / "adapt.json").read_text())
    acc = {r["method"]: r["target_accuracy"] for r in saved["records"]}
    assert acc["source-only"] == 1.0 and acc["coral"] <= acc["source-only"]  # the construction holds
    assert saved["baseline_verdict"] == ("baseline wins: coral does not beat source-only on target accuracy "
                                         f"(coral {100 * (acc['coral'] - 1):+.1f} points, one run)")
    assert saved["baseline_verdict"] in out.splitlines()
    assert f"> **{saved['baseline_verdict']}**" in (in_tmp_cwd / "board" / "leaderboard.md").read_text()
    assert f"-> {os.path.join('board', 'adapt.json')}, " in out
