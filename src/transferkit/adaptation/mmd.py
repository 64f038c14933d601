"""DAN's multi-kernel maximum mean discrepancy (Long, Cao, Wang & Jordan, "Learning Transferable
Features with Deep Adaptation Networks", ICML 2015; Gretton et al., "A Kernel Two-Sample Test",
JMLR 2012).

Use it as ``loss = task_loss + trade_off * mk_mmd(f_s, f_t)`` on the features (or logits) of
a source and a target batch; it is differentiable in both.
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.errors import ConfigError, DataError
from transferkit.registry import ADAPTATION, Method

__all__ = ["DEFAULT_MULTIPLIERS", "MultipleKernelMMD", "mk_mmd"]

#: Bandwidth ladder: kernel k uses sigma_k^2 = m_k * base for m_k = 2^-2 .. 2^2.
DEFAULT_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
ESTIMATORS = ("biased", "linear")


def _kernel_mean(sq_dist: torch.Tensor, base: torch.Tensor, multipliers) -> torch.Tensor:
    """The mean of the Gaussian kernels ``exp(-d^2 / (2 m base))`` over the multipliers ``m``."""
    return torch.stack([torch.exp(-sq_dist / (2.0 * m * base)) for m in multipliers]).mean(0)


def _biased(f_s: torch.Tensor, f_t: torch.Tensor, multipliers) -> torch.Tensor:
    z = torch.cat([f_s, f_t])
    norms = (z * z).sum(1)
    sq = (norms[:, None] + norms[None, :] - 2.0 * z @ z.T).clamp_min(0)  # no sqrt: finite gradients at 0
    n = len(z)
    base = (sq.sum() / (n * (n - 1))).detach().clamp_min(1e-12)  # mean over pairs i != j
    k = _kernel_mean(sq, base, multipliers)
    ns = len(f_s)
    return k[:ns, :ns].mean() + k[ns:, ns:].mean() - 2.0 * k[:ns, ns:].mean()


def _linear(f_s: torch.Tensor, f_t: torch.Tensor, multipliers) -> torch.Tensor:
    if len(f_s) != len(f_t) or len(f_s) < 2:
        raise DataError(f"the linear-time MMD needs equal batch sizes >= 2, got {len(f_s)} and {len(f_t)}; "
                        "drop the last partial batch or use estimator='biased'")
    m = len(f_s) // 2 * 2
    x, x2, y, y2 = f_s[0:m:2], f_s[1:m:2], f_t[0:m:2], f_t[1:m:2]
    sq = torch.stack([(a - b).pow(2).sum(1) for a, b in ((x, x2), (y, y2), (x, y2), (x2, y))])
    base = sq.mean().detach().clamp_min(1e-12)
    k = _kernel_mean(sq, base, multipliers)
    return (k[0] + k[1] - k[2] - k[3]).mean()


def mk_mmd(f_s: torch.Tensor, f_t: torch.Tensor, multipliers=DEFAULT_MULTIPLIERS,
           estimator: str = "biased") -> torch.Tensor:
    r"""Squared MK-MMD between the rows of ``f_s`` (N_s, D) and ``f_t`` (N_t, D); a 0-d tensor.

    Kernel: the mean of Gaussians :math:`k(a, b) = \frac1K \sum_k \exp(-\lVert a - b\rVert^2 /
    (2 m_k \beta))` (DAN's family with equal weights :math:`\beta_k = 1/K`), bandwidths on a
    ladder of ``multipliers`` :math:`m_k` around :math:`\beta`, the mean squared distance
    between the samples' rows (detached: the bandwidths follow the features, no gradient
    flows through them).

    * ``"biased"`` (default): the V-statistic over all pairs, :math:`O(N^2)`, always >= 0,
      :math:`\widehat{\mathrm{MMD}}^2_b = \overline{K_{ss}} + \overline{K_{tt}} - 2\,\overline{K_{st}}`
      (means include the diagonals); :math:`\beta` over the pooled pairs :math:`i \neq j`.
    * ``"linear"``: DAN's linear-time unbiased estimate (Gretton et al. Lemma 14), equal
      batch sizes: :math:`\frac{2}{N}\sum_{i=1}^{N/2} k(s_{2i-1}, s_{2i}) + k(t_{2i-1}, t_{2i})
      - k(s_{2i-1}, t_{2i}) - k(s_{2i}, t_{2i-1})`; noisier, can be negative; :math:`\beta`
      over the pairs it evaluates.

    Both are symmetric in the two samples.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if not multipliers or min(multipliers) <= 0:
        raise ConfigError(f"multipliers must be positive bandwidth factors, got {multipliers!r}")
    if f_s.ndim != 2 or f_t.ndim != 2 or f_s.shape[1] != f_t.shape[1] or len(f_s) < 1 or len(f_t) < 1:
        raise DataError(f"f_s and f_t must be (N, D) with the same D, got {tuple(f_s.shape)}, {tuple(f_t.shape)}")
    if estimator == "linear":
        return _linear(f_s, f_t, multipliers)
    return _biased(f_s, f_t, multipliers)


class MultipleKernelMMD(nn.Module):
    """:func:`mk_mmd` as a module: ``MultipleKernelMMD(multipliers, estimator)(f_s, f_t)``."""

    def __init__(self, multipliers=DEFAULT_MULTIPLIERS, estimator: str = "biased"):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        self.multipliers, self.estimator = tuple(float(m) for m in multipliers), estimator

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return mk_mmd(f_s, f_t, self.multipliers, self.estimator)

    def extra_repr(self) -> str:
        return f"multipliers={self.multipliers}, estimator={self.estimator!r}"


def _build(ctx):
    from transferkit.adaptation.alignment import AlignmentTerm

    return AlignmentTerm(MultipleKernelMMD(), ctx.weight)


METHOD = ADAPTATION.register(Method(
    name="dan", summary="multi-kernel MMD between source and target features (DAN)", build=_build,
    defaults={"trade_off": 1.0}))
