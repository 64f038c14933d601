"""A finished run folder is a timm / Hugging Face model: ``config.json`` beside ``model.safetensors`` makes
``timm.create_model("local-dir:RUN", pretrained=True)`` the run's model, and ``README.md`` is its card."""

import json
import math
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.data import data_config_for, eval_data_config, load_source
from transferkit.engine.finetune import FINETUNE_RUN
from transferkit.engine.stages import write_timm_config
from transferkit.predict import eval_transform, load_run_model, predict
from transferkit.report.card import CARD_MARK, SCORES, model_card, write_model_card
from transferkit.rundir import RunDir, save_weights, write_json

TINY = dict(per_class=5, image_size=32, batch_size=16, epochs=1, val_split=0.1, test_per_class=3, seed=0)
CNN = dict(model="test_efficientnet", weights="none")
VIT_ARGS = dict(patch_size=4, embed_dim=48, depth=2, num_heads=2)
#: name -> (command, its options): the runs whose folders are checked (1 epoch at 32 px: seconds each)
RUNS = {
    "cnn": ("finetune", dict(CNN, data="builtin:digits", strategy="full", baseline=False)),
    "vit": ("finetune", dict(data="builtin:digits", model="vit_tiny_patch16_224", weights="none", strategy="full",
                             model_args=VIT_ARGS, baseline=False)),
    "lora": ("finetune", dict(CNN, data="builtin:digits", strategy="lora", lora_rank=2, baseline=False)),
    "adapt": ("adapt", dict(CNN, source="builtin:synth-digits", target="builtin:digits", method="dann",
                            target_images=40)),
    "distill": ("distill", dict(CNN, loss="soft", baseline=False)),
}
MEASURED: dict[str, float] = {}


def run_command(command: str, options: dict, out, tmp):
    """One tiny run of ``command``; ``distill`` first fine-tunes its teacher."""
    from transferkit.config import AdaptConfig, DistillConfig
    from transferkit.engine.adapt import adapt
    from transferkit.engine.distill import distill

    if command == "adapt":
        return adapt(AdaptConfig(**TINY, **options, out=str(out)), progress=False)
    if command == "distill":
        teacher = tmp / "teacher"
        run_command(*RUNS["cnn"], teacher, tmp)
        return distill(DistillConfig(**TINY, **options, teacher=str(teacher), out=str(out)), progress=False)
    return finetune(FinetuneConfig(**TINY, **options, out=str(out)), progress=False)


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Six real digits (8x8, grey) saved as PNG files."""
    folder = tmp_path_factory.mktemp("digits")
    source = load_source("builtin:digits")
    paths = []
    for i in range(6):
        path = folder / f"{i}.png"
        source.train[i][0].save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp(request.param)
    metrics = run_command(*RUNS[request.param], tmp / "run", tmp)
    return request.param, tmp / "run", metrics


def batch(run_dir, files):
    """The files through the run's eval transform (what predict feeds the model)."""
    _, meta = load_run_model(run_dir)
    tf = eval_transform(meta)
    return torch.stack([tf(Image.open(f).convert("RGB")) for f in files])


@pytest.mark.slow
def test_timm_local_dir_model_is_the_runs_model(run, digit_files):
    kind, out, _ = run
    ours, meta = load_run_model(out)
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert type(theirs) is type(ours) and theirs.num_classes == 10
    x = batch(out, digit_files)
    with torch.no_grad():
        diff = (theirs(x) - ours(x)).abs().max().item()
    MEASURED[kind] = diff
    print(f"{kind}: max |timm - load_run_model| = {diff:.3g}")
    assert diff <= 1e-6
    assert theirs.pretrained_cfg["label_names"] == meta["classes"] == [str(c) for c in range(10)]


@pytest.mark.slow
def test_predicts_probabilities_are_the_timm_models_softmax(run, digit_files):
    """predict's probabilities are the softmax of timm's logits at the run's fitted temperature
    (model.json; calibration on validation)."""
    _, out, _ = run
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        logits = theirs(batch(out, digit_files)).double()
    temperature = json.loads((out / "model.json").read_text()).get("temperature", 1.0)
    results = predict(out, digit_files, topk=2)
    for row, result in zip(logits.tolist(), results):
        exp = [math.exp((v - max(row)) / temperature) for v in row]  # softmax(logits / T) by hand
        probs = [e / sum(exp) for e in exp]
        best = sorted(range(10), key=lambda c: -probs[c])[:2]
        assert [t["class"] for t in result["top"]] == [str(c) for c in best]
        assert all(abs(t["prob"] - probs[c]) <= 1e-6 for t, c in zip(result["top"], best))


@pytest.mark.slow
def test_timms_preprocessing_is_the_runs_eval_transform(run, digit_files):
    _, out, _ = run
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True)
    timm_tf = timm.data.create_transform(**timm.data.resolve_data_config(model=theirs))
    _, meta = load_run_model(out)
    image = Image.open(digit_files[0]).convert("RGB")
    assert torch.equal(timm_tf(image), eval_transform(meta)(image))
    assert tuple(timm.data.resolve_data_config(model=theirs)["input_size"]) == (3, 32, 32)


@pytest.mark.slow
def test_config_json_fields(run):
    kind, out, _ = run
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 10 and config["label_names"] == [str(c) for c in range(10)]
    assert config["pretrained_cfg"]["crop_pct"] == 1.0 and config["pretrained_cfg"]["crop_mode"] == "squash"
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    if kind == "vit":  # the architecture arguments and the size the position embeddings were built for
        assert config["model_args"] == {**VIT_ARGS, "img_size": 32}
        assert config["num_features"] == 48
    else:
        assert "model_args" not in config and config["architecture"] == "test_efficientnet"


