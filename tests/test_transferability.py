"""Transferability scores and probes against slow, literal implementations of the papers.

Each ``*_ref`` below is written straight from the published formula with
explicit loops or dense matrices (no eigendecomposition tricks, no
vectorisation over classes), so it shares no code path with the library.
"""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from transferkit.errors import ConfigError, DataError
from transferkit.transferability import (
    cross_val_probe,
    h_score,
    knn_accuracy,
    leep,
    linear_probe_accuracy,
    logme,
    nce,
)


# ----------------------------------------------------------------------------- references
def logme_ref(F, labels, tol=1e-3, max_iter=100):
    """LogME per class: MacKay's fixed point on alpha, beta with the D x D posterior."""
    F = np.asarray(F, dtype=np.float64)
    labels = np.asarray(labels)
    N, D = F.shape
    G = F.T @ F

    def posterior(alpha, beta, y):
        A = alpha * np.eye(D) + beta * G
        return A, beta * np.linalg.solve(A, F.T @ y)

    per_class = []
    for c in sorted(set(labels.tolist())):
        y = (labels == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            A, m = posterior(alpha, beta, y)
            gamma = D - alpha * np.trace(np.linalg.inv(A))      # sum_i beta s_i / (alpha + beta s_i)
            new_alpha = gamma / (m @ m)
            new_beta = (N - gamma) / (np.sum((F @ m - y) ** 2) + 1e-5)
            done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if done:
                break
        A, m = posterior(alpha, beta, y)
        evidence = (D / 2 * math.log(alpha) + N / 2 * math.log(beta) - N / 2 * math.log(2 * math.pi)
                    - beta / 2 * np.sum((F @ m - y) ** 2) - alpha / 2 * (m @ m)
                    - 0.5 * np.linalg.slogdet(A)[1])
        per_class.append(evidence / N)
    return float(np.mean(per_class))


def leep_ref(theta, labels):
    """LEEP with explicit loops over samples, target classes and source classes."""
    theta = np.asarray(theta, dtype=np.float64)
    labels = list(np.asarray(labels).tolist())
    N, Z = theta.shape
    joint = {}
    for i in range(N):
        for z in range(Z):
            joint[labels[i], z] = joint.get((labels[i], z), 0.0) + theta[i, z] / N
    p_z = [sum(joint.get((y, z), 0.0) for y in set(labels)) for z in range(Z)]
    total = 0.0
    for i in range(N):
        eep = sum(joint[labels[i], z] / p_z[z] * theta[i, z] for z in range(Z) if p_z[z] > 0)
        total += math.log(eep)
    return total / N


def nce_ref(source_labels, labels):
    """-H(Y|Z) from counted pairs."""
    z_list, y_list = list(np.asarray(source_labels).tolist()), list(np.asarray(labels).tolist())
    N = len(y_list)
    pairs, zs = Counter(zip(y_list, z_list)), Counter(z_list)
    return sum(c / N * math.log((c / N) / (zs[z] / N)) for (y, z), c in pairs.items())


def knn_ref(train_f, train_y, test_f, test_y, k):
    """Majority of the k most cosine-similar training samples; ties to the larger summed similarity."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    sims = unit(np.asarray(test_f, float)) @ unit(np.asarray(train_f, float)).T
    hits = 0
    for i in range(len(test_f)):
        top = np.argsort(-sims[i], kind="stable")[:k]
        votes, total = Counter(), Counter()
        for j in top:
            votes[train_y[j]] += 1
            total[train_y[j]] += sims[i, j]
        hits += max(votes, key=lambda c: (votes[c], total[c])) == test_y[i]
    return hits / len(test_f)


def h_score_ref(f, labels):
    """tr(pinv(cov f) cov(g)), g(x_i) = the mean feature of x_i's class, built in a loop."""
    f = np.asarray(f, dtype=np.float64)
    labels = np.asarray(labels)
    g = np.zeros_like(f)
    for c in set(labels.tolist()):
        g[labels == c] = f[labels == c].mean(0)
    cov_f, cov_g = np.atleast_2d(np.cov(f, rowvar=False)), np.atleast_2d(np.cov(g, rowvar=False))
    return float(np.trace(np.linalg.pinv(cov_f, rcond=max(f.shape) * np.finfo(float).eps, hermitian=True) @ cov_g))


# ----------------------------------------------------------------------------- data
@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The dense references make thousands of small LAPACK calls; with OpenBLAS threads
    on a busy machine each is ~50x slower (100 inverses of 100 x 100: 5.7 s vs 0.1 s)."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float64), d.target


def blobs(n=300, d=20, k=4, sep=4.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d)) * sep
    return centres[y] + rng.standard_normal((n, d)), y


