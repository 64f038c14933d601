"""MCC (Minimum Class Confusion): the loss against by-hand numbers, its extremes, its gradients, and
the registered ``align`` term through a real Step on a tiny timm model."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

from transferkit.adaptation.mcc import METHOD, MCC, MCCOptions, MCCTerm, class_confusion, mcc_loss
from transferkit.errors import ConfigError, DataError
from transferkit.registry import ADAPTATION
from transferkit.terms import Step

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def by_hand_mcc(z, t):
    """The paper's steps, written out in numpy."""
    z = np.asarray(z, dtype=np.float64)
    b, c = z.shape
    e = np.exp(z / t)
    y = e / e.sum(1, keepdims=True)                       # Y = softmax(Z / T)
    h = -(y * np.log(y)).sum(1)                           # H(y_i)
    w = 1 + np.exp(-h)
    w = b * w / w.sum()                                   # W_ii = B (1 + e^-H_i) / sum_i' (1 + e^-H_i')
    conf = np.zeros((c, c))
    for i in range(b):                                    # C = Y^T W Y, one image at a time
        conf += w[i] * np.outer(y[i], y[i])
    norm = conf / conf.sum(0, keepdims=True)              # C~_jj' = C_jj' / sum_j'' C_j''j'
    off = sum(abs(norm[j, k]) for j in range(c) for k in range(c) if j != k)
    return off / c, norm


@pytest.mark.parametrize("z, t", [
    ([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], 2.5),                                   # 3 x 2
    ([[3.0, 0.5, -1.0], [0.2, 0.1, 2.5], [-0.5, 1.5, 1.4], [1.0, 1.0, 1.0]], 2.5),  # 4 x 3
    ([[3.0, 0.5, -1.0], [0.2, 0.1, 2.5], [-0.5, 1.5, 1.4], [1.0, 1.0, 1.0]], 1.0),
])
def test_loss_and_matrix_equal_the_by_hand_computation(z, t):
    expected, norm = by_hand_mcc(z, t)
    logits = torch.tensor(z, dtype=torch.float64)
    assert mcc_loss(logits, t).item() == pytest.approx(expected, rel=1e-12)
    assert np.allclose(class_confusion(logits, t).numpy(), norm, rtol=1e-12)
    assert np.allclose(norm.sum(0), 1.0)                                          # columns sum to 1


def test_two_mirrored_images_give_the_closed_form():
    # logits [z, 0] and [0, z]: equal entropies so W = I; with a = sigmoid(z / T),
    # C = [[a^2 + (1-a)^2, 2a(1-a)], [2a(1-a), a^2 + (1-a)^2]], columns already sum to 1,
    # L = (2a(1-a) + 2a(1-a)) / 2 = 2a(1-a)
    z, t = 3.0, 2.5
    a = 1 / (1 + math.exp(-z / t))
    loss = mcc_loss(torch.tensor([[z, 0.0], [0.0, z]], dtype=torch.float64), t)
    assert loss.item() == pytest.approx(2 * a * (1 - a), rel=1e-12)


def test_confident_unconfused_predictions_give_zero_and_uniform_the_maximum():
    eye = torch.eye(4)[[0, 1, 2, 3, 1, 0]]              # 6 images, every class predicted, one-hot
    assert mcc_loss(1000.0 * eye).item() == 0.0         # softmax saturates to exactly one-hot
    small = mcc_loss(50.0 * eye).item()                 # margin 50 / 2.5 = 20: off-diagonal ~ e^-20
    assert 0.0 < small < 1e-7
    losses = [mcc_loss(m * eye).item() for m in (1.0, 3.0, 10.0, 50.0)]
    assert losses == sorted(losses, reverse=True)       # more confident, less confusion
    uniform = mcc_loss(torch.zeros(6, 4)).item()        # Y = 1/4 everywhere: C~ = 1/4, L = 12/4 / 4
    assert uniform == pytest.approx(3 / 4, rel=1e-6)
    assert uniform > losses[0]
    rand = mcc_loss(torch.randn(6, 4, generator=torch.Generator().manual_seed(0))).item()
    assert small < rand < uniform


def test_gradients_reach_the_logits_and_a_step_lowers_the_confusion():
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = MCC(2.5)(logits)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with torch.no_grad():
        after = mcc_loss(logits - 1.0 * logits.grad)
    assert after < loss


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        MCC(0.0)
    with pytest.raises(DataError, match="shape"):
        mcc_loss(torch.zeros(5))


def test_registered_with_options_and_defaults():
    assert ADAPTATION["mcc"] is METHOD
    assert METHOD.defaults == {"trade_off": 1.0}
    assert METHOD.traits["uses_target_labels"] is False
    assert METHOD.resolve().temperature == 2.5
    assert METHOD.resolve({"temperature": 1.5}).temperature == 1.5
    with pytest.raises(ConfigError, match="--mcc-temperature"):
        METHOD.resolve({"temperature": 0})
    with pytest.raises(ConfigError, match="--mcc-bogus"):
        METHOD.resolve({"bogus": 1})
    term = METHOD.build(SimpleNamespace(features_dim=8, num_classes=3, seed=0, weight=0.3,
                                        options=MCCOptions(temperature=1.5)))
    assert isinstance(term, MCCTerm) and term.name == "align" and term.weight == 0.3
    assert term.mcc.temperature == 1.5


def test_term_through_a_real_step_on_a_tiny_timm_model():
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=3, pretrained=False).train()
    x_s, x_t = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    step = Step(net, x_s, torch.tensor([0, 1, 2, 0]), x_t=x_t, progress=0.5)
    term = METHOD.build(SimpleNamespace(features_dim=net.num_features, num_classes=3, seed=0, weight=0.5,
                                        options=None))
    value, logs = term(step)
    assert torch.isfinite(value) and value.ndim == 0
    assert value.item() == pytest.approx(0.5 * logs["align_loss"].item())
    # the same number from the target logits alone, as the step computed them
    assert logs["align_loss"].item() == pytest.approx(mcc_loss(step.target_logits.detach()).item(), rel=1e-6)
    value.backward()
    grads = [p.grad for n, p in net.named_parameters() if not n.startswith("classifier")]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    with pytest.raises(DataError, match="target"):
        term(Step(net, x_s, torch.tensor([0, 1, 2, 0])))
