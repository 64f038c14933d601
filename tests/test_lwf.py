"""Learning without Forgetting: the distillation math, the penalty on a real model, and a real fine-tune."""

import pytest
import timm
import torch
import torch.nn.functional as F

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.terms import Step
from transferkit.errors import ConfigError
from transferkit.evaluation.features import pre_logits
from transferkit.regularizers import LwF, soft_target_kl
from transferkit.regularizers.lwf import LwFTerm
from transferkit.strategies import make_plan

TINY = dict(data="builtin:digits", per_class=10, image_size=64, batch_size=32, val_split=0.0,
            test_split=0.05, seed=0)


def test_soft_target_kl_matches_the_formula():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    for temp in (1.0, 2.0, 4.0):
        p = F.softmax(t / temp, 1)
        expected = (p * (p.log() - F.log_softmax(s / temp, 1))).sum(1).mean() * temp ** 2
        assert soft_target_kl(s, t, temp).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_target_kl(t + 3.0, t).item() == pytest.approx(0.0, abs=1e-6)  # per-row shift: same softmax
    assert soft_target_kl(s, t).item() > 0


def test_penalty_is_zero_for_the_pretrained_model_and_trains_only_the_backbone():
    source = load_backbone("efficientnet_lite0", "packaged").eval()  # 1000-class ImageNet head
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=3).eval()
    lwf = LwF(source, weight=1.0, temperature=2.0)
    assert lwf.source_head.out_features == 1000
    assert not any(p.requires_grad for p in lwf.parameters())
    x = torch.randn(4, 3, 64, 64)
    assert lwf(model, x=x, features=pre_logits(model, x)).item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():  # move the backbone: the penalty grows and its gradient reaches the backbone only
        model.conv_stem.weight.mul_(1.5)
    loss = lwf(model, x=x, features=pre_logits(model, x))
    assert loss.item() > 1e-3
    loss.backward()
    assert model.conv_stem.weight.grad.abs().sum() > 0
    assert model.get_classifier().weight.grad is None  # the new head does not see the source task
    assert lwf.source_head.weight.grad is None


def test_teacher_stays_in_eval_mode_and_is_not_checkpointed():
    source = load_backbone("efficientnet_lite0", "packaged")
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=3)
    module = TransferModule(model, 3, make_plan("full", model), OptimSettings(), [LwFTerm(source)])
    lwf = module.terms[0].block
    module.train()
    assert not lwf.teacher.training
    lwf.teacher.train()  # e.g. a loop that restores modes module by module
    x = torch.randn(2, 3, 64, 64)
    value, logs = module.terms[0](Step(model, x, torch.zeros(2, dtype=torch.long)))
    assert value.item() > 0 and "reg_loss" in logs
    assert not lwf.teacher.training  # the teacher always predicts in eval mode
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["state_dict"] and not any(k.startswith("terms.0.block.") for k in ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])  # strict load passes with the rebuilt teacher


def test_lwf_needs_a_source_head():
    with pytest.raises(ValueError, match="source model's own classifier"):
        LwF(timm.create_model("resnet18", pretrained=False, num_classes=0))


@pytest.mark.slow
def test_lwf_keeps_source_predictions_in_a_real_fine_tune(tmp_path):
    """Same fine-tune with and without LwF (BatchNorm frozen, so only the weights move): LwF keeps
    far more of the pretrained model's ImageNet top-1 predictions on the held-out images (measured:
    agreement 0.88 vs 0.14, source KL 0.25 vs 2.07; target accuracy 0.37 vs 0.41)."""
    runs = {}
    for reg in ("none", "lwf"):
        runs[reg] = finetune(FinetuneConfig(**TINY, strategy="full", epochs=4, bn="freeze", reg=reg,
                                            source_eval=True, baseline=False, out=str(tmp_path / reg)),
                             progress=False)
    assert runs["lwf"]["source_images"] == runs["none"]["source_images"] == 90
    assert runs["lwf"]["source_agreement"] > runs["none"]["source_agreement"] + 0.3
    assert runs["lwf"]["source_kl"] < runs["none"]["source_kl"]


@pytest.mark.parametrize("strategy", ["linear-probe", "lora"])
def test_lwf_refuses_strategies_without_a_trainable_backbone(strategy, tmp_path):
    with pytest.raises(ConfigError, match="--reg lwf"):
        finetune(FinetuneConfig(**TINY, strategy=strategy, reg="lwf", out=str(tmp_path / "x")), progress=False)
    assert not (tmp_path / "x").exists()


def test_regularisers_compose_as_terms():
    """The l2sp recipe's own L2-SP and --reg lwf are two terms of one loss (each once)."""
    from transferkit.strategies import get_recipe

    cfg = FinetuneConfig(**TINY, strategy="l2sp", reg="lwf")
    assert get_recipe("l2sp").regularizers(cfg) == ["l2sp", "lwf"]
    assert get_recipe("l2sp").regularizers(cfg.model_copy(update={"reg": "l2sp"})) == ["l2sp"]
