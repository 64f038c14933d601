"""Tests of transferkit.predict on a real (untrained) saved run and real image files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.errors import ConfigError
from transferkit.predict import collect_images, load_run_model, predict


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def gradient(size=(40, 20)) -> Image.Image:
    """A non-square RGB image whose content changes with orientation."""
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1).astype(np.uint8))


def test_exif_orientation_ignored_in_predict(tiny_run, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown rotated 90 degrees clockwise
    gradient().save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "phone.jpg") as f:
        stored = f.convert("RGB")
    stored.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")  # same pixels, upright
    stored.save(tmp_path / "sideways.png")
    phone, upright, sideways = predict(tiny_run, [tmp_path / n for n in ("phone.jpg", "upright.png", "sideways.png")])
    assert phone["top"] == upright["top"]
    assert [t["prob"] for t in phone["top"]] != [t["prob"] for t in sideways["top"]]


def test_predict_scanned_appledouble_and_checkpoint_files(tiny_run, tmp_path):
    folder = tmp_path / "imgs"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "__MACOSX").mkdir()
    gradient().save(folder / "a.png")
    gradient().save(folder / ".ipynb_checkpoints" / "a-checkpoint.png")
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")  # AppleDouble: not an image
    (folder / "__MACOSX" / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    assert collect_images([folder]) == [folder / "a.png"]
    assert [r["path"] for r in predict(tiny_run, [folder])] == [str(folder / "a.png")]


@pytest.mark.slow  # the in-process CLI imports Lightning once (seconds)
def test_non_utf8_image_name_printed_readably(tiny_run, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = Path("imgs")
    folder.mkdir()
    gradient().save(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    (result,) = predict(tiny_run, [folder])
    assert result["path"] == "imgs/caf\\xe9.png"
    for fmt in ("json", "csv", "table"):
        code, out, err = run_cli("predict", tiny_run, folder, "--format", fmt)
        assert code == 0, err
        assert "caf\\xe9.png" in out.replace("\\\\", "\\")  # JSON doubles the backslash


def test_topk_below_one_refused(tiny_run, tmp_path):
    gradient().save(tmp_path / "a.png")
    for k in (0, -1):
        with pytest.raises(ConfigError, match="--topk must be >= 1"):
            predict(tiny_run, [tmp_path / "a.png"], topk=k)


def test_topk_above_class_count_is_clamped(tiny_run, tmp_path):
    gradient().save(tmp_path / "a.png")
    (result,) = predict(tiny_run, [tmp_path / "a.png"], topk=50)
    assert sorted(t["class"] for t in result["top"]) == ["cat", "dog", "owl"]
    assert abs(sum(t["prob"] for t in result["top"]) - 1) < 1e-4


def test_default_topk_is_three_most_probable_first(tmp_path):
    """Five classes: the default lists three, the first three of the full ranking (the CLI's default is this one)."""
    from transferkit.backbones import describe_model, load_backbone
    from transferkit.data import data_config_for
    from transferkit.rundir import RunDir, save_weights, write_json

    torch.manual_seed(0)
    model = load_backbone("test_efficientnet", weights="none", num_classes=5)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    save_weights(run.weights, model)
    write_json(run.model_json, {**describe_model(model), "norm": "batchnorm", "classes": list("abcde"),
                                "data_config": data_config_for(model, 32), "strategy": "full",
                                "transferkit_format": 1})
    gradient().save(tmp_path / "a.png")
    (every,) = predict(run.path, [tmp_path / "a.png"], topk=5)
    (default,) = predict(run.path, [tmp_path / "a.png"])
    assert sorted(t["class"] for t in every["top"]) == list("abcde")
    assert default["top"] == every["top"][:3]


def test_device_parameter(tiny_run, tmp_path):
    from transferkit.predict import resolve_device

    gradient().save(tmp_path / "a.png")
    cpu = predict(tiny_run, [tmp_path / "a.png"], device="cpu")
    assert predict(tiny_run, [tmp_path / "a.png"], device=None) == cpu
    assert resolve_device(None) == resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_run_model(tiny_run, device="cpu")
    assert next(model.parameters()).device == torch.device("cpu") and not model.training
    assert meta["classes"] == ["cat", "dog", "owl"]
    for bad, words in (("tpu", "cpu, cuda, cuda:N or auto"), ("cuda:x", "cpu, cuda, cuda:N or auto"),
                       ("cuda:99", "cuda")):
        with pytest.raises(ConfigError, match=words) as info:
            predict(tiny_run, [tmp_path / "a.png"], device=bad)
        assert "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_on_cuda_matches_cpu(tiny_run, tmp_path):
    gradient().save(tmp_path / "a.png")
    cpu = predict(tiny_run, [tmp_path / "a.png"], device="cpu")[0]["top"]
    gpu = predict(tiny_run, [tmp_path / "a.png"], device="cuda")[0]["top"]
    assert [t["class"] for t in gpu] == [t["class"] for t in cpu]
    assert np.allclose([t["prob"] for t in gpu], [t["prob"] for t in cpu], atol=1e-3)


def test_results_are_json_serialisable(tiny_run, tmp_path):
    gradient().save(tmp_path / "a.png")
    results = predict(tiny_run, [tmp_path / "a.png"], topk=2)
    assert json.loads(json.dumps(results, ensure_ascii=False)) == results
