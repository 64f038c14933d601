"""``lp-ft`` (Kumar et al., ICLR 2022): fit the head by a converged linear probe on cached
features first, then fine-tune everything as ``full``.

With a random head the first steps of fine-tuning push large, noisy gradients into the
backbone; a head that already fits keeps the features closer to the pretrained ones.
Defaults (benchmarks/RESULTS.md, digits, 5 seeds, chosen on validation): 96 px, 6 epochs,
head LR 3e-3 (backbone × 0.1).
"""

from transferkit.strategies.base import Defaults, Recipe, backbone_plan, register


class LPFT(Recipe):
    def plan(self, net, cfg, freeze_bn):
        return backbone_plan(self.name, net, cfg, freeze_bn)


RECIPE = register(LPFT(
    name="lp-ft", summary="a converged linear probe fits the head, then the backbone fine-tunes (Kumar et al. 2022)",
    defaults=Defaults(image_size=96, epochs=6, lr=3e-3), probe_init=True))
