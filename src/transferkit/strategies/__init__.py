"""Fine-tuning recipes: which parts of a pretrained model train, and how fast.

A strategy turns a model with a fresh head into a :class:`Plan`: the optimizer
groups with their LR scales, the modules that stay frozen (kept in eval mode),
and whether the head can be trained on cached features.

=============  ==============================================================
linear-probe   backbone frozen; the head is trained on features computed once
               (no augmentation) — the fast path.
freeze         backbone and its BatchNorm frozen; the head trains on augmented
               images (the backbone runs every step).
full           everything trains; backbone LR = head LR × ``backbone_lr_mult``
               (the simplest discriminative learning rate, Q2).
auto           :func:`resolve_auto` — a rule on the number of training images
               per class (see its docstring for the measurements behind it).
=============  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from transferkit.errors import ConfigError
from transferkit.surgery.freezing import set_trainable

STRATEGIES = ("auto", "linear-probe", "freeze", "full")

#: ``auto`` picks ``linear-probe`` below this many training images per class.
AUTO_PROBE_BELOW = 50


@dataclass
class Plan:
    """What the engine needs to train a model under one strategy."""

    name: str
    groups: list[tuple[str, list[tuple[str, nn.Parameter]], float]]
    frozen_modules: list[nn.Module] = field(default_factory=list)
    cached_features: bool = False


def split_head(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(backbone, head) named parameters of a timm model; head = ``get_classifier()``."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    backbone, head = [], []
    for name, p in model.named_parameters():
        (head if id(p) in head_ids else backbone).append((name, p))
    return backbone, head


def frozen_subtrees(model: nn.Module) -> list[nn.Module]:
    """The largest sub-modules whose parameters are all frozen.

    Putting these in eval mode freezes their BatchNorm statistics, dropout and
    stochastic depth, while parameter-free modules next to the trainable head
    (pooling, head dropout) keep following ``model.train()``.
    """
    out: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        params = list(m.parameters())
        if not params:
            return
        if not any(p.requires_grad for p in params):
            out.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return out


def resolve_auto(train_per_class: float) -> str:
    """``auto``: ``linear-probe`` when there are fewer than :data:`AUTO_PROBE_BELOW`
    training images per class, ``full`` otherwise.

    With few labels a fine-tuned backbone overfits and a probe on frozen ImageNet
    features wins (Fashion-MNIST, 10 per class: probe 0.73 vs full 0.58); from
    ~50 per class full fine-tuning catches up and wins on distant domains
    (digits: see benchmarks/RESULTS.md).
    """
    return "linear-probe" if train_per_class < AUTO_PROBE_BELOW else "full"


def make_plan(name: str, model: nn.Module, backbone_lr_mult: float = 0.1) -> Plan:
    """Set trainability on ``model`` for strategy ``name`` and return its plan."""
    backbone, head = split_head(model)
    if name in ("linear-probe", "freeze"):
        set_trainable(model, False)
        for _, p in head:
            p.requires_grad_(True)
        return Plan(name, [("head", head, 1.0)], frozen_subtrees(model),
                    cached_features=name == "linear-probe")
    if name == "full":
        set_trainable(model, True)
        return Plan(name, [("backbone", backbone, backbone_lr_mult), ("head", head, 1.0)])
    raise ConfigError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")
