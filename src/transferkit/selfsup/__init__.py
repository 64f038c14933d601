"""Self-supervised pretraining blocks (plain PyTorch, losses, heads and views from lightly).

Each method is an ``nn.Module`` around a timm backbone built with ``num_classes=0`` (images ->
pooled features): ``method(views, step, total)`` returns the loss of one batch of views,
``method.after_backward(epoch)`` is called between ``backward()`` and the optimizer step, and
``method.backbone`` is what is kept afterwards. Usable in any training loop::

    method = SimCLR(backbone)
    for views, _ in loader:            # views: list of (B, 3, H, W) tensors, from method_views(...)
        loss = method(views, step, total)
        loss.backward(); method.after_backward(epoch); opt.step(); opt.zero_grad()
"""

from transferkit.selfsup.base import SelfSupervised
from transferkit.selfsup.byol import BYOL
from transferkit.selfsup.dino import DINO
from transferkit.selfsup.knn import knn_accuracy, knn_bank
from transferkit.selfsup.mae import MAE, check_mae_backbone
from transferkit.selfsup.simclr import SimCLR
from transferkit.selfsup.views import is_grayscale, method_views

#: method name -> its class; which backbones fit is said by each class's ``fits`` (None: any).
METHODS = {"simclr": SimCLR, "byol": BYOL, "dino": DINO, "mae": MAE}


def build_method(name: str, backbone, pretrained: bool = False) -> SelfSupervised:
    """The method ``name`` around ``backbone`` (``pretrained``: keep its weights as they are)."""
    return METHODS[name](backbone, pretrained=pretrained)


__all__ = ["BYOL", "DINO", "MAE", "METHODS", "SelfSupervised", "SimCLR", "build_method", "check_mae_backbone",
           "is_grayscale", "knn_accuracy", "knn_bank", "method_views"]
