import numpy as np

from transferkit.data import load_source, make_splits
from transferkit.transferability.pixels import pixel_baseline, pixels


def test_pixel_baseline_on_digits_is_strong_and_label_sensitive():
    src = load_source("builtin:digits")
    s = make_splits(src.train.targets, seed=0, per_class=20)
    train, test = src.train.subset(s.train), src.train.subset(s.test)
    x = pixels(test.subset(range(5)), size=8)
    assert x.shape == (5, 64) and 0 <= x.min() and x.max() <= 1
    acc = pixel_baseline(train, test, size=8)
    assert acc > 0.85  # digits are nearly linearly separable in pixel space
    shuffled = train.subset(np.random.default_rng(0).permutation(len(train)))
    broken = type(train)(np.stack([np.asarray(shuffled[i][0].convert("L")) for i in range(len(shuffled))]),
                         np.random.default_rng(1).permutation(train.targets), train.classes)
    assert pixel_baseline(broken, test, size=8) < 0.4  # random labels: near chance


def test_cached_baseline_is_scored_once_per_data_and_seed(tmp_path, monkeypatch):
    from transferkit.transferability import pixels as pixel_module
    from transferkit.evaluation.features import FeatureCache

    src = load_source("builtin:digits")
    s = make_splits(src.train.targets, seed=0, per_class=20)
    train, test = src.train.subset(s.train), src.train.subset(s.test)
    cache = FeatureCache(tmp_path)
    first = pixel_module.cached_pixel_baseline(train, test, size=8, cache=cache)
    assert first == pixel_baseline(train, test, size=8)
    calls = []
    monkeypatch.setattr(pixel_module, "pixel_baseline", lambda *a: calls.append(a) or 0.0)
    assert pixel_module.cached_pixel_baseline(train, test, size=8, cache=cache) == first and not calls
    other = src.train.subset(s.val)  # other test images: scored again
    assert pixel_module.cached_pixel_baseline(train, other, size=8, cache=cache) == 0.0 and len(calls) == 1
    pixel_module.cached_pixel_baseline(train, test, size=8, seed=1, cache=cache)
    assert len(calls) == 2
