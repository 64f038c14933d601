"""VICReg (transferkit.selfsup.vicreg): the loss against a hand computation of its three terms, a training
step on a real backbone, its views, and a short ``pretrain --method vicreg`` run."""

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_digits

from transferkit.selfsup import method_views
from transferkit.selfsup.vicreg import VICReg

pytestmark = pytest.mark.usefixtures("one_torch_thread")

Z_A = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.2], [0.5, 0.5, 0.1], [0.2, 0.1, 0.0]]
Z_B = [[0.9, 0.1, 0.4], [0.1, 0.8, 0.3], [0.4, 0.6, 0.2], [0.3, 0.0, 0.1]]


def small_cnn():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=0)


def hand_terms(za, zb, eps=1e-4):
    """(invariance, variance, covariance) written out over the rows and columns (B x D lists)."""
    b, d = len(za), len(za[0])
    invariance = sum((x - y) ** 2 for ra, rb in zip(za, zb) for x, y in zip(ra, rb)) / (b * d)

    def centred(z):
        means = [sum(r[j] for r in z) / b for j in range(d)]
        return [[r[j] - means[j] for j in range(d)] for r in z]

    def variance(z):
        c = centred(z)
        return sum(max(0.0, 1 - math.sqrt(sum(r[j] ** 2 for r in c) / (b - 1) + eps)) for j in range(d)) / d

    def covariance(z):
        c = centred(z)
        cov = [[sum(r[i] * r[j] for r in c) / (b - 1) for j in range(d)] for i in range(d)]
        return sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return invariance, (variance(za) + variance(zb)) / 2, covariance(za) + covariance(zb)


def test_the_loss_is_the_weighted_sum_of_the_three_hand_computed_terms():
    inv, var, cov = hand_terms(Z_A, Z_B)
    assert inv > 0 and var > 0 and cov > 0  # every term active on these embeddings (stds < 1, correlated)
    za, zb = torch.tensor(Z_A, dtype=torch.float64), torch.tensor(Z_B, dtype=torch.float64)
    method = VICReg(small_cnn())
    assert float(method.criterion(za, zb)) == pytest.approx(25 * inv + 25 * var + 1 * cov, rel=1e-9)
    for weights, term in (((1, 0, 0), inv), ((0, 1, 0), var), ((0, 0, 1), cov)):
        alone = VICReg(small_cnn(), lambda_param=weights[0], mu_param=weights[1], nu_param=weights[2])
        assert float(alone.criterion(za, zb)) == pytest.approx(term, rel=1e-9)


def test_a_training_step_gives_a_finite_loss_and_backbone_gradients():
    method = VICReg(small_cnn())
    torch.manual_seed(1)
    x = torch.randn(6, 3, 32, 32)
    loss = method([x, x + 0.1 * torch.randn_like(x)])
    loss.backward()
    grads = [p.grad for p in method.backbone.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and loss > 0
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert method.projection.layers[-1].out_features == 1024


def test_two_grey_views_of_a_grey_image():
    d = load_digits()
    image = Image.fromarray((d.images[0] * 255 / 16).astype(np.uint8)).convert("RGB").resize((32, 32))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.manual_seed(0)
    views = method_views("vicreg", 32, mean.flatten(), std.flatten(), grayscale=True)(image)
    assert len(views) == 2 and all(v.shape == (3, 32, 32) for v in views)
    for view in views:
        pixels = view * std + mean
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)


@pytest.mark.slow
def test_pretrain_runs_vicreg_end_to_end(tmp_path):
    from conftest import write_digit_folder
    from transferkit.config import PretrainConfig
    from transferkit.engine.pretrain import pretrain

    digits = write_digit_folder(tmp_path / "digits", per_class=12, classes=(0, 1, 2))
    m = pretrain(PretrainConfig(data=str(digits), method="vicreg", out=str(tmp_path / "run"), model="resnet10t",
                                weights="none", image_size=32, batch_size=16, images=32, monitor_images=20, epochs=1,
                                knn_k=5), progress=False)
    assert m["method"] == "vicreg" and m["views"] == 2 and m["epochs"] == 1 and m["lr"] == 1e-3 and m["grayscale"] is True
    assert math.isfinite(m["final_train_loss"]) and 0 <= m["knn_accuracy"] <= 1
    assert (tmp_path / "run" / "model.safetensors").is_file()
