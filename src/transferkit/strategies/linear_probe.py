"""``linear-probe``: the backbone stays as pretrained; a linear head is fitted on its features.

Features are computed once (no augmentation, ``inference_mode``, cached on disk) and a
multinomial logistic regression is fitted to convergence on them (full-batch L-BFGS,
regularisation chosen on the validation split; :mod:`transferkit.evaluation.linear_probe`),
independent of ``--epochs``. A frozen backbone runs once, so it affords a larger input: 224 px
(ImageNet's own) was chosen on validation accuracy (Fashion-MNIST, 10 per class, 3 seeds: 0.787
at 224 px, 0.737 at 160, 0.778 at 288; benchmarks/RESULTS.md).
"""

from transferkit.strategies.base import Defaults, Recipe, head_only_plan, register


class LinearProbe(Recipe):
    def plan(self, net, cfg, freeze_bn):
        return head_only_plan(self.name, net, cached_features=True)


RECIPE = register(LinearProbe(
    name="linear-probe", summary="the head, fitted to convergence on features cached once",
    defaults=Defaults(image_size=224, epochs=1, lr=1e-3), trains="head", cached_features=True))
