"""Distillation losses against their formulas, written out here independently."""

import math

import pytest
import torch

from transferkit.distill import FeatureHint, hard_distillation_loss, soft_kd_loss, token_distillation_loss


def _softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _ce(row, y):
    return -math.log(_softmax(row)[y])


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(5, 4) * 2, torch.randn(5, 4) * 3, torch.tensor([0, 1, 2, 3, 1])


def test_soft_kd_matches_hintons_formula_with_alpha_on_the_distillation_term(batch):
    s, t, y = batch
    alpha, temp = 0.7, 3.0
    expected = 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        p, q = _softmax(trow, temp), _softmax(srow, temp)
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        expected += (1 - alpha) * _ce(srow, label) + alpha * temp ** 2 * kl
    assert soft_kd_loss(s, t, y, alpha=alpha, temperature=temp).item() == pytest.approx(expected / 5, rel=1e-5)
    assert soft_kd_loss(s, t, y, alpha=0.0).item() == pytest.approx(sum(map(_ce, s.tolist(), y.tolist())) / 5, rel=1e-5)
    assert soft_kd_loss(t, t, y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)  # student = teacher


def test_hard_and_token_losses_learn_the_teachers_argmax(batch):
    s, t, y = batch
    teacher_labels = t.argmax(1).tolist()
    expected = sum(0.5 * _ce(r, a) + 0.5 * _ce(r, b) for r, a, b in zip(s.tolist(), y.tolist(), teacher_labels)) / 5
    assert hard_distillation_loss(s, t, y).item() == pytest.approx(expected, rel=1e-5)
    d = s.flip(0)
    expected = sum(0.25 * _ce(c, a) + 0.75 * _ce(r, b)
                   for c, r, a, b in zip(s.tolist(), d.tolist(), y.tolist(), teacher_labels)) / 5
    assert token_distillation_loss(s, d, t, y, alpha=0.75).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        hard_distillation_loss(s, t, y, alpha=1.5)


def test_feature_hint_learns_a_projection_onto_the_teacher():
    torch.manual_seed(0)
    student = torch.randn(16, 8, 4, 4)
    mixing = torch.randn(12, 8)
    teacher = torch.einsum("tc,bchw->bthw", mixing, student)  # a linear map exists: the hint can reach 0
    teacher = torch.nn.functional.avg_pool2d(teacher, 2)  # and a smaller map: the hint resizes
    hint = FeatureHint(8, 12)
    opt = torch.optim.Adam(hint.parameters(), lr=0.05)
    first = hint(student, teacher).item()
    for _ in range(200):
        opt.zero_grad()
        loss = hint(student, teacher)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    vectors = FeatureHint(8, 12, spatial=False)
    assert vectors(torch.randn(3, 8), torch.randn(3, 12)).shape == ()
