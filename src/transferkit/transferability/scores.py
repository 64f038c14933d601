"""Transferability scores: how well a pretrained model will transfer, before training.

Every score is a plain function of cached features (or of the source model's
outputs) and the target labels, and returns a Python ``float``; higher means
more transferable. Inputs may be NumPy arrays or torch tensors (any device);
labels may be any values (``{3, 7}``, strings), they are mapped to ``0..K-1``.

* :func:`logme`   — LogME, the maximised log-evidence of a Bayesian linear model
  on the features (You et al., ICML 2021).
* :func:`leep`    — LEEP, log-expected empirical prediction from the source
  model's class probabilities (Nguyen et al., ICML 2020).
* :func:`nce`     — NCE, negative conditional entropy of the target labels given
  the source model's hard labels (Tran et al., ICCV 2019).
* :func:`h_score` — H-score, the between-class share of the feature covariance
  (Bao et al., ICIP 2019).

Scores compare models on *one* target task; their scale differs between
scores and between datasets.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from transferkit.errors import ConfigError, DataError

__all__ = ["h_score", "leep", "logme", "nce"]


# ----------------------------------------------------------------------------- inputs
def to_numpy(x, name: str, ndim: int | None = None) -> np.ndarray:
    """``x`` (NumPy array, torch tensor on any device, or sequence) as a NumPy array.

    The dtype is kept (bfloat16, which NumPy lacks, becomes float32);
    ``ndim`` checks the number of dimensions.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    a = np.asarray(x)
    if ndim is not None and a.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    return a


def encode_labels(labels, n: int, name: str = "labels") -> tuple[np.ndarray, int]:
    """``(codes (N,) int64 in 0..K-1, K)`` for any label values; checks ``len == n``."""
    y = to_numpy(labels, name, ndim=1)
    if len(y) != n:
        raise DataError(f"{name} has {len(y)} entries but there are {n} samples; pass one label per sample")
    if n == 0:
        raise DataError(f"{name} is empty; pass at least one labelled sample")
    classes, codes = np.unique(y, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), len(classes)


def _features(features, name: str = "features") -> np.ndarray:
    """``features`` as a finite float64 ``(N, D)`` array."""
    f = to_numpy(features, name, ndim=2)
    if f.dtype.kind not in "fiub":
        raise DataError(f"{name} must be numeric, got dtype {f.dtype}")
    f = f.astype(np.float64, copy=False)
    if not np.isfinite(f).all():
        raise DataError(f"{name} contains NaN or inf; check the feature extractor (e.g. fp16 overflow)")
    return f


@cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()                                   # scanning the loaded libraries takes ~10 ms


def one_blas_thread():
    """Context manager: BLAS and LAPACK calls inside it run on one thread.

    For the calls that gain little from threads (LAPACK's memory-bound
    tridiagonal reduction, thin matrix products) but lose badly when the
    cores are busy: OpenBLAS's spinning threads made a 1280 x 1280 ``eigh``
    on 2 shared cores take 4-13 s instead of 0.5 s on one thread.
    """
    return _threadpools().limit(limits=1, user_api="blas")


