"""LoRA through PEFT (Q5): targets, trainable fraction, exact merge, and the end-to-end run."""

import json

import numpy as np
import peft
import pytest
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source
from transferkit.errors import ConfigError
from transferkit.predict import load_run_model, predict
from transferkit.strategies import make_plan
from transferkit.surgery.heads import count_parameters
from transferkit.surgery.lora import apply_lora, classifier_name, lora_targets, merge_lora

SMALL = dict(data="builtin:digits", per_class=20, image_size=64, batch_size=32, val_split=0.05, seed=0)


def _trainable(net):
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _digits_batch(model, n=32):
    source = load_source("builtin:digits")
    tf = build_transform(data_config_for(model, 64), 64, train=False)
    x, y = next(iter(DataLoader(TransformedSubset(source.train, range(n), tf), batch_size=n)))
    return x, y


def test_cnn_targets_are_the_pointwise_convolutions_outside_the_head():
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=10)
    targets = lora_targets(model)
    modules = dict(model.named_modules())
    assert classifier_name(model) == "classifier" and "classifier" not in targets
    assert "conv_head" in targets and "conv_stem" not in targets
    assert all(isinstance(modules[t], torch.nn.Conv2d) and modules[t].kernel_size == (1, 1)
               and modules[t].groups == 1 for t in targets)
    assert not any(t.endswith("conv_dw") for t in targets)  # depthwise 3x3/5x5 are not targets


def test_lora_trains_a_small_fraction_of_efficientnet_lite0():
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=10)
    full = count_parameters(model)
    net = apply_lora(model, rank=4)
    assert isinstance(net, peft.PeftModel)
    plan = make_plan("lora", net)
    names = {g: [n for n, _ in params] for g, params, _ in plan.groups}
    assert set(names) == {"lora", "head"}
    assert all("lora_" in n for n in names["lora"])
    assert all("modules_to_save" in n for n in names["head"]) and len(names["head"]) == 2
    # the optimizer sees exactly the trainable parameters
    in_plan = {id(p) for _, params, _ in plan.groups for _, p in params}
    assert in_plan == {id(p) for p in net.parameters() if p.requires_grad}
    assert _trainable(net) / full < 0.05
    # rank 8 (the default) adapts every pointwise conv of this compact CNN: a larger share
    assert _trainable(apply_lora(load_backbone("efficientnet_lite0", "packaged", num_classes=10))) / full < 0.06


def test_vit_targets_attention_qkv_and_proj():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    full = count_parameters(model)
    targets = lora_targets(model)
    assert len(targets) == 2 * len(model.blocks)
    assert {t.rsplit(".", 1)[-1] for t in targets} == {"qkv", "proj"}
    assert "patch_embed.proj" not in targets and "head" not in targets
    net = apply_lora(model, rank=8)
    assert _trainable(net) / full < 0.05
    assert net(torch.randn(1, 3, 224, 224)).shape == (1, 10)


@pytest.mark.slow
def test_merged_model_matches_the_adapter_after_training():
    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=10, image_size=64)
    net = apply_lora(model, rank=4)
    plan = make_plan("lora", net)
    x, y = _digits_batch(model)
    params = [p for _, ps, _ in plan.groups for _, p in ps]
    opt = torch.optim.AdamW(params, lr=1e-2)
    net.train()
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if "lora_B" in n)  # LoRA is active
    net.eval()
    with torch.no_grad():
        before = net(x)
        merged = merge_lora(net)
        assert type(merged).__module__.startswith("timm")
        assert not any("lora" in k or "modules_to_save" in k for k in merged.state_dict())
        after = merged.eval()(x)
    assert (before - after).abs().max() < 1e-4
    # the merged weights load into a plain timm model
    plain = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=10)
    plain.load_state_dict(merged.state_dict())
    with torch.no_grad():
        assert (plain.eval()(x) - before).abs().max() < 1e-4


@pytest.mark.slow
def test_lora_run_saves_plain_weights_and_the_adapter(tmp_path):
    out = tmp_path / "lora"
    m = finetune(FinetuneConfig(**SMALL, strategy="lora", lora_rank=4, epochs=1, baseline=False, out=str(out)),
                 progress=False)
    assert m["strategy"] == "lora"
    assert 0 < m["trainable_fraction"] < 0.05 and m["adapter_bytes"] > 0
    assert m["trainable_params"] < m["total_params"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["adapter_bytes"] == m["adapter_bytes"]
    model, meta = load_run_model(out)  # strict load into a plain timm model: no PEFT keys
    assert not isinstance(model, peft.PeftModel) and meta["strategy"] == "lora"
    source = load_source("builtin:digits")
    for i in range(3):
        img = source.train[i][0]
        img = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img).astype("uint8"))
        img.save(tmp_path / f"{i}.png")
    results = predict(out, [tmp_path / f"{i}.png" for i in range(3)], topk=2)
    assert len(results) == 3 and len(results[0]["top"]) == 2


def test_lora_rejects_l2sp_and_unwrapped_models(tmp_path):
    with pytest.raises(ConfigError):
        finetune(FinetuneConfig(**SMALL, strategy="lora", reg="l2sp", epochs=1, out=str(tmp_path / "x")),
                 progress=False)
    with pytest.raises(ConfigError):
        make_plan("lora", load_backbone("efficientnet_lite0", "packaged", num_classes=10))
