"""Domain adaptation blocks: gradient reversal and its schedule, DANN, CDAN(+E), MK-MMD,
CORAL and the proxy A-distance, checked against hand-computed values and real behaviour."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.adaptation import (
    CORAL,
    CDANLoss,
    DANNLoss,
    DomainDiscriminator,
    GradientReversal,
    MultipleKernelMMD,
    RandomizedMultilinearMap,
    coral_loss,
    entropy_weights,
    mk_mmd,
    multilinear_map,
    proxy_a_distance,
    reverse_gradient,
    warm_start_coefficient,
)
from transferkit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaussian(n, d, seed, shift=0.0, scale=1.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale + shift


class FixedLogits(nn.Module):
    """A stand-in discriminator returning given logits (and a zero that keeps the graph)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, h):
        return self.logits + 0.0 * h.sum(1)


def bce(d, y):
    return -(y * math.log(1 / (1 + math.exp(-d))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-d))))


# ------------------------------------------------------------------ gradient reversal


def test_reversal_is_identity_forward_and_scales_gradients_by_minus_lambda():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    assert torch.allclose(grad, -0.3 * w)


def test_reversal_module_uses_its_current_coefficient():
    grl, x = GradientReversal(), torch.ones(2, requires_grad=True)
    grl(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(2))
    grl.coeff, x.grad = 2.5, None
    grl(x).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), -2.5))


