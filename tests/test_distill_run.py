"""``transferkit distill``: real runs on real small data (a linear-probe EfficientNet-Lite0 teacher on
digits, tiny students), the run directory, predict and export on a distilled ViT, the teacher's view
of the student's batch, cached teacher outputs, unlabelled images, bad input, the loss grid."""

import json

import numpy as np
import pytest
import torch

from conftest import Interrupted, interrupt_at_epoch_1, write_digit_folder
from transferkit.config import DistillConfig, FinetuneConfig, parse_model_args
from transferkit.distill import TeacherView
from transferkit.engine.distill import distill, load_teacher, train_set, unlabelled_indices, with_defaults
from transferkit.engine.finetune import finetune
from transferkit.engine.stages import build_model, load_data

#: A ViT with a distillation token, shrunk to 16 px inputs: ~0.1 M parameters.
TINY_VIT = "patch_size=4,embed_dim=32,depth=1,num_heads=2"
TINY = dict(image_size=16, epochs=1, batch_size=16, val_split=0.2)


def _one_line_error(code, err, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished finetune run: linear probe on 3 digit classes x 30 images, 64 px."""
    root = tmp_path_factory.mktemp("distill")
    data = write_digit_folder(root / "digits", per_class=30, classes=(0, 1, 2))
    out = root / "teacher"
    finetune(FinetuneConfig(data=str(data), strategy="linear-probe", image_size=64, val_split=0.2, baseline=False,
                            out=str(out)), progress=False)
    return out


def test_a_student_from_scratch_gets_its_measured_epochs_unless_given(tiny_run):
    """20 epochs (chosen on validation, benchmarks/RESULTS.md) for --student-weights none; a pretrained
    student keeps its recipe's default (full: 6); --epochs always wins."""
    from transferkit.engine.distill import SCRATCH_EPOCHS
    from transferkit.engine.finetune import choose_recipe

    teacher = load_teacher(str(tiny_run))
    build = lambda **kw: with_defaults(DistillConfig(teacher=str(tiny_run), data="builtin:digits", **kw), teacher)  # noqa: E731
    assert build().epochs == SCRATCH_EPOCHS == 20
    pretrained = build(weights="packaged")
    assert pretrained.epochs is None and choose_recipe(pretrained).epochs == 6
    assert build(epochs=3).epochs == 3 and build(weights="packaged", epochs=3).epochs == 3


def test_model_args_are_parsed_as_yaml_values():
    assert parse_model_args("patch_size=4, embed_dim=192,qkv_bias=false,act_layer=gelu,drop_rate=0.1") == {
        "patch_size": 4, "embed_dim": 192, "qkv_bias": False, "act_layer": "gelu", "drop_rate": 0.1}
    with pytest.raises(ValueError, match="name=value"):
        parse_model_args("patch_size4")


def test_teacher_view_renormalises_and_resizes_the_students_batch():
    """The teacher sees the student's pixels at its own size and normalisation, frozen and in eval mode."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(1))
    s_norm, t_norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    view = TeacherView(teacher, s_norm, t_norm, teacher_size=24)
    pixels = torch.rand(2, 3, 12, 12)
    x_student = (pixels - 0.5) / 0.25
    expected = torch.nn.functional.interpolate(pixels, size=(24, 24), mode="bilinear", align_corners=False)
    for c, (m, s) in enumerate(zip(*t_norm)):
        expected[:, c] = (expected[:, c] - m) / s
    assert torch.allclose(view.teacher_input(x_student), expected, atol=1e-5)
    view.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    running = teacher[1].running_mean.clone()
    view(x_student)
    assert torch.equal(teacher[1].running_mean, running)


@pytest.mark.slow
def test_token_run_with_baseline_predict_and_export(teacher, tmp_path, run_cli):
    out = tmp_path / "vit"
    code, stdout, err = run_cli("distill", "--teacher", teacher, "--student", "deit_tiny_distilled_patch16_224",
                                "--student-args", TINY_VIT, "--loss", "token", "--image-size", 16, "--epochs", 1,
                                "--batch-size", 16, "--baseline", "--out", out, "--no-progress")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["loss"] == "token" and m["teacher_model"] == "efficientnet_lite0" and m["teacher_image_size"] == 64
    assert 0 <= m["student_accuracy"] <= 1 and m["teacher_accuracy"] > 0.6  # the probe teacher knows digits
    assert m["student_alone_accuracy"] == json.loads((out / "student-alone" / "metrics.json").read_text())[
        "student_accuracy"]
    assert m["student_params"] < m["teacher_params"] / 10
    assert m["model_args"] == parse_model_args(TINY_VIT)
    for name in ("report.md", "distill.png", "learning_curve.png", "confusion_matrix.png", "model.safetensors"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "Teacher and student" in report
    # the student's error analysis: per class, calibration (its temperature saved), mistakes with Grad-CAM (a ViT)
    assert [r["support"] for r in m["test_per_class"]] == [sum(row) for row in m["test_confusion"]]
    assert m["calibration"]["temperature"] > 0 and (out / "reliability.png").is_file()
    assert json.loads((out / "model.json").read_text())["temperature"] == m["calibration"]["temperature"]
    wrong = m["test_images"] - sum(m["test_confusion"][c][c] for c in range(3))
    assert len(m["test_mistakes"]) == min(8, wrong) and m["gradcam_note"] is None
    assert (out / "mistakes.png").is_file() == bool(wrong) and "## Most confident mistakes (Grad-CAM)" in report
    assert "## Per class (student, test)" in report
    code, stdout, err = run_cli("predict", out, teacher.parent / "digits" / "1", "--format", "json")
    assert code == 0, err
    assert {r["top"][0]["class"] for r in json.loads(stdout)} <= {"0", "1", "2"}
    code, stdout, err = run_cli("export", out)
    assert code == 0, err
    info = json.loads((out / "export.json").read_text())
    assert info["within_tolerance"] and info["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_cached_teacher_outputs_and_unlabelled_images(teacher):
    """Without augmentation the teacher's logits are computed once, on exactly the images trained on;
    unlabelled images come from outside every split and carry label -1."""
    cfg = with_defaults(DistillConfig(teacher=str(teacher), model="resnet10t", loss="soft", augment=False,
                                      unlabelled=5, per_class=10, **TINY), load_teacher(str(teacher)))
    data = load_data(cfg)
    picked = unlabelled_indices(data, 5, seed=0)
    used = np.concatenate([idx for _, idx in data.subsets.values()])
    assert len(picked) == 5 and not set(picked) & set(used.tolist())
    assert np.array_equal(picked, unlabelled_indices(data, 5, seed=0))
    built = build_model(cfg, len(data.classes), 16)
    from transferkit.engine.distill import teacher_view

    view = teacher_view(load_teacher(str(teacher)), built)
    ds = train_set(cfg, data, built, view)
    assert len(ds) == data.size("train") + 5
    labels = [ds[i][1] for i in range(len(ds))]
    assert labels[-5:] == [-1] * 5 and min(labels[:-5]) >= 0
    x, _, cached = ds[len(ds) - 1]
    assert torch.allclose(cached, view(x[None])[0], atol=1e-4)


@pytest.mark.needs_fashion_mnist
@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(teacher, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("distill", "--teacher", teacher, "--student", "resnet10t", "--loss", "token", "--out", out)
    _one_line_error(code, err, "distillation token", "deit_tiny_distilled")
    code, _, err = run_cli("distill", "--teacher", teacher, "--data", "builtin:fashion-mnist", "--out", out)
    _one_line_error(code, err, "teacher", "classes")
    code, _, err = run_cli("distill", "--teacher", tmp_path / "nowhere", "--out", out)
    _one_line_error(code, err, "not found")
    code, _, err = run_cli("distill", "--teacher", teacher, "--student", "vit_tiny_patch16_224", "--student-args",
                           "patch_size=4,depth=banana", "--out", out)
    _one_line_error(code, err, "vit_tiny_patch16_224 cannot be built")
    code, _, err = run_cli("distill", "--teacher", teacher, "--loss", "soft,magic", "--out", out)
    _one_line_error(code, err, "unknown loss 'magic'")
    assert not out.exists()


@pytest.mark.slow
def test_loss_grid_reports_each_loss_against_the_student_alone(teacher, tmp_path, run_cli):
    out = tmp_path / "grid"
    code, stdout, err = run_cli("distill", "--teacher", teacher, "--student", "resnet10t", "--loss", "soft,hard",
                                "--image-size", 16, "--epochs", 1, "--batch-size", 16, "--out", out, "--no-progress")
    assert code == 0, err
    result = json.loads((out / "distill.json").read_text())
    assert result["losses"] == ["none", "soft", "hard"]
    records = {r["loss"]: r for r in result["records"]}
    for row in result["leaderboard"]:
        expected = None if row["loss"] == "none" else records[row["loss"]]["student_accuracy"] - records["none"][
            "student_accuracy"]
        assert row["delta_alone"] == (expected if expected is None else pytest.approx(expected))
    assert (out / "leaderboard.md").is_file() and (out / "distill-compare.png").is_file()
    losers = [x for x in ("soft", "hard") if records[x]["student_accuracy"] <= records["none"]["student_accuracy"]]
    if losers:  # one seed: a loss that does not beat the student alone is named, in the summary and the leaderboard
        assert result["baseline_verdict"].startswith(f"baseline wins: {', '.join(losers)} do")
        assert result["baseline_verdict"] in stdout.splitlines()
        assert f"> **{result['baseline_verdict']}**" in (out / "leaderboard.md").read_text()
    else:
        assert result["baseline_verdict"] is None


@pytest.mark.slow
def test_resume_after_interruption_keeps_the_teacher_out_of_the_checkpoint(teacher, tmp_path, monkeypatch):
    """Stopped when epoch 1 starts, then ``distill(..., resume=True)`` finishes it; the checkpoint holds
    the student (and the hint's projection), never the teacher."""
    cfg = DistillConfig(teacher=str(teacher), model="resnet10t", loss="feature", out=str(tmp_path / "run"),
                        **{**TINY, "epochs": 2})
    resume_normally = interrupt_at_epoch_1(monkeypatch)
    with pytest.raises(Interrupted):
        distill(cfg, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("terms.0.hint.") for k in state) and not any(".teacher." in k for k in state)
    resume_normally()
    metrics = distill(cfg, resume=True, progress=False)
    assert metrics["resumed"] is True and metrics["epochs"] == 2 and metrics["loss"] == "feature"


def test_leaderboard_ranks_by_student_validation(tmp_path):
    """Constructed records where validation and test disagree: the order follows validation, the paired
    gain over the student alone is reported on test."""
    from transferkit.engine.distill_compare import leaderboard
    from transferkit.report.distill import write_distill_leaderboard

    def rec(loss, seed, val, test):
        return {"loss": loss, "seed": seed, "student_val_accuracy": val, "student_accuracy": test,
                "teacher_accuracy": 0.9, "train_seconds": 2.0, "student_images_per_second": 100.0,
                "teacher_images_per_second": 50.0, "image_size": 16, "epochs": 1, "alpha": 0.5, "temperature": 4.0,
                "student_params": 10, "teacher_params": 100, "unlabelled_images": 0}

    records = [rec(x, s, v + s / 100, t + s / 50) for s in (0, 1)
               for x, v, t in (("none", 0.60, 0.80), ("soft", 0.70, 0.50), ("hard", 0.65, 0.90))]
    board = leaderboard(records)
    assert [r["loss"] for r in board] == ["soft", "hard", "none"]
    assert board[0]["delta_alone"] == pytest.approx(-0.30) and board[0]["delta_alone_std"] == pytest.approx(0.0)
    md = write_distill_leaderboard(tmp_path / "leaderboard.md", {
        "teacher_model": "t", "model": "s", "data": "d", "teacher_accuracy": 0.9, "model_args": None,
        "seeds": [0, 1], "leaderboard": board}).read_text()
    assert md.index("| 1 | soft | 70.5 ± 0.7 | 51.0 ± 1.4 | -30.0 ± 0.0 |") < md.index("| 3 | none |")
    assert "Ranked by the student's validation accuracy (mean over seeds); test accuracy (and Δ student alone) " \
           "is reported, never used to choose." in md
    assert "<td>soft</td>" in (tmp_path / "leaderboard.html").read_text()  # the same, as a page
