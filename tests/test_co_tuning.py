"""Co-tuning: the category relationship on real photos of ImageNet classes, the loss against its
formula, and a real co-tuning run (source head trained and checkpointed, target head kept)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.engine.finetune import build_entry, term_context
from transferkit.registry import REGULARIZERS
from transferkit.engine.stages import build_model, load_data
from transferkit.errors import ConfigError
from transferkit.regularizers import CoTuning, category_relationship

#: Target classes that are ImageNet classes, each photographed once in scikit-image's samples, and
#: the ImageNet classes that mean the same thing.
PHOTOS = {"cat": ("chelsea", {281, 282, 283, 284, 285}), "espresso": ("coffee", {967, 968, 504}),
          "missile": ("rocket", {657, 744})}


def _photo_folder(root, crops=6, seed=0):
    """One folder per class: random crops (80-100% of the side) of its photo, 224 px."""
    rng = np.random.default_rng(seed)
    for name, (photo, _) in PHOTOS.items():
        img = Image.fromarray(getattr(skdata, photo)()).convert("RGB")
        (root / name).mkdir(parents=True)
        for k in range(crops):
            w, h = img.size
            side = int(min(w, h) * rng.uniform(0.8, 1.0))
            x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
            img.crop((x0, y0, x0 + side, y0 + side)).resize((224, 224)).save(root / name / f"{k}.png")
    return root


def test_relationship_rows_are_class_means_of_the_source_probabilities():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    rel = category_relationship(probs, torch.tensor([0, 0, 1]), num_classes=3)
    assert torch.allclose(rel[0], torch.tensor([0.6, 0.35, 0.05]))
    assert torch.allclose(rel[1], torch.tensor([0.1, 0.1, 0.8]))
    assert torch.allclose(rel[2], probs.mean(0))  # a class without images: the overall mean
    assert torch.allclose(rel.sum(1), torch.ones(3))


def test_loss_is_lambda_times_cross_entropy_against_the_relationship_row():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    rel = torch.tensor([[0.6, 0.3, 0.1], [0.0, 0.2, 0.8]])
    features, y = torch.randn(2, 4), torch.tensor([1, 0])
    reg = CoTuning(head, rel, weight=2.3)
    logits = head(features).tolist()
    expected = 0.0
    for row, label in zip(logits, y.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        expected -= sum(r * (v - log_z) for r, v in zip(rel[label].tolist(), row))
    assert reg(None, features=features, y=y).item() == pytest.approx(2.3 * expected / 2, rel=1e-5)
    assert all(p.requires_grad for p in reg.source_head.parameters()) and reg.source_head is not head


@pytest.mark.slow
def test_relationship_of_imagenet_classes_puts_its_mass_on_the_matching_source_classes(tmp_path):
    """Real EfficientNet-Lite0 source head on crops of a cat, an espresso and a rocket: each class's
    row is a distribution with most of its mass on the ImageNet classes of the same thing
    (measured: cat 0.88, espresso 0.92, missile 0.64 at 224 px)."""
    cfg = FinetuneConfig(data=str(_photo_folder(tmp_path / "photos")), strategy="co-tuning", image_size=224,
                         val_split=0.0, test_split=0.0)
    data = load_data(cfg)
    built = build_model(cfg, len(data.classes), 224)
    block = build_entry(REGULARIZERS["co-tuning"], term_context(cfg, data, built, 224), cfg).block
    rel = block.relationship
    assert rel.shape == (3, 1000) and (rel >= 0).all() and torch.allclose(rel.sum(1), torch.ones(3))
    for c, name in enumerate(data.classes):
        matching = sorted(PHOTOS[name][1])
        assert rel[c, matching].sum() > 0.5 and int(rel[c].argmax()) in matching, (name, rel[c].topk(3))


@pytest.mark.slow
def test_co_tuning_run_trains_the_source_head_and_saves_the_target_model(tmp_path):
    out = tmp_path / "run"
    metrics = finetune(FinetuneConfig(data="builtin:digits", strategy="co-tuning", per_class=10, image_size=64,
                                      epochs=1, batch_size=32, baseline=False, out=str(out)), progress=False)
    assert metrics["strategy"] == "co-tuning" and metrics["test_accuracy"] is not None
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    trained_head = ckpt["state_dict"]["terms.0.block.source_head.weight"]
    pretrained = load_backbone("efficientnet_lite0", "packaged").get_classifier().weight
    assert trained_head.shape == (1000, 1280) and not torch.equal(trained_head, pretrained)
    assert "terms.0.block.relationship" not in ckpt["state_dict"]  # recomputed from the pretrained model on resume
    assert json.loads((out / "model.json").read_text())["num_classes"] == 10


def test_co_tuning_needs_a_pretrained_source_head(tmp_path):
    with pytest.raises(ConfigError, match="source head"):
        finetune(FinetuneConfig(data="builtin:digits", strategy="co-tuning", weights="none", out=str(tmp_path / "x")),
                 progress=False)
    assert not (tmp_path / "x").exists()
