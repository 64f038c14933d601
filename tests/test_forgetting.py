"""Forgetting measurement: source-head agreement of a fine-tuned backbone with the pretrained model."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.errors import ConfigError
from transferkit.evaluation.forgetting import SourceView, source_drift

TINY = dict(data="builtin:digits", per_class=10, image_size=64, batch_size=32, val_split=0.0,
            test_split=0.05, seed=0)


def _loader(n=12, labels=None):
    torch.manual_seed(0)
    y = torch.as_tensor(labels) if labels is not None else torch.zeros(n, dtype=torch.long)
    return DataLoader(TensorDataset(torch.randn(n, 3, 64, 64), y), batch_size=5)


def test_unchanged_backbone_agrees_fully_and_a_perturbed_one_does_not():
    source = load_backbone("efficientnet_lite0", "packaged").eval()
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=4)  # new head, same backbone
    view = SourceView(model, source.get_classifier())
    same = source_drift(source, view, _loader())
    assert same["source_agreement"] == 1.0 and same["source_kl"] == pytest.approx(0.0, abs=1e-5)
    assert same["source_images"] == 12 and "source_accuracy" not in same
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = source_drift(source, view, _loader())
    assert moved["source_agreement"] < 1.0 and moved["source_kl"] > 0.01


@pytest.mark.slow
def test_source_accuracy_uses_the_label_map():
    source = load_backbone("efficientnet_lite0", "packaged").eval()
    loader = _loader()
    with torch.no_grad():
        top1 = torch.cat([source(x).argmax(1) for x, _ in loader])
    # dataset class k is ImageNet class label_map[k]: label images with their own top-1 via a map
    classes = sorted(set(top1.tolist()))
    labels = [classes.index(c) for c in top1.tolist()]
    drift = source_drift(source, source, _loader(labels=labels), label_map=classes)
    assert drift["source_accuracy"] == drift["source_accuracy_pretrained"] == 1.0


@pytest.mark.slow
def test_finetune_source_eval_and_wise_curve(tmp_path):
    m = finetune(FinetuneConfig(**TINY, strategy="full", epochs=1, source_eval=True, wise_curve=[0.0, 0.5, 1.0],
                                baseline=False, out=str(tmp_path / "run")), progress=False)
    curve = m["wise_curve"]
    assert [p["alpha"] for p in curve] == [0.0, 0.5, 1.0]
    assert curve[0]["source_agreement"] == 1.0  # alpha 0: the pretrained backbone, so nothing forgotten
    assert curve[0]["source_kl"] == pytest.approx(0.0, abs=1e-4)
    assert curve[-1]["test_accuracy"] == m["test_accuracy"]  # alpha 1: the fine-tuned model that was saved
    assert curve[-1]["source_agreement"] == m["source_agreement"] < 1.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["source_images"] == 90
    assert (tmp_path / "run" / "wise_curve.png").is_file()
    assert "wise_curve.png" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
def test_source_data_with_index_folders_reports_source_accuracy(tmp_path):
    from PIL import Image
    from skimage import data as skdata

    root = tmp_path / "imagenet-like"
    for cls, img in (("281", skdata.chelsea()), ("967", skdata.coffee())):  # tabby cat, espresso
        (root / cls).mkdir(parents=True)
        Image.fromarray(img).save(root / cls / "a.png")
    m = finetune(FinetuneConfig(**TINY, strategy="linear-probe", epochs=1, source_data=str(root),
                                source_labels=True, baseline=False, out=str(tmp_path / "lp")), progress=False)
    assert m["source_images"] == 2  # --source-data implies --source-eval
    assert m["source_agreement"] == 1.0  # a linear probe leaves the backbone as it was
    assert m["source_accuracy"] == m["source_accuracy_pretrained"]
    source = load_backbone("efficientnet_lite0", "packaged").eval()
    from transferkit.data import build_transform, data_config_for
    tf = build_transform(data_config_for(source, 64), 64, train=False)
    with torch.no_grad():
        top1 = [source(tf(Image.open(root / c / "a.png").convert("RGB"))[None]).argmax().item() for c in ("281", "967")]
    assert m["source_accuracy"] == sum(t == c for t, c in zip(top1, (281, 967))) / 2
    named = tmp_path / "named"
    for cls, img in (("cat", skdata.chelsea()), ("281", skdata.cat())):
        (named / cls).mkdir(parents=True)
        Image.fromarray(img).save(named / cls / "a.png")
    with pytest.raises(ConfigError, match="class 'cat' .* is not a source-class index"):
        finetune(FinetuneConfig(**TINY, strategy="linear-probe", source_data=str(named), source_labels=True,
                                out=str(tmp_path / "bad")), progress=False)


def test_source_eval_needs_pretrained_weights_and_images(tmp_path):
    with pytest.raises(ConfigError, match="--weights none"):
        finetune(FinetuneConfig(**TINY, weights="none", source_eval=True, out=str(tmp_path / "x")), progress=False)
    with pytest.raises(ConfigError, match="test split, which is empty"):
        finetune(FinetuneConfig(**{**TINY, "test_split": 0.0}, source_eval=True, out=str(tmp_path / "y")),
                 progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