def _eigh(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, on one BLAS thread."""
    with one_blas_thread():
        return np.linalg.eigh(gram)


# ----------------------------------------------------------------------------- LogME
def logme(features, labels, *, tol: float = 1e-3, max_iter: int = 100) -> float:
    r"""LogME: average maximised log-evidence per sample of a Bayesian linear model.

    You, Liu, Wang, Long. *LogME: Practical Assessment of Pre-trained Models
    for Transfer Learning.* ICML 2021 (reference code: github.com/thuml/LogME).

    For each class ``k`` the target is the one-hot column ``y_k`` (``N``) and the
    model is ``y_k = F w + noise`` with prior ``w ~ N(0, alpha^-1 I_D)`` and noise
    ``N(0, beta^-1 I_N)``; ``F`` is ``features`` ``(N, D)``. The log-evidence is

    .. math::

        L(\alpha,\beta) = \tfrac{D}{2}\log\alpha + \tfrac{N}{2}\log\beta
          - \tfrac{N}{2}\log 2\pi - \tfrac{\beta}{2}\lVert F m - y\rVert^2
          - \tfrac{\alpha}{2} m^\top m - \tfrac12 \log\lvert A\rvert,

    with ``A = alpha I + beta F^T F`` and posterior mean ``m = beta A^-1 F^T y``.
    It is maximised by MacKay's fixed point, starting at ``alpha = beta = 1``:
    ``gamma = sum_i beta s_i / (alpha + beta s_i)`` (``s_i`` the eigenvalues of
    ``F^T F``), ``alpha <- gamma / m^T m``, ``beta <- (N - gamma) / (|F m - y|^2 + 1e-5)``,
    until ``alpha / beta`` changes by at most ``tol`` (relative) or ``max_iter``
    steps (the paper's code: ``tol=1e-3``, 11 steps; it converges in a few).
    LogME is ``mean_k L_k / N``; higher is better.

    Computation: one eigendecomposition of the smaller Gram matrix (``F^T F``
    when ``N > D``, ``F F^T`` otherwise) serves all classes, and all ``K``
    fixed points iterate together on ``(rank, K)`` arrays. In the eigenbasis
    the terms are sums over the ``r`` components with ``t = alpha / beta`` and
    ``p_ik`` the projection of ``F^T y_k`` on the i-th eigenvector:
    ``m^T m = sum p^2 / (t + s)^2`` and ``|F m - y|^2 = |y|^2 - sum p^2 (2t + s) / (t + s)^2``,
    and ``D/2 log alpha - 1/2 log|A| = -1/2 sum_i log(1 + s_i / t)`` — zero
    eigenvalues drop out, so rank-deficient, constant and ``D > N`` features
    give finite scores. Deliberate differences from the reference code: no
    ``1e-5`` is added to ``m^T m`` (it made the score depend on the scale of
    the features; LogME is scale-invariant); when the evidence grows without
    bound in ``alpha`` (a class the features cannot fit, best model ``w = 0``)
    the iteration stops at that limit, ``alpha / beta = 1e15 max(s)``, instead
    of overflowing; the final evidence uses the ``m`` of the final ``alpha, beta``.

    Everything runs in float64: a float32 Gram matrix loses the small
    eigenvalues that decide the evidence of ill-conditioned features (ReLU
    features changed LogME by 25% in float32).
    """
    f = _features(features)
    n, d = f.shape
    y, k = encode_labels(labels, n)
    if not (tol > 0 and max_iter >= 1):
        raise ConfigError(f"logme needs tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")

    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    yy = onehot.sum(0)                                              # |y_k|^2 = class counts
    if n > d:                                                       # eigenbasis of F^T F (D, D)
        s, v = _eigh(f.T @ f)
        p2 = (v.T @ (f.T @ onehot)) ** 2                            # p_ik^2 = (v_i^T F^T y_k)^2, (D, K)
    else:                                                           # eigenbasis of F F^T (N, N)
        s, u = _eigh(f @ f.T)
        x2 = (u.T @ onehot) ** 2                                    # (U^T y_k)^2; p^2 = s x^2
    s = np.clip(s, 0.0, None)
    keep = s > s.max() * max(n, d) * np.finfo(np.float64).eps      # zero up to round-off: no signal
    s = s[keep, None]                                               # (r, 1)
    if n > d:
        p2 = p2[keep]
        outside = None
    else:
        outside = x2[~keep].sum(0)                                  # part of y no feature direction reaches
        x2 = x2[keep]
        p2 = s * x2

    def terms(t):
        """gamma, m^T m and |F m - y|^2 at t = alpha / beta, each (K,)."""
        gamma = (s / (s + t)).sum(0)
        m2 = (p2 / (t + s) ** 2).sum(0)
        if outside is None:                                         # |y|^2 - |F m|^2 - 2 (F m)^T (y - F m)
            res2 = np.maximum(yy - (p2 * (2 * t + s) / (t + s) ** 2).sum(0), 0.0)
        else:                                                       # no cancellation when U is complete
            res2 = outside + (x2 * (t / (t + s)) ** 2).sum(0)
        return gamma, m2, res2

    t_max = 1e15 * s.max(initial=1.0)                               # s / t < 1e-15: the prior has won
    alpha, beta = np.ones(k), np.ones(k)
    active = np.ones(k, dtype=bool)
    for _ in range(max_iter):
        t = alpha / beta
        gamma, m2, res2 = terms(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            new_alpha = gamma / m2                                  # inf if y_k is orthogonal to the features
        new_alpha = np.where(gamma > 0, new_alpha, alpha)           # no feature directions: alpha is irrelevant
        new_beta = (n - gamma) / (res2 + 1e-5)
        t_new = np.minimum(new_alpha / new_beta, t_max)             # alpha -> inf is the limit w = 0; stop there
        alpha = np.where(active, t_new * new_beta, alpha)
        beta = np.where(active, new_beta, beta)
        active &= ~(np.abs(t_new - t) <= tol * t)
        if not active.any():
            break
    t = alpha / beta
    _, m2, res2 = terms(t)
    evidence = (n / 2 * np.log(beta) - 0.5 * np.log1p(s / t).sum(0)
                - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return float(np.mean(evidence) / n)


# ----------------------------------------------------------------------------- LEEP
def leep(source_probs, labels) -> float:
    r"""LEEP: log expected empirical prediction of the source model on the target.

    Nguyen, Hassner, Seeger, Archambeau. *LEEP: A New Measure to Evaluate
    Transferability of Learned Representations.* ICML 2020.

    ``source_probs`` ``(N, Z)`` is ``theta(x_i)``, the source model's softmax over
    its ``Z`` source classes; ``labels`` ``(N,)`` the target labels ``y_i``.

    .. math::

        \hat P(y, z) = \tfrac1N \sum_{i: y_i = y} \theta(x_i)_z,\quad
        \hat P(y \mid z) = \hat P(y, z) / \textstyle\sum_{y'} \hat P(y', z),\quad
        \mathrm{LEEP} = \tfrac1N \sum_i \log \sum_z \hat P(y_i \mid z)\, \theta(x_i)_z.

    ``LEEP <= 0``; it is 0 when the source classes determine the target label
    (e.g. a one-hot ``theta`` that refines the target classes). Source classes
    that no sample predicts (``P(z) = 0``) carry no weight and are skipped.
    Pass probabilities, not logits: rows must be non-negative and sum to 1.
    """
    theta = _features(source_probs, "source_probs")
    n, _ = theta.shape
    y, k = encode_labels(labels, n)
    if (theta < 0).any() or not np.allclose(theta.sum(1), 1.0, atol=1e-3):
        raise DataError("source_probs must be probabilities (rows >= 0 summing to 1); "
                        "apply softmax to the source model's logits first")
    onehot = np.eye(k)[y]
    joint = onehot.T @ theta / n                                     # P(y, z), (K, Z)
    pz = joint.sum(0, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = np.einsum("iz,iz->i", theta, cond[y])                      # sum_z P(y_i|z) theta_z(x_i)
    return float(np.mean(np.log(eep)))


# ----------------------------------------------------------------------------- NCE
def nce(source_labels, labels) -> float:
    r"""NCE: negative conditional entropy ``-H(Y | Z)`` of target given source labels.

    Tran, Nguyen, Hassner. *Transferability and Hardness of Supervised
    Classification Tasks.* ICCV 2019.

    ``source_labels`` ``(N,)`` are the source model's hard predictions ``z_i``
    (``argmax`` of its logits), ``labels`` ``(N,)`` the target labels ``y_i``.
    With the empirical joint ``P(y, z) = #{i: y_i = y, z_i = z} / N``,

    .. math:: \mathrm{NCE} = -H(Y \mid Z) = \sum_{y, z} P(y, z) \log \frac{P(y, z)}{P(z)}.

    ``NCE <= 0`` (natural log), with 0 exactly when ``z`` determines ``y``.
    """
    z = to_numpy(source_labels, "source_labels")
    if z.ndim != 1:
        raise DataError(f"source_labels must be hard labels of shape (N,), got {z.shape}; "
                        "for probabilities use argmax(axis=1), or leep()")
    zc, nz = encode_labels(z, len(z), "source_labels")
    y, k = encode_labels(labels, len(zc))
    joint = np.bincount(y * nz + zc, minlength=k * nz).reshape(k, nz) / len(y)
    pz = joint.sum(0, keepdims=True)
    nzero = joint > 0
    return float(np.sum(joint[nzero] * np.log((joint / np.where(pz > 0, pz, 1.0))[nzero])))


# ----------------------------------------------------------------------------- H-score
def h_score(features, labels, *, shrinkage: float | str = 0.0) -> float:
    r"""H-score: ``tr(cov(f)^+ cov(E[f | y]))``, the class-separating share of the features.

    Bao, Li, Huang, Zheng. *An Information-Theoretic Approach to
    Transferability in Task Transfer Learning.* ICIP 2019.

    ``cov(f)`` is the ``(D, D)`` sample covariance of the features and
    ``cov(E[f|y])`` that of each sample's class mean ``g(y_i) = mean_{j: y_j = y_i} f_j``,
    i.e. ``sum_c n_c (mu_c - mu)(mu_c - mu)^T / (N - 1)``. Between 0 and
    ``K - 1``; higher is better.

    ``cov(f)`` is inverted with a pseudo-inverse (eigenvalues below
    ``max(N, D) * eps * largest`` count as zero), so constant features (score 0)
    and ``D > N`` give finite values. With few samples per dimension the
    plain estimate is poor, and once ``D >= N - 1`` it is exactly ``K - 1`` for
    any features. ``shrinkage`` ``a`` in ``[0, 1]`` regularises it: the score
    becomes ``tr(((1 - a) cov(f) + a tr(cov(f))/D I)^-1 (1 - a) cov(E[f|y]))``,
    still at most ``K - 1``; ``"auto"`` picks ``a`` by Ledoit-Wolf. This is the
    shrinkage H-score of Ibrahim, Ponomareva, Mazumder, *Newer is not always
    better: Rethinking transferability metrics, their peculiarities, stability
    and performance* (arXiv:2110.06893).
    """
    f = _features(features)
    n, d = f.shape
    y, k = encode_labels(labels, n)
    if n < 2:
        raise DataError("h_score needs at least 2 samples to estimate a covariance")
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        shrinkage = float(ledoit_wolf_shrinkage(f))
    if isinstance(shrinkage, str) or not 0.0 <= shrinkage <= 1.0:
        raise ConfigError(f"h_score shrinkage must be a number in [0, 1] or 'auto', got {shrinkage!r}")
    mu = f.mean(0)
    fc = f - mu
    onehot = np.eye(k)[y]
    counts = onehot.sum(0)
    centred_means = onehot.T @ fc / counts[:, None]                  # mu_c - mu, (K, D)
    if n > d:
        lam, vec = _eigh(fc.T @ fc / (n - 1))               # cov(f) = V diag(lam) V^T
    else:                                                            # D >= N: the same non-zero eigenvalues
        lam, u = _eigh(fc @ fc.T / (n - 1))                 # from the (N, N) Gram
    lam = np.clip(lam, 0.0, None)
    nonzero = lam > lam.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    if n > d:
        proj = centred_means @ vec                                   # (K, D)
    else:                                                            # class means lie in the span of the samples:
        proj = np.zeros((k, n))                                      # their coordinates on its orthonormal basis
        proj[:, nonzero] = centred_means @ fc.T @ u[:, nonzero] / np.sqrt(lam[nonzero] * (n - 1))
    if shrinkage > 0:                                                # (directions outside the span hold no mean)
        lam = (1 - shrinkage) * lam + shrinkage * lam.sum() / d
    inv = np.zeros_like(lam)
    inv[nonzero] = 1.0 / lam[nonzero]
    per_class = (proj ** 2 * inv).sum(1)                             # (mu_c - mu)^T cov^+ (mu_c - mu)
    return float((1 - shrinkage) * np.sum(counts * per_class) / (n - 1))
