"""Self-supervised blocks (transferkit.selfsup): losses, momentum targets, masking, views, kNN."""

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_digits

from transferkit.errors import ConfigError
from transferkit.selfsup import BYOL, DINO, MAE, SimCLR, is_grayscale, knn_accuracy, method_views


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cnn():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", num_classes=0)


def small_vit(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=48, depth=2,
                             num_heads=3, **kw)


def digit_images(n=16):
    d = load_digits()
    return [Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).convert("RGB").resize((32, 32))
            for i in range(n)]


def test_simclr_loss_is_lower_for_matching_views_than_for_mismatched_ones():
    """NT-Xent: views of the same image paired -> lower loss than the same views paired with other images."""
    flat = torch.nn.Flatten()
    flat.num_features = 48  # pixels as features (3 x 4 x 4): distinct images stay distinct
    torch.manual_seed(0)
    method = SimCLR(flat).eval()
    x = torch.randn(8, 3, 4, 4)
    with torch.no_grad():
        matched = method([x, x + 0.01 * torch.randn_like(x)])
        mismatched = method([x, x.roll(1, dims=0)])
    assert matched < mismatched - 0.5


def test_byol_target_follows_the_online_network_by_the_cosine_momentum():
    """target <- m target + (1 - m) online with m = 1 - (1 - 0.99)(cos(pi k / (K - 1)) + 1) / 2."""
    method = BYOL(small_cnn())
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)  # online and target differ by 1 everywhere
    before = [p.clone() for p in method.target_backbone.parameters()]
    step, total = 3, 12
    method([torch.randn(4, 3, 16, 16)] * 2, step, total)
    m = 1 - (1 - 0.99) * (math.cos(math.pi * step / (total - 1)) + 1) / 2
    for b, t, o in zip(before, method.target_backbone.parameters(), method.backbone.parameters()):
        torch.testing.assert_close(t, m * b + (1 - m) * o)
    assert not any(p.requires_grad for p in method.target_backbone.parameters())


def test_dino_teacher_sees_global_views_and_last_layer_is_frozen_in_the_first_epoch():
    method = DINO(small_cnn())
    views = [torch.randn(4, 3, 16, 16)] * 2 + [torch.randn(4, 3, 8, 8)] * 6
    method(views).backward()
    method.after_backward(epoch=0)
    assert all(p.grad is None for p in method.head.last_layer.parameters())
    assert next(method.head.layers.parameters()).grad is not None  # the rest of the head trains
    assert DINO.local_views_fit(small_cnn()) and not DINO.local_views_fit(small_vit())


def test_mae_reconstructs_masked_patches_and_refuses_a_cnn():
    method = MAE(small_vit(), mask_ratio=0.75)
    images = torch.randn(2, 3, 32, 32)
    loss = method([images])
    loss.backward()
    assert loss.item() > 0 and method.backbone.patch_embed.proj.weight.grad is not None
    with pytest.raises(ConfigError, match="vision transformer"):
        MAE(small_cnn())
    with pytest.raises(ConfigError, match="one class token"):
        MAE(small_vit(class_token=False, global_pool="avg"))
    with pytest.raises(ConfigError, match="multiple of"):
        MAE(timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=40, depth=1))
    assert not method.encoder.mask_token.requires_grad  # unused by the encoder: DDP needs no unused parameters


def test_pretrained_mae_keeps_the_vit_weights():
    vit = small_vit()
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    MAE(vit, pretrained=True)
    assert all(torch.equal(state[k], v) for k, v in vit.state_dict().items())


def test_grayscale_views_stay_grayscale_with_brightness_jitter():
    """Grey images: views stay grey (no hue or saturation jitter), while brightness/contrast jitter still varies them."""
    images = digit_images(8)
    assert is_grayscale([(im, 0) for im in images])
    tinted = images[0].copy()
    tinted.putpixel((0, 0), (255, 0, 0))
    assert not is_grayscale([(tinted, 0)])
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    grey = method_views("simclr", 32, mean.flatten(), std.flatten(), grayscale=True, hflip=0.0)
    torch.manual_seed(0)
    full = Image.new("RGB", (32, 32), (128, 128, 128))  # a flat grey image: crops cannot change its level
    levels = set()
    for view in [v for _ in range(4) for v in grey(full)] + grey(images[0]):
        pixels = view * std + mean
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)
        levels.add(round(float(pixels.mean()), 3))
    assert len(levels) > 3  # brightness jitter moved the level


def test_view_counts_per_method():
    img = digit_images(1)[0]
    mean, std = (0.5,) * 3, (0.5,) * 3
    assert [len(method_views(m, 32, mean, std, True)(img)) for m in ("simclr", "byol", "dino", "mae")] == [2, 2, 8, 1]
    assert len(method_views("dino", 32, mean, std, True, local_views=False)(img)) == 2
    assert len(method_views("dino", 32, mean, std, True, backbone=small_vit())(img)) == 2  # fixed input size
    assert len(method_views("dino", 32, mean, std, True, backbone=small_cnn())(img)) == 8


def test_knn_accuracy_on_separable_features_and_on_noise():
    """kNN on features that separate the classes is perfect; on label noise it is near chance."""
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 5
    y = torch.arange(60) % 3
    x = centres[y] + 0.1 * torch.randn(60, 16)
    loaders = [[(x[:30], y[:30])], [(x[30:], y[30:])]]
    ident = torch.nn.Identity()
    assert knn_accuracy(ident, *loaders, num_classes=3, k=5) == 1.0
    shuffled = [[(x[:30], y[:30][torch.randperm(30)])], [(x[30:], y[30:])]]
    assert knn_accuracy(ident, *shuffled, num_classes=3, k=5) < 0.7


def test_a_method_registered_at_run_time_is_accepted_with_its_own_views():
    """The registry drives PretrainConfig's names, build_method (check first) and method_views (the entry's trait)."""
    from transferkit.config import PretrainConfig
    from transferkit.registry import SELFSUP, Method
    from transferkit.selfsup import build_method

    def refuse_vits(ctx):
        if hasattr(ctx.backbone, "patch_embed"):
            raise ConfigError(f"no ViT please, {ctx.model_name}")

    SELFSUP.register(Method("sizes", "views that report their size", build=lambda ctx: SimCLR(ctx.backbone),
                            check=refuse_vits, traits={"views": lambda spec: lambda image: [spec.image_size, spec.hflip]}))
    try:
        assert PretrainConfig(data="images", method="sizes").method == "sizes"
        assert method_views("sizes", 24, (0.5,) * 3, (0.5,) * 3, True, hflip=0.25)(None) == [24, 0.25]
        assert isinstance(build_method("sizes", small_cnn()), SimCLR)
        with pytest.raises(ConfigError, match="no ViT please, tiny-vit"):
            build_method("sizes", small_vit(), model_name="tiny-vit")
    finally:
        SELFSUP.unregister("sizes")
    with pytest.raises(ConfigError, match="unknown method 'sizes'"):
        PretrainConfig.build(data="images", method="sizes")
    with pytest.raises(ConfigError, match="resnet10t is not one"):
        build_method("mae", small_cnn(), model_name="resnet10t")
    assert {SELFSUP[m].defaults["epochs"] for m in ("simclr", "byol", "dino", "mae")} == {20}
