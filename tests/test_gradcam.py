"""Error analysis: Grad-CAM (a hand-built model whose CAM is known exactly, timm CNNs and ViTs, the model left
untouched), the most confident mistakes on hand-written probabilities, the gallery, predict --labels."""

import json

import numpy as np
import pytest
import timm
import torch
from torch import nn

from conftest import write_digit_folder
from transferkit.evaluation.gradcam import cam_target_layer, gradcam, vit_reshape
from transferkit.evaluation.mistakes import confident_mistakes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TwoChannels(nn.Module):
    """A = ReLU(x[:, :2]) (the red and green channels, through a fixed 1x1 conv), logits = W GAP(A):
    class 0 reads red, class 1 green, class 2 is -red."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0]]))

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def _image():
    """8x8: a red square at rows 1-2, cols 1-2 (value 1, and 0.5 at (1, 1)), a green one at rows 5-6, cols 4-6."""
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0, 1:3, 1:3] = 1.0
    x[0, 0, 1, 1] = 0.5
    x[0, 1, 5:7, 4:7] = 1.0
    return x


def test_gradcam_of_a_hand_built_model_is_the_evidence_map():
    """By hand: d y^0 / d A^0_ij = 1/64 everywhere, d y^0 / d A^1 = 0, so alpha^0 = (1/64, 0) and
    L^0 = ReLU(A^0 / 64) = red / 64, min-max scaled: the red square itself (0.5 stays 0.5). For class 2,
    alpha = (-1/64, 0): L^2 = ReLU(-red / 64) = 0 everywhere (no positive evidence)."""
    model, x = TwoChannels(), _image().repeat(3, 1, 1, 1)
    cams = gradcam(model, x, [0, 1, 2], layer=model.act)
    assert cams.shape == (3, 8, 8) and cams.dtype == np.float32
    np.testing.assert_allclose(cams[0], x[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(cams[1], x[0, 1].numpy(), atol=1e-5)
    np.testing.assert_allclose(cams[2], np.zeros((8, 8)), atol=1e-6)
    red = np.zeros((8, 8), dtype=bool)
    red[1:3, 1:3] = True
    assert cams[0][red].min() > cams[0][~red].max()  # higher inside the evidence than anywhere outside


def test_gradcam_leaves_the_model_as_it_was():
    model = TwoChannels().train()
    model.conv.weight.requires_grad_(False)  # a frozen layer, as after freezing
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)  # a gradient of the caller's
    before = {name: len(m._forward_hooks) + len(m._backward_hooks) for name, m in model.named_modules()}
    with torch.inference_mode():  # as predict runs
        cams = gradcam(model, _image(), [1], layer=model.act)
    assert cams[0].max() == pytest.approx(1.0)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False, True]
    assert model.conv.weight.grad is None and torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert before == {name: len(m._forward_hooks) + len(m._backward_hooks) for name, m in model.named_modules()}


@pytest.mark.parametrize("name,size,layer", [("resnet10t", 32, "layer2"), ("resnet10t", 128, "layer4"),
                                             ("efficientnet_lite0", 32, "blocks.2"), ("efficientnet_lite0", 128, "bn2"),
                                             ("convnext_atto", 64, "stages.2")])
def test_cnn_layer_keeps_a_map_of_at_least_4_cells(name, size, layer):
    """The deepest stage with >= 4 cells a side: 32 px / stride 8 = 4, 128 / 32 = 4; EfficientNet's last is bn2.
    Seeded: on an untrained model and a random input the CAM may be all zero (ReLU of a negative sum), and
    the suite's earlier tests move the global generator."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3).eval()
    chosen, reshape = cam_target_layer(model, size)
    assert reshape is None and chosen is model.get_submodule(layer)
    if size == 32:
        cams = gradcam(model, torch.randn(2, 3, size, size), [0, 2])
        assert cams.shape == (2, size, size) and 0 <= cams.min() and cams.max() <= 1 and cams.max() > 0.99


def test_vit_tokens_are_laid_back_on_their_grid_without_prefix_tokens():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32,
                              reg_tokens=2).eval()
    layer, reshape = cam_target_layer(model, 32)
    assert layer is model.blocks[-1].norm1 and model.num_prefix_tokens == 3
    tokens = torch.arange(2 * 7 * 5, dtype=torch.float32).view(2, 7, 5)  # 3 prefix + a 2x2 grid, 5 channels
    grid = vit_reshape(model)(tokens)
    assert grid.shape == (2, 5, 2, 2)
    assert torch.equal(grid[1, :, 1, 0], tokens[1, 3 + 2])  # patch (row 1, col 0) is token 3 + 1 * 2 + 0
    assert torch.equal(reshape(tokens), grid)
    for p in model.parameters():
        p.requires_grad_(False)  # a frozen backbone
    cams = gradcam(model, torch.randn(3, 3, 32, 32), [0, 1, 2])
    assert cams.shape == (3, 32, 32) and 0 <= cams.min() and cams.max() <= 1
    assert not any(p.requires_grad for p in model.parameters())


def test_a_model_without_a_known_layer_is_a_value_error():
    with pytest.raises(ValueError, match="no Grad-CAM layer"):
        gradcam(TwoChannels(), _image(), [0])