def source_model_outputs(digits):
    """A real source model: logistic regression on digits 0-4, applied to digits 5-9."""
    X, y = digits
    src, tgt = y < 5, y >= 5
    model = LogisticRegression(max_iter=300).fit(X[src] / 16, y[src])
    probs = model.predict_proba(X[tgt] / 16)
    return probs, y[tgt]


# ----------------------------------------------------------------------------- LogME
@pytest.mark.parametrize("n,d,k", [(200, 16, 3), (60, 100, 4), (150, 8, 2)])
def test_logme_matches_reference_on_random_features(n, d, k):
    rng = np.random.default_rng(n + d)
    F, y = rng.standard_normal((n, d)), rng.integers(0, k, n)
    F[np.arange(n), y] += 1.0 + np.arange(k)[y]                   # signal of a different strength per class
    assert logme(F, y) == pytest.approx(logme_ref(F, y), rel=1e-6)


def test_logme_matches_reference_on_digits_pixels_and_pca(digits):
    X, y = digits                                                # 64 pixels, several always 0: rank-deficient
    assert logme(X, y) == pytest.approx(logme_ref(X, y), rel=1e-6)
    Z = PCA(20, random_state=0).fit_transform(X)
    assert logme(Z, y) == pytest.approx(logme_ref(Z, y), rel=1e-6)
    # D > N on real data: the (N, N) Gram path
    assert logme(X[:40], y[:40]) == pytest.approx(logme_ref(X[:40], y[:40]), rel=1e-6)


def test_logme_iteration_count_is_the_papers():
    rng = np.random.default_rng(1)
    F, y = rng.standard_normal((100, 10)), rng.integers(0, 3, 100)
    for max_iter in (1, 2, 5):
        assert logme(F, y, max_iter=max_iter) == pytest.approx(logme_ref(F, y, max_iter=max_iter), rel=1e-6)
    assert logme(F, y, max_iter=1) != pytest.approx(logme(F, y), rel=1e-6)


def test_logme_of_features_orthogonal_to_every_class_is_the_w_equals_0_limit():
    rng = np.random.default_rng(12)
    y = rng.integers(0, 3, 90)
    Y = np.eye(3)[y]
    F = rng.standard_normal((90, 5))
    F -= Y @ np.linalg.solve(Y.T @ Y, Y.T @ F)                    # F^T y_k = 0: alpha -> inf is optimal
    # evidence with w = 0: y ~ N(0, I / beta), beta = N / (|y|^2 + 1e-5) as the fixed point sets it
    counts = np.bincount(y)
    beta = 90 / (counts + 1e-5)
    limit = np.mean(0.5 * np.log(beta) - beta * counts / (2 * 90) - 0.5 * np.log(2 * np.pi))
    assert logme(F, y) == pytest.approx(limit, rel=1e-9)


def test_logme_prefers_features_that_separate_classes(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    assert logme(X, y) > logme(rng.standard_normal(X.shape), y) + 0.1
    good, yb = blobs()
    assert logme(good, yb) > logme(rng.standard_normal(good.shape), yb) + 0.1


def test_logme_is_invariant_to_feature_scale_and_zero_columns():
    F, y = blobs(n=200, d=12, k=3, sep=1.0)
    base = logme(F, y)
    assert logme(1e3 * F, y) == pytest.approx(base, rel=1e-5)
    assert logme(1e-3 * F, y) == pytest.approx(base, rel=1e-5)
    assert logme(np.hstack([F, np.zeros((200, 30))]), y) == pytest.approx(base, rel=1e-9)


# ----------------------------------------------------------------------------- LEEP
def test_leep_matches_reference(digits):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((120, 7)) * 2
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 3, 120)
    assert leep(theta, y) == pytest.approx(leep_ref(theta, y), rel=1e-10)
    probs, yt = source_model_outputs(digits)                      # real source -> target transfer
    assert leep(probs, yt) == pytest.approx(leep_ref(probs, yt), rel=1e-10)


def test_leep_of_a_perfect_source_labelling_is_the_maximum_zero():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 100)
    z = y * 2 + rng.integers(0, 2, 100)                           # source classes refine the target classes
    theta = np.eye(8)[z]
    assert leep(theta, y) == pytest.approx(0.0, abs=1e-12)
    noisy = 0.7 * theta + 0.3 / 8
    assert leep(noisy, y) < -0.05
    assert leep(np.full((100, 8), 1 / 8), y) == pytest.approx(nce(np.zeros(100), y))  # uninformative: -H(Y)


def test_leep_rejects_logits():
    with pytest.raises(DataError, match="softmax"):
        leep(np.random.default_rng(0).standard_normal((10, 3)), np.arange(10) % 2)


