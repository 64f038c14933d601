"""The recipe contract: what every way to train declares, and the hooks the engine calls.

A recipe is one object in its own module under ``strategies/``, registered with
:func:`register`. Everything the engine, the CLI, ``compare``, the option checks and
the README need to know about it is here — adding a recipe touches its module and its
test only.

Declared (data):

* ``name``, ``summary`` (one line for ``--help`` and the README table);
* ``defaults`` — measured defaults (image size, epochs, head LR), benchmarks/RESULTS.md;
* ``trains`` — what trains: ``head``, ``all`` or ``lora+head``;
* ``cached_features`` — nothing before the head trains and nothing is augmented: the
  head is fitted once, to convergence, on features computed once (no Lightning loop);
* ``probe_init`` — the head is first fitted by the converged linear probe (LP-FT);
* ``implies`` — the regularisers it always adds (``l2sp``); ``--reg`` adds one more on any recipe
  that trains the backbone (the regulariser's ``needs_backbone`` trait);
* ``options`` — its own options (a pydantic model; ``--<name>-<option>`` flags);
* ``in_compare`` — part of ``compare``'s default line-up.

Hooks (called by the engine, in this order; each has a default):

0. ``check_model(model, cfg)`` — refuse options that do not fit the model, before any file is written;
1. ``prepare(model, cfg) -> net`` — structural change before training (LoRA wrapping);
2. ``plan(net, cfg, freeze_bn) -> Plan`` — trainability and optimizer groups;
3. ``callbacks(cfg) -> list`` — Lightning callbacks that act over training time;
4. ``finish(net, model, out) -> (model, metrics)`` — back to a plain timm model (LoRA merge),
   saving any recipe artefact under ``out`` (the run directory; ``None`` on non-zero ranks).

Module imports here stay light (no torch at import): the CLI lists recipes instantly,
and the hooks import what they use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from transferkit.errors import ConfigError
from transferkit.registry import REGULARIZERS, STRATEGIES, Options

if TYPE_CHECKING:
    from torch import nn

NamedParams = list  # list[tuple[str, nn.Parameter]]


@dataclass
class Plan:
    """What the engine needs to train a network under one recipe."""

    name: str
    #: (group name, named parameters, LR scale), stem → head; all in the optimizer from step 0.
    groups: list[tuple[str, NamedParams, float]]
    frozen_modules: list = field(default_factory=list)
    cached_features: bool = False
    #: BatchNorm layers frozen by the BN policy: they stay frozen when groups unfreeze.
    frozen_bn: list = field(default_factory=list)
    #: Names of groups trained without weight decay.
    no_weight_decay: tuple[str, ...] = ()


@dataclass(frozen=True)
class Defaults:
    """A recipe's measured defaults (``None`` in the config means: use these)."""

    image_size: int
    epochs: int
    lr: float
    #: bottom layer groups kept as pretrained (``--freeze-groups``)
    freeze_groups: int = 0


#: the training loop's options (mixing, class weights, sampler, early stopping) and their values when off:
#: a recipe without a loop (cached features) refuses any other value, and compare runs it with these
LOOP_OPTIONS_OFF = {"mixup": 0.0, "cutmix": 0.0, "class_weights": "none", "sampler": "shuffle", "early_stopping": None}


@dataclass(frozen=True)
class Recipe:
    """A registered way to train; see the module docstring for the contract."""

    name: str
    summary: str
    defaults: Defaults
    trains: str = "all"
    cached_features: bool = False
    probe_init: bool = False
    #: regularisers (:data:`transferkit.registry.REGULARIZERS`) the recipe always adds (``l2sp``: L2-SP)
    implies: tuple[str, ...] = ()
    in_compare: bool = True
    #: the recipe's own options (a pydantic model; flags ``--<name>-<option>``)
    options: type[Options] | None = None
    #: With frozen BatchNorm the default LR is scaled by ``FROZEN_BN_LR_SCALE`` (measured: it collapses otherwise).
    frozen_bn_lr_scale: bool = False

    FROZEN_BN_LR_SCALE: ClassVar[float] = 0.1

    @property
    def trains_backbone(self) -> bool:
        return self.trains == "all"

    def check(self, cfg: Any, why: str = "") -> None:
        """Refuse options this recipe cannot honour, in one line."""
        why = f" ({why})" if why else ""
        reg = getattr(cfg, "reg", "none")
        if reg != "none" and REGULARIZERS[reg].traits.get("needs_backbone", True) and not self.trains_backbone:
            raise ConfigError(f"--reg {reg} does not apply to strategy {self.name}{why}: it leaves the backbone "
                              f"frozen; use --strategy {' or '.join(backbone_recipes())}")
        for name in self.regularizers(cfg):
            entry = REGULARIZERS[name]
            if entry.check is not None:
                entry.check(SimpleNamespace(cfg=cfg, recipe=self))
        if getattr(cfg, "freeze_groups", 0) and not self.trains_backbone:
            raise ConfigError(f"--freeze-groups applies to strategies that train the backbone, not {self.name}{why}")
        if self.cached_features:
            self._check_loop_options(cfg, why)
        if (getattr(cfg, "wise_alpha", None) is not None or getattr(cfg, "wise_curve", None)) and not self.trains_backbone:
            raise ConfigError(f"--wise-alpha/--wise-curve interpolate a fine-tuned backbone; strategy {self.name}"
                              f"{why} leaves it frozen — use one of: {', '.join(backbone_recipes())}")

    def _check_loop_options(self, cfg: Any, why: str) -> None:
        """Refuse the options of the training loop (:data:`LOOP_OPTIONS_OFF` set to anything else): a
        cached-feature recipe fits its head to convergence without one."""
        given = [f"--{name.replace('_', '-')}" + (f" {value}" if isinstance(value, str) else "")
                 for name, off in LOOP_OPTIONS_OFF.items() if (value := getattr(cfg, name, off)) != off]
        if given:
            raise ConfigError(f"{', '.join(given)}: options of the training loop, which strategy {self.name}{why} "
                              f"does not run (it fits its head on cached features) — use one of: "
                              f"{', '.join(backbone_recipes())}")

    def regularizers(self, cfg: Any) -> list[str]:
        """The regularisers a run of this recipe adds: its own, then ``--reg`` (once)."""
        chosen = [*self.implies, *([cfg.reg] if getattr(cfg, "reg", "none") != "none" else [])]
        return list(dict.fromkeys(chosen))

    def resolve_options(self, cfg: Any) -> Options | None:
        """This recipe's options from the run's ``options`` mapping (validated; defaults filled in)."""
        from transferkit.registry import options_of

        return options_of(self, cfg)

    def default_lr(self, frozen_bn: bool) -> float:
        return self.defaults.lr * (self.FROZEN_BN_LR_SCALE if frozen_bn and self.frozen_bn_lr_scale else 1.0)

    # hooks ---------------------------------------------------------------------------
    def check_model(self, model: nn.Module, cfg: Any) -> None:
        """Refuse, before anything is written, options that do not fit ``model`` (default: none)."""
    def prepare(self, model: nn.Module, cfg: Any) -> nn.Module:
        """The network to train (default: ``model`` itself)."""
        return model

    def plan(self, net: nn.Module, cfg: Any, freeze_bn: bool) -> Plan:
        raise NotImplementedError

    def callbacks(self, cfg: Any) -> list:
        return []

    def finish(self, net: nn.Module, model: nn.Module, out: Any = None) -> tuple[nn.Module, dict]:
        """The plain timm model to save and any recipe metrics (default: ``model``, none)."""
        return model, {}


