"""Probe accuracies on cached features: kNN and a cross-validated linear probe.

The cheap, trained counterparts of the transferability scores: a frozen
backbone's features are judged by how well a nearest-neighbour vote or a
logistic regression on them classifies held-out samples. Inputs are NumPy
arrays or torch tensors; labels may be any values; each function returns the
accuracy as a Python ``float`` in ``[0, 1]``.

* :func:`knn_accuracy`          — majority vote of the ``k`` most cosine-similar
  training samples.
* :func:`linear_probe_accuracy` — scikit-learn ``LogisticRegressionCV`` (L2,
  multinomial) on standardised features, ``C`` chosen by stratified CV.
* :func:`cross_val_probe`       — mean accuracy of either probe over stratified
  folds, when there is no separate test set.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from transferkit.errors import ConfigError, DataError
from transferkit.transferability.scores import one_blas_thread, to_numpy

__all__ = ["cross_val_probe", "knn_accuracy", "linear_probe_accuracy"]

#: Inverse regularisation strengths tried by the linear probe (standardised features).
PROBE_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _split(train_f, train_y, test_f, test_y) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``(train_f, train_y, test_f, test_y)``: float features, 1-d labels, same ``D``."""
    out = []
    for f, yv, which in ((train_f, train_y, "train"), (test_f, test_y, "test")):
        f = to_numpy(f, f"{which}_f", ndim=2)
        yv = to_numpy(yv, f"{which}_y", ndim=1)
        if f.dtype.kind not in "fiub":
            raise DataError(f"{which}_f must be numeric, got dtype {f.dtype}")
        if len(f) != len(yv) or len(f) == 0:
            raise DataError(f"{which}_f has {len(f)} rows and {which}_y {len(yv)} labels; "
                            "pass one label per sample, at least one sample")
        if not np.isfinite(f).all():
            raise DataError(f"{which}_f contains NaN or inf; check the feature extractor")
        out += [f, yv]
    if out[0].shape[1] != out[2].shape[1]:
        raise DataError(f"train_f has {out[0].shape[1]} features per sample but test_f has "
                        f"{out[2].shape[1]}; use the same backbone for both")
    return tuple(out)


def knn_accuracy(train_f, train_y, test_f, test_y, k: int = 20, batch_size: int = 1024) -> float:
    """Accuracy of a ``k``-nearest-neighbour vote under cosine similarity.

    Each test sample takes the most common label among the ``k`` training
    samples with the largest cosine similarity (``k`` is capped at the number
    of training samples); a tie goes to the label whose neighbours are more
    similar in total. Test labels never seen in training count as errors.
    Computed with torch matrix products, ``batch_size`` test rows at a time.
    """
    if k < 1:
        raise ConfigError(f"knn_accuracy needs k >= 1, got k={k}")
    train_f, train_y, test_f, test_y = _split(train_f, train_y, test_f, test_y)
    classes, codes = np.unique(train_y, return_inverse=True)
    n_classes = len(classes)
    k = min(k, len(train_f))
    bank = torch.nn.functional.normalize(torch.as_tensor(train_f, dtype=torch.float32), dim=1)
    queries = torch.nn.functional.normalize(torch.as_tensor(test_f, dtype=torch.float32), dim=1)
    bank_labels = torch.as_tensor(codes.reshape(-1), dtype=torch.int64)
    preds = []
    for q in queries.split(batch_size):
        sim, idx = (q @ bank.T).topk(k, dim=1)                       # (B, k)
        labels = bank_labels[idx]
        votes = torch.zeros(len(q), n_classes).scatter_add_(1, labels, torch.ones_like(sim))
        total_sim = torch.zeros(len(q), n_classes).scatter_add_(1, labels, sim)
        # |total_sim| <= count <= k, so the tie-break term moves a score by less than 1/2
        preds.append((votes + total_sim / (2 * k + 1)).argmax(1))
    pred = classes[torch.cat(preds).numpy()]
    return float(np.mean(pred == test_y))


