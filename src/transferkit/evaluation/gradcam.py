"""Grad-CAM: where in the image a classifier found the evidence for a class.

Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization". For a class score ``y^c`` (the logit) and the ``K`` feature maps ``A^k`` (``h x w``) of
a chosen layer:

    alpha_k^c = 1/(h w) sum_ij  d y^c / d A^k_ij          (the map's weight: its mean gradient)
    L^c       = ReLU( sum_k alpha_k^c A^k )                (h x w)

``L^c`` is upsampled to the input's ``H x W`` and min-max scaled to [0, 1] per image (a map without
positive evidence is 0 everywhere). The computation is :mod:`pytorch_grad_cam`'s ``GradCAM`` with a
``ClassifierOutputTarget``; this module picks the layer (:func:`cam_target_layer`) and leaves the
model as it found it (:func:`gradcam`). Plain torch + pytorch_grad_cam: no engine or report imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

#: the coarsest CNN feature map used has at least this many cells per side at the input size (a 1 x 1 map,
#: e.g. a stride-32 network at 32 px, says nothing about where): the deepest timm stage that keeps it
MIN_CELLS = 4


def vit_reshape(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tokens ``(B, P + N, C)`` -> ``(B, C, h, w)``: the ``P = model.num_prefix_tokens`` class/register/
    distillation tokens dropped, the ``N`` patch tokens laid back on their grid (the patch embedding's
    grid when it holds ``N`` cells, else square)."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        n = patches.shape[1]
        grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", None) or ())
        h, w = grid if len(grid) == 2 and grid[0] * grid[1] == n else (math.isqrt(n), n // max(math.isqrt(n), 1))
        if h * w != n:
            raise ValueError(f"cannot lay {n} patch tokens on a grid; give gradcam(..., layer=, reshape=)")
        return patches.reshape(patches.shape[0], h, w, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def cam_target_layer(model: nn.Module, image_size: int | None = None, min_cells: int = MIN_CELLS
                     ) -> tuple[nn.Module, Callable | None]:
    """``(layer, reshape)``: the layer Grad-CAM reads in a timm model, and the transform of its output
    to ``(B, C, h, w)`` (None for a CNN).

    * a vision transformer (``blocks`` + ``num_prefix_tokens``): the last block's ``norm1`` (its output
      is every patch token the last attention reads), with :func:`vit_reshape`;
    * a CNN (timm's ``feature_info``): the deepest stage whose map has ``>= min_cells`` cells per side at
      ``image_size`` (the last stage when ``image_size`` is None or none has); the last stage of an
      EfficientNet is its ``bn2`` (``conv_head`` + norm + activation, right before pooling).

    A model that is neither raises ValueError (pass ``layer=`` to :func:`gradcam`).
    """
    blocks = getattr(model, "blocks", None)
    if hasattr(model, "num_prefix_tokens") and isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) \
            and hasattr(blocks[-1], "norm1"):
        return blocks[-1].norm1, vit_reshape(model)
    info = [f for f in (getattr(model, "feature_info", None) or []) if isinstance(f, dict) and f.get("module")]
    if not info:
        raise ValueError(f"no Grad-CAM layer known for {type(model).__name__} (neither a timm CNN with "
                         "feature_info nor a ViT); give gradcam(..., layer=)")
    fits = [f for f in info if image_size is None or image_size // int(f.get("reduction", 1)) >= min_cells]
    chosen = (fits or info)[-1]
    if chosen is info[-1] and isinstance(getattr(model, "bn2", None), nn.Module) and hasattr(model, "conv_head"):
        return model.bn2, None
    return model.get_submodule(chosen["module"]), None


@contextmanager
def _untouched(model: nn.Module):
    """Run the body and put back what Grad-CAM changes: each module's train/eval mode, each parameter's
    ``requires_grad`` and ``.grad``. Inside, no parameter requires a gradient (the input does)."""
    modes = {m: m.training for m in model.modules()}
    params = list(model.parameters())
    state = [(p.requires_grad, p.grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, (needs, grad) in zip(params, state):
            p.requires_grad_(needs)
            p.grad = grad
        for m, training in modes.items():
            m.training = training


def gradcam(model: nn.Module, images: torch.Tensor, targets: Sequence[int], *, layer: nn.Module | None = None,
            reshape: Callable | None = None, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1] of ``images (B, 3, H, W)`` (as the model takes them, on any
    device: moved to the model's) for the class ``targets[i]`` of each image (see the module docstring).

    ``layer``/``reshape``: default :func:`cam_target_layer` at the images' size. Evaluated in eval mode,
    with gradients on even under ``torch.no_grad``/``inference_mode``; the model is left as it was (modes,
    ``requires_grad``, gradients; the hooks removed).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    if layer is None:
        layer, reshape = cam_target_layer(model, image_size=min(images.shape[-2:]))
    if not len(images):
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    device = next(model.parameters()).device
    maps = []
    with torch.inference_mode(False), torch.enable_grad(), _untouched(model):
        with GradCAM(model, [layer], reshape_transform=reshape) as cam:
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].detach().clone().to(device).requires_grad_(True)
                maps.append(cam(x, [ClassifierOutputTarget(int(t)) for t in targets[start:start + batch_size]]))
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32)


__all__ = ["MIN_CELLS", "cam_target_layer", "gradcam", "vit_reshape"]
