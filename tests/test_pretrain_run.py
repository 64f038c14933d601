"""``transferkit pretrain``: a run directory whose backbone ``finetune --weights RUN_DIR`` takes."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import Interrupted, interrupt_at_epoch_1, write_digit_folder
from transferkit.backbones import load_backbone
from transferkit.config import PretrainConfig
from transferkit.engine.pretrain import pretrain
from transferkit.engine.pretrain_module import PretrainModule
from transferkit.errors import WeightsError

pytestmark = pytest.mark.slow  # each test trains (1-2 epochs of a small CNN)

TINY = dict(model="resnet10t", weights="none", image_size=32, batch_size=16, images=32, monitor_images=30, epochs=1, knn_k=5)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digit_folder(tmp_path_factory.mktemp("pt") / "digits", per_class=20, classes=(0, 1, 2))


@pytest.fixture(scope="module")
def pretrained(digits, one_torch_thread):
    """A finished 1-epoch SimCLR run on 32 real digits."""
    out = digits.parent / "simclr"
    metrics = pretrain(PretrainConfig(data=str(digits), out=str(out), **TINY), progress=False)
    return out, metrics


def test_run_directory_report_and_metrics(pretrained):
    out, m = pretrained
    assert m["method"] == "simclr" and m["train_images"] == 32 and m["views"] == 2 and m["grayscale"] is True
    assert 0 <= m["knn_accuracy_before"] <= 1 and 0 <= m["knn_accuracy"] <= 1 and len(m["knn_curve"]) == 1
    assert m["monitor_bank_images"] == 30 and m["monitor_query_images"] > 0
    assert (out / "pretrain_curves.png").stat().st_size > 1000 and "finetune --weights" in (out / "report.md").read_text()
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "pretrain" and meta["num_classes"] == 0
    assert not any(k.startswith("fc.") for k in load_file(out / "model.safetensors"))  # the backbone alone


def test_finetune_takes_the_run_as_weights(pretrained, tmp_path, run_cli):
    """--weights RUN_DIR loads the pretrained backbone exactly, with a fresh head; predict refuses the run itself."""
    out, _ = pretrained
    saved = load_file(out / "model.safetensors")
    model = load_backbone("resnet10t", str(out), num_classes=3)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items()) and model.num_classes == 3
    code, stdout, err = run_cli("finetune", "--data", out.parent / "digits", "--weights", out, "--model", "resnet10t",
                                "--strategy", "linear-probe", "--image-size", "32", "--out", tmp_path / "ft",
                                "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["weights"] == str(out)
    code, stdout, err = run_cli("rank", "--data", out.parent / "digits", "--models", "resnet10t", "--weights",
                                f"{out},none", "--image-size", "64", "--out", tmp_path / "rank",
                                "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    rows = json.loads((tmp_path / "rank" / "rank.json").read_text())["rows"]
    assert {r["weights"] for r in rows} == {str(out), "none"}
    code, _, err = run_cli("predict", out, out.parent / "digits" / "1")
    assert code == 2 and "pretrain run" in err and "finetune --weights" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("finetune", "--data", out.parent / "digits", "--weights", out, "--model", "resnet10t",
                           "--out", out / "ft", "--overwrite")  # the weights' run is an input: no output inside it
    assert code == 2 and not (out / "ft").exists()
    for refused in (("--strategy", "co-tuning"), ("--strategy", "full", "--reg", "lwf")):  # need the source head
        code, _, err = run_cli("finetune", "--data", out.parent / "digits", "--weights", out, "--model", "resnet10t",
                               *refused, "--out", tmp_path / "refused")
        assert code == 2 and "has none" in err and not (tmp_path / "refused").exists()
    with pytest.raises(WeightsError, match="add --model resnet10t"):
        load_backbone("efficientnet_lite0", str(out), num_classes=3)
    with pytest.raises(WeightsError, match="not a finished transferkit run"):
        load_backbone("resnet10t", str(tmp_path), num_classes=3)


def test_bad_input_is_one_line_and_writes_nothing(digits, tmp_path, run_cli):
    out, config, not_a_run = tmp_path / "run", tmp_path / "config.yaml", tmp_path / "elsewhere" / "folder"
    config.write_text("strategy: full\n")
    not_a_run.mkdir(parents=True)
    for args, words in [(("--method", "mae"), "vision transformer"), (("--method", "swav"), "unknown method"),
                        (("--config", config), "pretrain has no such option"),
                        (("--weights", not_a_run), "not a finished transferkit run")]:
        code, _, err = run_cli("pretrain", "--data", digits, "--model", "resnet10t", "--weights", "none", *args,
                               "--out", out)
        assert code in (2,) and words in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not out.exists()


def test_resume_after_interruption(digits, tmp_path, monkeypatch, one_torch_thread):
    """Stopped when epoch 1 starts; --resume finishes from the checkpoint (BYOL: the momentum target too)."""
    cfg = PretrainConfig(data=str(digits), method="byol", out=str(tmp_path / "run"), **{**TINY, "epochs": 2})
    resume_normally = interrupt_at_epoch_1(monkeypatch, PretrainModule)
    with pytest.raises(Interrupted):
        pretrain(cfg, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("net.target_backbone.") for k in state)
    resume_normally()
    m = pretrain(cfg, resume=True, progress=False)
    assert m["resumed"] is True and m["epochs"] == 2 and len(m["knn_curve"]) == 2


def test_unlabelled_folder_trains_without_a_monitor(tmp_path, one_torch_thread):
    """A folder of images without class folders: every image pretrains, no kNN monitor."""
    import shutil

    digits = write_digit_folder(tmp_path / "digits", per_class=8, classes=(0, 1))
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in digits.rglob("*.png"):
        shutil.copy(f, flat / f"{f.parent.name}-{f.name}")
    m = pretrain(PretrainConfig(data=str(flat), method="dino", out=str(tmp_path / "run"),
                                **{**TINY, "images": None}), progress=False)
    assert m["train_images"] == 16 and m["knn_accuracy"] is None and m["views"] == 8
