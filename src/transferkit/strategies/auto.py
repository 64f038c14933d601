"""``auto``: the strategy chosen from the data, and checked on validation.

Below :data:`PROBE_BELOW` training images per class, ``auto`` is the converged
``linear-probe`` (too few labels to fine-tune a backbone: measured, benchmarks/RESULTS.md).
From there on it first fits the converged probe at the fine-tuning input size (seconds, on
cached features), then fine-tunes with :data:`FINETUNE` from a fresh head, and keeps whichever
of the two scores higher on the validation split. The run's ``strategy_reason`` states what
was measured.
"""

from dataclasses import replace

from transferkit.strategies.base import Defaults, Recipe, get_recipe, register

#: ``auto`` fits only the linear probe below this many training images per class.
PROBE_BELOW = 100
#: The fine-tuning recipe ``auto`` runs from :data:`PROBE_BELOW` images per class on.
FINETUNE = "full"
#: ... with its bottom layer groups kept as pretrained (stem to ``blocks.1`` on EfficientNet-Lite0;
#: ``--freeze-groups`` overrides). Digits, seeds 0-4, 96 px: 6 epochs with all groups trained take
#: 97-116 s per run here (over the 90 s budget); within it, freezing 3 groups (79 +- 3 s) and 5
#: epochs (82 +- 1 s) tie on validation accuracy (0.974 vs 0.980, one seed-std 0.01); mean
#: validation cross-entropy, the rule the linear probe uses too, picks the frozen groups (0.629
#: vs 0.644; all groups, 6 epochs: 0.614). benchmarks/RESULTS.md has every figure.
FINETUNE_FREEZE_GROUPS = 3
#: ... for this many epochs (``--epochs`` overrides; ``full`` alone keeps its 6). Digits, seeds 0-4
#: x float-order perturbations (1 or 2 threads, an AVX2-only CPU): 6 epochs landed 0.967-0.992 test by machine
#: (the last epochs still climbing on validation); 10 epochs end converged. An average of the weights
#: (EMA 0.9/0.95/0.98, the last 2-3 epochs) did not beat the last epoch on validation. RESULTS.md.
FINETUNE_EPOCHS = 10


class Auto(Recipe):
    def resolve(self, train_per_class: float, frozen: int = FINETUNE_FREEZE_GROUPS) -> tuple[str, str]:
        """(recipe name, reason) for ``train_per_class`` training images per class; ``frozen``: the
        bottom layer groups the fine-tuning keeps pretrained (``--freeze-groups`` or
        :meth:`freeze_groups_for`), as the reason states it."""
        if train_per_class < PROBE_BELOW:
            return "linear-probe", (f"auto: {train_per_class:.0f} training images per class "
                                    f"(< {PROBE_BELOW}): linear-probe")
        kept = f"bottom {frozen} layer groups kept pretrained" if frozen else "every layer group trains"
        return FINETUNE, (f"auto: {train_per_class:.0f} training images per class (>= {PROBE_BELOW}): "
                          f"{FINETUNE} ({kept}), kept only if it beats the linear probe on validation")

    def defaults_for(self, name: str) -> Defaults:
        """The defaults ``auto`` runs recipe ``name`` with: :data:`FINETUNE` for :data:`FINETUNE_EPOCHS`,
        any other recipe its own."""
        own = get_recipe(name).defaults
        return replace(own, epochs=FINETUNE_EPOCHS) if name == FINETUNE else own

    def freeze_groups_for(self, name: str, model_groups: int) -> int:
        """The bottom groups kept pretrained when ``auto`` runs recipe ``name`` on a model of
        ``model_groups`` layer groups (none on a model too shallow to spare them)."""
        return FINETUNE_FREEZE_GROUPS if name == FINETUNE and model_groups > 2 * FINETUNE_FREEZE_GROUPS else 0


RECIPE = register(Auto(
    name="auto", summary=f"linear-probe below {PROBE_BELOW} images per class, else {FINETUNE} for {FINETUNE_EPOCHS} "
    f"epochs (bottom {FINETUNE_FREEZE_GROUPS} layer groups kept pretrained) checked against the probe on validation", defaults=Defaults(image_size=64, epochs=6, lr=1e-3), in_compare=False, trains="chosen"))
