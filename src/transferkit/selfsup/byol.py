"""BYOL (Grill et al. 2020): an online network predicts a slowly moving target network's projection
of another view of the same image; no negatives.

    p = q(g(f(x_1)))            online: backbone f, projection g, predictor q
    z' = g'(f'(x_2))            target: an exponential moving average of (f, g), no gradients
    loss = 1/2 [ -cos(p_1, z'_2) - cos(p_2, z'_1) ]        (symmetrised negative cosine similarity)
    (f', g') <- m (f', g') + (1 - m)(f, g),  m from 0.99 to 1 along a cosine over training

Heads, loss and the momentum update are lightly's.
"""

from __future__ import annotations

from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from transferkit.registry import SELFSUP, Method
from transferkit.selfsup.base import DEFAULTS, SelfSupervised, ema_step, momentum_copy


class BYOL(SelfSupervised):
    """Online (backbone, projection, predictor) against a momentum target; any backbone."""

    name = "byol"

    def __init__(self, backbone: nn.Module, pretrained: bool = False, hidden_dim: int = 1024,
                 output_dim: int = 256, momentum: float = 0.99):
        super().__init__(backbone)
        self.projection = BYOLProjectionHead(self.feature_dim, hidden_dim, output_dim)
        self.prediction = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.target_backbone = momentum_copy(backbone)
        self.target_projection = momentum_copy(self.projection)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = momentum

    def forward(self, views, step: int = 0, total: int = 1):
        if self.training:
            ema_step([(self.backbone, self.target_backbone), (self.projection, self.target_projection)],
                     step, total, self.momentum)
        x0, x1 = views[:2]
        p0, p1 = (self.prediction(self.projection(self.backbone(x))) for x in (x0, x1))
        z0, z1 = (self.target_projection(self.target_backbone(x)).detach() for x in (x0, x1))
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


def views(spec):
    """2 asymmetric views (lightly's ``BYOLTransform``): blur always on the first, solarisation on the second."""
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

    common = dict(input_size=spec.image_size, hf_prob=spec.hflip, normalize=spec.normalize, **spec.colour,
                  **({"gaussian_blur": 0.0} if spec.small else {}))
    return BYOLTransform(BYOLView1Transform(**common), BYOLView2Transform(**common))


METHOD = SELFSUP.register(Method(
    name="byol", summary="an online network predicts a momentum target's view, no negatives; any backbone",
    build=lambda ctx: BYOL(ctx.backbone, pretrained=ctx.pretrained), defaults=DEFAULTS, traits={"views": views}))
