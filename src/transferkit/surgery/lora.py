"""LoRA through PEFT, and merging for export (Q5).

LoRA keeps a pretrained weight ``W`` frozen and learns a low-rank update:
``W' = W + (alpha / r) · B·A`` with ``A ∈ R^{r×in}``, ``B ∈ R^{out×r}`` (``B`` starts at
zero, so training starts from the pretrained model). For a convolution, ``A`` is a
convolution with ``r`` output channels and ``B`` a 1x1 convolution.

* :func:`lora_targets` — the default layers to adapt, found generically: for a
  ViT-like model (it has ``qkv`` Linear layers) the attention ``qkv`` and ``proj``
  Linear layers; otherwise every 1x1, ungrouped ``Conv2d`` (pointwise convolutions,
  which hold most of a modern CNN's weights). The classifier is never a target.
* :func:`apply_lora` — wraps a timm model in a ``peft.PeftModel``: only the LoRA
  matrices and the new head (``modules_to_save``, trained in full) require grad.
* :func:`merge_lora` — folds ``B·A`` into ``W`` and returns the plain timm model,
  whose ``state_dict`` loads into ``timm.create_model`` with no PEFT.
"""

from __future__ import annotations

from collections.abc import Sequence

import peft
from torch import nn

from transferkit.errors import ModelError


def classifier_name(model: nn.Module) -> str:
    """Module name of the classifier (``pretrained_cfg['classifier']``, else found by ``get_classifier()``)."""
    names = dict(model.named_modules())
    cfg_name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(cfg_name, str) and cfg_name in names:
        return cfg_name
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        head = head[0] if isinstance(head, tuple) else head
        for name, m in names.items():
            if m is head and name:
                return name
    raise ModelError(f"cannot find the classifier of {type(model).__name__}; use a timm model")


def lora_targets(model: nn.Module) -> list[str]:
    """Default LoRA target module names (full names) of a timm model, head excluded."""
    head = classifier_name(model)
    modules = [(n, m) for n, m in model.named_modules()
               if n and n != head and not n.startswith(head + ".")]
    linear = [(n, m) for n, m in modules if isinstance(m, nn.Linear)]
    if any(n.rsplit(".", 1)[-1] == "qkv" for n, _ in linear):  # ViT-like: attention projections
        targets = [n for n, _ in linear if n.rsplit(".", 1)[-1] in ("qkv", "proj")]
    else:  # CNN: pointwise convolutions
        targets = [n for n, m in modules if isinstance(m, nn.Conv2d)
                   and tuple(m.kernel_size) == (1, 1) and m.groups == 1]
    if not targets:
        raise ModelError(f"no default LoRA targets in {type(model).__name__} (no attention qkv/proj "
                         "Linear layers, no 1x1 convolutions); pass --lora-targets")
    return targets


def apply_lora(model: nn.Module, rank: int = 8, alpha: float | None = None,
               targets: str | Sequence[str] | None = None, dropout: float = 0.0) -> peft.PeftModel:
    """Wrap ``model`` (a timm model with its new head) for LoRA training.

    ``alpha`` defaults to ``2 * rank`` (scale ``alpha / rank = 2``); ``targets`` are module
    names or name suffixes (PEFT matching; a comma-separated string is split), default
    :func:`lora_targets`. The classifier is
    in ``modules_to_save``: it trains in full and is saved with the adapter.
    """
    if rank < 1:
        raise ModelError(f"LoRA rank must be >= 1, got {rank}")
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = list(targets) if targets else lora_targets(model)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha,
                             target_modules=targets, lora_dropout=dropout, bias="none",
                             modules_to_save=[classifier_name(model)])
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:
        raise ModelError(f"cannot apply LoRA to {targets}: {e}") from None


def lora_parameters(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Named LoRA matrices of a wrapped model."""
    return [(n, p) for n, p in net.named_parameters() if "lora_" in n]


def merge_lora(peft_model: peft.PeftModel) -> nn.Module:
    """Fold the LoRA updates into the weights; returns the plain timm model (PEFT layers removed)."""
    return peft_model.merge_and_unload()


def check_targets(model: nn.Module, targets: str | Sequence[str] | None) -> None:
    """Every target must name a module of ``model`` (by full name or name suffix, as PEFT matches)."""
    if not targets:
        return
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ModelError(f"--lora-targets {', '.join(missing)} match no module of {type(model).__name__} "
                         "(module names or name suffixes, e.g. conv_pw or qkv,proj)")
