"""VICReg (Bardes, Ponce and LeCun, ICLR 2022): variance-invariance-covariance regularisation. Two views
of an image should map to the same embedding (invariance), while each embedding dimension keeps some
spread over the batch (variance) and the dimensions stay decorrelated (covariance) -- which prevents
collapse without negatives, momentum targets or stop-gradients.

    z = h(f(x))   (backbone f, expander h: 3 linear layers, BatchNorm + ReLU after the first two)
    for the B x D embeddings Z, Z' of the two views:
      s(Z, Z')  = 1/(B D) sum_b ||z_b - z'_b||^2                                  invariance (MSE)
      v(Z)      = 1/D sum_j max(0, 1 - sqrt(Var(Z_.j) + eps))                     variance hinge on the std
      c(Z)      = 1/D sum_{i != j} [Cov(Z)]_ij^2,  Cov(Z) = (Z - mean)^T (Z - mean) / (B - 1)   covariance
      loss      = lambda s(Z, Z') + mu (v(Z) + v(Z')) / 2 + nu (c(Z) + c(Z'))

with lambda = mu = 25, nu = 1, eps = 1e-4 (the paper's, lightly's defaults; Var unbiased). Loss,
expander and views are lightly's (``VICRegLoss``, ``VICRegProjectionHead``, ``VICRegTransform``); the
expander is 1024 wide here (the paper's 8192 is for ImageNet on GPUs).
"""

from __future__ import annotations

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import nn

from transferkit.registry import SELFSUP, Method
from transferkit.selfsup.base import DEFAULTS, SelfSupervised


class VICReg(SelfSupervised):
    """``loss = VICReg(h(f(view_1)), h(f(view_2)))``; any backbone (CNN or ViT)."""

    name = "vicreg"

    def __init__(self, backbone: nn.Module, pretrained: bool = False, hidden_dim: int = 1024, output_dim: int = 1024,
                 lambda_param: float = 25.0, mu_param: float = 25.0, nu_param: float = 1.0):
        super().__init__(backbone)
        self.projection = VICRegProjectionHead(self.feature_dim, hidden_dim, output_dim, num_layers=3)
        self.criterion = VICRegLoss(lambda_param=lambda_param, mu_param=mu_param, nu_param=nu_param,
                                    gather_distributed=True)  # variance and covariance over every process's batch

    def forward(self, views, step: int = 0, total: int = 1):
        z0, z1 = (self.projection(self.backbone(v)) for v in views[:2])
        return self.criterion(z0, z1)


def views(spec):
    """2 views of the same distribution (lightly's ``VICRegTransform``: crop, flip, colour jitter, grayscale,
    blur, solarisation); colour off for grey data and blur off below 64 px, as for SimCLR."""
    from lightly.transforms import VICRegTransform

    return VICRegTransform(input_size=spec.image_size, hf_prob=spec.hflip, gaussian_blur=0.0 if spec.small else 0.5,
                           normalize=spec.normalize, **spec.colour)


METHOD = SELFSUP.register(Method(
    name="vicreg", summary="two views agree while each embedding dimension keeps its variance and the dimensions "
                           "decorrelate (VICReg); any backbone",
    build=lambda ctx: VICReg(ctx.backbone, pretrained=ctx.pretrained), defaults=DEFAULTS, traits={"views": views}))