# ----------------------------------------------------------------------------- NCE
def test_nce_matches_reference(digits):
    rng = np.random.default_rng(4)
    z, y = rng.integers(0, 6, 300), rng.integers(0, 4, 300)
    assert nce(z, y) == pytest.approx(nce_ref(z, y), rel=1e-12)
    probs, yt = source_model_outputs(digits)
    z_real = probs.argmax(1)
    assert nce(z_real, yt) == pytest.approx(nce_ref(z_real, yt), rel=1e-12)
    assert nce(z_real, yt) > nce(rng.permutation(z_real), yt)     # real source beats shuffled


def test_nce_is_zero_for_a_perfect_source_labelling_and_negative_otherwise():
    y = np.repeat([3, 7, 9], 20)
    assert nce(y * 10 + np.arange(60) % 2, y) == 0.0              # z determines y
    assert nce(np.arange(60) % 2, y) == pytest.approx(-math.log(3))  # z independent of balanced y


# ----------------------------------------------------------------------------- H-score
def test_h_score_matches_reference(digits):
    F, y = blobs(n=250, d=15, k=5, sep=0.5)
    assert h_score(F, y) == pytest.approx(h_score_ref(F, y), rel=1e-8)
    X, yd = digits
    Z = PCA(30, random_state=0).fit_transform(X)
    assert h_score(Z, yd) == pytest.approx(h_score_ref(Z, yd), rel=1e-8)
    Xv = X[:, X.std(0) > 0]                                       # pixels that vary
    assert h_score(Xv, yd) == pytest.approx(h_score_ref(Xv, yd), rel=1e-6)


def test_h_score_ignores_constant_features_and_invertible_maps(digits):
    X, y = digits
    Xv = X[:, X.std(0) > 0]
    assert h_score(X, y) == pytest.approx(h_score(Xv, y), rel=1e-6)   # digits has always-0 pixels
    A = np.random.default_rng(5).standard_normal((Xv.shape[1], Xv.shape[1]))
    assert h_score(Xv @ A, y) == pytest.approx(h_score(Xv, y), rel=1e-5)
    assert 0 < h_score(Xv, y) < 9                                 # at most K - 1


def test_h_score_when_dims_exceed_samples_and_with_shrinkage():
    rng = np.random.default_rng(6)
    F, y = rng.standard_normal((30, 80)), rng.integers(0, 3, 30)
    assert h_score(F, y) == pytest.approx(h_score_ref(F, y), rel=1e-6)
    assert h_score(F, y) == pytest.approx(2.0, rel=1e-6)          # D >= N - 1: exactly K - 1, for any features
    shrunk = h_score(F, y, shrinkage="auto")
    assert 0 < shrunk < 2.0 and h_score(F, y, shrinkage=1.0) == 0.0
    a = 0.3                                                       # literal formula with a dense inverse
    g = np.stack([F[y == c].mean(0) for c in y])
    cov_a = (1 - a) * np.cov(F, rowvar=False) + a * np.trace(np.cov(F, rowvar=False)) / 80 * np.eye(80)
    want = np.trace(np.linalg.inv(cov_a) @ ((1 - a) * np.cov(g, rowvar=False)))
    assert h_score(F, y, shrinkage=a) == pytest.approx(want, rel=1e-8)
    good, yg = blobs(n=30, d=80, k=3, sep=1.0)
    assert h_score(good, yg, shrinkage="auto") > shrunk + 0.3     # shrinkage restores the ranking
    with pytest.raises(ConfigError):
        h_score(F, y, shrinkage=2.0)


# ----------------------------------------------------------------------------- edge cases, inputs
def test_edge_cases_give_finite_scores(digits):
    rng = np.random.default_rng(7)
    y = np.array([0] * 20 + [1] * 19 + [2])                       # a class with one sample
    F = rng.standard_normal((40, 6)) + y[:, None]
    assert logme(F, y) == pytest.approx(logme_ref(F, y), rel=1e-6)
    assert h_score(F, y) == pytest.approx(h_score_ref(F, y), rel=1e-8)
    const = np.full((40, 6), 3.0)
    for value in (logme(const, y), logme(np.zeros((40, 6)), y), logme(rng.standard_normal((40, 500)), y),
                  h_score(rng.standard_normal((40, 500)), y)):
        assert isinstance(value, float) and math.isfinite(value)
    assert logme(const, y) == pytest.approx(logme_ref(const, y), rel=1e-6)
    assert h_score(const, y) == 0.0
    assert logme(F[:1], y[:1]) == pytest.approx(logme_ref(F[:1], y[:1]), rel=1e-6)  # one sample
    low_rank = rng.standard_normal((40, 4)) @ rng.standard_normal((4, 60))  # D > N and rank 4 < N
    low_rank[:, 0] += y
    assert logme(low_rank, y) == pytest.approx(logme_ref(low_rank, y), rel=1e-6)


