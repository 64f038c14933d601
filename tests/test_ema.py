"""``--ema-decay``: the weights' exponential moving average is what validation sees and what is saved,
and a resumed run averages on from the checkpoint's average."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import Interrupted, interrupt_at_epoch_1, write_digit_folder
from transferkit import FinetuneConfig, finetune
from transferkit.engine.module import TransferModule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(tmp_path, out, **kw):
    data = write_digit_folder(tmp_path / "digits", per_class=12)
    return FinetuneConfig(data=str(data), model="test_efficientnet", weights="none", strategy="full", image_size=32,
                          batch_size=8, bn="train", epochs=2, baseline=False, val_split=0.2, test_split=0.2, ema_decay=0.8,
                          out=str(tmp_path / out), **kw)


def _raw_weights_after_each_step(monkeypatch) -> list[dict]:
    seen = []
    original = TransferModule.on_train_batch_end

    def spy(self, outputs, batch, batch_idx):
        seen.append({k: v.detach().clone() for k, v in self.net.state_dict().items() if v.is_floating_point()})
        return original(self, outputs, batch, batch_idx)

    monkeypatch.setattr(TransferModule, "on_train_batch_end", spy, raising=False)
    return seen


def test_the_saved_model_is_the_moving_average_of_the_steps(tmp_path, monkeypatch):
    steps = _raw_weights_after_each_step(monkeypatch)
    metrics = finetune(_cfg(tmp_path, "run"), progress=False)
    assert metrics["ema_decay"] == 0.8 and len(steps) == 6  # 2 epochs x 3 steps (20 training images, batch 8)
    expected = dict(steps[0])
    for w in steps[1:]:  # avg <- d avg + (1 - d) w, the first step copied
        expected = {k: 0.8 * expected[k] + 0.2 * w[k] for k in expected}
    saved = load_file(tmp_path / "run" / "model.safetensors")
    for k in ("classifier.weight", "conv_stem.weight", "bn1.running_mean"):
        assert torch.allclose(saved[k], expected[k], atol=1e-6), k
        assert not torch.allclose(saved[k], steps[-1][k], atol=1e-4), k  # not the last step's weights


def test_a_resumed_run_averages_on_from_the_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "run")
    resume_normally = interrupt_at_epoch_1(monkeypatch)
    with pytest.raises(Interrupted):
        finetune(cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    average, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert not torch.equal(average["net.classifier.weight"], raw["net.classifier.weight"])
    resume_normally()
    steps = _raw_weights_after_each_step(monkeypatch)
    finetune(cfg, resume=True, progress=False)
    expected = {k[len("net."):]: v for k, v in average.items() if k.startswith("net.")}
    for w in steps:  # epoch 1's three steps, averaged into the checkpoint's average
        expected = {k: 0.8 * expected[k] + 0.2 * w[k] if k in w else expected[k] for k in expected}
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert len(steps) == 3 and torch.allclose(saved["classifier.weight"], expected["classifier.weight"], atol=1e-6)