#: the strategies family (:mod:`transferkit.registry`): name -> :class:`Recipe`
REGISTRY = STRATEGIES


def register(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Register ``recipe`` (from its own module, or at run time from Python: the config and the
    commands accept it from then on)."""
    return STRATEGIES.register(recipe, replace=replace)


def get_recipe(name: str) -> Recipe:
    return STRATEGIES[name]


def backbone_recipes() -> list[str]:
    return [r.name for r in REGISTRY.values() if r.trains_backbone]


def freeze_bottom(model: nn.Module, n: int) -> None:
    """Keep the bottom ``n`` layer groups (stem first) as pretrained: no gradient, so backward
    stops above them (the cheapest part of a step to drop on a CPU: the high-resolution layers)."""
    if not n:
        return
    from transferkit.backbones.groups import layer_groups

    groups = layer_groups(model)
    if n >= len(groups):
        raise ConfigError(f"--freeze-groups {n} leaves nothing to train: {type(model).__name__} has "
                          f"{len(groups)} layer groups (see `transferkit groups`)")
    for _, params in groups[:n]:
        for _, p in params:
            p.requires_grad_(False)


# plans shared by several recipes ------------------------------------------------------
def head_only_plan(name: str, model: nn.Module, cached_features: bool) -> Plan:
    """Backbone (BatchNorm included) frozen; only ``get_classifier()`` trains."""
    from transferkit.surgery.freezing import frozen_subtrees, set_trainable
    from transferkit.surgery.heads import split_head

    set_trainable(model, False)
    _, head = split_head(model)
    for _, p in head:
        p.requires_grad_(True)
    return Plan(name, [("head", head, 1.0)], frozen_subtrees(model), cached_features=cached_features)


def backbone_plan(name: str, model: nn.Module, cfg: Any, freeze_bn: bool, *, per_layer: bool = False,
                  no_backbone_decay: bool = False, freeze_groups: int | None = None) -> Plan:
    """Everything trains: backbone LR = head LR × ``cfg.backbone_lr_mult``, or layer group i from
    the top × ``cfg.lr_decay``^i when set; ``per_layer`` keeps one group per layer group; the
    bottom ``freeze_groups`` (default ``cfg.freeze_groups``) layer groups stay frozen."""
    if freeze_groups is None:
        freeze_groups = getattr(cfg, "freeze_groups", None) or 0
    from transferkit.backbones.groups import layer_groups
    from transferkit.optim import layer_lr_decay
    from transferkit.surgery.freezing import freeze_batchnorm, frozen_subtrees, set_trainable
    from transferkit.surgery.heads import split_head

    set_trainable(model, True)
    if cfg.lr_decay is not None:
        groups = layer_lr_decay(layer_groups(model), cfg.lr_decay)
    elif per_layer:
        groups = [(g, ps, 1.0 if g == "head" else cfg.backbone_lr_mult) for g, ps in layer_groups(model)]
    else:
        backbone, head = split_head(model)
        groups = [("backbone", backbone, cfg.backbone_lr_mult), ("head", head, 1.0)]
    freeze_bottom(model, freeze_groups)
    frozen_bn = freeze_batchnorm(model) if freeze_bn else []
    no_wd = tuple(g for g, _, _ in groups if g != "head") if no_backbone_decay else ()
    return Plan(name, groups, frozen_subtrees(model), frozen_bn=frozen_bn, no_weight_decay=no_wd)
