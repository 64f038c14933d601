"""Calibration: expected calibration error, reliability bins and temperature scaling.

A classifier is calibrated when its confidence matches its accuracy. With ``N`` samples, confidence
``c_i = max_k p_ik``, prediction ``y^_i = argmax_k p_ik`` and equal-width confidence bins
``B_b = {i : c_i in ((b-1)/M, b/M]}``, ``b = 1..M``:

    acc(B_b)  = 1/|B_b| sum_{i in B_b} [y^_i = y_i]
    conf(B_b) = 1/|B_b| sum_{i in B_b} c_i
    ECE       = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides the logits
``z`` by one scalar ``T > 0`` fitted on held-out data by minimising the negative log-likelihood

    NLL(T) = -1/N sum_i log softmax(z_i / T)_{y_i}

It leaves the argmax (so accuracy) unchanged. Plain torch; no engine or torchmetrics imports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    """Per equal-width confidence bin: ``confidence`` (mean max-prob), ``accuracy``, ``count``
    (lists of length ``bins``; empty bins have confidence and accuracy 0) and the bin ``edges``."""
    probs, labels = probs.detach().float().cpu(), labels.detach().cpu()
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    # bin b holds conf in (b/M, (b+1)/M]; conf 0 goes to bin 0
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(idx, minlength=bins).float()
    safe = count.clamp(min=1)
    return {"confidence": (torch.bincount(idx, conf, minlength=bins) / safe).tolist(),
            "accuracy": (torch.bincount(idx, correct, minlength=bins) / safe).tolist(),
            "count": count.long().tolist(),
            "edges": torch.linspace(0, 1, bins + 1).tolist()}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """``ECE = sum_b |B_b|/N |acc(B_b) - conf(B_b)|`` over ``bins`` equal-width confidence bins."""
    r = reliability_bins(probs, labels, bins)
    n = max(sum(r["count"]), 1)
    return float(sum(c / n * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"])))


def nll_at(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """``NLL(T) = mean_i -log softmax(z_i / T)_{y_i}``."""
    return F.cross_entropy(logits.detach().double().cpu() / temperature, labels.detach().cpu()).item()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The ``T > 0`` minimising ``NLL(T)`` on ``logits (N, C)``, ``labels (N,)``.

    Optimises ``log T`` (so ``T`` stays positive) from ``T = 1`` with L-BFGS (strong-Wolfe line search) in
    float64 on the CPU: deterministic, and converged to the gradient tolerance for this 1-D convex-in-
    practice problem. Returns 1.0 for an empty set.
    """
    if len(labels) == 0:
        return 1.0
    z, y = logits.detach().double().cpu(), labels.detach().cpu()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=steps, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp().item())


def calibrated_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)``."""
    return (logits.float() / float(temperature)).softmax(-1)


def calibrate(net: torch.nn.Module, val_loader, test_loader, device=None, bins: int = 15) -> dict | None:
    """Fit ``T`` on ``net``'s validation logits; ECE on val and test before (T = 1) and after.

    Returns ``{temperature, val_ece_before, val_ece_after, test_ece_before, test_ece_after, reliability}``
    (test figures ``None`` without a test set; ``reliability``: :func:`reliability_bins` before/after on
    test, else val), or ``None`` when there is no validation set to fit on.
    """
    from transferkit.evaluation.metrics import predict_logits

    if val_loader is None or not len(val_loader.dataset):
        return None
    test = predict_logits(net, test_loader, device) if test_loader is not None and len(test_loader.dataset) else None
    return calibrate_logits(predict_logits(net, val_loader, device), test, bins)


def calibrate_logits(val: tuple | None, test: tuple | None = None, bins: int = 15) -> dict | None:
    """:func:`calibrate` from logits already computed: ``val`` and ``test`` are ``(logits, labels)`` (or
    None); None without validation logits."""
    if val is None or not len(val[1]):
        return None
    splits = {"val": val} | ({"test": test} if test is not None and len(test[1]) else {})
    t = fit_temperature(*splits["val"])
    out = {"temperature": round(t, 6)}
    for name in ("val", "test"):
        z, y = splits.get(name, (None, None))
        out[f"{name}_ece_before"] = None if z is None else expected_calibration_error(calibrated_probs(z), y, bins)
        out[f"{name}_ece_after"] = None if z is None else expected_calibration_error(calibrated_probs(z, t), y, bins)
    shown = "test" if "test" in splits else "val"
    z, y = splits[shown]
    out["reliability"] = {"split": shown, "before": reliability_bins(calibrated_probs(z), y, bins),
                          "after": reliability_bins(calibrated_probs(z, t), y, bins)}
    return out


__all__ = ["calibrate", "calibrate_logits", "calibrated_probs", "expected_calibration_error", "fit_temperature", "nll_at",
           "reliability_bins"]
