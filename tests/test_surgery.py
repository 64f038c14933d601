"""surgery/: head replacement, parameter splits, input-size changes."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from transferkit.backbones import load_backbone
from transferkit.surgery import (
    backbone_parameters,
    count_parameters,
    head_parameters,
    replace_head,
    resize_pos_embed,
)


def test_replace_head_keeps_backbone():
    model = load_backbone("efficientnet_lite0", weights="none").eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    replace_head(model, 7)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert {id(p) for p in head_parameters(model)} == {id(model.classifier.weight), id(model.classifier.bias)}
    head, backbone = count_parameters(model.classifier), sum(p.numel() for p in backbone_parameters(model))
    assert head == 1280 * 7 + 7 and head + backbone == count_parameters(model)
    for p in backbone_parameters(model):
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == head
    assert replace_head(model, 0)(torch.randn(2, 3, 64, 64)).shape == (2, model.num_features)


@pytest.mark.parametrize("size", [32, 64, 97])
def test_cnn_accepts_any_resolution(size):
    model = load_backbone("efficientnet_lite0", weights="none", num_classes=5, image_size=size).eval()
    assert model(torch.randn(1, 3, size, size)).shape == (1, 5)
    assert model.pretrained_cfg["input_size"] == (3, size, size)


@pytest.mark.slow
def test_vit_pos_embed_is_resampled(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224")  # 14x14 patches + 1 class token
    save_file(source.state_dict(), tmp_path / "vit.safetensors")
    model = load_backbone("vit_tiny_patch16_224", weights=str(tmp_path / "vit.safetensors"), image_size=112)
    assert model.pos_embed.shape == (1, 1 + 7 * 7, 192)
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=[7, 7], num_prefix_tokens=1)
    assert torch.allclose(model.pos_embed, expected)
    assert torch.equal(model.pos_embed[:, 0], source.pos_embed[:, 0])  # class token's position kept
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.eval()(torch.randn(1, 3, 112, 112)).shape == (1, 1000)


def test_resize_pos_embed_leaves_cnns_alone():
    model = timm.create_model("test_efficientnet")
    sd = model.state_dict()
    assert resize_pos_embed(sd, model).keys() == sd.keys()
