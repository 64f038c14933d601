"""Training basics: ``--augment`` presets, mixup / cutmix and their loss, class weights, the balanced
sampler and ``--early-stopping``. Expected values are computed by hand."""

import math
import typing

import numpy as np
import pytest
import timm.data
import torch
from timm.data.auto_augment import RandAugment
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T

from transferkit.config import FinetuneConfig
from transferkit.data import (AUGMENTS, Mixing, balanced_sampler, inverse_frequency_weights, mix_batch,
                              mixed_cross_entropy, train_transform)
from transferkit.data.mixing import cutmix, mixup
from transferkit.errors import ConfigError

DATA_CFG = {"mean": timm.data.IMAGENET_DEFAULT_MEAN, "std": timm.data.IMAGENET_DEFAULT_STD, "interpolation": "bicubic"}


def _parts(tf) -> list:
    return list(tf.transforms)


def _rand_augment(tf) -> RandAugment | None:
    return next((t for t in _parts(tf) if isinstance(t, RandAugment)), None)


def test_the_config_offers_exactly_the_presets():
    assert typing.get_args(FinetuneConfig.model_fields["augment"].annotation) == AUGMENTS
    assert FinetuneConfig(data="x").augment == "light"  # the default: the transform the engine always had


def test_light_is_the_crop_alone_and_none_is_the_eval_transform():
    light = train_transform(DATA_CFG, 32, "light")
    crop = next(t for t in _parts(light) if isinstance(t, RandomResizedCropAndInterpolation))
    assert crop.scale == (0.7, 1.0) and _rand_augment(light) is None
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in _parts(light))
    flipped = train_transform(DATA_CFG, 32, "light", hflip=0.5)
    assert [t.p for t in _parts(flipped) if isinstance(t, T.RandomHorizontalFlip)] == [0.5]
    none = train_transform(DATA_CFG, 32, "none")
    assert not any(isinstance(t, (RandomResizedCropAndInterpolation, T.RandomHorizontalFlip)) for t in _parts(none))
    from PIL import Image
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8))
    assert torch.equal(none(img), none(img)) and none(img).shape == (3, 32, 32)  # deterministic, whole image


def test_randaugment_is_timms_two_ops_at_magnitude_9():
    ra = _rand_augment(train_transform(DATA_CFG, 32, "randaugment"))
    assert ra.num_layers == 2
    assert {op.magnitude for op in ra.ops} == {9} and {op.magnitude_std for op in ra.ops} == {0.5}
    assert {op.prob for op in ra.ops} == {0.5}
    assert "PosterizeIncreasing" in {op.name for op in ra.ops}  # the increasing-severity op set (inc1)


@pytest.mark.parametrize("preset", ["randaugment", "trivialaugment"])
def test_every_op_runs_at_the_largest_magnitude_the_preset_can_draw(preset):
    """At magnitude 10 timm's increasing posterize keeps 0 bits, which Pillow refuses: the Fashion-MNIST
    grid crashed on it. Each op is run at the preset's largest reachable magnitude (randaugment's jitter
    is capped at 9; trivialaugment draws uniformly in [0, 10), never 10 itself)."""
    from PIL import Image
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    for op in _rand_augment(train_transform(DATA_CFG, 32, preset)).ops:
        op.prob, op.magnitude_std = 1.0, 0.0
        upper = op.magnitude_max or 10  # timm's clip bound when the preset sets none
        op.magnitude = min(upper, 9.999) if preset == "trivialaugment" else upper
        assert op(img).size == (16, 16), op.name


def test_trivialaugment_is_one_op_always_at_a_uniform_magnitude():
    ra = _rand_augment(train_transform(DATA_CFG, 32, "trivialaugment"))
    assert ra.num_layers == 1
    assert {op.prob for op in ra.ops} == {1.0}
    assert {op.magnitude_std for op in ra.ops} == {math.inf} and {op.magnitude for op in ra.ops} == {10}
    crop = next(t for t in _parts(train_transform(DATA_CFG, 32, "trivialaugment"))
                if isinstance(t, RandomResizedCropAndInterpolation))
    assert crop.scale == (0.7, 1.0)  # on top of light


