"""Self-training (FixMatch + AdaMatch's refinements): distribution alignment, the relative threshold,
the masked pseudo-label loss and the warm-up against by-hand numbers; the registered ``align`` term
through a real Step (a bare linear head, and a tiny timm model with a strong view)."""

import math
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.adaptation.self_training import (
    METHOD,
    SelfTrainingOptions,
    SelfTrainingTerm,
    adamatch_loss,
    distribution_alignment,
    relative_threshold,
    self_training_loss,
    warmup_weight,
)
from transferkit.errors import ConfigError, DataError
from transferkit.registry import ADAPTATION
from transferkit.terms import Step

pytestmark = pytest.mark.usefixtures("one_torch_thread")

P_S = torch.tensor([[0.8, 0.1, 0.1], [0.4, 0.4, 0.2]], dtype=torch.float64)
P_T = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64)
# E[p_s] = (0.6, 0.25, 0.15), E[p_t] = (0.3, 0.4, 0.3): ratio (2, 0.625, 0.5)
# rows * ratio: (1.0, 0.1875, 0.1) sum 1.2875; (0.2, 0.375, 0.15) sum 0.725; (0.6, 0.1875, 0.2) sum 0.9875
ALIGNED = torch.tensor([[1.0 / 1.2875, 0.1875 / 1.2875, 0.1 / 1.2875],
                        [0.2 / 0.725, 0.375 / 0.725, 0.15 / 0.725],
                        [0.6 / 0.9875, 0.1875 / 0.9875, 0.2 / 0.9875]], dtype=torch.float64)


def test_distribution_alignment_equals_the_by_hand_numbers():
    out = distribution_alignment(P_T, P_S)
    assert torch.allclose(out, ALIGNED, atol=1e-12)
    assert torch.allclose(out.sum(1), torch.ones(3, dtype=torch.float64))
    # image 3's top class moves from 2 (0.4) to 0 (0.6076): the source predicts class 0 far more often
    assert P_T[2].argmax() == 2 and out[2].argmax() == 0
    # targets whose marginal already matches the source's are left unchanged
    assert torch.allclose(distribution_alignment(P_S, P_S), P_S, atol=1e-12)
    with pytest.raises(DataError, match="same C"):
        distribution_alignment(P_T, P_S[:, :2])


def test_relative_threshold_and_mask_on_a_hand_made_batch():
    c = relative_threshold(P_S, 0.9)                  # 0.9 * (0.8 + 0.4) / 2
    assert c.item() == pytest.approx(0.54, abs=1e-12)
    _, mask = self_training_loss(torch.zeros(3, 3, dtype=torch.float64), ALIGNED, c)
    assert mask.tolist() == [True, False, True]       # max p~ = 0.7767, 0.5172, 0.6076 against 0.54
    _, unaligned = self_training_loss(torch.zeros(3, 3, dtype=torch.float64), P_T, c)
    assert unaligned.tolist() == [False, True, False]  # max p = 0.5, 0.6, 0.4: alignment changes who passes
    assert relative_threshold(P_S, 0.5).item() == pytest.approx(0.3, abs=1e-12)


def test_loss_is_the_masked_cross_entropy_by_hand():
    strong = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64,
                          requires_grad=True)
    loss, mask = self_training_loss(strong, ALIGNED, 0.54)
    # pseudo-labels 0, 1, 0; image 2 masked out; the mean is over all 3 target images
    # CE(row 1, 0) = -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2); CE(row 3, 0) = -log(1 / (2 + e)) = log(2 + e)
    expected = (math.log(1 + 2 * math.exp(-2)) + math.log(2 + math.e)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0   # masked row: no gradient
    nothing, none = self_training_loss(strong, ALIGNED, 0.95)
    assert nothing.item() == 0.0 and not none.any()
    with pytest.raises(DataError, match="same shape"):
        self_training_loss(strong[:2], ALIGNED, 0.5)


def test_adamatch_loss_aligns_then_thresholds_relative_to_the_source():
    # logits whose softmax is exactly P_S / P_T: the hand-made batch above, through the whole chain
    strong = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    loss, mask = adamatch_loss(P_S.log(), P_T.log(), strong, tau=0.9)
    assert mask.tolist() == [True, False, True]
    expected = (math.log(1 + 2 * math.exp(-2)) + math.log(2 + math.e)) / 3   # as in the test above
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # without alignment only image 2 would pass, with pseudo-label 1: CE = log(2 + e) / 3
    assert loss.item() - math.log(2 + math.e) / 3 == pytest.approx(math.log(1 + 2 * math.exp(-2)) / 3)


def test_pseudo_labels_carry_no_gradient():
    src = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    weak = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    loss, mask = adamatch_loss(src, weak, strong, tau=0.3)
    loss.backward()
    assert mask.all() and src.grad is None and weak.grad is None and strong.grad.abs().sum() > 0


@pytest.mark.parametrize("progress, mu", [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.75, 1.0), (1.0, 1.0)])
def test_warmup_weight(progress, mu):
    assert warmup_weight(progress) == pytest.approx(mu, abs=1e-12)


