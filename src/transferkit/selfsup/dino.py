"""DINO (Caron et al. 2021): self-distillation without labels. A student sees every view (global
and local crops), a momentum teacher only the global ones; the student matches the teacher's
centred, sharpened distribution over K prototypes.

    P_t(x) = softmax((h'(f'(x)) - c) / tau_t),  P_s(x) = softmax(h(f(x)) / tau_s)
    loss = sum over (global view u, view v != u) of  -P_t(x_u) . log P_s(x_v)   (averaged)
    c <- 0.9 c + 0.1 mean(teacher outputs);   (f', h') <- m (f', h') + (1 - m)(f, h), m: 0.996 -> 1

Projection head, loss (centring, temperatures) and momentum update are lightly's; the head's last
layer is frozen during the first epoch, as in the paper.
"""

from __future__ import annotations

from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import nn
from torch.nn.utils import parametrizations, remove_weight_norm

from transferkit.registry import SELFSUP, Method
from transferkit.selfsup.base import DEFAULTS, SelfSupervised, ema_step, momentum_copy


def copyable(head: DINOProjectionHead) -> DINOProjectionHead:
    """The head's weight-normalised last layer as a parametrization (same function, same frozen norm):
    the old ``weight_norm`` hook cannot be deep-copied, which the momentum teacher and checkpoints need."""
    layer = head.last_layer
    norm_trains = layer.weight_g.requires_grad
    remove_weight_norm(layer)
    parametrizations.weight_norm(layer)
    layer.parametrizations.weight.original0.requires_grad_(norm_trains)
    return head


class DINO(SelfSupervised):
    """Student (backbone, DINO head) against a momentum teacher; any backbone. A ViT (any model with a patch
    embedding) without ``dynamic_img_size`` sees global crops only (its input size is fixed)."""

    name = "dino"

    def __init__(self, backbone: nn.Module, pretrained: bool = False, hidden_dim: int = 512,
                 bottleneck_dim: int = 64, output_dim: int = 2048, momentum: float = 0.996):
        super().__init__(backbone)
        self.head = copyable(DINOProjectionHead(self.feature_dim, hidden_dim, bottleneck_dim, output_dim,
                                                freeze_last_layer=1))
        self.teacher_backbone = momentum_copy(backbone)
        self.teacher_head = momentum_copy(self.head)
        self.criterion = DINOLoss(output_dim=output_dim, warmup_teacher_temp_epochs=0)
        self.momentum = momentum

    @staticmethod
    def local_views_fit(backbone: nn.Module) -> bool:
        """Local crops are smaller than global ones: a CNN takes them; a model with a patch embedding (ViT,
        Swin, ...) only with a dynamic input size."""
        return not hasattr(backbone, "patch_embed") or bool(getattr(backbone, "dynamic_img_size", False))

    def forward(self, views, step: int = 0, total: int = 1):
        if self.training:
            ema_step([(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)],
                     step, total, self.momentum)
        teacher = [self.teacher_head(self.teacher_backbone(v)).detach() for v in views[:2]]
        student = [self.head(self.backbone(v)) for v in views]
        return self.criterion(teacher, student)

    def after_backward(self, epoch: int) -> None:
        self.head.cancel_last_layer_gradients(current_epoch=epoch)


def views(spec):
    """2 global crops (40-100 % of the image) and, with ``spec.local_views`` and a backbone that takes them
    (:meth:`DINO.local_views_fit`), 6 local crops of half the size (5-40 %) (lightly's ``DINOTransform``)."""
    from lightly.transforms import DINOTransform

    local = max(8, (spec.image_size // 2) // 8 * 8)
    n_local = 6 if spec.local_views and (spec.backbone is None or DINO.local_views_fit(spec.backbone)) else 0
    return DINOTransform(global_crop_size=spec.image_size, local_crop_size=local, n_local_views=n_local,
                         hf_prob=spec.hflip, gaussian_blur=(0.0, 0.0, 0.0) if spec.small else (1.0, 0.1, 0.5),
                         normalize=spec.normalize, **spec.colour)


METHOD = SELFSUP.register(Method(
    name="dino", summary="self-distillation to a momentum teacher over prototypes, global and local crops; "
                         "any backbone",
    build=lambda ctx: DINO(ctx.backbone, pretrained=ctx.pretrained), defaults=DEFAULTS, traits={"views": views}))
