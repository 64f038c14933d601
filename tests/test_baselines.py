import numpy as np

from transferkit.data import load_source, make_splits
from transferkit.evaluation.baselines import pixel_baseline, pixels


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
