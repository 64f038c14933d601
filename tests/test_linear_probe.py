"""The converged linear probe, checked against scikit-learn on real digits pixels."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from torch import nn

from transferkit.errors import ConfigError, DataError
from transferkit.evaluation.linear_probe import fit_linear_probe, load_into


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return d.data.astype(np.float64), d.target


def _standardise(x_train, standardize):
    """Independent of the probe: numpy mean and population std (global: root mean variance)."""
    mu, var = x_train.mean(0), x_train.var(0)
    if standardize == "global":
        return mu, np.full_like(var, np.sqrt(var.mean()))
    return mu, np.where(var > 0, np.sqrt(var), 1.0)


@pytest.mark.parametrize("standardize", ["global", "feature"])
def test_matches_sklearn_logistic_regression_at_a_fixed_strength(digits, standardize):
    x, y = digits
    tr, te = slice(0, 800), slice(800, None)
    c_reg = 0.05
    fit = fit_linear_probe(torch.tensor(x[tr]), torch.tensor(y[tr]), num_classes=10, cs=(c_reg,),
                           standardize=standardize, tol=1e-8, dtype=torch.float64)
    mu, sigma = _standardise(x[tr], standardize)
    ref = LogisticRegression(C=c_reg, tol=1e-10, max_iter=10_000).fit((x[tr] - mu) / sigma, y[tr])
    assert fit.selected_by == "fixed" and fit.c == c_reg and fit.lam == pytest.approx(1 / (c_reg * 800))
    # the probe's weights act on raw pixels: W = V / sigma
    assert np.allclose(fit.weight.numpy() * sigma, ref.coef_, atol=2e-4 * np.abs(ref.coef_).max())
    probs = torch.softmax(fit.logits(torch.tensor(x[te])).double(), 1).numpy()
    assert np.abs(probs - ref.predict_proba((x[te] - mu) / sigma)).max() < 1e-4
    assert (probs.argmax(1) == ref.predict((x[te] - mu) / sigma)).all()
    assert fit.accuracy(torch.tensor(x[te]), torch.tensor(y[te])) > 0.85


def test_fit_is_converged_gradient_is_zero(digits):
    x, y = digits
    fit = fit_linear_probe(torch.tensor(x[:600]), torch.tensor(y[:600]), num_classes=10, cs=(1.0,), tol=1e-7,
                           dtype=torch.float64)
    assert fit.converged and fit.grad_max <= 1e-7 and fit.iterations > 10
    mu, sigma = (torch.tensor(a) for a in _standardise(x[:600], "global"))
    v = (fit.weight.double() * sigma).requires_grad_()              # back to standardised coordinates
    c = (fit.bias.double() + fit.weight.double() @ mu).requires_grad_()
    z = (torch.tensor(x[:600]) - mu) / sigma
    loss = F.cross_entropy(z @ v.T + c, torch.tensor(y[:600])) + fit.lam / 2 * v.pow(2).sum()
    loss.backward()
    assert v.grad.abs().max() < 1e-5 and c.grad.abs().max() < 1e-5  # float32 storage of W, b


@pytest.mark.parametrize("standardize", ["global", "feature"])
def test_standardisation_is_folded_back_raw_logits_do_not_depend_on_feature_scale(digits, standardize):
    x, y = digits
    rng = np.random.default_rng(0)
    scale = 3.0 if standardize == "global" else rng.uniform(0.1, 10, x.shape[1])
    shifted = x * scale + rng.normal(0, 5, x.shape[1])              # affine change of every feature
    a = fit_linear_probe(torch.tensor(x[:500]), torch.tensor(y[:500]), num_classes=10, cs=(0.1,),
                         standardize=standardize, tol=1e-8)
    b = fit_linear_probe(torch.tensor(shifted[:500]), torch.tensor(y[:500]), num_classes=10, cs=(0.1,),
                         standardize=standardize, tol=1e-8)
    la, lb = a.logits(torch.tensor(x[500:])), b.logits(torch.tensor(shifted[500:]))
    assert (la - lb).abs().max() < 1e-3 * la.abs().max()


def test_strength_is_chosen_on_validation(digits):
    x, y = digits
    tr, va = slice(0, 300), slice(300, 700)
    cs = (1e-4, 1e-2, 1.0)
    fit = fit_linear_probe(torch.tensor(x[tr]), torch.tensor(y[tr]), torch.tensor(x[va]), torch.tensor(y[va]),
                           num_classes=10, cs=cs)
    mu, sigma = _standardise(x[tr], "global")
    models = {c: LogisticRegression(C=c, tol=1e-8, max_iter=5000).fit((x[tr] - mu) / sigma, y[tr]) for c in cs}
    ref = {c: m.score((x[va] - mu) / sigma, y[va]) for c, m in models.items()}
    ce = {c: log_loss(y[va], m.predict_proba((x[va] - mu) / sigma)) for c, m in models.items()}
    assert fit.selected_by == "val" and ce[fit.c] == min(ce.values()) and fit.c != 1e-4
    # every fit stops at max |grad| <= 1e-4 (scikit-learn's default), the reference at 1e-8:
    # within two of the 400 images
    assert fit.val_accuracy == pytest.approx(ref[fit.c], abs=2 / 400 + 1e-9)
    assert [round(lam * c * 300, 6) for (lam, _), c in zip(fit.path, cs)] == [1.0, 1.0, 1.0]
    assert [a for _, a in fit.path] == pytest.approx([ref[c] for c in cs], abs=2 / 400 + 1e-9)


def test_cross_validation_when_validation_is_tiny_or_absent(digits):
    x, y = digits
    tiny = np.concatenate([np.flatnonzero(y[300:] == k)[:2] + 300 for k in range(10)])  # 2 per class
    kw = dict(num_classes=10, cs=(1e-4, 1e-2, 1.0), folds=3)
    with_tiny = fit_linear_probe(torch.tensor(x[:300]), torch.tensor(y[:300]), torch.tensor(x[tiny]),
                                 torch.tensor(y[tiny]), **kw)
    without = fit_linear_probe(torch.tensor(x[:300]), torch.tensor(y[:300]), **kw)
    for fit in (with_tiny, without):
        assert fit.selected_by == "cv" and fit.c != 1e-4 and max(a for _, a in fit.path) > 0.9
    assert with_tiny.val_accuracy is not None and without.val_accuracy is None
    assert [a for _, a in with_tiny.path] == [a for _, a in without.path]  # val rows did not vote


def test_groups_keep_the_views_of_one_image_in_one_fold(digits):
    x, y = digits
    x2, y2 = np.concatenate([x[:200], x[:200]]), np.concatenate([y[:200], y[:200]])  # 2 identical views
    groups = np.tile(np.arange(200), 2)
    kw = dict(num_classes=10, cs=(1e-3, 1e2))
    leaky = fit_linear_probe(torch.tensor(x2), torch.tensor(y2), **kw)
    grouped = fit_linear_probe(torch.tensor(x2), torch.tensor(y2), groups=groups, **kw)
    # without groups a held-out view's twin is in training: cross-validation sees ~100% at weak regularisation
    assert leaky.path[-1][1] > 0.99
    assert grouped.path[-1][1] < 0.97


def test_load_into_a_linear_head(digits):
    x, y = digits
    fit = fit_linear_probe(torch.tensor(x[:400]), torch.tensor(y[:400]), num_classes=10, cs=(0.1,))
    head = load_into(nn.Linear(64, 10), fit)
    with torch.no_grad():
        assert torch.allclose(head(torch.tensor(x[400:], dtype=torch.float32)),
                              fit.logits(torch.tensor(x[400:])), atol=1e-4)
    with pytest.raises(ConfigError, match="10 classes on 64 features"):
        load_into(nn.Linear(64, 5), fit)


def test_bad_inputs_are_actionable_errors(digits):
    x, y = digits
    with pytest.raises(DataError, match=r"labels must be in \[0, 5\)"):
        fit_linear_probe(torch.tensor(x[:50]), torch.tensor(y[:50]), num_classes=5)
    with pytest.raises(ConfigError, match="positive"):
        fit_linear_probe(torch.tensor(x[:50]), torch.tensor(y[:50]), num_classes=10, cs=(0.0, 1.0))
    one_each = np.array([np.flatnonzero(y == k)[0] for k in range(10)])
    with pytest.raises(DataError, match="cs=\\(C,\\)"):
        fit_linear_probe(torch.tensor(x[one_each]), torch.tensor(y[one_each]), num_classes=10)


@pytest.mark.slow
def test_digits_64px_efficientnet_lite0_probe_beats_a_naive_adamw_head(tmp_path):
    """Real packaged EfficientNet-Lite0 features of sklearn digits at 64 px, the ``finetune`` splits."""
    from torch.utils.data import DataLoader

    from transferkit.backbones import load_backbone
    from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits
    from transferkit.evaluation import evaluate, extract_features
    from transferkit.evaluation.features import FeatureCache, feature_key, weights_identity

    source = load_source("builtin:digits")
    s = make_splits(source.train.targets, val_split=0.15, test_split=0.2, seed=0, has_test=False,
                    per_class=None, classes=source.classes)
    model = load_backbone("efficientnet_lite0", weights="packaged", num_classes=10, image_size=64)
    tf = build_transform(data_config_for(model, 64), 64, train=False)
    loaders = {k: DataLoader(TransformedSubset(source.train, idx, tf), batch_size=128)
               for k, idx in (("train", s.train), ("val", s.val), ("test", s.test))}
    cache = FeatureCache(tmp_path)
    feats = {k: cache.cached(feature_key(model="efficientnet_lite0", image_size=64,
                                         weights=weights_identity("efficientnet_lite0", "packaged"),
                                         data=source.train.subset(getattr(s, k)).fingerprint(), split=k),
                             lambda k=k: dict(zip(("x", "y"), extract_features(model, loaders[k], progress=False))))
             for k in loaders}
    (x, y), (xv, yv), (xt, yt) = ((feats[k]["x"], feats[k]["y"]) for k in ("train", "val", "test"))
    fit = fit_linear_probe(x, y, xv, yv, num_classes=10)
    assert fit.selected_by == "val" and fit.converged and len(x) == 1221 and len(xt) == 360
    probe = fit.accuracy(xt, yt)

    torch.manual_seed(0)                                             # the naive loop: AdamW, 20 epochs
    head = nn.Linear(x.shape[1], 10)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for _ in range(20):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(head(x[idx]), y[idx]).backward()
            opt.step()
    naive = (head(xt).argmax(1) == yt).float().mean().item()
    # measured: probe 0.897 (C=32 chosen on val), AdamW 0.881 (0.850-0.881 over seeds 0-5)
    assert probe >= 0.89 and probe > naive + 0.01, (probe, naive)
    # the fitted head inside the real model classifies the images as the probe classifies the features
    load_into(model.get_classifier(), fit)
    assert evaluate(model, loaders["test"], 10)["accuracy"] == pytest.approx(probe, abs=1 / 360)


def test_selection_stops_the_path_patience_strengths_past_the_best(digits):
    x, y = digits
    tr, va = slice(0, 300), slice(300, 700)
    data = (torch.tensor(x[tr]), torch.tensor(y[tr]), torch.tensor(x[va]), torch.tensor(y[va]))
    cs = tuple(np.logspace(-4, 3, 15))
    whole = fit_linear_probe(*data, num_classes=10, cs=cs, patience=None)
    ce_best = cs.index(whole.c)
    assert len(whole.path) == 15 and ce_best < 13  # the weakest strengths lose on validation
    short = fit_linear_probe(*data, num_classes=10, cs=cs, patience=2)
    assert short.c == whole.c and len(short.path) == ce_best + 3
    assert short.path == whole.path[:ce_best + 3] and short.iterations < whole.iterations
    assert torch.equal(short.weight, whole.weight)
    fixed = fit_linear_probe(*data, num_classes=10, cs=(whole.c,))  # no choice, still scored on val
    assert fixed.selected_by == "fixed" and fixed.path[0][1] == pytest.approx(fixed.val_accuracy)