def test_registered_with_options_and_traits():
    assert ADAPTATION["self-training"] is METHOD
    assert METHOD.defaults == {"trade_off": 1.0}
    assert METHOD.traits == {"uses_target_labels": False, "target_views": ("weak", "strong")}
    assert METHOD.resolve().tau == 0.9
    with pytest.raises(ConfigError, match="--self-training-tau"):
        METHOD.resolve({"tau": 1.5})
    term = METHOD.build(SimpleNamespace(features_dim=4, num_classes=3, seed=0, weight=2.0,
                                        options=SelfTrainingOptions(tau=0.7)))
    assert isinstance(term, SelfTrainingTerm) and term.name == "align" and term.weight == 2.0 and term.tau == 0.7


def test_term_on_a_linear_head_trains_the_strong_view_only():
    torch.manual_seed(0)
    head = nn.Linear(4, 3)
    x_s, x_t, x_strong = torch.randn(5, 4), torch.randn(6, 4), torch.randn(6, 4)
    term = SelfTrainingTerm(tau=0.3, weight=2.0)   # tau <= 1/C: every image passes (max p~ >= 1/3 >= c)
    step = Step(head, x_s, torch.tensor([0, 1, 2, 0, 1]), x_t=x_t, progress=0.25, extra={"x_t_strong": x_strong})
    value, logs = term(step)
    assert logs["mask_rate"].item() == 1.0
    with torch.no_grad():   # the expected value by the blocks' formulas, pseudo-labels fixed
        p_s = F.softmax(head(x_s), 1)
        pseudo = distribution_alignment(F.softmax(head(x_t), 1), p_s).argmax(1)
    expected = 2.0 * 0.5 * F.cross_entropy(head(x_strong), pseudo)   # weight * mu(0.25) * CE
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    grad = torch.autograd.grad(value, head.weight)[0]
    assert torch.allclose(grad, torch.autograd.grad(expected, head.weight)[0], atol=1e-6)
    with pytest.raises(DataError, match="x_t_strong"):
        term(Step(head, x_s, torch.tensor([0, 1, 2, 0, 1]), x_t=x_t))


def test_term_through_a_real_step_on_a_tiny_timm_model():
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=3, pretrained=False).train()
    x_s, x_t = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    x_strong = x_t + 0.5 * torch.randn_like(x_t)
    term = METHOD.build(SimpleNamespace(features_dim=net.num_features, num_classes=3, seed=0, weight=1.0,
                                        options=SelfTrainingOptions(tau=0.3)))
    step = Step(net, x_s, torch.tensor([0, 1, 2, 0]), x_t=x_t, progress=0.6, extra={"x_t_strong": x_strong})
    value, logs = term(step)
    assert torch.isfinite(value) and value.item() > 0 and logs["mask_rate"].item() == 1.0
    value.backward()
    backbone = [p.grad for n, p in net.named_parameters() if not n.startswith("classifier")]
    assert all(g is not None for g in backbone) and sum(g.abs().sum() for g in backbone) > 0
    at_start, _ = term(Step(net, x_s, torch.tensor([0, 1, 2, 0]), x_t=x_t, progress=0.0,
                            extra={"x_t_strong": x_strong}))
    assert at_start.item() == 0.0                  # mu(0) = 0: no unlabelled loss before the warm-up