def test_warm_start_schedule_starts_at_zero_rises_monotonically_towards_one():
    values = [warm_start_coefficient(p) for p in np.linspace(0, 1, 101)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(math.tanh(5.0))   # 2/(1+e^-10) - 1
    assert 0.999 < values[-1] < 1.0
    assert all(b > a for a, b in itertools.pairwise(values))
    assert warm_start_coefficient(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert warm_start_coefficient(-1) == 0.0 and warm_start_coefficient(7) == values[-1]
    with pytest.raises(ConfigError):
        warm_start_coefficient(0.5, gamma=0)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_discriminator_gives_one_logit_per_row(batch_norm):
    d = DomainDiscriminator(6, hidden=16, batch_norm=batch_norm)
    assert d(torch.randn(5, 6)).shape == (5,)
    kinds = {type(m) for m in d}
    assert (nn.BatchNorm1d in kinds) == batch_norm and (nn.Dropout in kinds) != batch_norm


# ------------------------------------------------------------------------- DANN


def test_dann_loss_and_accuracy_match_hand_computed_bce():
    dann = DANNLoss(discriminator=FixedLogits([2.0, -1.0, -3.0, 1.0]))
    f_s, f_t = torch.zeros(2, 3), torch.zeros(2, 3)
    loss, accuracy = dann(f_s, f_t)
    expected = 0.5 * ((bce(2, 1) + bce(-1, 1)) / 2 + (bce(-3, 0) + bce(1, 0)) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert accuracy.item() == 0.5          # one right in each domain


def test_dann_reverses_the_discriminators_gradient_into_the_features():
    torch.manual_seed(0)
    disc = DomainDiscriminator(3, hidden=8)
    f = torch.randn(8, 3, requires_grad=True)
    # equal batch sizes: DANN's loss is the plain BCE over all 8 rows (source 1, target 0)
    plain = F.binary_cross_entropy_with_logits(disc(f), torch.tensor([1.0] * 4 + [0.0] * 4))
    (g_plain,) = torch.autograd.grad(plain, f)
    dann = DANNLoss(discriminator=disc, coeff=0.7)
    loss, _ = dann(f[:4], f[4:])
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
    (g_dann,) = torch.autograd.grad(loss, f)
    assert torch.allclose(g_dann, -0.7 * g_plain, atol=1e-7)


def blobs(n, shift, gen):
    """Labels from the sign of x0; the domain shift lies along x1 (irrelevant to the label)."""
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    x[:, 1] += shift
    return x, y


def train_two_blobs(adapt: bool, steps: int = 600, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    (xs, ys), (xt, yt) = blobs(512, 0.0, gen), blobs(512, 3.0, gen)
    feat, head = nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 2)
    dann = DANNLoss(discriminator=DomainDiscriminator(8, hidden=32))
    opt = torch.optim.SGD([*feat.parameters(), *head.parameters(), *dann.parameters()], lr=0.05, momentum=0.9)
    for step in range(steps):
        i, j = torch.randint(0, 512, (64,), generator=gen), torch.randint(0, 512, (64,), generator=gen)
        fs, ft = feat(xs[i]), feat(xt[j])
        loss = F.cross_entropy(head(fs), ys[i])
        if adapt:
            dann.grl.coeff = warm_start_coefficient(step / steps)
            loss = loss + dann(fs, ft)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fs, ft = feat(xs), feat(xt)
        target_accuracy = (head(ft).argmax(1) == yt).float().mean().item()
    return proxy_a_distance(fs, ft, cs=(1.0,)), target_accuracy


@pytest.mark.slow
def test_dann_training_makes_the_domains_harder_to_tell_apart():
    a_plain, _ = train_two_blobs(adapt=False)
    a_dann, target_accuracy = train_two_blobs(adapt=True)
    assert a_plain > 1.2                     # without adaptation the shift stays in the features
    assert a_dann < a_plain - 0.5            # measured 1.43 -> 0.19 (seeds 0-4: drops of 0.6-1.2)
    assert target_accuracy > 0.9             # and the labelled task still transfers (measured 0.97)


# ------------------------------------------------------------------------- CDAN


def test_multilinear_map_is_the_flattened_outer_product():
    f, g = torch.randn(3, 4), torch.softmax(torch.randn(3, 5), 1)
    h = multilinear_map(f, g)
    assert h.shape == (3, 20)
    for n in range(3):
        for c in range(5):
            for d in range(4):
                assert h[n, c * 4 + d] == pytest.approx((g[n, c] * f[n, d]).item())


def test_cdan_uses_the_exact_map_below_the_threshold_and_the_randomized_one_above():
    small = CDANLoss(64, 10)                    # 640 <= 4096
    big = CDANLoss(512, 10, randomized_dim=256)  # 5120 > 4096
    assert not small.randomized and small.map_dim == 640
    assert big.randomized and big.map_dim == 256 and isinstance(big.map, RandomizedMultilinearMap)
    f, logits = torch.randn(6, 512), torch.randn(6, 10)
    h = big.conditioned(f, logits)
    g = torch.softmax(logits, 1)
    by_hand = (f @ big.map.r_f.T) * (g @ big.map.r_g.T) / math.sqrt(256)
    assert h.shape == (6, 256) and torch.allclose(h, by_hand, atol=1e-5)
    assert torch.equal(CDANLoss(512, 10, randomized_dim=256).map.r_f, big.map.r_f)   # seeded
    assert big(f[:3], logits[:3], f[3:], logits[3:])[0].shape == ()


def test_cdan_predictions_enter_the_map_detached_features_get_reversed_gradient():
    torch.manual_seed(0)
    cdan = CDANLoss(3, 2, hidden=8)
    f = torch.randn(8, 3, requires_grad=True)
    logits = torch.randn(8, 2, requires_grad=True)
    loss, _ = cdan(f[:4], logits[:4], f[4:], logits[4:])
    f_grad, logits_grad = torch.autograd.grad(loss, (f, logits), allow_unused=True)
    assert logits_grad is None or not logits_grad.any()
    assert f_grad.abs().sum() > 0


def test_entropy_weights_range_from_uniform_to_one_hot():
    w = entropy_weights(torch.tensor([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]]))
    assert w.tolist() == pytest.approx([1.25, 2.0])            # 1 + exp(-log 4), 1 + exp(0)


def test_cdan_e_weights_examples_normalised_within_each_domain():
    d = [1.0, -2.0, 0.5, -0.5]
    cdan = CDANLoss(2, 2, discriminator=FixedLogits(d), entropy_conditioning=True)
    logits = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    loss, _ = cdan(torch.zeros(2, 2), logits[:2], torch.zeros(2, 2), logits[2:])
    p = [1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-1))]
    ent = [math.log(2), -(p[0] * math.log(p[0]) + (1 - p[0]) * math.log(1 - p[0])),
           -(p[1] * math.log(p[1]) + (1 - p[1]) * math.log(1 - p[1])), math.log(2)]
    w = [1 + math.exp(-h) for h in ent]
    source = (w[0] * bce(d[0], 1) + w[1] * bce(d[1], 1)) / (w[0] + w[1])
    target = (w[2] * bce(d[2], 0) + w[3] * bce(d[3], 0)) / (w[2] + w[3])
    assert loss.item() == pytest.approx(0.5 * (source + target), rel=1e-5)


