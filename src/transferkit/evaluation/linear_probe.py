"""A converged linear probe: multinomial logistic regression on frozen features.

The head of a frozen backbone is a convex problem, so it is solved, not trained
for a number of epochs (DESIGN: "Frozen backbone => cached features").

Objective, on standardised features ``z = (x - mu) / sigma``::

    L(V, c) = 1/N sum_i CE(softmax(V z_i + c), y_i) + lam/2 ||V||_F^2
    V: (C, D) weights, c: (C,) bias (not penalised),  lam = 1 / (C_reg * N)

``mu`` is the training rows' per-feature mean. ``sigma`` (``standardize``) is
``"global"`` (default): one scale for every feature, the root mean feature
variance, or ``"feature"``: each feature's population std (1 if constant).
``"global"`` keeps the penalty isotropic on raw features (a near-constant
feature stays cheap to ignore) and only fixes the overall scale, so one grid of
``C_reg`` suits any backbone; ``"feature"`` gives every feature the same
penalty and lost on validation accuracy in every measured case (EfficientNet-Lite0
features: digits 64 px 0.898 vs 0.931; Fashion-MNIST 10 per class, mean of 3
seeds: 160 px 0.725 vs 0.743, 64 px 0.635 vs 0.668).

With ``lam = 1/(C_reg N)`` the minimiser is scikit-learn's
``LogisticRegression(C=C_reg)`` on ``z`` (which minimises
``C_reg sum_i CE_i + 1/2 ||V||^2 = C_reg N L``). It is found by full-batch
L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search) until
``max |grad L| <= tol``, in float32 (``dtype``) on the features' device, starting from
``V = 0`` and ``c`` = add-one-smoothed log class frequencies (the optimum as ``lam -> inf``).
The fits that only *select* ``C_reg`` stop at ``path_tol``; the chosen one is then refined,
from where it stopped, to ``tol`` when that is tighter. Both default to 1e-4, scikit-learn's
own L-BFGS stopping rule on this mean loss. (EfficientNet-Lite0 features of digits at 64 px,
15 strengths: float64 to 1e-5 everywhere took 12.6 s; float32 with the path at 1e-4 and the
chosen fit refined to 1e-5, 2.6 s; without the refinement 25% less again, with the same ``C_reg``
and test accuracy within 0.0005 on digits and Fashion-MNIST: benchmarks/RESULTS.md.)
The standardisation is folded back so the result applies to raw features:
``W = V / sigma`` (per column), ``b = c - W mu``, and ``W x + b = V z + c``.

Choice of ``C_reg`` among ``cs`` (fitted in ascending order, i.e. from strong to
weak regularisation, each fit warm-started from the previous one):

* ``"val"``: when every class has at least :data:`MIN_VAL_PER_CLASS` validation
  rows: fit on train at each ``C_reg``, score on val; the lowest validation
  cross-entropy wins (ties: the smaller ``C_reg``, stronger regularisation).
  Cross-entropy is a proper scoring rule and varies smoothly with ``C_reg``, where
  accuracy on a small validation split is a coarse step function full of ties: picked on
  one half of the validation split and scored on the other (no test split involved),
  lowest cross-entropy kept 0.757 vs 0.752 accuracy (Fashion-MNIST 10/class, 224 px, 5
  seeds), 0.808 vs 0.793 (100/class), 0.938 vs 0.937 (digits 96 px) and 0.915 vs 0.920
  (digits 64 px) against the former rule (highest accuracy, ties by cross-entropy).
  The walk stops once the validation cross-entropy has stayed above its minimum for
  :data:`PATIENCE` consecutive strengths (1.5 decades): the weakly regularised fits past the
  choice are the slowest to converge and cannot win while the curve stays unimodal in
  ``log C_reg``.
* ``"cv"``: otherwise (few or no validation rows): stratified k-fold on the
  training rows, ``k = min(folds, rows of the rarest class)``, with ``groups``
  (e.g. the image index of K augmented views) kept within one fold; the same
  rule (and the same stop) on the mean held-out cross-entropy.
* ``"fixed"``: ``cs`` has a single value.

The returned model is trained on the **training rows only** at the chosen
strength (the path model refined to ``tol``): validation rows
are never trained on, so ``val_accuracy`` is an honest held-out estimate and a
few-shot ``N per class`` stays ``N``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch import nn

from transferkit.errors import ConfigError, DataError

__all__ = ["DEFAULT_CS", "MIN_VAL_PER_CLASS", "ProbeFit", "fit_linear_probe", "load_into"]

#: Inverse regularisation strengths ``C_reg`` tried by default (standardised features), half-decade steps.
DEFAULT_CS = tuple(float(c) for c in np.logspace(-5, 2, 15))
#: Validation selection stops the path this many strengths (half-decades) past the lowest cross-entropy.
PATIENCE = 3
#: Fewer validation rows than this in some class -> choose ``C_reg`` by cross-validation on train.
MIN_VAL_PER_CLASS = 5


@dataclass
class ProbeFit:
    """A fitted probe for raw features: ``logits = x @ weight.T + bias``."""

    weight: torch.Tensor                 # (C, D) float32
    bias: torch.Tensor                   # (C,) float32
    c: float                             # chosen inverse strength C_reg
    lam: float                           # lam = 1 / (C_reg * N_train) of the final fit
    val_accuracy: float | None           # of this model on the validation rows, if any
    selected_by: str                     # "val", "cv" or "fixed"
    path: list[tuple[float, float]] = field(default_factory=list)  # (lam, selection accuracy) per C_reg
    iterations: int = 0                  # L-BFGS iterations, all fits of selection and refit
    seconds: float = 0.0
    converged: bool = True               # the final fit reached max |grad| <= tol
    grad_max: float = 0.0                # max |grad L| at the final fit's solution (standardised space)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.weight) @ self.weight.T + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return (self.predict(x).cpu() == torch.as_tensor(y).cpu()).float().mean().item()


def load_into(linear: nn.Linear, fit: ProbeFit) -> nn.Linear:
    """Copy ``fit``'s weight and bias into ``linear`` (e.g. a timm model's ``get_classifier()``)."""
    if tuple(linear.weight.shape) != tuple(fit.weight.shape) or linear.bias is None:
        raise ConfigError(f"the head is {tuple(linear.weight.shape)} (bias: {linear.bias is not None}) but the "
                          f"probe is {tuple(fit.weight.shape)} with bias; reset the classifier to "
                          f"{fit.weight.shape[0]} classes on {fit.weight.shape[1]} features")
    with torch.no_grad():
        linear.weight.copy_(fit.weight)
        linear.bias.copy_(fit.bias)
    return linear


# ----------------------------------------------------------------------------- one fit
def _objective(v: torch.Tensor, c: torch.Tensor, z: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """``1/N sum CE(V z + c, y) + lam/2 ||V||^2``. The logits are formed as ``(V Z^T)^T``: on one
    CPU thread that product of a thin (C, D) matrix with the (N, D) features, and its backward,
    took 25% less time per evaluation than ``Z V^T`` (1221 x 1280 features, 10 classes)."""
    return F.cross_entropy((v @ z.T + c[:, None]).T, y) + 0.5 * lam * v.pow(2).sum()


def _fit(z, y, lam, v0, c0, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Minimise :func:`_objective` from ``(v0, c0)`` by L-BFGS: ``(V, c, iterations, max |grad|)``."""
    v, c = v0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([v, c], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                            tolerance_change=0.0, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _objective(v, c, z, y, lam)
        loss.backward()
        return loss

    opt.step(closure)
    closure()                                                        # gradient at the final point
    grad_max = max(v.grad.abs().max().item(), c.grad.abs().max().item())
    return v.detach(), c.detach(), int(opt.state[v].get("n_iter", 0)), grad_max


def _path(z, y, num_classes: int, cs, max_iter: int, tol: float):
    """Fits at each ``C_reg`` in ``cs`` (ascending), warm-started: yields ``(V, c, iterations, max |grad|)``."""
    v = z.new_zeros(num_classes, z.shape[1])
    prior = torch.bincount(y, minlength=num_classes).to(z) + 1.0
    c = prior.log() - prior.log().mean()                             # the optimum as V -> 0 (smoothed)
    for c_reg in cs:
        v, c, iters, grad_max = _fit(z, y, 1.0 / (c_reg * len(z)), v, c, max_iter, tol)
        yield v, c, iters, grad_max


def _score(v, c, z, y) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``V z + c`` on ``(z, y)``."""
    logits = z @ v.T + c
    return (logits.argmax(1) == y).double().mean().item(), F.cross_entropy(logits, y).item()


def _best(scores: list[tuple[float, float]]) -> int:
    """Index of the lowest cross-entropy; ties: the lower index (stronger regularisation)."""
    return min(range(len(scores)), key=lambda i: (scores[i][1], i))


# ----------------------------------------------------------------------------- selection
def _stop(scores: list[tuple[float, float]], patience: int | None) -> bool:
    """The path has gone ``patience`` strengths past its lowest cross-entropy."""
    return patience is not None and len(scores) - 1 - _best(scores) >= patience


def _val_path(fits, zv, yv, patience: int | None) -> tuple[list, list[tuple[float, float]]]:
    """The path's fits and their validation ``(accuracy, cross-entropy)``, stopped once the
    cross-entropy has stayed above its minimum for ``patience`` consecutive strengths
    (``None``: the whole path)."""
    kept, scores = [], []
    for fit in fits:
        kept.append(fit)
        scores.append(_score(fit[0], fit[1], zv, yv))
        if _stop(scores, patience):
            break
    return kept, scores


def _cv_scores(z, y, groups, num_classes: int, cs, folds: int, seed: int, max_iter: int, tol: float,
               patience: int | None):
    """Mean held-out ``(accuracy, cross-entropy)`` per ``C_reg`` over stratified (group) k-fold, the
    folds walking their paths side by side and stopping like :func:`_val_path`, and the iterations
    spent; ``None`` when the rarest class has fewer than 2 rows (groups)."""
    labels = y.cpu().numpy()
    g = np.arange(len(labels)) if groups is None else np.asarray(groups)
    k = min(folds, min(len(np.unique(g[labels == cls])) for cls in np.unique(labels)))
    if k < 2:
        return None, 0
    splitter = (StratifiedKFold(k, shuffle=True, random_state=seed) if groups is None
                else StratifiedGroupKFold(k, shuffle=True, random_state=seed))
    held_out, paths = [], []
    for tr, te in splitter.split(np.zeros(len(labels)), labels, None if groups is None else g):
        tr, te = torch.as_tensor(tr, device=z.device), torch.as_tensor(te, device=z.device)
        held_out.append((z[te], y[te]))
        paths.append(_path(z[tr], y[tr], num_classes, cs, max_iter, tol))
    scores, iterations = [], 0
    for fits in zip(*paths):                                         # one strength, every fold
        iterations += sum(f[2] for f in fits)
        scores.append(tuple(np.mean([_score(f[0], f[1], *h) for f, h in zip(fits, held_out)], axis=0)))
        if _stop(scores, patience):
            break
    return scores, iterations


def _as_xy(x, y, num_classes: int, which: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise DataError(f"{which} features must be (N, D) with N >= 1 and labels (N,); got "
                        f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{which} features contain NaN or inf; check the feature extractor")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{which} labels must be in [0, {num_classes}); got {int(y.min())}..{int(y.max())}")
    return x.to(dtype), y.to(device=x.device, dtype=torch.long)


@contextmanager
def _torch_threads(n: int | None):
    """Run torch's CPU ops on ``n`` threads inside the block (``None``: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _standardiser(x: torch.Tensor, standardize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu (D,), sigma (D,))``: the mean, and per ``"feature"`` its population std (1 for a
    constant feature) or, ``"global"``, the root mean feature variance (one scale for all)."""
    mu, sigma = x.mean(0), x.std(0, correction=0)
    if standardize == "global":
        return mu, sigma.pow(2).mean().sqrt().clamp_min(1e-12).expand_as(sigma)
    if standardize == "feature":
        return mu, torch.where(sigma > 1e-12 * (1 + mu.abs()), sigma, torch.ones_like(sigma))
    raise ConfigError(f"standardize must be 'global' or 'feature', got {standardize!r}")


def fit_linear_probe(train_x, train_y, val_x=None, val_y=None, *, num_classes: int, cs=DEFAULT_CS,
                     groups=None, folds: int = 5, max_iter: int = 1000, tol: float = 1e-4,
                     path_tol: float = 1e-4, seed: int = 0, dtype: torch.dtype = torch.float32,
                     threads: int | None = 1, standardize: str = "global",
                     patience: int | None = PATIENCE) -> ProbeFit:
    """Fit the probe of the module docstring on ``(train_x (N, D), train_y (N,))``.

    ``val_x``/``val_y`` select ``C_reg`` when large enough; ``groups`` (N,) keeps
    rows of one image (K augmented views, stacked) in one cross-validation fold;
    ``folds`` caps k; ``seed`` shuffles the folds; ``tol`` bounds ``max |grad L|`` of the
    returned fit, ``path_tol`` that of the fits that only select ``C_reg`` (at most
    ``max_iter`` L-BFGS iterations per fit); ``standardize``:
    ``"global"`` or ``"feature"`` (module docstring); ``patience``: validation selection stops
    the path after that many strengths past the best (``None``: fit every one). Computed in ``dtype`` on the
    device of ``train_x``; ``threads``: torch CPU threads during the fit (the
    products are thin: on 2 busy cores, 2 threads made a step 20x slower than 1).
    Raises DataError on bad inputs, ConfigError on a bad ``cs`` or ``standardize``.
    """
    start, cs = time.perf_counter(), sorted(float(c) for c in cs)
    if not cs or min(cs) <= 0:
        raise ConfigError(f"cs must be positive inverse regularisation strengths, got {cs}")
    with torch.inference_mode(False), torch.enable_grad(), _torch_threads(threads):
        x, y = _as_xy(train_x, train_y, num_classes, "train", dtype)
        mu, sigma = _standardiser(x, standardize)
        z, zv, yv = (x - mu) / sigma, None, None
        if val_x is not None and len(val_x):
            xv, yv = _as_xy(val_x, val_y, num_classes, "val", dtype)
            zv, yv = (xv.to(x.device) - mu) / sigma, yv.to(x.device)
        val_counts = torch.bincount(yv, minlength=num_classes)[torch.unique(y)] if zv is not None else None
        scores, iterations, selected_by = None, 0, "fixed" if len(cs) == 1 else "val"
        if selected_by == "val" and (val_counts is None or val_counts.min() < MIN_VAL_PER_CLASS):
            scores, iterations = _cv_scores(z, y, groups, num_classes, cs, folds, seed, max_iter, path_tol,
                                            patience)
            selected_by = "val" if scores is None else "cv"
            if scores is None and zv is None:
                raise DataError("cannot choose the regularisation: no validation rows and fewer than 2 "
                                "training rows in some class for cross-validation; pass cs=(C,) to fix it")
        # with "cv" the choice is known: refit on train along the path up to it; else walk the path
        stop = _best(scores) + 1 if selected_by == "cv" else len(cs)
        fits = _path(z, y, num_classes, cs[:stop], max_iter, max(tol, path_tol))
        if selected_by != "cv" and zv is not None:                  # "val", or "fixed" scored on val
            fits, scores = _val_path(fits, zv, yv, patience)
            cs = cs[:len(fits)]
        fits = list(fits)
        best = len(fits) - 1 if selected_by != "val" else _best(scores)
        v, c, refit, grad_max = _fit(z, y, 1.0 / (cs[best] * len(z)), *fits[best][:2], max_iter, tol)
        iterations += sum(f[2] for f in fits) + refit
        val_accuracy = _score(v, c, zv, yv)[0] if zv is not None else None
        weight = v / sigma                                           # fold the standardisation back
        bias = c - weight @ mu
    lams = [1.0 / (cr * len(z)) for cr in cs]
    path = [(lam, s[0]) for lam, s in zip(lams, scores)] if scores else [(lam, float("nan")) for lam in lams]
    return ProbeFit(weight=weight.float(), bias=bias.float(), c=cs[best], lam=lams[best],
                    val_accuracy=val_accuracy, selected_by=selected_by, path=path, iterations=iterations,
                    seconds=time.perf_counter() - start, converged=grad_max <= tol, grad_max=grad_max)
