import math

import pytest
import timm
import torch

from transferkit.errors import ConfigError
from transferkit.optim import build_optimizer, param_groups, warmup_cosine, warmup_cosine_scheduler
from transferkit.surgery.heads import split_head


def test_param_groups_scale_lr_and_skip_decay_on_norms_and_biases():
    model = timm.create_model("resnet18", pretrained=False, num_classes=4)
    backbone, head = split_head(model)
    groups = param_groups([("backbone", backbone, 0.1), ("head", head, 1.0)], lr=1e-2, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "backbone.no_decay", "head", "head.no_decay"}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-3)
    assert by_name["head"]["lr"] == pytest.approx(1e-2)
    assert all(p.ndim <= 1 for p in by_name["backbone.no_decay"]["params"])
    assert by_name["backbone.no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in by_name["head"]["params"])
    # every parameter exactly once
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_warmup_then_cosine():
    total, warm = 100, 10
    f = [warmup_cosine(s, total, warm) for s in range(total + 1)]
    assert f[0] == pytest.approx(0.1)
    assert f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[total] == pytest.approx(0.01)
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_scheduler_keeps_each_groups_own_scale():
    w1, w2 = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2, 2))
    opt = build_optimizer(param_groups([("a", [("w1", w1)], 0.1), ("b", [("w2", w2)], 1.0)], 1.0, 0.0), "sgd", 1.0)
    sched = warmup_cosine_scheduler(opt, total_steps=20, warmup_steps=0)
    for _ in range(10):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] == pytest.approx(lrs[1] * 0.1)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="adamw"):
        build_optimizer([{"params": [torch.nn.Parameter(torch.ones(1))]}], "adam")
