"""``none``: the trained model as it is -- the baseline every test-time adaptation method is compared with."""

from __future__ import annotations

import torch
from torch import nn

from transferkit.registry import TTA, Method


class NoAdapt(nn.Module):
    """The model unchanged, in eval mode (source BatchNorm statistics, no update). ``forward(x) -> logits``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


METHOD = TTA.register(Method(
    name="none", summary="the trained model as it is (source BatchNorm statistics, no update)",
    build=lambda ctx: NoAdapt(ctx.model), defaults={"bn_prior": 0.0}))
