"""``l2sp``: ``full`` + the L2-SP regulariser (Li et al. 2018, :mod:`transferkit.regularizers.l2sp`).

No weight decay on the backbone groups: L2-SP pulls the backbone towards its pretrained
weights, and decay towards zero would pull it elsewhere. The head keeps ``weight_decay``.
"""

from transferkit.strategies.base import Defaults, Recipe, backbone_plan, register


class L2SPRecipe(Recipe):
    def plan(self, net, cfg, freeze_bn):
        return backbone_plan(self.name, net, cfg, freeze_bn, no_backbone_decay=True)


RECIPE = register(L2SPRecipe(
    name="l2sp", summary="everything, pulled towards the pretrained weights (L2-SP); no backbone weight decay",
    defaults=Defaults(image_size=64, epochs=6, lr=1e-2), implies=("l2sp",), frozen_bn_lr_scale=True))
