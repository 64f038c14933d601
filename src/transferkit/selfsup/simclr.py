"""SimCLR (Chen et al. 2020): two augmented views of each image should be each other's nearest
neighbours among all the views of the batch.

    z = g(f(x))                                    (backbone f, projection head g)
    l(i, j) = -log exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)   (NT-Xent)

with ``sim`` the cosine similarity, over the 2B views of a batch of B images. Head and loss are
lightly's (``SimCLRProjectionHead``, ``NTXentLoss``; negatives gathered across DDP processes).
"""

from __future__ import annotations

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from transferkit.registry import SELFSUP, Method
from transferkit.selfsup.base import DEFAULTS, SelfSupervised


class SimCLR(SelfSupervised):
    """``loss = NT-Xent(g(f(view_1)), g(f(view_2)))``; any backbone (CNN or ViT)."""

    name = "simclr"

    def __init__(self, backbone: nn.Module, pretrained: bool = False, hidden_dim: int = 512, output_dim: int = 128,
                 temperature: float = 0.5):
        super().__init__(backbone)
        self.projection = SimCLRProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def forward(self, views, step: int = 0, total: int = 1):
        z0, z1 = (self.projection(self.backbone(v)) for v in views[:2])
        return self.criterion(z0, z1)


def views(spec):
    """2 views: SimCLR's crop, flip, colour jitter, random grayscale, blur (lightly's ``SimCLRTransform``)."""
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(input_size=spec.image_size, hf_prob=spec.hflip, gaussian_blur=0.0 if spec.small else 0.5,
                           normalize=spec.normalize, **spec.colour)


METHOD = SELFSUP.register(Method(
    name="simclr", summary="contrastive: two views of an image attract, other images repel (NT-Xent); any backbone",
    build=lambda ctx: SimCLR(ctx.backbone, pretrained=ctx.pretrained), defaults=DEFAULTS, traits={"views": views}))
