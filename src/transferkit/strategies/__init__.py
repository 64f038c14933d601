"""Fine-tuning recipes: which parts of a pretrained model train, and how fast.

A strategy turns a model with a fresh head into a :class:`Plan`: the optimizer
groups with their LR scales, the modules that stay frozen (kept in eval mode),
and whether the head can be trained on cached features. With ``freeze_bn`` every
BatchNorm layer is frozen too (eval mode, affine frozen; the ``--bn`` policy, Q7).

=============  ==============================================================
linear-probe   backbone frozen; the head is trained on features computed once
               (no augmentation) — the fast path.
freeze         backbone and its BatchNorm frozen; the head trains on augmented
               images (the backbone runs every step).
full           everything trains; backbone LR = head LR × ``backbone_lr_mult``
               (the simplest discriminative learning rate, Q2), or, when
               ``lr_decay`` D is set, layer group i from the top (head = 0)
               trains at head LR × D^i — ``lr_decay`` takes precedence and
               ``backbone_lr_mult`` is then ignored.
gradual        ULMFiT's gradual unfreezing (Q17): only the head trains at first;
               :class:`~transferkit.engine.gradual.GradualUnfreezing` unfreezes
               one more layer group, from the top down, every K epochs. Groups
               keep their LR scales (``lr_decay``, else ``backbone_lr_mult``).
l2sp           ``full`` + the L2-SP regulariser (Q19, :mod:`transferkit.regularizers.l2sp`),
               with no weight decay on the backbone groups: L2-SP pulls the
               backbone towards its pretrained weights, and decay towards zero
               would pull it elsewhere. The head keeps ``weight_decay``.
lp-ft          LP-FT (Kumar et al., ICLR 2022): a linear probe on cached features
               first initialises the head (:func:`transferkit.strategies.lp_ft.fit_linear_probe`),
               then everything trains as in ``full`` — a good head from step 0
               distorts the pretrained features less than a random one.
lora           LoRA (Q5, :mod:`transferkit.surgery.lora`): ``model`` is the
               ``PeftModel`` from :func:`~transferkit.surgery.lora.apply_lora`;
               only the low-rank matrices (group ``lora``) and the new head
               (group ``head``, PEFT ``modules_to_save``) train, both at the
               head LR; everything else, BatchNorm included, is frozen.
auto           :func:`resolve_auto` — a rule on the number of training images
               per class (see its docstring for the measurements behind it).
=============  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from transferkit.backbones.groups import layer_groups
from transferkit.errors import ConfigError
from transferkit.optim import layer_lr_decay
from transferkit.surgery.freezing import freeze_batchnorm, set_trainable
from transferkit.surgery.heads import head_parameters

STRATEGIES = ("auto", "linear-probe", "freeze", "full", "gradual", "l2sp", "lp-ft", "lora")

#: ``auto`` picks ``linear-probe`` below this many training images per class.
AUTO_PROBE_BELOW = 100


@dataclass
class Plan:
    """What the engine needs to train a model under one strategy."""

    name: str
    groups: list[tuple[str, list[tuple[str, nn.Parameter]], float]]
    frozen_modules: list[nn.Module] = field(default_factory=list)
    cached_features: bool = False
    #: BatchNorm layers frozen by the BN policy: they stay frozen when groups unfreeze.
    frozen_bn: list[nn.Module] = field(default_factory=list)
    #: Names of groups trained without weight decay.
    no_weight_decay: tuple[str, ...] = ()


def split_head(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(backbone, head) named parameters of a timm model; head = ``get_classifier()``."""
    head_ids = {id(p) for p in head_parameters(model)}
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

    Measured with the defaults (probe at 160 px, full at 64 px; benchmarks/RESULTS.md):
    Fashion-MNIST with 10 per class, probe 0.723 vs full 0.466; with 50 per class,
    probe 0.788 vs full 0.718; digits with 122 per class (a distant domain), probe
    0.942 vs full 0.972. The cut-off sits between 50 and 122. ``transferkit rank``
    refines the choice with how well the frozen features already separate the classes.
    """
    return "linear-probe" if train_per_class < AUTO_PROBE_BELOW else "full"


def make_plan(name: str, model: nn.Module, backbone_lr_mult: float = 0.1,
              lr_decay: float | None = None, freeze_bn: bool = False) -> Plan:
    """Set trainability on ``model`` for strategy ``name`` and return its plan.

    ``lr_decay`` and ``freeze_bn`` apply to the strategies that train the backbone
    (``full``, ``gradual``, ``l2sp``); ``linear-probe`` and ``freeze`` freeze it all.
    """
    if name == "lora":
        return _lora_plan(model)
    backbone, head = split_head(model)
    if name in ("linear-probe", "freeze"):
        set_trainable(model, False)
        for _, p in head:
            p.requires_grad_(True)
        return Plan(name, [("head", head, 1.0)], frozen_subtrees(model),
                    cached_features=name == "linear-probe")
    if name not in ("full", "gradual", "l2sp", "lp-ft"):
        raise ConfigError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")
    set_trainable(model, True)
    if lr_decay is not None:
        groups = layer_lr_decay(layer_groups(model), lr_decay)
    elif name == "gradual":
        groups = [(g, params, 1.0 if g == "head" else backbone_lr_mult) for g, params in layer_groups(model)]
    else:
        groups = [("backbone", backbone, backbone_lr_mult), ("head", head, 1.0)]
    if name == "gradual":  # only the head trains at first
        for _, params, _ in groups[:-1]:
            for _, p in params:
                p.requires_grad_(False)
    frozen_bn = freeze_batchnorm(model) if freeze_bn else []
    no_wd = tuple(g for g, _, _ in groups if g != "head") if name == "l2sp" else ()
    return Plan(name, groups, frozen_subtrees(model), frozen_bn=frozen_bn, no_weight_decay=no_wd)


def _lora_plan(net: nn.Module) -> Plan:
    """``lora``: train the LoRA matrices and the head copy PEFT keeps in ``modules_to_save``."""
    lora = [(n, p) for n, p in net.named_parameters() if "lora_" in n]
    head = [(n, p) for n, p in net.named_parameters() if ".modules_to_save." in n]
    if not lora:
        raise ConfigError("strategy 'lora' needs a model wrapped by transferkit.surgery.lora.apply_lora")
    set_trainable(net, False)
    for _, p in lora + head:
        p.requires_grad_(True)
    return Plan("lora", [("lora", lora, 1.0), ("head", head, 1.0)], frozen_subtrees(net))
