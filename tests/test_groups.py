"""Layer groups of timm models and discriminative (layer-wise) learning rates."""

import pytest
import timm
import torch

from transferkit.backbones import describe_groups, layer_groups
from transferkit.errors import ConfigError, ModelError
from transferkit.optim import build_optimizer, layer_lr_decay, param_groups, warmup_cosine_scheduler
from transferkit.strategies import make_plan

EXPECTED = {
    "efficientnet_lite0": ["conv_stem+bn1", *(f"blocks.{i}" for i in range(6)), "blocks.6+conv_head+bn2", "head"],
    "resnet18": ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "head"],
    "vit_tiny_patch16_224": ["cls_token+pos_embed+patch_embed", *(f"blocks.{i}" for i in range(11)),
                             "blocks.11+norm", "head"],
}


def _model(name, num_classes=7):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_groups_stem_to_head_every_parameter_once(name):
    model = _model(name)
    groups = layer_groups(model)
    assert [g for g, _ in groups] == EXPECTED[name]
    flat = [(n, p) for _, params in groups for n, p in params]
    assert [n for n, _ in flat] == [n for n, _ in model.named_parameters()]  # order kept, each once
    assert len({id(p) for _, p in flat}) == len(list(model.parameters()))
    head = [p for _, p in groups[-1][1]]
    assert {id(p) for p in head} == {id(p) for p in model.get_classifier().parameters()}


def test_groups_need_a_timm_model():
    with pytest.raises(ModelError, match="timm"):
        layer_groups(torch.nn.Linear(2, 2))


def test_layer_lr_decay_counts_from_the_head():
    groups = layer_groups(_model("resnet18"))
    scaled = layer_lr_decay(groups, 0.5)
    assert [(g, s) for g, _, s in scaled] == [("conv1+bn1", 0.5 ** 5), ("layer1", 0.5 ** 4), ("layer2", 0.125),
                                              ("layer3", 0.25), ("layer4", 0.5), ("head", 1.0)]
    with pytest.raises(ConfigError, match="decay"):
        layer_lr_decay(groups, 1.5)


def test_full_with_lr_decay_replaces_backbone_mult_and_survives_schedule_and_resume():
    model = _model("efficientnet_lite0")
    plan = make_plan("full", model, backbone_lr_mult=0.3, lr_decay=0.7)
    assert [g for g, _, _ in plan.groups] == EXPECTED["efficientnet_lite0"]
    assert [s for *_, s in plan.groups] == pytest.approx([0.7 ** i for i in range(8, -1, -1)])

    def build():
        opt = build_optimizer(param_groups(plan.groups, 1e-2, 0.05), "adamw", 1e-2)
        return opt, warmup_cosine_scheduler(opt, total_steps=20, warmup_steps=3)

    opt, sched = build()
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for _ in range(7):
        opt.step()
        sched.step()
    ratios = {g["name"]: g["lr"] / sched.get_last_lr()[-1] for g in opt.param_groups}
    assert ratios["conv_stem+bn1"] == pytest.approx(0.7 ** 8) and ratios["blocks.5"] == pytest.approx(0.7 ** 2)
    # resume: a fresh optimizer and scheduler restored from state dicts continue with the same LRs
    state = opt.state_dict(), sched.state_dict()
    opt2, sched2 = build()
    opt2.load_state_dict(state[0])
    sched2.load_state_dict(state[1])
    for s in (sched, sched2):
        s.optimizer.step()
        s.step()
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])


def test_describe_groups_rows_of_resnet18():
    rows = describe_groups("resnet18", lr_decay=0.5)
    assert [r["group"] for r in rows] == EXPECTED["resnet18"]
    assert [r["lr_scale"] for r in rows] == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    # conv1 64x3x7x7 + bn1 weight and bias; layer4 (as the command test); fc 512x1000 + 1000
    assert (rows[0]["tensors"], rows[0]["params"]) == (3, 9408 + 128)
    assert rows[4]["params"] == 8_393_728 and (rows[5]["tensors"], rows[5]["params"]) == (2, 513_000)
    assert sum(r["params"] for r in rows) == 11_689_512  # resnet18, 1000 classes
    assert {r["lr_scale"] for r in describe_groups("resnet18")} == {None}


def test_groups_command(run_cli):
    code, out, err = run_cli("groups", "resnet18", "--lr-decay", "0.5")
    assert code == 0, err
    for text in ("conv1+bn1", "layer4", "head", "8,393,728", "0.031"):
        assert text in out, text
    code, _, err = run_cli("groups", "resnet1")
    assert code == 2 and "resnet18" in err


@pytest.mark.slow
def test_finetune_cli_lr_decay_reaches_the_optimizer(run_cli, tmp_path):
    out = tmp_path / "decay"
    code, _, err = run_cli("finetune", "--data", "builtin:digits", "--per-class", "5", "--image-size", "64",
                           "--val-split", "0", "--test-split", "0.02", "--strategy", "full",
                           "--lr-decay", "0.5", "--epochs", "1", "--no-progress", "--out", out)
    assert code == 0, err
    groups = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["optimizer_states"][0]["param_groups"]
    scales = {g["name"]: g["lr_scale"] for g in groups}
    assert scales["head"] == 1.0 and scales["blocks.6+conv_head+bn2"] == 0.5 and scales["conv_stem+bn1"] == 0.5 ** 8
