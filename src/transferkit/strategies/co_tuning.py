"""``co-tuning``: ``full`` plus the pretrained source head kept as a second task (You et al. 2020).

Before training, the source head's mean softmax over each target class's training images gives the
category relationship ``p(y_source | y_target)``; during training the source head (it trains too)
learns those soft source labels with weight ``--co-tuning-weight`` (λ = 2.3, tllib's default; not
tuned here). The block is :class:`transferkit.regularizers.CoTuning`, added as the regulariser
``co-tuning`` (it checks that the weights have a source head). Only the target
head is saved.
"""

from transferkit.strategies.base import Defaults, Recipe, backbone_plan, register


class CoTuningRecipe(Recipe):
    def plan(self, net, cfg, freeze_bn):
        return backbone_plan(self.name, net, cfg, freeze_bn)


RECIPE = register(CoTuningRecipe(
    name="co-tuning", summary="full, plus the source head trained on each class's learned source-class "
                              "relationship (Co-Tuning); --co-tuning-weight",
    defaults=Defaults(image_size=96, epochs=6, lr=1e-2), implies=("co-tuning",), frozen_bn_lr_scale=True))
