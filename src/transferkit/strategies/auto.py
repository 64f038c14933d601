"""``auto``: the strategy chosen from the data, and checked on validation.

Below :data:`PROBE_BELOW` training images per class, ``auto`` is the converged
``linear-probe`` (too few labels to fine-tune a backbone: measured, benchmarks/RESULTS.md).
From there on it first fits the converged probe at the fine-tuning input size (seconds, on
cached features), then fine-tunes with :data:`FINETUNE` from a fresh head, and keeps whichever
of the two scores higher on the validation split. The run's ``strategy_reason`` states what
was measured.
"""

from transferkit.strategies.base import Defaults, Recipe, register

#: ``auto`` fits only the linear probe below this many training images per class.
PROBE_BELOW = 100
#: The fine-tuning recipe ``auto`` runs from :data:`PROBE_BELOW` images per class on.
FINETUNE = "full"


class Auto(Recipe):
    def resolve(self, train_per_class: float) -> tuple[str, str]:
        """(recipe name, reason) for ``train_per_class`` training images per class."""
        if train_per_class < PROBE_BELOW:
            return "linear-probe", (f"auto: {train_per_class:.0f} training images per class "
                                    f"(< {PROBE_BELOW}): linear-probe")
        return FINETUNE, (f"auto: {train_per_class:.0f} training images per class (>= {PROBE_BELOW}): "
                          f"{FINETUNE}, kept only if it beats the linear probe on validation")


RECIPE = register(Auto(
    name="auto", summary=f"linear-probe below {PROBE_BELOW} images per class, else {FINETUNE} checked against "
    "the probe on validation", defaults=Defaults(image_size=64, epochs=6, lr=1e-3), in_compare=False, trains="chosen"))
