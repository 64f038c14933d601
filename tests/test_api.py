"""The Python API: ``import transferkit as tk`` lists every command, and ``tk.load(run).predict`` on images in
memory answers what ``tk.predict`` answers for the same images on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import transferkit as tk
from transferkit.errors import ConfigError, DataError
from transferkit.predict import eval_transform

SRC = str(Path(__file__).resolve().parents[1] / "src")
COMMANDS = ("finetune", "compare", "adapt", "tta", "distill", "pretrain", "rank", "export", "predict", "corrupt")
CONFIGS = ("FinetuneConfig", "AdaptConfig", "DistillConfig", "PretrainConfig", "TTAConfig")
SHADOWED = ("predict", "tta", "distill", "export")  # also the names of subpackages of transferkit


@pytest.fixture(scope="module")
def images():
    """Four real, different images: a colour gradient, its mirror, a grey ramp and a checkerboard."""
    ramp = np.linspace(0, 255, 40 * 30, dtype=np.float64).reshape(40, 30)
    colour = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], -1).astype(np.uint8)
    checker = ((np.indices((40, 30)).sum(0) // 5) % 2 * 255).astype(np.uint8)
    return [Image.fromarray(colour), Image.fromarray(colour[:, ::-1].copy()), Image.fromarray(ramp.astype(np.uint8)),
            Image.fromarray(checker)]


@pytest.fixture(scope="module")
def files(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"{i}.png" for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
    return paths


def tops(results):
    return [r["top"] for r in results]


def test_notebook_example_equals_predict_on_the_saved_image(tiny_run_template, images, files, one_torch_thread):
    model = tk.load(tiny_run_template)
    result = model.predict(images[0])                  # the notebook example: one PIL image
    assert result == [{"top": tk.predict(tiny_run_template, [files[0]])[0]["top"]}]
    assert len(result[0]["top"]) == 3 and {t["class"] for t in result[0]["top"]} == {"cat", "dog", "owl"}


def test_every_input_kind_gives_predicts_answer(tiny_run_template, images, files, one_torch_thread):
    model = tk.load(tiny_run_template)
    expected = tk.predict(tiny_run_template, files, topk=2)
    assert len({str(top) for top in tops(expected)}) == len(files)  # four different answers to tell apart
    arrays = [np.asarray(image) for image in images]   # (H, W, 3) colour, (H, W) grey
    as_uint8 = torch.from_numpy(np.array(images[0])).permute(2, 0, 1)
    transformed = torch.stack([eval_transform(model.meta)(Image.open(f).convert("RGB")) for f in files])
    assert tops(model.predict(images, topk=2)) == tops(expected)
    assert tops(model.predict(arrays, topk=2)) == tops(expected)
    assert tops(model.predict(transformed, topk=2)) == tops(expected)        # float: taken as the model input
    assert tops(model.predict(as_uint8, topk=2)) == tops(expected[:1])      # uint8 (3, H, W): transformed
    assert tops(model.predict(as_uint8[None], topk=2)) == tops(expected[:1])
    assert tops(model.predict([images[2], str(files[1]), arrays[3]], topk=2)) == tops(expected[2:3] + expected[1:2]
                                                                                       + expected[3:])
    assert model.predict([str(f) for f in files], topk=2) == list(expected)  # paths: with their "path"
    assert model.predict(files[0].parent, topk=2) == list(tk.predict(tiny_run_template, [files[0].parent], topk=2))
    assert model.predict(images, topk=2, batch_size=3) == model.predict(images, topk=2)


def test_logits_and_properties(tiny_run_template, images, files, one_torch_thread):
    model = tk.load(tiny_run_template)
    logits = model.logits(images)
    probs = logits.softmax(-1)
    first = tk.predict(tiny_run_template, files[:1], topk=1)[0]["top"][0]
    assert first["class"] == model.classes[int(probs[0].argmax())]
    assert abs(first["prob"] - float(probs[0].max())) <= 1e-6
    assert model.classes == ["cat", "dog", "owl"] and logits.shape == (4, 3)
    assert isinstance(model.model, torch.nn.Module) and not model.model.training
    assert model.config == {} and model.metrics == {}  # the template run has neither file
    assert "efficientnet_lite0" in repr(model)


def test_config_and_metrics_are_the_runs_files(tiny_run, one_torch_thread):
    (tiny_run / "config.yaml").write_text("model: efficientnet_lite0\nepochs: 3\n")
    (tiny_run / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    model = tk.load(tiny_run)
    assert model.config == {"model": "efficientnet_lite0", "epochs": 3}
    assert model.metrics == {"test_accuracy": 0.5}


def test_export_exports_the_run(tiny_run_template, monkeypatch, one_torch_thread):
    import transferkit.engine.export as engine_export

    calls = []
    monkeypatch.setattr(engine_export, "export_run", lambda run_dir, **kw: calls.append((run_dir, kw)) or {"ok": 1})
    assert tk.load(tiny_run_template).export(opset=17, threads=2) == {"ok": 1}
    assert calls == [(Path(tiny_run_template), {"opset": 17, "threads": 2})]


@pytest.mark.parametrize("images, error, words", [
    (np.zeros((8, 8, 3), dtype=np.float32), DataError, "uint8"),
    (np.zeros((8, 8, 2), dtype=np.uint8), DataError, "(H, W, 3)"),
    (torch.zeros(2, 5, 8, 8), DataError, "(B, 3, H, W)"),
    (torch.zeros(1, 3, 8, 8), DataError, "(B, 3, 32, 32)"),   # a float tensor at another size than the run's
    ({"not": "an image"}, DataError, "dict"),
    ([], DataError, "no images"),
])
def test_inputs_it_cannot_take_are_one_line(tiny_run_template, images, error, words, one_torch_thread):
    with pytest.raises(error) as e:
        tk.load(tiny_run_template).predict(images)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_topk_below_one_is_refused(tiny_run_template, images, one_torch_thread):
    with pytest.raises(ConfigError, match="topk"):
        tk.load(tiny_run_template).predict(images[0], topk=0)


def test_dir_lists_the_api_and_each_name_resolves():
    names = dir(tk)
    for name in ("load", "Model", *COMMANDS, *CONFIGS):
        assert name in names and name in tk.__all__, name
    for name in ("load", *COMMANDS):
        value = getattr(tk, name)
        assert callable(value) and not isinstance(value, type(sys)), name
        assert "Example::" in value.__doc__, f"tk.{name} has no example in its docstring"
    assert tk.rank.__name__ == "rank_candidates" and tk.export.__name__ == "export_run"
    assert all(isinstance(getattr(tk, c), type) for c in CONFIGS)


@pytest.mark.slow
def test_function_names_stay_functions_after_their_subpackages_import():
    """In a fresh interpreter (the subpackages not yet imported): each use of ``tk.<name>`` is the function,
    before and after ``transferkit.<name>`` (the subpackage) is imported, and the subpackage still imports."""
    code = ("import sys, transferkit as tk\n"
            f"names = {SHADOWED!r}\n"
            "before = [getattr(tk, n) for n in names]\n"
            "import transferkit.predict, transferkit.tta, transferkit.distill, transferkit.export\n"
            "from transferkit.tta import check_method\n"
            "after = [getattr(tk, n) for n in names]\n"
            "print(all(callable(f) and not isinstance(f, type(sys)) for f in before + after), before == after,\n"
            "      type(sys.modules['transferkit.tta']).__name__)\n")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "module"]
