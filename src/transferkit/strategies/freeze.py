"""``freeze``: backbone and its BatchNorm frozen; the head trains on augmented images.

Unlike ``linear-probe`` the backbone runs on every step (random augmentation changes its
inputs), so the head sees more varied features at the cost of a forward pass per step.
"""

from transferkit.strategies.base import Defaults, Recipe, head_only_plan, register


class Freeze(Recipe):
    def plan(self, net, cfg, freeze_bn):
        return head_only_plan(self.name, net, cached_features=False)


RECIPE = register(Freeze(
    name="freeze", summary="the head, on augmented images; backbone and BatchNorm frozen",
    defaults=Defaults(image_size=96, epochs=10, lr=1e-3), trains="head"))
