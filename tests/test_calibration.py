"""Calibration block: ECE by hand, a calibrated set, temperature recovery."""

import pytest
import torch

from transferkit.evaluation.calibration import (calibrated_probs, expected_calibration_error, fit_temperature,
                                                nll_at, reliability_bins)


def _two_class(conf_and_correct):
    probs = torch.tensor([[c, 1 - c] for c, _ in conf_and_correct])
    labels = torch.tensor([0 if ok else 1 for _, ok in conf_and_correct])
    return probs, labels


def test_ece_six_samples_by_hand():
    # 5 bins of width 0.2: (0.8,1] holds 0.9 right, 0.9 wrong -> acc .5, conf .9, gap .4
    # (0.6,0.8] holds 0.7, 0.7 both right -> gap .3 ; (0.4,0.6] holds .55 right, .55 wrong -> gap .05
    # ECE = 2/6*.4 + 2/6*.3 + 2/6*.05 = 0.25
    probs, labels = _two_class([(0.9, True), (0.9, False), (0.7, True), (0.7, True), (0.55, True), (0.55, False)])
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(0.25, abs=1e-6)
    r = reliability_bins(probs, labels, bins=5)
    assert r["count"] == [0, 0, 2, 2, 2]
    assert r["accuracy"][2:] == pytest.approx([0.5, 1.0, 0.5])
    assert r["confidence"][2:] == pytest.approx([0.55, 0.7, 0.9])


def test_ece_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(500, 4, generator=g) * 2
    labels = torch.randint(0, 4, (500,), generator=g)
    probs = logits.softmax(-1)
    ref = tm.MulticlassCalibrationError(num_classes=4, n_bins=15, norm="l1")(probs, labels).item()
    assert expected_calibration_error(probs, labels) == pytest.approx(ref, abs=1e-5)


def _calibrated_set(n=20000, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(z.softmax(-1), 1, generator=g).squeeze(1)
    return z, labels


def test_calibrated_set_has_near_zero_ece():
    z, labels = _calibrated_set()
    assert expected_calibration_error(z.softmax(-1), labels) < 0.015
    assert expected_calibration_error((2 * z).softmax(-1), labels) > 0.05   # sharpened: over-confident


def test_fit_temperature_recovers_two_and_lowers_nll():
    z, labels = _calibrated_set()
    t = fit_temperature(2 * z, labels)
    assert t == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(2 * z, labels) == t                                # deterministic
    assert nll_at(2 * z, labels, t) < nll_at(2 * z, labels, 1.0)
    assert expected_calibration_error(calibrated_probs(2 * z, t), labels) < 0.015


def test_fit_temperature_empty_is_one():
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, "2", None, float("inf")])
def test_model_json_bad_temperature_refused(tiny_run, tmp_path, bad):
    import json

    from transferkit.errors import RunDirError
    from transferkit.predict import predict

    meta = json.loads((tiny_run / "model.json").read_text())
    (tiny_run / "model.json").write_text(json.dumps({**meta, "temperature": bad}))
    with pytest.raises(RunDirError, match="temperature must be a positive number"):
        predict(tiny_run, [tmp_path])


def test_top_classes_divides_by_temperature():
    from transferkit.predict import top_classes

    # logits (0, ln 3): T=1 -> (1/4, 3/4); T=2 -> logits (0, ln 3 / 2) -> (1/(1+sqrt 3), sqrt 3/(1+sqrt 3))
    logits = torch.tensor([[0.0, float(torch.log(torch.tensor(3.0)))]])
    assert top_classes(logits, ["a", "b"], 2)[0] == [{"class": "b", "prob": 0.75}, {"class": "a", "prob": 0.25}]
    s3 = 3 ** 0.5
    got = top_classes(logits, ["a", "b"], 2, temperature=2.0)[0]
    assert [e["prob"] for e in got] == pytest.approx([s3 / (1 + s3), 1 / (1 + s3)], abs=1e-6)


def test_reliability_plot_written(tmp_path):
    from transferkit.report import plot_reliability

    z, labels = _calibrated_set(n=500)
    probs = (2 * z).softmax(-1)
    cal = {"temperature": 2.0, "test_ece_before": 0.1, "test_ece_after": 0.01,
           "reliability": {"split": "test", "before": reliability_bins(probs, labels),
                           "after": reliability_bins(z.softmax(-1), labels)}}
    path = plot_reliability(cal, tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