@pytest.mark.slow
def test_model_card_shows_the_run_and_its_timm_snippet_runs(run, digit_files, monkeypatch):
    kind, out, metrics = run
    command = RUNS[kind][0]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and CARD_MARK in card and f"transferkit {command}`" in card
    score, label = SCORES[command][0]                 # the headline score, as metrics.json has it
    assert f"| {label} | {metrics[score]:.4f} |" in card and "builtin:digits" in card
    assert f"`{metrics['strategy']}`" in card and "tk.load" in card and "transferkit predict" in card
    snippet = re.search(r"```python\n(import timm.*?)```", card, re.S).group(1)
    monkeypatch.chdir(out.parent)                      # the snippet names the folder relative to its parent
    Image.open(digit_files[3]).save("image.png")
    scope = {}
    exec(snippet, scope)                               # noqa: S102 -- the card's own example, as a reader runs it
    probs = scope["probs"]
    assert probs.shape == (1, 10) and abs(float(probs.sum()) - 1) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("run", ["lora"], indirect=True)
def test_lora_run_is_saved_merged(run):
    kind, out, _ = run
    weights = load_run_model(out)[0].state_dict()
    assert not any("lora" in k for k in weights)       # plain timm keys: timm loads them strictly


@pytest.mark.slow
def test_pretrain_run_is_a_timm_backbone(tmp_path, one_torch_thread):
    from conftest import write_digit_folder
    from transferkit.config import PretrainConfig
    from transferkit.engine.pretrain import pretrain

    data = write_digit_folder(tmp_path / "digits", per_class=10, classes=(0, 1, 2))
    out = tmp_path / "simclr"
    pretrain(PretrainConfig(data=str(data), out=str(out), model="resnet10t", weights="none", image_size=32,
                            batch_size=16, images=24, epochs=1, monitor_images=20, knn_k=3), progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 0 and config["architecture"] == "resnet10t" and "label_names" not in config
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ours = load_backbone("resnet10t", weights=str(out), num_classes=0).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        diff = (theirs(x) - ours(x)).abs().max().item()
    MEASURED["pretrain"] = diff
    print(f"pretrain: max |timm - load_backbone(weights=run)| = {diff:.3g}")
    assert theirs(x).shape == (3, ours.num_features) and diff <= 1e-6
    card = (out / "README.md").read_text()
    assert "feature-extraction" in card and "finetune --weights simclr" in card and "kNN validation accuracy" in card


# --------------------------------------------------------------------------- fast: the pieces alone
@pytest.fixture
def backbone_folder(tmp_path, one_torch_thread):
    """A headless test_efficientnet (what pretrain saves) with weights and timm config in a folder."""
    torch.manual_seed(0)
    model = load_backbone("test_efficientnet", weights="none", num_classes=0, image_size=32).eval()
    run = RunDir(tmp_path / "pretrained")
    run.path.mkdir()
    save_weights(run.weights, model)
    return run, model


def test_backbone_gets_a_config_with_no_classes(backbone_folder):
    run, model = backbone_folder
    assert write_timm_config(run, model, [], data_config_for(model, 32))
    config = json.loads((run.path / "config.json").read_text())
    assert config["num_classes"] == 0 and "label_names" not in config
    theirs = timm.create_model(f"local-dir:{run.path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert theirs(x).shape == (2, model.num_features)
        assert (theirs(x) - model(x)).abs().max() <= 1e-6


def test_groupnorm_model_gets_no_timm_config(backbone_folder):
    run, model = backbone_folder
    assert not write_timm_config(run, model, ["a", "b"], data_config_for(model, 32), norm="groupnorm")
    assert not (run.path / "config.json").exists()
    meta = {"architecture": "test_efficientnet", "classes": ["a", "b"], "data_config": {"input_size": [3, 32, 32]}}
    card = model_card("finetune", meta, {"data": "x"}, {}, "run", timm_loadable=False)
    assert "GroupNorm" in card and "local-dir" not in card and "tk.load" in card


def test_eval_data_config_is_the_eval_transform():
    image = Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3))
    cfg = data_config_for(load_backbone("test_efficientnet", weights="none", num_classes=2), 24)
    made = timm.data.create_transform(**eval_data_config(cfg, 24), is_training=False)(image)
    assert made.shape == (3, 24, 24)  # squashed whole: no crop of the 40x30 image
    assert torch.equal(made, eval_transform({"data_config": {**cfg, "input_size": (3, 24, 24)}})(image))


def test_card_replaces_its_own_and_keeps_the_users(tmp_path):
    card = tmp_path / "README.md"
    assert write_model_card(card, f"{CARD_MARK}\nfirst")
    assert write_model_card(card, f"{CARD_MARK}\nsecond") and card.read_text().endswith("second")
    card.write_text("# my notes on this model\n")
    assert not write_model_card(card, f"{CARD_MARK}\nthird")
    assert card.read_text() == "# my notes on this model\n"


def test_overwrite_removes_the_config_and_card_of_a_run(tmp_path):
    run = RunDir(tmp_path / "run", kind=FINETUNE_RUN)
    with run.open():
        write_json(run.path / "config.json", {"architecture": "x"})
        write_model_card(run.path / "README.md", CARD_MARK)
        (run.path / "notes.txt").write_text("mine")
    assert run.owns("config.json") and run.owns("README.md")
    with run.open(overwrite=True):
        assert not (run.path / "config.json").exists() and not (run.path / "README.md").exists()
        assert (run.path / "notes.txt").read_text() == "mine"
