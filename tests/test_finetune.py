"""End-to-end fine-tuning on real data (scikit-learn digits) with the real packaged backbone."""

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.errors import RunDirError, TrainingError

SMALL = dict(data="builtin:digits", per_class=20, image_size=64, batch_size=32, val_split=0.05, seed=0)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    metrics = finetune(FinetuneConfig(**SMALL, strategy="full", epochs=3, out=str(out)), progress=False)
    return out, metrics


@pytest.mark.slow
def test_full_run_directory_is_complete(full_run):
    out, metrics = full_run
    for name in ("config.yaml", "metrics.json", "metrics.csv", "model.safetensors", "model.json",
                 "report.md", "learning_curve.png", "confusion_matrix.png", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("model", "weights", "strategy", "epochs", "test_accuracy", "val_accuracy", "train_seconds",
                "trainable_params", "total_params", "seed"):
        assert key in saved, key
    assert saved["strategy"] == "full" and saved["epochs"] == 3
    assert saved["trainable_params"] == saved["total_params"]
    assert saved["train_images"] == 200 and saved["test_images"] == 360
    assert saved["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    with (out / "metrics.csv").open() as fh:
        val_epochs = [r["epoch"] for r in csv.DictReader(fh) if r.get("val_acc")]
    assert val_epochs == ["0", "1", "2"]
    report = (out / "report.md").read_text()
    assert "learning_curve.png" in report and "confusion_matrix.png" in report and "test_accuracy" in report
    page = (out / "report.html").read_text()  # the same report, self-contained: each plot embedded
    for name in ("learning_curve.png", "confusion_matrix.png"):
        assert f'src="data:image/png;base64,{base64.b64encode((out / name).read_bytes()).decode()}"' in page
    assert "://" not in page and "<script" not in page and "<h2>Per class (test)</h2>" in page
    per_class = saved["test_per_class"]  # the per-class table: each row's recall is its confusion row's diagonal share
    assert [r["class"] for r in per_class] == [str(c) for c in range(10)] and "## Per class (test)" in report
    for r, row in zip(per_class, saved["test_confusion"]):
        assert r["support"] == sum(row) and r["recall"] == pytest.approx(row[int(r["class"])] / sum(row))
    _check_mistakes(out, saved, report, page)


def _check_mistakes(out, saved, report, page):
    """The most confident test mistakes: as many as the confusion matrix's off-diagonal allows (at most 8), surest
    first; each one really is the saved model's wrong answer on that test image, at that probability (T = 1)."""
    from transferkit.engine.stages import load_data
    from transferkit.predict import eval_transform, load_run_model

    mistakes, confusion = saved["test_mistakes"], saved["test_confusion"]
    wrong = sum(map(sum, confusion)) - sum(confusion[c][c] for c in range(10))
    assert len(mistakes) == min(8, wrong) and saved["gradcam_note"] is None
    assert [m["prob"] for m in mistakes] == sorted((m["prob"] for m in mistakes), reverse=True)
    model, meta = load_run_model(out)
    test = load_data(FinetuneConfig(**SMALL)).images("test", eval_transform(meta))
    for m in mistakes[:3]:
        x, y = test[m["index"]]
        p = model(x[None]).softmax(-1)[0]
        assert (str(y), str(int(p.argmax()))) == (m["true"], m["pred"]) and m["true"] != m["pred"]
        assert float(p.max()) == pytest.approx(m["prob"], abs=1e-4)
    assert "## Most confident mistakes (Grad-CAM)" in report and "<h2>Most confident mistakes (Grad-CAM)</h2>" in page
    assert f'src="data:image/png;base64,{base64.b64encode((out / "mistakes.png").read_bytes()).decode()}"' in page


@pytest.mark.slow
def test_same_seed_same_metrics(full_run, tmp_path):
    out, metrics = full_run
    again = finetune(FinetuneConfig(**SMALL, strategy="full", epochs=3, out=str(tmp_path / "again")), progress=False)
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["val_accuracy"] == metrics["val_accuracy"]


@pytest.mark.slow
def test_linear_probe_trains_only_the_head_on_cached_features(tmp_path):
    m = finetune(FinetuneConfig(**{**SMALL, }, strategy="linear-probe", epochs=20,
                                out=str(tmp_path / "lp")), progress=False)
    assert m["strategy"] == "linear-probe"
    assert m["trainable_params"] == 1280 * 10 + 10
    pretrained = load_backbone("efficientnet_lite0", "packaged").state_dict()
    saved = load_file(str(tmp_path / "lp" / "model.safetensors"))
    for k, v in saved.items():
        if not k.startswith("classifier"):
            assert torch.equal(v, pretrained[k]), k
    assert m["test_accuracy"] > 0.6


@pytest.mark.slow
def test_freeze_keeps_backbone_and_batchnorm_statistics_bit_identical(tmp_path):
    m = finetune(FinetuneConfig(**SMALL, strategy="freeze", epochs=1, out=str(tmp_path / "fz")), progress=False)
    pretrained = load_backbone("efficientnet_lite0", "packaged").state_dict()
    saved = load_file(str(tmp_path / "fz" / "model.safetensors"))
    changed = [k for k, v in saved.items() if not k.startswith("classifier") and not torch.equal(v, pretrained[k])]
    assert changed == []
    assert not torch.equal(saved["classifier.weight"], torch.zeros_like(saved["classifier.weight"]))
    assert m["trainable_params"] == 1280 * 10 + 10


@pytest.mark.slow
def test_auto_picks_probe_for_few_labels(tmp_path):
    m = finetune(FinetuneConfig(**{**SMALL, "per_class": 5}, epochs=2,
                                out=str(tmp_path / "auto")), progress=False)
    assert m["strategy"] == "linear-probe" and "auto" in m["strategy_reason"]


@pytest.mark.slow
def test_auto_fine_tunes_above_its_frozen_bottom_groups(tmp_path):
    """From 100 images per class ``auto`` fine-tunes ``full`` with the stem to blocks.1 kept
    pretrained (auto.FINETUNE_FREEZE_GROUPS); the layers above them do train."""
    from transferkit.backbones.groups import layer_groups

    m = finetune(FinetuneConfig(data="builtin:digits", image_size=32, epochs=1, batch_size=64, seed=0,
                                baseline=False, out=str(tmp_path / "auto")), progress=False)
    assert m["freeze_groups"] == 3 and "full (bottom 3 layer groups kept pretrained)" in m["strategy_reason"]
    assert f"{m['val_accuracy']:.4f}" in m["strategy_reason"]         # the kept model's validation score
    # the fine-tuned weights (whichever model auto then kept on validation)
    tuned = torch.load(tmp_path / "auto" / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]
    pretrained = load_backbone("efficientnet_lite0", "packaged", num_classes=10).state_dict()
    groups = layer_groups(load_backbone("efficientnet_lite0", "packaged", num_classes=10))
    names = lambda i: [n for n, p in groups[i][1] if p.ndim > 1]  # noqa: E731  (conv weights)
    assert all(torch.equal(tuned["net." + n], pretrained[n]) for i in range(3) for n in names(i))
    assert not torch.equal(tuned["net." + names(3)[0]], pretrained[names(3)[0]])


@pytest.mark.slow
def test_existing_run_directory_is_not_overwritten(full_run):
    out, _ = full_run
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="--overwrite"):
        finetune(FinetuneConfig(**SMALL, strategy="full", epochs=1, out=str(out)), progress=False)
    assert (out / "model.safetensors").read_bytes() == before


def _fit_linear(tmp_path, x, y, lr, epochs):
    """The engine's module and checkpoint callback on a linear head over given features."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from transferkit.engine.callbacks import AtomicCheckpoint
    from transferkit.engine.module import OptimSettings, TransferModule
    from transferkit.strategies import Plan

    head = torch.nn.Linear(x.shape[1], 3)
    plan = Plan("head", [("head", list(head.named_parameters()), 1.0)])
    module = TransferModule(head, 3, plan, OptimSettings(lr=lr, optimizer="sgd", momentum=0.5, weight_decay=0,
                                                         warmup_epochs=0, label_smoothing=0))
    trainer = L.Trainer(max_epochs=epochs, callbacks=[AtomicCheckpoint(tmp_path)], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4))


def test_nan_loss_stops_with_clear_error(tmp_path):
    x, y = torch.randn(8, 5), torch.arange(8) % 3
    x[5, 2] = float("nan")  # one bad value in the second batch
    with pytest.raises(TrainingError, match="loss became nan at epoch 0, step 1"):
        _fit_linear(tmp_path, x, y, lr=0.1, epochs=2)
    assert not (tmp_path / "last.ckpt").exists()  # no epoch finished: nothing saved from a broken state


def test_non_finite_weights_never_checkpointed(tmp_path):
    """A finite loss can still push the weights to inf (one step at a huge LR): the epoch's
    checkpoint is refused and the error says so."""
    x, y = 1e10 * torch.randn(4, 5), torch.arange(4) % 3
    with pytest.raises(TrainingError, match="non-finite"):
        _fit_linear(tmp_path, x, y, lr=1e30, epochs=1)  # the library API takes any LR; the CLI refuses > 10
    assert not (tmp_path / "last.ckpt").exists()


@pytest.mark.slow
def test_resume_after_kill_mid_epoch(tmp_path):
    out = tmp_path / "resumed"
    args = [sys.executable, "-m", "transferkit.cli", "finetune", "--data", "builtin:digits", "--per-class", "20",
            "--image-size", "32", "--batch-size", "32", "--no-baseline", "--strategy", "full", "--epochs", "3",
            "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "first epoch never finished"
    os.kill(proc.pid, signal.SIGKILL)  # epoch 2 is running
    proc.wait()
    assert not (out / "metrics.json").exists()
    epoch_saved = torch.load(ckpt, weights_only=False)["epoch"]
    assert epoch_saved < 2
    # resumed in this process (the command-line resume: test_processes.py's signal test)
    finetune(FinetuneConfig(data="builtin:digits", per_class=20, image_size=32, batch_size=32, baseline=False,
                            strategy="full", epochs=3, out=str(out)), resume=True, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumed"] is True
    with (out / "metrics.csv").open() as fh:
        val_epochs = [r["epoch"] for r in csv.DictReader(fh) if r.get("val_acc")]
    assert val_epochs == ["0", "1", "2"]