def test_mixup_of_a_known_pair():
    x = torch.tensor([[[[0.0, 1.0]]], [[[10.0, 20.0]]]])  # two 1x1x2 "images"
    out = mixup(x, torch.tensor([1, 0]), 0.3)
    assert torch.allclose(out, torch.tensor([[[[7.0, 14.3]]], [[[3.0, 6.7]]]]))  # 0.3 a + 0.7 b by hand: 0.3*10+0.7*0, 0.3*20+0.7*1


def test_cutmix_pastes_a_box_of_the_right_area():
    x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    out, lam = cutmix(x, torch.tensor([1, 0]), 0.75, 0.5, 0.5)  # sides sqrt(0.25) = 1/2 of 4: a 2x2 box at the centre
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1
    assert torch.equal(out[0, 0], expected) and torch.equal(out[1, 0], 1 - expected) and lam == 0.75
    out, lam = cutmix(x, torch.tensor([1, 0]), 0.75, 0.0, 0.0)  # centred on the corner: clipped to 1x1
    assert out[0, 0].sum() == 1 and out[0, 0, 0, 0] == 1 and lam == 1 - 1 / 16


def _smoothed_ce(z, y, eps):
    """-(1 - eps) log p_y - eps / K sum_k log p_k, from the logits by hand."""
    log_p = [v - math.log(sum(math.exp(u) for u in z)) for v in z]
    return -(1 - eps) * log_p[y] - eps / len(z) * sum(log_p)


def test_mixed_loss_with_a_known_lambda_and_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    y_a, y_b, lam, eps = torch.tensor([0, 1]), torch.tensor([2, 0]), 0.3, 0.1
    rows = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]]
    expected = sum(lam * _smoothed_ce(z, a, eps) + (1 - lam) * _smoothed_ce(z, b, eps)
                   for z, a, b in zip(rows, (0, 1), (2, 0))) / 2
    got = mixed_cross_entropy(logits, y_a, y_b, lam, label_smoothing=eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mix_batch_pairs_labels_with_the_images_it_blends():
    torch.manual_seed(0)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 2, 2).clone()
    y = torch.arange(6)
    mixed, y_a, y_b, lam = mix_batch(x, y, Mixing(mixup=0.2))
    assert torch.equal(y_a, y) and sorted(y_b.tolist()) == list(range(6)) and 0 <= lam <= 1
    # each image is lam * itself + (1 - lam) * its partner (the value of an image here is its label)
    assert torch.allclose(mixed[:, 0, 0, 0], lam * y_a.float() + (1 - lam) * y_b.float(), atol=1e-6)


def test_class_weights_auto_are_the_normalised_inverse_frequencies():
    w = inverse_frequency_weights([0, 0, 0, 1, 2, 2], 4)
    # counts 3, 1, 2, 0 -> inverses 1/3, 1, 1/2 (mean 11/18) -> 6/11, 18/11, 9/11; the absent class 0
    assert torch.allclose(w, torch.tensor([6 / 11, 18 / 11, 9 / 11, 0.0]))


def test_the_module_weights_its_task_loss():
    from transferkit.engine.module import OptimSettings, TransferModule
    from transferkit.strategies import Plan

    head = torch.nn.Linear(2, 2)
    module = TransferModule(head, 2, Plan("head", [("head", list(head.named_parameters()), 1.0)]),
                            OptimSettings(label_smoothing=0.0), class_weights=torch.tensor([0.5, 1.5]))
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]), torch.tensor([0, 1, 1])
    ce = [-math.log(math.exp(1) / (math.exp(1) + 1)), -math.log(math.exp(2) / (math.exp(2) + 1)),
          -math.log(math.exp(1) / (math.exp(3) + math.exp(1)))]
    expected = (0.5 * ce[0] + 1.5 * ce[1] + 1.5 * ce[2]) / (0.5 + 1.5 + 1.5)  # sum w_y l / sum w_y
    assert module.task_loss(logits, y, y >= 0, None, 1.0).item() == pytest.approx(expected, rel=1e-6)
    assert "class_weights" not in module.state_dict()  # rebuilt from the data, never checkpointed


