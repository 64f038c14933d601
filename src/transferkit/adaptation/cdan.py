"""CDAN and CDAN+E: conditional domain-adversarial training (Long, Cao, Wang & Jordan,
"Conditional Adversarial Domain Adaptation", NeurIPS 2018).

The discriminator sees features conditioned on the classifier's predictions, so it can align
class-conditional distributions, not only the marginals. Use it as
``loss = task_loss + trade_off * cdan(f_s, logits_s, f_t, logits_t)[0]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from transferkit.adaptation.dann import check_rows, domain_adversarial_loss
from transferkit.adaptation.grl import DomainDiscriminator, GradientReversal
from transferkit.errors import ConfigError, DataError
from transferkit.registry import ADAPTATION, Method

__all__ = ["CDANLoss", "RandomizedMultilinearMap", "entropy_weights", "multilinear_map"]

#: Above this size of ``f ⊗ g`` (features_dim * num_classes) the randomized map is used (the paper: 4096).
MAX_MULTILINEAR_DIM = 4096


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""The multilinear map :math:`T_\otimes(f, g) = \mathrm{vec}(g \otimes f)`, row by row:
    ``f`` (N, D), ``g`` (N, C) -> (N, C * D) with ``out[n, c * D + d] = g[n, c] * f[n, d]``."""
    return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    r"""The randomized multilinear map
    :math:`T_\odot(f, g) = \frac{1}{\sqrt{d}} (R_f f) \odot (R_g g)`, (N, D), (N, C) -> (N, d).

    :math:`R_f` (d, D) and :math:`R_g` (d, C) are drawn once from N(0, 1) with a generator
    seeded by ``seed`` and never trained; they are buffers, so a checkpoint keeps them.
    Its inner products approximate those of :math:`T_\otimes` in expectation (the paper's
    Theorem 1), at size ``d`` instead of ``D * C``.
    """

    def __init__(self, features_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("r_f", torch.randn(output_dim, features_dim, generator=gen))
        self.register_buffer("r_g", torch.randn(output_dim, num_classes, generator=gen))
        self.output_dim = output_dim

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (f @ self.r_f.T) * (g @ self.r_g.T) / math.sqrt(self.output_dim)


def entropy_weights(p: torch.Tensor) -> torch.Tensor:
    r"""CDAN+E's example weights :math:`w = 1 + e^{-H(p)}`, :math:`H(p) = -\sum_c p_c \log p_c`,
    for probabilities ``p`` (N, C) -> (N,), in (1 + 1/C, 2]: confident predictions count more."""
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
    return 1.0 + torch.exp(-entropy)


class CDANLoss(nn.Module):
    r"""CDAN's domain loss on :math:`h = T(f, g)`, :math:`g = \mathrm{softmax}(\text{logits})`:

    .. math:: L = \tfrac12 \Big(\frac{\sum_i w_i \ell(D(R_\lambda(h^s_i)), 1)}{\sum_i w_i}
                 + \frac{\sum_j w_j \ell(D(R_\lambda(h^t_j)), 0)}{\sum_j w_j}\Big)

    ``forward(f_s (N_s, D), logits_s (N_s, C), f_t (N_t, D), logits_t (N_t, C))
    -> (loss, domain_accuracy)``. :math:`T` is :func:`multilinear_map` (size ``D * C``) or,
    when ``randomized`` (default: when ``D * C > max_dim``), a
    :class:`RandomizedMultilinearMap` of size ``randomized_dim``. ``entropy_conditioning``
    (CDAN+E) sets :math:`w =` :func:`entropy_weights` normalised within each domain, as the
    authors' code does; otherwise :math:`w = 1`. As in the authors' code and tllib,
    :math:`g` enters the map and the weights detached: the domain loss trains ``D`` and,
    reversed, the features; the classifier is trained by the task loss only.

    ``discriminator``: a module (N, ``self.map_dim``) -> (N,) logits; default a
    :class:`~transferkit.adaptation.grl.DomainDiscriminator` with ``hidden`` units.
    Set ``self.grl.coeff`` over training (``warm_start_coefficient``).
    """

    def __init__(self, features_dim: int, num_classes: int, discriminator: nn.Module | None = None, *,
                 entropy_conditioning: bool = False, randomized: bool | None = None,
                 randomized_dim: int = 1024, max_dim: int = MAX_MULTILINEAR_DIM, hidden: int = 1024,
                 coeff: float = 1.0, seed: int = 0):
        super().__init__()
        if features_dim < 1 or num_classes < 2 or randomized_dim < 1:
            raise ConfigError(f"CDANLoss needs features_dim >= 1, num_classes >= 2, randomized_dim >= 1; "
                              f"got {features_dim}, {num_classes}, {randomized_dim}")
        self.features_dim, self.num_classes = features_dim, num_classes
        self.randomized = features_dim * num_classes > max_dim if randomized is None else bool(randomized)
        self.map = (RandomizedMultilinearMap(features_dim, num_classes, randomized_dim, seed)
                    if self.randomized else None)
        self.map_dim = randomized_dim if self.randomized else features_dim * num_classes
        self.entropy_conditioning = entropy_conditioning
        self.discriminator = discriminator if discriminator is not None else DomainDiscriminator(
            self.map_dim, hidden)
        self.grl = GradientReversal(coeff)

    def conditioned(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The discriminator's input ``T(f, softmax(logits).detach())``: (N, ``self.map_dim``)."""
        g = torch.softmax(logits, 1).detach()
        return self.map(f, g) if self.randomized else multilinear_map(f, g)

    def forward(self, f_s: torch.Tensor, logits_s: torch.Tensor, f_t: torch.Tensor,
                logits_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for name, f, logits in (("source", f_s, logits_s), ("target", f_t, logits_t)):
            check_rows(f"{name} features", f)
            if logits.shape != (len(f), self.num_classes) or f.shape[1] != self.features_dim:
                raise DataError(f"{name}: features {tuple(f.shape)} and logits {tuple(logits.shape)} must be "
                                f"(N, {self.features_dim}) and (N, {self.num_classes}) with the same N")
        h = self.conditioned(torch.cat([f_s, f_t]), torch.cat([logits_s, logits_t]))
        d = self.discriminator(self.grl(h)).reshape(-1)
        w_s = w_t = None
        if self.entropy_conditioning:
            w_s = entropy_weights(torch.softmax(logits_s.detach(), 1))
            w_t = entropy_weights(torch.softmax(logits_t.detach(), 1))
        return domain_adversarial_loss(d[: len(f_s)], d[len(f_s):], w_s, w_t)

    def extra_repr(self) -> str:
        return (f"features_dim={self.features_dim}, num_classes={self.num_classes}, map_dim={self.map_dim}, "
                f"randomized={self.randomized}, entropy_conditioning={self.entropy_conditioning}")


def _builder(entropy: bool):
    def build(ctx):
        from transferkit.adaptation.alignment import AlignmentTerm

        block = CDANLoss(ctx.features_dim, ctx.num_classes, entropy_conditioning=entropy, seed=ctx.seed)
        return AlignmentTerm(block, ctx.weight, conditional=True)
    return build


CDAN = ADAPTATION.register(Method(
    name="cdan", summary="domain-adversarial conditioned on the predictions (CDAN)", build=_builder(False),
    defaults={"trade_off": 1.0}))
CDAN_E = ADAPTATION.register(Method(
    name="cdan+e", summary="CDAN with entropy conditioning: confident target predictions weigh more (CDAN+E)",
    build=_builder(True), defaults={"trade_off": 1.0}))
