"""Every strategy with a training loop resumes after an interruption: the run is stopped when epoch 1 starts (epoch 0's
checkpoint is on disk, no results yet) and ``finetune(..., resume=True)`` finishes it.
(``full`` is also killed with SIGKILL in test_finetune.py; ``gradual`` mid-schedule in test_gradual.py.)"""

import csv

import pytest
import torch
from safetensors.torch import load_file

from transferkit import FinetuneConfig, finetune, load_backbone
from conftest import Interrupted, interrupt_at_epoch_1

TINY = dict(data="builtin:digits", per_class=10, image_size=64, batch_size=32, val_split=0.0,
            test_split=0.02, seed=0, epochs=2, baseline=False)
CASES = {"freeze": {}, "lp-ft": {}, "l2sp": {}, "lora": {},
         "full+lwf": {"strategy": "full", "reg": "lwf"}}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_strategy_resumes_after_interruption(name, tmp_path, monkeypatch):
    out = tmp_path / name
    cfg = FinetuneConfig(**{**TINY, "strategy": name, **CASES[name]}, out=str(out))
    resume_normally = interrupt_at_epoch_1(monkeypatch)
    with pytest.raises(Interrupted):
        finetune(cfg, progress=False)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0 and not (out / "metrics.json").exists()
    assert not any(k.startswith("regularizer.") for k in ckpt["state_dict"])  # no LwF teacher copy
    at_epoch_0 = {k: v.clone() for k, v in ckpt["state_dict"].items()}

    resume_normally()
    metrics = finetune(cfg, resume=True, progress=False)
    assert metrics["resumed"] is True and metrics["epochs"] == 2 and metrics["test_accuracy"] is not None
    with (out / "metrics.csv").open() as fh:
        epochs = [r["epoch"] for r in csv.DictReader(fh) if r.get("train_loss")]
    assert epochs == ["0", "1"]  # epoch 0 from the first attempt, epoch 1 from the resumed one

    final = load_file(str(out / "model.safetensors"))
    head = "classifier.weight"
    head_keys = ("net.classifier.weight",
                 "net.base_model.model.classifier.modules_to_save.default.weight")  # lora: PEFT's trained copy
    moved = next(at_epoch_0[k] for k in head_keys if k in at_epoch_0)
    assert not torch.equal(final[head], moved)  # epoch 1 trained on from the checkpoint
    pretrained = load_backbone("efficientnet_lite0", "packaged").state_dict()
    backbone_changed = [k for k, v in final.items() if not k.startswith("classifier") and not torch.equal(v, pretrained[k])]
    if name == "freeze":
        assert backbone_changed == []  # frozen through the interruption, BatchNorm statistics included
    else:
        assert backbone_changed
    if name == "lora":
        assert (out / "adapter" / "adapter_config.json").is_file() and metrics["trainable_fraction"] < 0.05
    if name in ("l2sp", "full+lwf"):  # the regulariser was rebuilt and kept acting after the resume
        with (out / "metrics.csv").open() as fh:
            reg = [r.get("reg_loss") for r in csv.DictReader(fh) if r.get("train_loss")]
        assert all(v not in (None, "") for v in reg)
