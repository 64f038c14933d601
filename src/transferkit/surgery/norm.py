"""BatchNorm -> GroupNorm conversion (Q7).

BatchNorm normalises with batch statistics while training, which become noisy
with a few images per device; GroupNorm (Wu & He, 2018) normalises each sample
over groups of channels, independently of the batch size:

    y = γ · (x - μ_g(x)) / sqrt(σ²_g(x) + ε) + β,   x: (B, C, H, W),

with μ_g, σ²_g the mean and variance of one sample's channels in group g over
(C/G, H, W). The conversion **discards the pretrained running statistics**
(``running_mean``/``running_var`` have no GroupNorm counterpart), so the converted
network computes different features until it is fine-tuned; γ and β are copied as
the starting point. For a small batch with pretrained weights, freezing BatchNorm
(``--bn freeze``) keeps those statistics and is usually the better first choice.
"""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d, GroupNormAct
from torch import nn

#: Target number of groups (the GroupNorm paper's default) ...
MAX_GROUPS = 32
#: ... with at least this many channels per group (1 channel per group is InstanceNorm,
#: whose statistics over a few late-layer pixels are degenerate).
MIN_GROUP_CHANNELS = 8


def num_groups(channels: int, max_groups: int = MAX_GROUPS, min_channels: int = MIN_GROUP_CHANNELS) -> int:
    """Largest G dividing ``channels`` with G <= ``max_groups`` and channels / G >= ``min_channels`` (at least 1)."""
    limit = max(1, min(max_groups, channels // min_channels))
    return next(g for g in range(limit, 0, -1) if channels % g == 0)


def _group_norm(bn: nn.BatchNorm2d) -> nn.GroupNorm:
    c, device = bn.num_features, next(iter([*bn.parameters(), *bn.buffers()])).device
    if isinstance(bn, BatchNormAct2d):  # keep timm's fused activation (and drop) after the norm
        gn = GroupNormAct(c, num_groups(c), eps=bn.eps, affine=bn.affine, apply_act=False, device=device)
        gn.act, gn.drop = bn.act, bn.drop
    else:
        gn = nn.GroupNorm(num_groups(c), c, eps=bn.eps, affine=bn.affine, device=device)
    if bn.affine:
        with torch.no_grad():
            gn.weight.copy_(bn.weight)
            gn.bias.copy_(bn.bias)
    return gn


def batchnorm_to_groupnorm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` (timm's ``BatchNormAct2d`` included) by GroupNorm, in place.

    ``BatchNormAct2d`` becomes timm's ``GroupNormAct`` with the same activation
    and drop modules; plain BatchNorm2d becomes ``nn.GroupNorm``. G is
    :func:`num_groups` of the channel count. Returns ``model``.
    """
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, _group_norm(child))
        else:
            batchnorm_to_groupnorm(child)
    return model
