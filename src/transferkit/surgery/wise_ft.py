"""WiSE-FT: weight-space ensembling of the pretrained and fine-tuned models (Q4).

Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022): the
fine-tuned backbone drifts from the pretrained one and forgets; linearly
interpolating the two in weight space,

    θ_α = (1 − α) · θ_pretrained + α · θ_fine-tuned,   α ∈ [0, 1],

recovers much of the pretrained behaviour at little cost in target accuracy.
α = 1 is the fine-tuned model, α = 0 the pretrained backbone. The new head has no
pretrained counterpart, so it always keeps its fine-tuned weights; integer
buffers (BatchNorm's ``num_batches_tracked``) are taken from the fine-tuned model.
"""

from __future__ import annotations

import torch

from transferkit.errors import ConfigError


def wise_ft(pretrained: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float,
            keep: set[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Interpolated state dict ``(1 − alpha)·pretrained + alpha·finetuned``.

    ``keep``: keys taken from ``finetuned`` as they are (the new head).
    Both state dicts must have the same keys and shapes outside ``keep``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--wise-alpha must be in [0, 1], got {alpha}")
    out = {}
    for key, ft in finetuned.items():
        if key in keep or not ft.is_floating_point():
            out[key] = ft.clone()
            continue
        pre = pretrained.get(key)
        if pre is None or pre.shape != ft.shape:
            raise ConfigError(f"WiSE-FT: pretrained weights lack a tensor of shape {tuple(ft.shape)} "
                              f"for '{key}'; only weights of the same architecture interpolate")
        out[key] = torch.lerp(pre.to(ft.dtype), ft, alpha)
    return out
