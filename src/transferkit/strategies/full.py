"""``full``: everything trains; backbone LR = head LR × ``--backbone-lr-mult`` (the simplest
discriminative learning rate), or layer group i from the top at head LR × ``--lr-decay``^i.

Defaults chosen on validation accuracy over 5 seeds of digits (benchmarks/RESULTS.md): 96 px,
6 epochs, head LR 1e-2 (64 px: 0.953 val, 96 px: 0.983).
"""

from transferkit.strategies.base import Defaults, Recipe, backbone_plan, register


class Full(Recipe):
    def plan(self, net, cfg, freeze_bn):
        return backbone_plan(self.name, net, cfg, freeze_bn)


RECIPE = register(Full(
    name="full", summary="everything; backbone LR = head LR x --backbone-lr-mult",
    defaults=Defaults(image_size=96, epochs=6, lr=1e-2), frozen_bn_lr_scale=True))
