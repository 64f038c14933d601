"""WiSE-FT: weight-space interpolation between pretrained and fine-tuned backbones."""

import pytest
import torch
from safetensors.torch import load_file

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.errors import ConfigError
from transferkit.surgery.heads import split_head
from transferkit.surgery.wise_ft import wise_ft


@pytest.mark.slow
def test_interpolation_endpoints_midpoint_and_head():
    pre = load_backbone("efficientnet_lite0", "packaged", num_classes=4)
    ft = load_backbone("efficientnet_lite0", "none", num_classes=4)
    head = {n for n, _ in split_head(ft)[1]}
    a, b = pre.state_dict(), ft.state_dict()
    for alpha in (0.0, 0.5, 1.0):
        mixed = wise_ft(a, b, alpha, keep=head)
        k = "blocks.2.0.conv_pw.weight"
        assert torch.allclose(mixed[k], (1 - alpha) * a[k] + alpha * b[k], atol=1e-6)
        assert torch.equal(mixed["classifier.weight"], b["classifier.weight"])
        assert torch.equal(mixed["bn1.num_batches_tracked"], b["bn1.num_batches_tracked"])
    assert all(torch.equal(wise_ft(a, b, 0.0, keep=head)[k], a[k]) for k in a if k not in head)
    with pytest.raises(ConfigError, match="wise-alpha"):
        wise_ft(a, b, 1.5)


@pytest.mark.slow
def test_wise_run_reports_both_accuracies_and_saves_interpolated_weights(tmp_path):
    m = finetune(FinetuneConfig(data="builtin:digits", per_class=20, image_size=64, val_split=0.05,
                                strategy="full", epochs=1, wise_alpha=0.0, baseline=False,
                                out=str(tmp_path / "w")), progress=False)
    assert m["wise_alpha"] == 0.0 and m["test_accuracy_before_wise"] is not None
    saved = load_file(str(tmp_path / "w" / "model.safetensors"))
    pretrained = load_backbone("efficientnet_lite0", "packaged").state_dict()
    # alpha 0: the backbone is exactly the pretrained one again, the head is the fine-tuned one
    assert torch.equal(saved["blocks.3.0.conv_pw.weight"], pretrained["blocks.3.0.conv_pw.weight"])
    assert saved["classifier.weight"].shape == (10, 1280)


def test_wise_needs_a_trained_backbone(tmp_path):
    with pytest.raises(ConfigError, match="wise-alpha"):
        finetune(FinetuneConfig(data="builtin:digits", per_class=20, strategy="linear-probe", wise_alpha=0.5,
                                out=str(tmp_path / "x")), progress=False)
    assert not (tmp_path / "x").exists()  # refused before touching the run directory
