"""BatchNorm policy (--bn) and BatchNorm -> GroupNorm conversion (--norm groupnorm)."""

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.layers import GroupNormAct

from transferkit import load_backbone
from transferkit.errors import ConfigError
from transferkit.predict import load_run_model
from transferkit.surgery.freezing import batchnorm_modules, resolve_bn_policy
from transferkit.surgery.norm import batchnorm_to_groupnorm, num_groups

TINY = ["--data", "builtin:digits", "--image-size", "64", "--val-split", "0", "--test-split", "0.02",
        "--strategy", "full", "--no-progress"]


@pytest.mark.parametrize("channels", [3, 16, 24, 32, 40, 96, 112, 320, 1280])
def test_num_groups_divides_channels(channels):
    g = num_groups(channels)
    assert channels % g == 0 and 1 <= g <= 32
    assert channels // g >= 8 or g == 1


def test_bn_policy():
    assert resolve_bn_policy("freeze", 64) and not resolve_bn_policy("train", 2)
    assert resolve_bn_policy("auto", 15) and not resolve_bn_policy("auto", 16)
    with pytest.raises(ConfigError, match="auto"):
        resolve_bn_policy("sync", 8)


def test_groupnorm_keeps_timm_activation_and_affine():
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=3)
    with torch.no_grad():
        model.bn1.weight.uniform_(0.5, 1.5)
    gamma = model.bn1.weight.clone()
    n_params = sum(p.numel() for p in model.parameters())
    batchnorm_to_groupnorm(model)
    assert batchnorm_modules(model) == []
    assert sum(p.numel() for p in model.parameters()) == n_params  # (gamma, beta) -> (gamma, beta)
    gn = model.bn1
    assert isinstance(gn, GroupNormAct) and isinstance(gn.act, torch.nn.ReLU6) and gn.num_groups == 4
    assert torch.equal(gn.weight, gamma)
    x = torch.randn(2, 32, 8, 8) * 3
    assert torch.allclose(gn(x), F.relu6(F.group_norm(x, 4, gn.weight, gn.bias, gn.eps)))
    resnet = batchnorm_to_groupnorm(timm.create_model("resnet18", pretrained=False))
    assert batchnorm_modules(resnet) == [] and type(resnet.bn1) is torch.nn.GroupNorm
    assert resnet(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.slow
def test_bn_freeze_with_batch_of_two_keeps_statistics_bit_identical(run_cli, tmp_path):
    out = tmp_path / "bn"
    code, _, err = run_cli("finetune", *TINY, "--per-class", "3", "--batch-size", "2", "--bn", "freeze",
                           "--epochs", "1", "--out", out)
    assert code == 0, err
    pretrained = load_backbone("efficientnet_lite0", "packaged").state_dict()
    saved = load_file(str(out / "model.safetensors"))
    bn_layers = [k.removesuffix(".running_mean") for k in saved if k.endswith(".running_mean")]
    assert len(bn_layers) == 49
    bn_keys = [f"{m}.{t}" for m in bn_layers for t in ("running_mean", "running_var", "num_batches_tracked",
                                                        "weight", "bias")]
    assert all(torch.equal(saved[k], pretrained[k]) for k in bn_keys)  # statistics and affine
    assert not torch.equal(saved["conv_stem.weight"], pretrained["conv_stem.weight"])  # the convolutions train
    assert json.loads((out / "metrics.json").read_text())["batchnorm"] == "frozen"


@pytest.mark.slow
def test_groupnorm_model_trains_and_predicts(run_cli, tmp_path):
    out = tmp_path / "gn"
    code, _, err = run_cli("finetune", *TINY, "--per-class", "10", "--norm", "groupnorm", "--epochs", "2",
                           "--out", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batchnorm"] == "groupnorm"
    model, meta = load_run_model(out)  # rebuilt with GroupNorm from model.json
    assert meta["norm"] == "groupnorm" and batchnorm_modules(model) == []
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("train_loss")
    losses = [float(r[col]) for r in rows[1:] if r[col]]
    assert len(losses) == 2 and losses[1] < losses[0]