def test_labels_need_not_be_contiguous_and_tensors_are_accepted():
    F, y = blobs(n=120, d=10, k=2, sep=1.0)
    y37 = np.where(y == 0, 3, 7)
    ys = np.where(y == 0, "cat", "dog")
    theta = np.eye(4)[np.random.default_rng(8).integers(0, 4, 120)] * 0.9 + 0.025
    z = theta.argmax(1)
    for fn, a in ((logme, F), (h_score, F), (leep, theta), (nce, z)):
        base = fn(a, y)
        assert fn(a, y37) == pytest.approx(base, rel=1e-12)
        assert fn(a, ys) == pytest.approx(base, rel=1e-12)
        out = fn(torch.as_tensor(a), torch.as_tensor(y37))
        assert isinstance(out, float) and out == pytest.approx(base, rel=1e-12)
    assert logme(torch.as_tensor(F, dtype=torch.float32), y) == pytest.approx(logme(F.astype(np.float32), y))


def test_bad_inputs_raise_actionable_errors():
    F, y = blobs(n=20, d=3, k=2)
    with pytest.raises(DataError, match="one label per sample"):
        logme(F, y[:-1])
    with pytest.raises(DataError, match="NaN"):
        logme(np.full((4, 2), np.nan), [0, 1, 0, 1])
    with pytest.raises(DataError, match="argmax"):
        nce(np.eye(3)[[0, 1, 2, 0]], [0, 1, 1, 0])
    with pytest.raises(DataError, match="same backbone"):
        knn_accuracy(F, y, F[:, :2], y)


# ----------------------------------------------------------------------------- probes
def test_knn_matches_sklearn_cosine_knn(digits):
    X, y = digits
    rng = np.random.default_rng(9)
    idx = rng.permutation(len(y))
    tr, te = idx[:1200], idx[1200:]
    sk = lambda k, labels: KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(
        X[tr], labels[tr]).score(X[te], labels[te])
    assert knn_accuracy(X[tr], y[tr], X[te], y[te], k=1) == pytest.approx(sk(1, y))
    yb = (y >= 5).astype(int)                                     # two classes, odd k: no ties
    assert knn_accuracy(X[tr], yb[tr], X[te], yb[te], k=7) == pytest.approx(sk(7, yb))
    assert knn_accuracy(X[tr], y[tr], X[te], y[te], k=20) > 0.9
    F, yf = blobs(n=320, d=30, k=3, sep=0.3)                      # few, far neighbours: split votes, uneven sims
    for k in (4, 10):
        assert knn_accuracy(F[:20], yf[:20], F[20:], yf[20:], k=k) == pytest.approx(
            knn_ref(F[:20], yf[:20], F[20:], yf[20:], k))


def test_probes_near_one_when_separable_and_near_chance_on_random_labels():
    F, y = blobs(n=400, d=20, k=4, sep=3.0)
    tr, te = slice(0, 300), slice(300, None)
    assert knn_accuracy(F[tr], y[tr], F[te], y[te]) > 0.97
    assert linear_probe_accuracy(F[tr], y[tr], F[te], y[te]) > 0.97
    rng = np.random.default_rng(10)
    R, yr = rng.standard_normal((800, 20)), rng.integers(0, 4, 800)
    tr, te = slice(0, 400), slice(400, None)
    assert abs(knn_accuracy(R[tr], yr[tr], R[te], yr[te]) - 0.25) < 0.08
    assert abs(linear_probe_accuracy(R[tr], yr[tr], R[te], yr[te]) - 0.25) < 0.08


def test_linear_probe_on_real_features_with_any_labels_and_tensors(digits):
    X, y = digits
    tr, te = slice(0, 1000), slice(1000, None)
    acc = linear_probe_accuracy(X[tr], y[tr], X[te], y[te])
    assert 0.9 < acc <= 1.0 and isinstance(acc, float)
    y2 = y * 10 + 3
    assert linear_probe_accuracy(torch.as_tensor(X[tr]), torch.as_tensor(y2[tr]), X[te], y2[te]) == pytest.approx(acc)
    one = np.r_[np.zeros(10, int), 1]                             # a single-sample class: no CV, C = 1
    assert 0 <= linear_probe_accuracy(X[:11], one, X[:11], one) <= 1


def test_cross_val_probe():
    F, y = blobs(n=200, d=10, k=3, sep=3.0)
    assert cross_val_probe(F, y, folds=3) > 0.95
    assert cross_val_probe(torch.as_tensor(F), y, folds=3, probe="knn") > 0.95
    rng = np.random.default_rng(11)
    assert abs(cross_val_probe(rng.standard_normal((600, 10)), rng.integers(0, 3, 600), probe="knn") - 1 / 3) < 0.08
    with pytest.raises(ConfigError):
        cross_val_probe(F, y, probe="svm")
    with pytest.raises(DataError, match="lower folds"):
        cross_val_probe(F[:4], y[:4], folds=5)
