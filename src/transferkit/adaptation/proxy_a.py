"""Proxy A-distance between two domains (Ben-David et al., "Analysis of Representations for
Domain Adaptation", NeurIPS 2007; Ganin et al., JMLR 2016, section 5.1.5).

A measurement, not a loss: how well a linear classifier tells the domains apart on frozen
features. Lower after adaptation means the features carry less domain information.
"""

from __future__ import annotations

import numpy as np
import torch

from transferkit.errors import DataError
from transferkit.evaluation.linear_probe import DEFAULT_CS, fit_linear_probe

__all__ = ["proxy_a_distance"]


def _rows(x, name: str) -> torch.Tensor:
    """``x`` as a float64 CPU tensor (N, D), N >= 4 (two per half), finite."""
    if isinstance(x, torch.Tensor):
        ok = not x.is_complex() and x.dtype != torch.bool
        t = x.detach().cpu().to(torch.float64) if ok else x
    else:
        a = np.asarray(x)
        ok = a.dtype.kind in "iuf"
        t = torch.from_numpy(a.astype(np.float64)) if ok else a
    if not ok or t.ndim != 2 or len(t) < 4:
        raise DataError(f"{name} must be real (N, D) features with N >= 4, got {t.dtype} {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or inf; check the feature extractor")
    return t


def _halves(n: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = gen.permutation(n)
    return order[: n // 2], order[n // 2:]


def proxy_a_distance(features_s, features_t, *, seed: int = 0, cs=DEFAULT_CS) -> float:
    r"""Proxy A-distance :math:`\hat d_A = 2 (1 - 2 \epsilon)`, clipped to [0, 2].

    ``features_s`` (N_s, D) and ``features_t`` (N_t, D), tensors or arrays, are labelled by
    domain (source 1, target 0) and each split in halves by a permutation seeded with ``seed``;
    the converged linear probe (:func:`~transferkit.evaluation.linear_probe.fit_linear_probe`,
    multinomial logistic regression, its strength chosen by cross-validation on the training
    half among ``cs``) is fitted on the first halves, and :math:`\epsilon` is its error on the
    second halves, the mean of the two domains' errors (so unequal sizes do not skew it).
    2 = perfectly separable, 0 = a chance-level classifier (indistinguishable domains).
    """
    s, t = _rows(features_s, "features_s"), _rows(features_t, "features_t")
    if s.shape[1] != t.shape[1]:
        raise DataError(f"features_s and features_t differ in width: {s.shape[1]} vs {t.shape[1]}")
    gen = np.random.default_rng(seed)
    (s_fit, s_test), (t_fit, t_test) = _halves(len(s), gen), _halves(len(t), gen)
    x = torch.cat([s[s_fit], t[t_fit]])
    y = torch.cat([torch.ones(len(s_fit)), torch.zeros(len(t_fit))]).long()
    probe = fit_linear_probe(x, y, num_classes=2, cs=cs, seed=seed)
    error_s = 1.0 - probe.accuracy(s[s_test], torch.ones(len(s_test), dtype=torch.long))
    error_t = 1.0 - probe.accuracy(t[t_test], torch.zeros(len(t_test), dtype=torch.long))
    epsilon = 0.5 * (error_s + error_t)
    return float(min(max(2.0 * (1.0 - 2.0 * epsilon), 0.0), 2.0))
