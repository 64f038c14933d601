import pytest
import timm
import torch

from transferkit.errors import ConfigError
from transferkit.strategies import frozen_subtrees, make_plan, resolve_auto
from transferkit.surgery.freezing import batchnorm_modules, freeze_batchnorm, reapply_frozen


def _model():
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=5)


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_plans_set_trainability():
    m = _model()
    head = sum(p.numel() for p in m.get_classifier().parameters())
    total = sum(p.numel() for p in m.parameters())
    for name in ("linear-probe", "freeze"):
        plan = make_plan(name, m)
        assert _trainable(m) == head
        assert plan.cached_features == (name == "linear-probe")
        assert [g[0] for g in plan.groups] == ["head"]
    plan = make_plan("full", m, backbone_lr_mult=0.1)
    assert _trainable(m) == total
    assert [(g[0], g[2]) for g in plan.groups] == [("backbone", 0.1), ("head", 1.0)]
    assert plan.frozen_modules == []


def test_frozen_subtrees_keep_head_dropout_training():
    m = _model()
    plan = make_plan("freeze", m)
    m.train()
    reapply_frozen(plan.frozen_modules)
    assert m.training  # root flag drives the head's dropout
    assert all(not bn.training for bn in batchnorm_modules(m))
    assert m.get_classifier() not in frozen_subtrees(m)


def test_freeze_batchnorm_survives_train_and_keeps_statistics():
    m = _model()
    layers = freeze_batchnorm(m)
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    m.train()
    reapply_frozen(layers)
    with torch.no_grad():
        m(torch.randn(2, 3, 32, 32))
    after = {k: v for k, v in m.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for bn in layers for p in bn.parameters())


def test_auto_rule_and_unknown_strategy():
    assert resolve_auto(10) == "linear-probe"
    assert resolve_auto(115) == "full"
    with pytest.raises(ConfigError, match="linear-probe"):
        make_plan("lora-xl", _model())