def test_cdan_refuses_mismatched_logits():
    with pytest.raises(DataError, match="logits"):
        CDANLoss(4, 3)(torch.randn(2, 4), torch.randn(2, 5), torch.randn(2, 4), torch.randn(2, 3))


# -------------------------------------------------------------------------- MMD


def test_mmd_hand_computed_on_two_points():
    # pooled squared distance 1 -> base 1; one kernel exp(-d^2 / 2): MMD^2 = 1 + 1 - 2 e^-0.5
    value = mk_mmd(torch.tensor([[0.0]]), torch.tensor([[1.0]]), multipliers=(1.0,))
    assert value.item() == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-6)


@pytest.mark.parametrize("estimator, noise", [("biased", 0.02), ("linear", 0.05)])
def test_mmd_near_zero_for_one_distribution_clearly_positive_for_a_mean_shift(estimator, noise):
    a, b, shifted = gaussian(256, 8, 0), gaussian(256, 8, 1), gaussian(256, 8, 2, shift=1.0)
    same, apart = mk_mmd(a, b, estimator=estimator).item(), mk_mmd(a, shifted, estimator=estimator).item()
    assert abs(same) < noise and apart > 0.15   # the linear-time estimate is the noisier one
    assert mk_mmd(shifted, a, estimator=estimator).item() == pytest.approx(apart, rel=1e-5)
    further = mk_mmd(a, gaussian(256, 8, 2, shift=2.0), estimator=estimator).item()
    assert further > apart


def test_mmd_gradients_are_finite_and_unequal_sizes_work_for_the_biased_estimate():
    a = gaussian(10, 3, 0).requires_grad_()
    value = MultipleKernelMMD()(a, gaussian(7, 3, 1, shift=1.0))
    (grad,) = torch.autograd.grad(value, a)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(DataError, match="equal batch sizes"):
        mk_mmd(a, gaussian(7, 3, 1), estimator="linear")
    with pytest.raises(ConfigError):
        MultipleKernelMMD(estimator="quadratic")


# ------------------------------------------------------------------------ CORAL


def test_coral_hand_computed():
    f_s = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])   # C_s = 4/3 I
    f_t = torch.tensor([[0.0, 0.0], [1.0, 1.0]])                           # C_t = [[.5, .5], [.5, .5]]
    # ||C_s - C_t||_F^2 = 2 (5/6)^2 + 2 (1/2)^2 = 17/9, / (4 d^2) = / 16
    assert coral_loss(f_s, f_t).item() == pytest.approx(17 / 144, rel=1e-6)


def test_coral_zero_for_equal_covariances_and_grows_with_a_covariance_shift():
    x = gaussian(64, 5, 0)
    assert CORAL()(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-10)   # means are not compared
    losses = [coral_loss(x, x * s).item() for s in (1.0, 1.5, 2.0, 3.0)]
    assert losses[0] == 0.0 and all(b > a for a, b in itertools.pairwise(losses))
    with pytest.raises(DataError, match="at least 2 rows"):
        coral_loss(x[:1], x)


# -------------------------------------------------------------- proxy A-distance


@pytest.mark.slow
def test_proxy_a_distance_two_for_separated_zero_for_identical_domains():
    a = gaussian(200, 8, 0)
    assert proxy_a_distance(a, gaussian(200, 8, 1, shift=5.0)) == pytest.approx(2.0)
    assert proxy_a_distance(a.numpy(), gaussian(200, 8, 1).numpy()) < 0.3


def test_proxy_a_distance_refuses_bad_features():
    with pytest.raises(DataError, match="N >= 4"):
        proxy_a_distance(torch.randn(3, 2), torch.randn(10, 2))
    with pytest.raises(DataError, match="width"):
        proxy_a_distance(torch.randn(10, 2), torch.randn(10, 3))