def test_confident_mistakes_are_the_surest_wrong_predictions():
    probs = torch.tensor([[0.9, 0.1, 0.0],    # 0: right
                          [0.2, 0.7, 0.1],    # 1: wrong (true 0), 0.7
                          [0.05, 0.05, 0.9],  # 2: wrong (true 1), 0.9
                          [0.4, 0.6, 0.0],    # 3: wrong (true 2), 0.6
                          [0.1, 0.2, 0.7],    # 4: wrong (true 0), 0.7 (tie with 1: lower index first)
                          [0.0, 0.99, 0.01]])  # 5: unlabelled (-1): never a mistake
    labels = torch.tensor([0, 0, 1, 2, 0, -1])
    rows = confident_mistakes(probs, labels, 3)
    assert rows == [{"index": 2, "true": 1, "pred": 2, "prob": pytest.approx(0.9)},
                    {"index": 1, "true": 0, "pred": 1, "prob": pytest.approx(0.7)},
                    {"index": 4, "true": 0, "pred": 2, "prob": pytest.approx(0.7)}]
    assert [r["index"] for r in confident_mistakes(probs, labels, 10)] == [2, 1, 4, 3]
    assert confident_mistakes(probs[:1], labels[:1], 5) == [] and confident_mistakes(probs, labels, 0) == []


def test_gallery_and_its_report_section(tmp_path):
    from transferkit.report.gallery import mistakes_section, plot_mistakes_gallery

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8), dtype=np.uint8), rng.random((20, 16, 3))]
    cams = np.stack([np.eye(16, dtype=np.float32), np.ones((16, 16), dtype=np.float32)])
    rows = [{"true": 0, "pred": 1, "prob": 0.97}, {"true": "owl", "pred": "cat", "prob": 0.5}]
    path = plot_mistakes_gallery(images, cams, rows, ["cat", "dog", "owl"], tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    lines = mistakes_section([{"index": 4, "true": "cat", "pred": "dog", "prob": 0.97},
                              {"index": 9, "true": "owl", "pred": "cat", "prob": 0.5, "path": "owl/9.png"}], "test")
    assert "## Most confident mistakes (Grad-CAM)" in lines and "| 1 | 4 | cat | dog | 0.970 |" in lines
    assert "| 2 | owl/9.png | owl | cat | 0.500 |" in lines and lines[-1] == "![Most confident mistakes (Grad-CAM)](mistakes.png)"
    assert mistakes_section([], "test")[-1] == "No mistakes on the test images."


def test_predict_labels_scores_the_class_folders(tiny_run, tmp_path, run_cli):
    """The tiny run's classes are cat/dog/owl: folders of those names; the scores are checked against the
    predictions it prints (accuracy = share whose top class is the folder's)."""
    import shutil

    import transferkit as tk

    digits = write_digit_folder(tmp_path / "d", per_class=2)
    root = tmp_path / "labelled"
    for digit, name in zip(("0", "1", "2"), ("cat", "dog", "owl")):
        shutil.copytree(digits / digit, root / name)
    results = tk.predict(tiny_run, [root], topk=3, labels=True)
    ev = results.evaluation
    right = [r["top"][0]["class"] == r["path"].split("/")[-2] for r in results]
    assert ev["images"] == 6 and ev["accuracy"] == pytest.approx(np.mean(right))
    assert [r["support"] for r in ev["per_class"]] == [2, 2, 2] and 0 <= ev["ece"] <= 1 and ev["temperature"] == 1.0
    assert tk.predict(tiny_run, [root]).evaluation is None
    code, out, err = run_cli("predict", tiny_run, root, "--labels", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["evaluation"] == pytest.approx(json.loads(json.dumps(ev)))
    code, out, err = run_cli("predict", tiny_run, root, "--labels")
    assert code == 0 and "6 labelled images: accuracy" in out and "per class, worst F1 first" in out
    code, out, err = run_cli("predict", tiny_run, digits, "--labels")
    assert code != 0 and "named after a class of the run" in err and len(err.strip().splitlines()) == 1
    assert "mistakes" not in ev  # no --gallery: no Grad-CAM pass


def test_predict_gallery_draws_the_surest_mistakes(tiny_run, tmp_path, run_cli):
    """``--gallery`` with ``--labels``: the mistakes listed are exactly the wrong top-1 predictions printed
    (up to 8), surest first, and their gallery is a PNG; without ``--labels`` or on onnxruntime, one line."""
    import shutil

    from PIL import Image

    import transferkit as tk

    digits = write_digit_folder(tmp_path / "d", per_class=2)
    root = tmp_path / "labelled"
    for digit, name in zip(("0", "1", "2"), ("cat", "dog", "owl")):
        shutil.copytree(digits / digit, root / name)
    results = tk.predict(tiny_run, [root], labels=True, gallery=tmp_path / "g.png")
    wrong = sorted(((r["top"][0]["prob"], r["path"]) for r in results if r["top"][0]["class"] != r["path"].split("/")[-2]),
                   reverse=True)
    ev = results.evaluation
    assert [m["path"] for m in ev["mistakes"]] == [p for _, p in wrong][:8] and len(wrong) > 0
    assert Image.open(tmp_path / "g.png").size[0] > 100 and ev["gallery"] == str(tmp_path / "g.png")
    for args, message in (((root, "--gallery", tmp_path / "h.png"), "add --labels"),
                          ((root, "--labels", "--gallery", tmp_path / "no" / "h.png"), "existing folder")):
        code, _, err = run_cli("predict", tiny_run, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
