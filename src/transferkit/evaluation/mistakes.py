"""The most confident mistakes: the wrong predictions a classifier was surest of.

With probabilities ``p (N, C)``, prediction ``y^_i = argmax_c p_ic`` and confidence ``c_i = max_c p_ic``,
the mistakes are ``M = {i : y^_i != y_i}``; the ``n`` most confident are the ``n`` of ``M`` with the
largest ``c_i``, largest first (ties: the lower index first). They are where to look first: labelling
errors, look-alike classes, shortcuts the model learned. Plain torch.
"""

from __future__ import annotations

import torch


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, n: int) -> list[dict]:
    """Up to ``n`` rows ``{index, true, pred, prob}`` (class indices; ``prob``: the predicted class's
    probability), the wrong predictions of ``probs (N, C)`` against ``labels (N,)`` by decreasing ``prob``.
    Rows with a negative label (unlabelled) are never mistakes."""
    probs, labels = torch.as_tensor(probs).detach().float().cpu(), torch.as_tensor(labels).detach().cpu().long()
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, C) and labels (N,); got {tuple(probs.shape)} and {tuple(labels.shape)}")
    conf, pred = probs.max(1) if len(probs) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    wrong = torch.nonzero((pred != labels) & (labels >= 0)).flatten()
    order = sorted(wrong.tolist(), key=lambda i: (-float(conf[i]), i))[: max(n, 0)]
    return [{"index": i, "true": int(labels[i]), "pred": int(pred[i]), "prob": round(float(conf[i]), 6)}
            for i in order]


__all__ = ["confident_mistakes"]