def _logreg_cv(n_folds: int, seed: int, max_iter: int) -> LogisticRegressionCV:
    """``LogisticRegressionCV`` over :data:`PROBE_CS`, L2, scored by accuracy."""
    kwargs = dict(Cs=list(PROBE_CS), cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed),
                  scoring="accuracy", max_iter=max_iter, tol=1e-3, random_state=seed)
    params = inspect.signature(LogisticRegressionCV).parameters
    # scikit-learn >= 1.8 warns unless these are given; older versions do not know them
    kwargs |= {"l1_ratios": (0.0,)} if "l1_ratios" in params else {}
    kwargs |= {"use_legacy_attributes": False} if "use_legacy_attributes" in params else {}
    return LogisticRegressionCV(**kwargs)


def linear_probe_accuracy(train_f, train_y, test_f, test_y, *, folds: int = 3, max_iter: int = 100,
                          seed: int = 0) -> float:
    """Test accuracy of an L2 logistic regression on standardised features.

    Features are standardised with the training set's mean and standard
    deviation. ``C`` (inverse regularisation) is chosen among
    :data:`PROBE_CS` by ``folds``-fold stratified cross-validation on the
    training set (``LogisticRegressionCV``, lbfgs, warm-started along the
    ``C`` path), then refit on all training samples. ``max_iter`` caps each
    fit — a probe is a measurement, not a final model — and convergence
    warnings are silenced. The fit runs on one BLAS thread. When a class has
    fewer than 2 training samples there is no cross-validation and ``C = 1``.
    """
    train_f, train_y, test_f, test_y = _split(train_f, train_y, test_f, test_y)
    counts = np.unique(train_y, return_counts=True)[1]
    if len(counts) < 2:
        raise DataError("linear_probe_accuracy needs at least 2 classes in the training labels")
    scaler = StandardScaler().fit(train_f)
    x_train, x_test = scaler.transform(train_f), scaler.transform(test_f)
    n_folds = min(folds, int(counts.min()))
    if n_folds >= 2:
        model = _logreg_cv(n_folds, seed, max_iter)
    else:
        model = LogisticRegression(C=1.0, max_iter=max_iter, tol=1e-3, random_state=seed)
    # lbfgs's thin (N, D) x (D, K) products gain little from BLAS threads, and on a
    # busy machine OpenBLAS's spinning threads made this fit 7x slower (2 s -> 15 s)
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, train_y)
    return float(np.mean(model.predict(x_test) == test_y))


def cross_val_probe(features, labels, *, folds: int = 5, probe: str = "linear", k: int = 20,
                    seed: int = 0) -> float:
    """Mean accuracy of a probe over ``folds`` stratified folds of one labelled set.

    ``probe`` is ``"linear"`` (:func:`linear_probe_accuracy`, which again
    cross-validates ``C`` inside each training fold) or ``"knn"``
    (:func:`knn_accuracy` with ``k``). Folds are shuffled with ``seed``.
    """
    if probe not in ("linear", "knn"):
        raise ConfigError(f"probe must be 'linear' or 'knn', got {probe!r}")
    f = to_numpy(features, "features", ndim=2)
    y = to_numpy(labels, "labels", ndim=1)
    if len(f) != len(y):
        raise DataError(f"features has {len(f)} rows but labels has {len(y)}; pass one label per sample")
    counts = np.unique(y, return_counts=True)[1]
    if folds < 2 or counts.max(initial=0) < folds:
        raise DataError(f"cross_val_probe needs folds >= 2 and a class with at least {folds} samples "
                        f"(largest class: {counts.max(initial=0)}); lower folds")
    accs = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(f, y))
    for tr, te in splits:
        if probe == "knn":
            accs.append(knn_accuracy(f[tr], y[tr], f[te], y[te], k=k))
        else:
            accs.append(linear_probe_accuracy(f[tr], y[tr], f[te], y[te], seed=seed))
    return float(np.mean(accs))
