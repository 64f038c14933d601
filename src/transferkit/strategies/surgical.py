"""``surgical``: surgical fine-tuning (Lee, Chen, Tajwar, Kumar, Yao, Liang & Finn, ICLR 2023).

Tune only the block the distribution shift calls for, plus the new head; every other layer group
(:func:`~transferkit.backbones.groups.layer_groups`, as ``transferkit groups MODEL`` lists them) stays
as pretrained — no gradient, its BatchNorm statistics fixed, and no backward pass below the lowest
tuned block. The paper finds:

* input-level shift (image corruptions, a new camera): the **first** block;
* feature-level shift (new sub-populations of the same classes): a **middle** block;
* output-level shift (label shift, new classes): the **last** block(s) (the paper's "last layer").

``--surgical-block`` (option ``block``):

* ``first`` — the stem and the first block (layer groups 0 and 1), as the paper's reference code
  tunes ``conv1`` with the first block;
* ``middle`` — block ``n // 2`` of the ``n`` blocks between the stem and the head;
* ``last`` — the last block (with the final norm/conv timm folds into it);
* ``N`` — layer group ``N`` (0 = the stem); or a group's name (``layer4``, ``blocks.3``, or one part of
  a joined name such as ``blocks.6`` of ``blocks.6+conv_head+bn2``; ``head``: the head alone).

The block trains at head LR x ``--backbone-lr-mult`` (or its ``--lr-decay`` scale), the head at the
head LR. Defaults are ``full``'s until measured for this recipe (not yet: benchmarks/RESULTS.md has
no surgical run).
"""

from __future__ import annotations

from pydantic import field_validator

from transferkit.errors import ConfigError
from transferkit.registry import Options
from transferkit.strategies.base import Recipe, backbone_plan, register
from transferkit.strategies.full import RECIPE as FULL

NAMED = ("first", "middle", "last")


class SurgicalOptions(Options):
    """``block``: ``first``, ``middle``, ``last``, a layer-group index or a group name."""

    block: str = "first"

    @field_validator("block", mode="before")
    @classmethod
    def _as_text(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not value.strip():
            raise ValueError("give first, middle, last, a layer-group index or a group name")
        return value.strip() if isinstance(value, str) else value


def chosen_groups(names: list[str], block: str) -> list[str]:
    """The layer groups (of ``names``, stem ... head as :func:`layer_groups` orders them) that
    ``block`` selects, the head not added; one ConfigError line naming the groups if none."""
    body = [n for n in names if n != "head"]
    blocks = body[1:] if len(body) > 1 else body      # group 0 is the stem
    if block in NAMED and body:
        return body[:2] if block == "first" else [blocks[-1] if block == "last" else blocks[len(blocks) // 2]]
    if block.isdigit() and int(block) < len(names):
        return [names[int(block)]]
    matches = [n for n in names if block == n or block in n.split("+")]
    if len(matches) == 1:
        return matches
    raise ConfigError(f"--surgical-block {block}: not a layer group of this model; choose first, middle, last, "
                      f"an index 0-{len(names) - 1} or one of: {', '.join(names)}")


class Surgical(Recipe):
    @property
    def trains_backbone(self) -> bool:
        return True   # part of it: --reg and WiSE-FT apply to the tuned block

    def check(self, cfg, why=""):
        super().check(cfg, why)
        if getattr(cfg, "freeze_groups", None):
            raise ConfigError("--freeze-groups and --strategy surgical contradict each other: surgical freezes "
                              "every group but --surgical-block's")
        self.resolve_options(cfg)

    def blocks(self, model, cfg) -> list[str]:
        """The layer groups that train besides the head."""
        from transferkit.backbones.groups import layer_groups

        opts = self.resolve_options(cfg)
        return chosen_groups([g for g, _ in layer_groups(model)], opts.block)

    def check_model(self, model, cfg):
        self.blocks(model, cfg)

    def plan(self, net, cfg, freeze_bn):
        from transferkit.surgery.freezing import frozen_subtrees

        keep = set(self.blocks(net, cfg)) | {"head"}
        plan = backbone_plan(self.name, net, cfg, freeze_bn, per_layer=True, freeze_groups=0)
        for group, params, _ in plan.groups:
            if group not in keep:
                for _, p in params:
                    p.requires_grad_(False)
        plan.groups = [g for g in plan.groups if g[0] in keep]
        plan.frozen_modules = frozen_subtrees(net)
        return plan


RECIPE = register(Surgical(
    name="surgical", summary="one block (--surgical-block first, middle, last or a layer group) and the head; "
                             "the rest frozen (Lee et al. 2023)",
    defaults=FULL.defaults, trains="block+head", options=SurgicalOptions,
    in_compare=False, frozen_bn_lr_scale=True))
