"""Input-size changes (Q13).

CNNs end in global average pooling, so they accept any resolution with no change
(a ``H×W`` input gives a ``≈H/32 × W/32`` feature map that is pooled to ``(B, D)``).
Vision transformers learn one absolute position embedding per patch: a model built
for ``img_size=S`` with patch size ``P`` has ``(S/P)²`` patch positions (plus
``num_prefix_tokens`` class/register tokens). Weights trained at another size are
adapted by resampling the patch-position grid, as timm does for its own checkpoints.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn


def resize_pos_embed(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resample ``pos_embed`` in ``state_dict`` to ``model``'s patch grid; returns a new dict.

    ``pos_embed`` of shape ``(1, T + g_old², C)`` becomes ``(1, T + g_new², C)``, where
    ``T`` prefix tokens (class, registers) are kept as they are and the ``g_old × g_old``
    grid is bicubically interpolated (antialiased) to ``model.patch_embed.grid_size``
    with ``timm.layers.resample_abs_pos_embed``. Models whose embedding has no prefix
    positions (``no_embed_class``) use ``T = 0``. Other entries, and models without an
    absolute ``pos_embed`` (CNNs), are returned unchanged.
    """
    own = getattr(model, "pos_embed", None)
    posemb = state_dict.get("pos_embed")
    if not isinstance(own, torch.Tensor) or posemb is None or posemb.shape == own.shape or posemb.ndim != 3:
        return dict(state_dict)
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    resized = resample_abs_pos_embed(posemb, new_size=list(model.patch_embed.grid_size), num_prefix_tokens=prefix)
    return {**state_dict, "pos_embed": resized}
