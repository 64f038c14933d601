"""The one feature extractor and the on-disk feature cache: real EfficientNet-Lite0, real digits."""

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

import transferkit.evaluation.features as features_module
from transferkit.backbones import load_backbone
from transferkit.evaluation import extract_features, predict_logits
from transferkit.evaluation.features import FeatureCache, default_cache_dir, feature_key, pre_logits


@pytest.fixture(scope="module")
def model():
    return load_backbone("efficientnet_lite0", weights="packaged", num_classes=10, image_size=64)


@pytest.fixture(scope="module")
def batches():
    """Two batches of real digits, upscaled to 64 px, 3 channels, roughly normalised."""
    d = load_digits()
    x = torch.tensor(d.images[:12] / 16.0, dtype=torch.float32)[:, None]
    x = torch.nn.functional.interpolate(x, size=64, mode="bilinear").repeat(1, 3, 1, 1)
    x = (x - 0.45) / 0.25
    y = torch.tensor(d.target[:12])
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def test_extract_features_is_the_pre_logits_in_eval_mode(model, batches):
    model.train()
    feats, labels = extract_features(model, batches, progress=False)
    assert model.training                                            # mode restored
    stem = model.conv_stem.weight                                    # NHWC inside, NCHW again after
    assert stem.is_contiguous() and not stem.is_contiguous(memory_format=torch.channels_last)
    assert feats.shape == (12, 1280) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert labels.dtype == torch.int64 and labels.tolist() == load_digits().target[:12].tolist()
    model.eval()
    with torch.no_grad():
        want = torch.cat([pre_logits(model, x) for x, _ in batches])
    assert torch.allclose(feats, want, atol=1e-5)
    assert feats.std(0).max() > 0.05                                 # real, varied features
    logits, _ = predict_logits(model, batches)
    with torch.no_grad():
        assert torch.allclose(logits, torch.cat([model(x) for x, _ in batches]), atol=1e-5)


def test_extraction_leaves_the_global_random_state_alone(model, batches):
    """A DataLoader draws a seed from torch's generator when iterated; the extractor restores it,
    so a run that extracts and one that reads the cache go on with the same random state."""
    from torch.utils.data import DataLoader, TensorDataset

    x, y = (torch.cat(t) for t in zip(*batches))
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    extract_features(model, DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True), progress=False)
    assert torch.equal(torch.rand(3), want)


def test_empty_loader_gives_empty_tensors(model):
    feats, labels = extract_features(model, [], progress=False)
    assert feats.shape == (0, 1280) and labels.shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extract_features_on_cuda_returns_cpu_tensors_and_leaves_the_model_home(model, batches):
    feats, labels = extract_features(model, batches, device="cuda", progress=False)
    assert feats.device.type == "cpu" and next(model.parameters()).device.type == "cpu"
    cpu, _ = extract_features(model, batches, progress=False)
    assert torch.allclose(feats, cpu, atol=1e-3)


def _key(**kw):
    return feature_key(model="efficientnet_lite0", weights="packaged:x==1", image_size=64, data="abc", **kw)


def test_second_call_hits_the_cache_and_another_key_misses(tmp_path):
    cache, calls = FeatureCache(tmp_path), []

    def compute():
        calls.append(1)
        return {"features": torch.arange(6.0).reshape(3, 2), "labels": torch.tensor([0, 1, 2])}

    first = cache.cached(_key(split="train"), compute)
    again = cache.cached(_key(split="train"), compute)
    assert len(calls) == 1 and torch.equal(again["features"], first["features"])
    assert torch.equal(again["labels"], torch.tensor([0, 1, 2]))
    for other in (_key(split="val"), _key(split="train", view=1), _key(split="train", indices=[3, 1])):
        assert cache.get(other) is None
    cache.cached(_key(split="train", view=1), compute)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_or_foreign_file_is_recomputed_not_a_crash(tmp_path):
    cache, key = FeatureCache(tmp_path), _key(split="train")
    cache.path(key).write_bytes(b"\x00\x01 not a safetensors file")
    assert cache.get(key) is None
    got = cache.cached(key, lambda: {"values": torch.ones(2, 3)})
    assert torch.equal(got["values"], torch.ones(2, 3)) and torch.equal(cache.get(key)["values"], torch.ones(2, 3))
    # a valid file stored under another key (e.g. copied over) is a miss too
    cache.put(_key(split="val"), {"values": torch.zeros(1)})
    cache.path(_key(split="val")).replace(cache.path(key))
    assert cache.get(key) is None


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    cache, key = FeatureCache(tmp_path), _key(split="train")
    cache.put(key, {"values": torch.ones(4)})

    def half_write(tensors, path, metadata=None):                   # the disk fills up mid-write
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(features_module, "save_file", half_write)
    with pytest.raises(OSError):
        cache.put(key, {"values": torch.zeros(4)})
    assert torch.equal(cache.get(key)["values"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(key).name]


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"
    assert FeatureCache().root == tmp_path / "features" and (tmp_path / "features").is_dir()
    monkeypatch.delenv("TRANSFERKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "transferkit" / "features"
