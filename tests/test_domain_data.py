"""The synthetic domains builtin:synth-digits and builtin:fashion-mnist-m: deterministic, shaped
like their real counterparts, and with a real domain gap."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from transferkit.data import load_source
from transferkit.data.synthetic import blend_on_photos, to_digit_levels
from transferkit.errors import DataError

DIGIT_LEVELS = {round(k * 255 / 16) for k in range(17)}


@pytest.fixture(scope="module")
def synth():
    return load_source("builtin:synth-digits")


@pytest.fixture(scope="module")
def real():
    return load_source("builtin:digits")


@pytest.mark.slow
def test_synth_digits_is_deterministic(synth):
    again = load_source("builtin:synth-digits")          # rendered anew (nothing is cached)
    assert np.array_equal(again.train._images, synth.train._images)
    assert np.array_equal(again.train.targets, synth.train.targets)
    assert again.train.fingerprint() == synth.train.fingerprint()


def test_synth_digits_looks_like_sklearn_digits(synth, real):
    images = synth.train._images
    assert images.shape == (1800, 8, 8) and images.dtype == np.uint8
    assert set(np.unique(images)) <= DIGIT_LEVELS and set(np.unique(real.train._images)) <= DIGIT_LEVELS
    assert images.max() == 255 and (images == 0).mean() > 0.3      # white strokes on black
    assert synth.classes == real.classes and synth.test is None
    assert set(synth.train.class_counts().values()) == {180}
    assert synth.train.fingerprint() != real.train.fingerprint()


def test_bitmap_to_levels_counts_pixels_per_4x4_block():
    bitmap = np.zeros((32, 32), dtype=bool)
    bitmap[:4, :4] = True              # one full block -> 16
    bitmap[4:6, 8:10] = True           # 4 pixels of block (1, 2) -> 4
    levels = to_digit_levels(bitmap)
    assert levels.shape == (8, 8) and levels[0, 0] == 16 and levels[1, 2] == 4 and levels.sum() == 20


def test_a_classifier_trained_on_synth_digits_drops_on_real_digits(synth, real):
    x, y = synth.train._images.reshape(1800, -1) / 255.0, synth.train.targets
    order = np.random.default_rng(0).permutation(len(x))
    fit, held = order[:1200], order[1200:]
    clf = LogisticRegression(max_iter=2000).fit(x[fit], y[fit])
    synth_accuracy = clf.score(x[held], y[held])
    real_accuracy = clf.score(real.train._images.reshape(len(real.train), -1) / 255.0, real.train.targets)
    assert synth_accuracy > 0.9 and real_accuracy < 0.8     # measured 0.957 and 0.561


@pytest.fixture(scope="module")
def fmm():
    return load_source("builtin:fashion-mnist-m")


@pytest.mark.needs_fashion_mnist
def test_fashion_mnist_m_is_rgb_with_the_test_labels(fmm):
    fashion = load_source("builtin:fashion-mnist")
    images = fmm.train._images
    assert images.shape == (10000, 28, 28, 3) and images.dtype == np.uint8
    assert np.array_equal(fmm.train.targets, fashion.test.targets)
    assert fmm.classes == fashion.classes and fmm.test is None
    assert np.abs(images[..., 0].astype(int) - images[..., 2]).mean() > 10   # really coloured
    assert fmm.train[0][0].mode == "RGB" and fmm.train[0][0].size == (28, 28)


@pytest.mark.needs_fashion_mnist
def test_fashion_mnist_m_is_deterministic(fmm):
    again = load_source("builtin:fashion-mnist-m")
    assert np.array_equal(again.train._images, fmm.train._images)
    assert again.train.fingerprint() == fmm.train.fingerprint()


def test_blend_is_the_absolute_difference_per_channel():
    photo = np.zeros((10, 10, 3), dtype=np.uint8)
    photo[..., 0], photo[..., 1], photo[..., 2] = 100, 0, 255
    image = np.array([[[0, 50], [200, 255]]], dtype=np.uint8)
    out = blend_on_photos(image, [photo], seed=0)
    assert out.shape == (1, 2, 2, 3)
    assert out[0, ..., 0].tolist() == [[100, 50], [100, 155]]
    assert out[0, ..., 1].tolist() == image[0].tolist()
    assert out[0, ..., 2].tolist() == [[255, 205], [55, 0]]


@pytest.mark.needs_fashion_mnist
def test_fashion_mnist_m_without_scikit_image_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DataError, match="pip install scikit-image"):
        load_source("builtin:fashion-mnist-m")


def test_unknown_builtin_lists_the_synthetic_domains():
    with pytest.raises(DataError, match="builtin:synth-digits, builtin:fashion-mnist-m"):
        load_source("builtin:mnist-m")
