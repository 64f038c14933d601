"""L2-SP: weight decay towards the pretrained starting point (Li, Grandvalet & Davoine, ICML 2018)."""

from __future__ import annotations

import torch
from torch import nn

from transferkit.registry import REGULARIZERS, Method
from transferkit.surgery.heads import head_parameters
from transferkit.terms import Step, Term


class L2SP(nn.Module):
    r"""L2-SP penalty of a timm model, relative to its weights when this module is built.

    .. math::

        \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
                  + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

    * :math:`w_S`: the backbone — every parameter not in ``model.get_classifier()``;
      :math:`w_S^0` its pretrained value, snapshotted at construction (one buffer
      per parameter, same shape; non-persistent: a resumed run rebuilds it from the
      same pretrained weights, so checkpoints do not double in size);
    * :math:`w_{\bar S}`: the new head, which has no pretrained value and gets
      plain L2 towards zero.

    Use it as ``loss = task_loss + l2sp(model)``; ``forward(model)`` returns a
    scalar tensor, differentiable in ``model``'s parameters. At construction the
    backbone term is exactly 0. Li et al. use α = 0.1, β = 0.01. The penalty
    replaces weight decay on the backbone: decaying it towards zero at the same
    time pulls against L2-SP (the ``l2sp`` strategy turns backbone decay off).
    """

    def __init__(self, model: nn.Module, alpha: float = 0.1, beta: float = 0.01):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        head_ids = {id(p) for p in head_parameters(model)}
        backbone = [(n, p) for n, p in model.named_parameters() if id(p) not in head_ids]
        self.backbone_names = [n for n, _ in backbone]
        self.head_names = [n for n, p in model.named_parameters() if id(p) in head_ids]
        for i, (_, p) in enumerate(backbone):
            self.register_buffer(f"w0_{i}", p.detach().clone(), persistent=False)

    def forward(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        sp = sum(((params[n] - w0) ** 2).sum() for n, w0 in zip(self.backbone_names, self.buffers()))
        head = sum((params[n] ** 2).sum() for n in self.head_names)
        return 0.5 * self.alpha * sp + 0.5 * self.beta * head

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, backbone_tensors={len(self.backbone_names)}"


class L2SPTerm(Term):
    """The L2-SP penalty of the network being trained, as a loss term (``--reg l2sp``, ``--strategy l2sp``)."""

    rebuilt = ("block",)

    def __init__(self, model: nn.Module, alpha: float = 0.1, beta: float = 0.01):
        super().__init__("reg")
        self.block = L2SP(model, alpha, beta)

    def loss(self, step: Step) -> torch.Tensor:
        return self.block(step.net)


METHOD = REGULARIZERS.register(Method(
    name="l2sp", summary="stay near the pretrained weights: alpha/2 ‖w - w0‖² on the backbone + beta/2 ‖w‖² on the head "
    "(--reg-alpha, --reg-beta)", build=lambda ctx: L2SPTerm(ctx.model, ctx.cfg.reg_alpha, ctx.cfg.reg_beta),
    defaults={"reg_alpha": 0.1, "reg_beta": 0.01}, traits={"needs_backbone": True}))
