"""L2-SP: penalty math, the l2sp strategy's weight decay, and a real short fine-tune."""

import csv

import pytest
import timm
import torch
from safetensors.torch import load_file

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.errors import ConfigError
from transferkit.optim import param_groups
from transferkit.regularizers import L2SP
from transferkit.strategies import make_plan

TINY = dict(data="builtin:digits", per_class=10, image_size=64, batch_size=32, val_split=0.0,
            test_split=0.02, seed=0)


def _model():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=4)


def test_penalty_is_zero_at_init_and_grows_as_weights_move():
    model = _model()
    head_sq = sum((p ** 2).sum() for p in model.get_classifier().parameters())
    reg = L2SP(model, alpha=0.5, beta=0.2)
    assert reg(model).item() == pytest.approx(0.1 * head_sq.item())  # backbone term exactly 0
    assert L2SP(model, alpha=0.5, beta=0.0)(model).item() == 0.0
    assert list(reg.state_dict()) == []  # the snapshot is not saved in checkpoints
    delta = torch.randn_like(model.conv1.weight)
    values = []
    for t in (1.0, 2.0):
        w = model.conv1.weight
        with torch.no_grad():
            w.copy_(reg.w0_0 + t * delta)
        values.append(reg(model).item() - 0.1 * head_sq.item())
    assert values[0] == pytest.approx(0.25 * (delta ** 2).sum().item(), rel=1e-4)
    assert values[1] == pytest.approx(4 * values[0], rel=1e-4)
    model.zero_grad()
    reg(model).backward()  # d/dw = alpha (w - w0) on the backbone, beta w on the head
    assert torch.allclose(model.conv1.weight.grad, 0.5 * 2 * delta, atol=1e-5)
    assert torch.allclose(model.fc.weight.grad, 0.2 * model.fc.weight)


def test_l2sp_strategy_has_no_weight_decay_on_the_backbone():
    for lr_decay in (None, 0.5):
        plan = make_plan("l2sp", _model(), lr_decay=lr_decay)
        groups = param_groups(plan.groups, 1e-2, 0.05, plan.no_weight_decay)
        decay = {g["name"]: g["weight_decay"] for g in groups}
        assert decay.pop("head") == 0.05 and set(decay.values()) == {0.0}
        assert len(decay) > 1 and all(p.requires_grad for g in groups for p in g["params"])


def test_reg_needs_a_trained_backbone(tmp_path):
    with pytest.raises(ConfigError, match="l2sp"):
        finetune(FinetuneConfig(**TINY, strategy="linear-probe", reg="l2sp", out=str(tmp_path / "x")),
                 progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_strong_l2sp_stays_closer_to_pretrained_than_full(tmp_path):
    pretrained = load_backbone("efficientnet_lite0", "packaged")
    w0 = {n: p.detach() for n, p in pretrained.named_parameters() if not n.startswith("classifier")}

    def distance(name, **kw):
        finetune(FinetuneConfig(**TINY, epochs=2, out=str(tmp_path / name), **kw), progress=False)
        saved = load_file(str(tmp_path / name / "model.safetensors"))
        return sum(((saved[n] - w) ** 2).sum() for n, w in w0.items()).sqrt().item()

    full = distance("full", strategy="full")
    l2sp = distance("l2sp", strategy="l2sp", reg_alpha=100.0)
    assert 0 < l2sp < 0.3 * full  # measured: 0.41 vs 3.74
    with (tmp_path / "l2sp" / "metrics.csv").open() as fh:
        reg = [float(r["reg_loss"]) for r in csv.DictReader(fh) if r.get("reg_loss")]
    assert len(reg) == 2 and 0 < reg[0] < reg[1]
