"""Domain alignment as a loss term: ``trade_off * block(source, target)`` on one training step.

``block`` is any of the alignment losses of this package, called on the pre-logits features of the
source (labelled) and target (unlabelled) images of the step — ``block(f_s, f_t)`` — or, for losses
conditioned on the predictions (CDAN), ``block(f_s, logits_s, f_t, logits_t)``. A block with a
gradient reversal (``block.grl``) gets its coefficient from the progress of training
(:func:`~transferkit.adaptation.grl.warm_start_coefficient`), recomputed each step (so a resumed run
continues the schedule). An adversarial block's domain accuracy is logged as ``domain_acc``.
"""

from __future__ import annotations

from torch import nn

from transferkit.adaptation.grl import warm_start_coefficient
from transferkit.terms import Step, Term


class AlignmentTerm(Term):
    """``weight * block(...)`` on the step's source and target features (see the module docstring)."""

    def __init__(self, block: nn.Module, weight: float = 1.0, conditional: bool = False):
        super().__init__("align", weight)
        self.block, self.conditional = block, conditional

    def on_step(self, step: Step) -> None:
        grl = getattr(self.block, "grl", None)
        if grl is not None:
            grl.coeff = warm_start_coefficient(step.progress)

    def loss(self, step: Step):
        if step.x_t is None:
            raise ValueError("domain alignment needs target images in the step (Step(..., x_t=...))")
        args = ((step.features, step.logits, step.target_features, step.target_logits) if self.conditional
                else (step.features, step.target_features))
        out = self.block(*args)
        loss, accuracy = out if isinstance(out, tuple) else (out, None)
        return loss, ({"domain_acc": accuracy} if accuracy is not None else {})


