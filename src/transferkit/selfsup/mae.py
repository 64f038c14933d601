"""MAE (He et al. 2022): hide most patches of an image and reconstruct their pixels from the rest.

    keep a random 25 % of the patch tokens (the class token always), encode only those with the ViT,
    a light decoder fills the masked positions with a learnt mask token and predicts their pixels:
    loss = mean over masked patches of || decoder(encoder(x_visible))_p - x_p ||^2

The encoder wrapper and decoder are lightly's (``MaskedVisionTransformerTIMM``,
``MaskedVisionTransformerDecoderTIMM``, between them a linear embedding and a linear pixel head). Only ViTs fit (patch tokens); the encoder is the timm ViT itself, which is
what is kept.
"""

from __future__ import annotations

import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from torch import nn

from transferkit.errors import ConfigError
from transferkit.registry import SELFSUP, Method
from transferkit.selfsup.base import DEFAULTS, SelfSupervised


def check_mae_backbone(backbone: nn.Module, name: str) -> None:
    """MAE needs a timm VisionTransformer with one class token (masking acts on its patch tokens)."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        raise ConfigError(f"--method mae masks the patch tokens of a vision transformer; {name} is not one — use "
                          "--method simclr, byol or dino for it, or a ViT (e.g. --model vit_tiny_patch16_224 "
                          "--model-args patch_size=4 for small images)")
    if backbone.num_prefix_tokens != 1 or not backbone.has_class_token:
        raise ConfigError(f"--method mae needs a ViT with exactly one class token; {name} has "
                          f"{backbone.num_prefix_tokens} prefix tokens — use a plain ViT such as vit_tiny_patch16_224")
    size, patch = backbone.patch_embed.img_size[0], backbone.patch_embed.patch_size[0]
    if size % patch:
        raise ConfigError(f"--method mae reconstructs whole patches: the image size {size} must be a multiple of "
                          f"{name}'s patch size {patch} (e.g. --image-size {size // patch * patch or patch})")


class MAE(SelfSupervised):
    """Masked autoencoder on a timm ViT: ``mask_ratio`` of the patches hidden, a ``decoder_depth``-block
    decoder of width ``decoder_dim`` reconstructs their pixels (normalised input space)."""

    name = "mae"

    def __init__(self, backbone: nn.Module, pretrained: bool = False, mask_ratio: float = 0.75,
                 decoder_dim: int = 128, decoder_depth: int = 2, decoder_heads: int = 4):
        check_mae_backbone(backbone, type(backbone).__name__)
        super().__init__(backbone)
        keep = "skip" if pretrained else ""  # from scratch: MAE's own init (sin-cos position embeddings)
        self.encoder = MaskedVisionTransformerTIMM(vit=backbone, weight_initialization=keep,
                                                   pos_embed_initialization="skip" if pretrained else "sincos")
        self.patch_size = backbone.patch_embed.patch_size[0]
        self.sequence_length = self.encoder.sequence_length
        self.decoder_embed = nn.Linear(backbone.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(num_patches=backbone.patch_embed.num_patches,
                                                          embed_dim=decoder_dim, depth=decoder_depth,
                                                          num_heads=decoder_heads)
        self.pixels = nn.Linear(decoder_dim, self.patch_size ** 2 * 3)
        self.encoder.mask_token.requires_grad_(False)  # the encoder drops masked tokens; the decoder has its own
        self.mask_ratio = mask_ratio

    def forward(self, views, step: int = 0, total: int = 1):
        images = views[0]
        batch = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(batch, self.sequence_length), mask_ratio=self.mask_ratio,
                                                     device=images.device)
        encoded = self.encoder.encode(images=images, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.decoder.mask_token, (batch, self.sequence_length))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(encoded).type_as(tokens))
        predicted = self.pixels(utils.get_at_index(self.decoder(tokens), idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)  # index 0: class token
        return F.mse_loss(predicted, target)


def views(spec):
    """1 crop (20-100 % of the image; lightly's ``MAETransform``)."""
    from lightly.transforms import MAETransform

    return MAETransform(input_size=spec.image_size, normalize=spec.normalize)


METHOD = SELFSUP.register(Method(
    name="mae", summary="masked autoencoder: reconstruct 75% hidden patches; ViTs only",
    build=lambda ctx: MAE(ctx.backbone, pretrained=ctx.pretrained),
    check=lambda ctx: check_mae_backbone(ctx.backbone, ctx.model_name), defaults=DEFAULTS, traits={"views": views}))
