"""Calibration through a real (tiny) finetune: metrics.json, the reliability PNG, model.json's temperature,
and predict's probabilities = softmax(logits / T)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import transferkit as tk
from transferkit import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
@pytest.mark.parametrize("strategy,epochs", [("linear-probe", 10), ("full", 1)])
def test_finetune_fits_and_applies_temperature(tmp_path, strategy, epochs):
    out = tmp_path / "run"
    m = finetune(FinetuneConfig(data="builtin:digits", per_class=20, image_size=32, batch_size=32, val_split=0.2,
                                seed=0, baseline=False, strategy=strategy, epochs=epochs, out=str(out)),
                 progress=False)
    cal = json.loads((out / "metrics.json").read_text())["calibration"]
    assert cal == json.loads(json.dumps(m["calibration"]))
    t = cal["temperature"]
    assert t > 0 and t != 1.0
    for key in ("val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after"):
        assert 0.0 <= cal[key] <= 1.0, key
    assert sum(cal["reliability"]["before"]["count"]) == m["test_images"]
    assert (out / "reliability.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "reliability.png" in report and f"Temperature T = {cal['temperature']:.3f}" in report
    assert f"test {cal['test_ece_before']:.3f} -> {cal['test_ece_after']:.3f}" in report
    assert json.loads((out / "model.json").read_text())["temperature"] == t
    wrong = m["test_images"] - sum(m["test_confusion"][c][c] for c in range(10))  # the gallery, on either path
    assert len(m["test_mistakes"]) == min(8, wrong) and (out / "mistakes.png").is_file() == bool(wrong)
    print(f"\n{strategy}: T={t:.3f} val ECE {cal['val_ece_before']:.4f}->{cal['val_ece_after']:.4f} "
          f"test ECE {cal['test_ece_before']:.4f}->{cal['test_ece_after']:.4f}")

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    model = tk.load(out)
    expected = (model.logits(images) / t).softmax(-1)
    for row, got in zip(expected, model.predict(images, topk=10)):
        for entry in got["top"]:
            assert entry["prob"] == pytest.approx(row[int(entry["class"])].item(), abs=1e-5)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    top = tk.predict(out, [tmp_path / "a.png"], topk=10)[0]["top"]
    assert {e["class"]: e["prob"] for e in top} == pytest.approx(
        {str(c): p for c, p in enumerate(expected[0].tolist())}, abs=1e-5)
    assert not torch.allclose(model.logits(images).softmax(-1), expected, atol=1e-4)   # T really changes it
    if strategy == "linear-probe":   # the ONNX model outputs logits; predict's onnxruntime backend applies T
        pytest.importorskip("onnxruntime")
        from transferkit.engine.export import export_run

        export_run(out)
        onnx_top = tk.predict(out, [tmp_path / "a.png"], topk=10, backend="onnxruntime")[0]["top"]
        assert {e["class"]: e["prob"] for e in onnx_top} == pytest.approx(
            {str(c): p for c, p in enumerate(expected[0].tolist())}, abs=1e-4)
