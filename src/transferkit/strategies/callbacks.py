"""Lightning callbacks that recipes return from ``Recipe.callbacks``: gradual unfreezing (ULMFiT,
Howard & Ruder 2018; Q17).

Not imported with the package (``strategies/__init__`` skips this module): the hook that returns
a callback imports it, so listing the recipes never imports Lightning, and no recipe imports the
engine.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from transferkit.errors import ConfigError
from transferkit.surgery.freezing import frozen_subtrees


class GradualUnfreezing(L.Callback):
    """Unfreeze the plan's layer groups from the top down, one more every ``every`` epochs.

    With the groups of ``pl_module.plan`` ordered stem → head (``G`` of them),
    epoch ``e`` trains the top

        n(e) = min(G, 1 + ⌊e / every⌋)

    groups: the head alone first, then the last block, and so on down to the stem.
    Unfreezing only flips ``requires_grad``: every group is in the optimizer from
    step 0 with its own LR scale, and a frozen parameter gets no gradient, so torch
    optimizers skip it entirely (no step, no weight decay, no moment state). The
    plan's frozen modules are recomputed after each change, so frozen groups stay
    in eval mode (BatchNorm statistics untouched), and layers in ``plan.frozen_bn``
    (the ``--bn freeze`` policy) stay frozen. The number of unfrozen groups is
    saved in checkpoints, so a resumed run continues the schedule.

    Single-process only: DDP registers the trainable parameters once, when it
    wraps the model, and would not synchronise groups unfrozen later.
    """

    def __init__(self, every: int = 1):
        if every < 1:
            raise ConfigError(f"--unfreeze-every must be >= 1, got {every}")
        self.every = every
        self.unfrozen = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise ConfigError("gradual unfreezing runs on one device (DDP fixes the trainable parameters "
                              "when it wraps the model); use --devices 1 or --strategy full")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = max(self.unfrozen, 1 + trainer.current_epoch // self.every)
        self.apply(pl_module, min(target, len(pl_module.plan.groups)))

    def apply(self, pl_module: L.LightningModule, unfrozen: int) -> None:
        """Make exactly the top ``unfrozen`` groups trainable and refresh the frozen modules."""
        plan = pl_module.plan
        pinned = {id(p) for m in plan.frozen_bn for p in m.parameters()}
        for k, (_, params, _) in enumerate(reversed(plan.groups)):
            for _, p in params:
                p.requires_grad_(k < unfrozen and id(p) not in pinned)
        plan.frozen_modules = frozen_subtrees(pl_module)
        self.unfrozen = unfrozen

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "unfrozen": self.unfrozen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.unfrozen = int(state_dict["unfrozen"])
