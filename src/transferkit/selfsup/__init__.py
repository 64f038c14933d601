"""Self-supervised pretraining blocks (plain PyTorch, losses, heads and views from lightly).

Each method is an ``nn.Module`` around a timm backbone built with ``num_classes=0`` (images ->
pooled features): ``method(views, step, total)`` returns the loss of one batch of views,
``method.after_backward(epoch)`` is called between ``backward()`` and the optimizer step, and
``method.backbone`` is what is kept afterwards. Usable in any training loop::

    method = SimCLR(backbone)
    for views, _ in loader:            # views: list of (B, 3, H, W) tensors, from method_views(...)
        loss = method(views, step, total)
        loss.backward(); method.after_backward(epoch); opt.step(); opt.zero_grad()

The family contract (:data:`transferkit.registry.SELFSUP`, ``pretrain --method NAME``). Each method is one
module of this package that registers a :class:`~transferkit.registry.Method` on import (every module here
is imported with the package, so a new method is one module):

* ``build(ctx) -> SelfSupervised`` -- the method around ``ctx.backbone``;
* ``check(ctx)`` -- ConfigError, before any file is written, for a backbone it cannot train (MAE: ViTs);
* ``ctx`` -- a :class:`SelfSupContext`: ``backbone, pretrained, options`` (and ``name``, the model's
  name for messages);
* ``defaults={"epochs": ..., "lr": ...}`` -- when ``--epochs``/``--lr`` are unset;
* ``traits={"views": views}`` -- ``views(spec: ViewSpec)`` returns the method's transform (a PIL image ->
  the list of normalised view tensors ``forward`` takes).
"""


from transferkit.registry import SELFSUP, import_submodules
from transferkit.selfsup.base import SelfSupContext, SelfSupervised
from transferkit.selfsup.knn import knn_accuracy, knn_bank
from transferkit.selfsup.views import ViewSpec, is_grayscale, method_views
from transferkit.selfsup.simclr import SimCLR  # noqa: I001 -- in this order: the methods' order in --help
from transferkit.selfsup.byol import BYOL
from transferkit.selfsup.dino import DINO
from transferkit.selfsup.mae import MAE, check_mae_backbone

import_submodules(__name__, __path__)


def build_method(name: str, backbone, pretrained: bool = False, options=None, model_name: str | None = None):
    """The registered method ``name`` around ``backbone`` (``pretrained``: keep its weights as they are;
    ``options``: the method's own, ``{option: value}``); ConfigError when it cannot train ``backbone``."""
    entry = SELFSUP[name]
    ctx = SelfSupContext(backbone, pretrained=pretrained, options=entry.resolve(options), name=model_name)
    if entry.check is not None:
        entry.check(ctx)
    return entry.build(ctx)


__all__ = ["BYOL", "DINO", "MAE", "SelfSupContext", "SelfSupervised", "SimCLR", "ViewSpec", "build_method",
           "check_mae_backbone", "is_grayscale", "knn_accuracy", "knn_bank", "method_views"]
