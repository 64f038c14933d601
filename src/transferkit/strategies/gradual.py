"""``gradual``: ULMFiT's gradual unfreezing (Howard & Ruder 2018).

Only the head trains at first; :class:`~transferkit.strategies.callbacks.GradualUnfreezing`
unfreezes one more layer group, from the top down, every ``--unfreeze-every`` epochs.
Groups keep their LR scales (``--lr-decay``, else ``--backbone-lr-mult``).
"""

from transferkit.strategies.base import Defaults, Recipe, backbone_plan, register


class Gradual(Recipe):
    def check(self, cfg, why=""):
        super().check(cfg, why)
        if cfg.freeze_groups:
            from transferkit.errors import ConfigError

            raise ConfigError("--freeze-groups and gradual unfreezing contradict each other; use --strategy full")

    def plan(self, net, cfg, freeze_bn):
        from transferkit.surgery.freezing import frozen_subtrees

        plan = backbone_plan(self.name, net, cfg, freeze_bn, per_layer=True)
        for _, params, _ in plan.groups[:-1]:  # only the head trains at first
            for _, p in params:
                p.requires_grad_(False)
        plan.frozen_modules = frozen_subtrees(net)
        return plan

    def callbacks(self, cfg):
        from transferkit.strategies.callbacks import GradualUnfreezing

        return [GradualUnfreezing(cfg.unfreeze_every)]


RECIPE = register(Gradual(
    name="gradual", summary="the head, then one more layer group top-down every --unfreeze-every epochs (ULMFiT)",
    defaults=Defaults(image_size=64, epochs=6, lr=1e-2), frozen_bn_lr_scale=True))