def test_the_balanced_sampler_draws_classes_equally_on_imbalanced_data():
    targets = np.array([0] * 90 + [1] * 10)
    sampler = balanced_sampler(targets, num_samples=4000, generator=torch.Generator().manual_seed(0))
    drawn = targets[list(sampler)]
    assert len(drawn) == 4000 and abs(drawn.mean() - 0.5) < 0.03  # a shuffle would give 0.1
    assert len(list(balanced_sampler(targets))) == 100  # an epoch: as many draws as images


def test_options_of_the_loop_are_refused_for_cached_feature_recipes():
    from transferkit.engine.finetune import choose_recipe

    with pytest.raises(ConfigError, match="--mixup, --sampler balanced: options of the training loop"):
        choose_recipe(FinetuneConfig(data="x", strategy="linear-probe", mixup=0.2, sampler="balanced"))
    with pytest.raises(ConfigError, match="--val-split > 0"):
        FinetuneConfig.build(data="x", early_stopping=2, val_split=0)
    choose_recipe(FinetuneConfig(data="x", strategy="full", mixup=0.2, cutmix=1.0, class_weights="auto"))


@pytest.mark.usefixtures("one_torch_thread")
def test_early_stopping_stops_a_run_whose_validation_does_not_improve(tmp_path):
    from conftest import write_digit_folder
    from transferkit import finetune

    data = write_digit_folder(tmp_path / "digits", per_class=8)
    # a learning rate of 1e-12 and frozen BatchNorm: the weights, hence validation accuracy, never change
    cfg = FinetuneConfig(data=str(data), model="test_efficientnet", weights="none", strategy="full", image_size=32,
                         batch_size=8, bn="freeze", epochs=6, lr=1e-12, baseline=False, val_split=0.25,
                         test_split=0.2, early_stopping=2, out=str(tmp_path / "run"))
    metrics = finetune(cfg, progress=False)
    assert metrics["early_stopped_epoch"] == 3  # epoch 1 the best, 2 and 3 no better: stopped after epoch 3
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 2  # the last epoch trained is the one saved, as for any run
    epochs = {int(float(r["epoch"])) for r in __import__("csv").DictReader(open(tmp_path / "run" / "metrics.csv"))
              if r.get("val_acc")}
    assert epochs == {0, 1, 2}


@pytest.mark.usefixtures("one_torch_thread")
def test_a_finetune_run_trains_with_every_option_of_the_loop(tmp_path, monkeypatch):
    from conftest import write_digit_folder
    from transferkit import finetune
    from transferkit.engine import module as engine_module

    seen = {"mixed": 0}
    original_mix, original_init = engine_module.mix_batch, engine_module.TransferModule.__init__

    def counting_mix(*args):
        seen["mixed"] += 1
        return original_mix(*args)

    def spying_init(self, *args, **kwargs):
        seen["weights"] = kwargs.get("class_weights")
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(engine_module, "mix_batch", counting_mix)
    monkeypatch.setattr(engine_module.TransferModule, "__init__", spying_init)
    data = write_digit_folder(tmp_path / "digits", per_class=8)
    for f in sorted((data / "2").iterdir())[3:]:
        f.unlink()  # class 2: 3 images, 8 of the others
    cfg = FinetuneConfig(data=str(data), model="test_efficientnet", weights="none", strategy="full", image_size=32,
                         batch_size=4, epochs=1, baseline=False, val_split=0.2, test_split=0.2, augment="trivialaugment",
                         mixup=0.2, cutmix=1.0, class_weights="auto", sampler="balanced", out=str(tmp_path / "run"))
    metrics = finetune(cfg, progress=False)
    assert metrics["test_accuracy"] is not None and seen["mixed"] >= 2
    w = seen["weights"]
    assert w.mean().item() == pytest.approx(1.0) and w[2] > w[0] and w[2] > w[1]  # the rare class weighs most


def test_compare_runs_the_loop_options_only_where_there_is_a_loop(tmp_path):
    from transferkit.engine.compare import variant_config

    base = FinetuneConfig(data="x", mixup=0.2, class_weights="auto", sampler="balanced", early_stopping=3)
    probe, full = variant_config(base, "linear-probe", 0, tmp_path), variant_config(base, "full", 0, tmp_path)
    assert (probe.mixup, probe.class_weights, probe.sampler, probe.early_stopping) == (0.0, "none", "shuffle", None)
    assert (full.mixup, full.class_weights, full.sampler, full.early_stopping) == (0.2, "auto", "balanced", 3)
