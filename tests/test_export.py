"""``transferkit export`` (ONNX, verified with onnxruntime) and ``predict --backend onnxruntime``."""

import json

import pytest
import torch

from conftest import TINY_RUN_CLASSES, write_digit_folder


@pytest.mark.slow
def test_export_matches_pytorch_and_predict_serves_it(run_cli, tiny_run, tmp_path):
    meta = json.loads((tiny_run / "model.json").read_text())
    (tiny_run / "model.json").write_text(json.dumps({**meta, "temperature": 2.5}))  # a fitted calibration
    code, stdout, err = run_cli("export", tiny_run)
    assert code == 0, err
    info = json.loads((tiny_run / "export.json").read_text())
    assert (tiny_run / "model.onnx").stat().st_size > 1e6 and not (tiny_run / "model.onnx.data").exists()
    assert info["within_tolerance"] and info["max_abs_diff"] <= 1e-4
    assert info["batch_sizes"] == [1, 8] and info["input"] == [None, 3, 32, 32]  # 32 noise images: no data
    assert info["parity_images"] == "noise" and all(info["latency"][f"{k}_ms_batch{b}"] > 0
                                                    for k in ("torch", "onnxruntime") for b in (1, 32))
    assert "| 32 |" in (tiny_run / "export.md").read_text()
    from transferkit.export import OnnxModel
    served, meta = OnnxModel(tiny_run / "model.onnx"), json.loads((tiny_run / "model.json").read_text())
    assert served.metadata["classes"] == meta["classes"] and served.metadata["temperature"] == meta["temperature"]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits, probs = served.outputs(x)  # the second output: softmax(logits / T), T the run's temperature
    assert torch.allclose(probs, torch.softmax(logits / 2.5, -1), atol=1e-6)
    assert not torch.allclose(probs, torch.softmax(logits, -1), atol=1e-3)
    assert info["max_abs_diff_probabilities"] <= 1e-5 and info["temperature"] == 2.5
    images = write_digit_folder(tmp_path / "imgs", per_class=3)
    answers = {}
    for backend in ("torch", "onnxruntime"):
        code, stdout, err = run_cli("predict", tiny_run, images, "--format", "json", "--backend", backend)
        assert code == 0, err
        answers[backend] = json.loads(stdout)
    assert len(answers["torch"]) == 9
    for a, b in zip(answers["torch"], answers["onnxruntime"]):
        assert a["path"] == b["path"] and [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert all(abs(s["prob"] - t["prob"]) < 1e-4 for s, t in zip(a["top"], b["top"]))
        assert {t["class"] for t in a["top"]} <= set(TINY_RUN_CLASSES)


def test_onnx_backend_without_export_and_bad_options_are_one_line(run_cli, tiny_run, tmp_path):
    images = write_digit_folder(tmp_path / "imgs", per_class=1)
    for args, message in ((("predict", tiny_run, images, "--backend", "onnxruntime"), "transferkit export"),
                          (("predict", tiny_run, images, "--backend", "tflite"), "unknown --backend"),
                          (("export", tiny_run, "--format", "tflite"), "unknown export format"),
                          (("export", tmp_path / "nowhere"), "not found")):
        code, _, err = run_cli(*args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tiny_run / "model.onnx").exists()
