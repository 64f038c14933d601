"""DKD (decoupled knowledge distillation): TCKD and NCKD against by-hand numpy on 2x3 logits, the
paper's identity KD = TCKD + (1 - p_t^T) NCKD, unlabelled images, gradients, the registered entry and
the term through a real step with a TeacherView."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

from transferkit.distill import TeacherView, kd_divergence
from transferkit.distill.dkd import DecoupledKD, DKDOptions, dkd_loss, dkd_parts
from transferkit.errors import ConfigError
from transferkit.registry import DISTILL
from transferkit.terms import Step

STUDENT = [[2.0, 1.0, 0.1], [0.5, -1.0, 1.5]]
TEACHER = [[3.0, 0.5, -0.5], [0.0, 2.0, 1.0]]
TARGET = [0, 2]
T = 2.0


def _by_hand(student, teacher, target, t):
    """Per-row (TCKD, NCKD) without the T^2, from the definitions, in numpy."""
    out = []
    for s_row, t_row, c in zip(np.array(student), np.array(teacher), target):
        ps, pt = np.exp(s_row / t) / np.exp(s_row / t).sum(), np.exp(t_row / t) / np.exp(t_row / t).sum()
        bs, bt = np.array([ps[c], 1 - ps[c]]), np.array([pt[c], 1 - pt[c]])
        rest = [j for j in range(len(s_row)) if j != c]
        hs, ht = ps[rest] / ps[rest].sum(), pt[rest] / pt[rest].sum()
        out.append(((bt * np.log(bt / bs)).sum(), (ht * np.log(ht / hs)).sum()))
    return np.array(out)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_tckd_and_nckd_match_the_definitions():
    tckd, nckd = dkd_parts(_t(STUDENT), _t(TEACHER), torch.tensor(TARGET), temperature=T)
    expected = _by_hand(STUDENT, TEACHER, TARGET, T).mean(0) * T * T
    assert tckd.item() == pytest.approx(expected[0], rel=1e-5)
    assert nckd.item() == pytest.approx(expected[1], rel=1e-5)
    loss = dkd_loss(_t(STUDENT), _t(TEACHER), torch.tensor(TARGET), alpha=0.3, beta=5.0, temperature=T)
    assert loss.item() == pytest.approx(0.3 * expected[0] + 5.0 * expected[1], rel=1e-5)
    # identical logits: nothing to distil
    assert dkd_loss(_t(TEACHER), _t(TEACHER), torch.tensor(TARGET)).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_is_tckd_plus_one_minus_teacher_target_prob_times_nckd():
    """The paper's identity, per image, against the plain soft-target KD of transferkit.distill."""
    torch.manual_seed(0)
    student, teacher, target = torch.randn(5, 4) * 2, torch.randn(5, 4) * 2, torch.tensor([0, 1, 2, 3, 1])
    for i in range(5):
        s, t, y = student[i:i + 1], teacher[i:i + 1], target[i:i + 1]
        p_t = torch.softmax(t / T, 1)[0, y].item()
        kd = kd_divergence(s, t, temperature=T).item()
        assert dkd_loss(s, t, y, alpha=1.0, beta=1.0 - p_t, temperature=T).item() == pytest.approx(kd, rel=1e-4)
    # with alpha = beta = 1 DKD is larger than KD (NCKD is not damped by 1 - p_t^T)
    assert dkd_loss(student, teacher, target, 1.0, 1.0, T) > kd_divergence(student, teacher, T)


def test_unlabelled_images_take_the_teachers_argmax():
    s, t = _t(STUDENT), _t(TEACHER)   # teacher argmax: 0 and 1
    assert dkd_loss(s, t, torch.tensor([-1, -1])).item() == pytest.approx(
        dkd_loss(s, t, torch.tensor([0, 1])).item(), rel=1e-12)
    assert dkd_loss(s, t, torch.tensor([-1, 2])).item() == pytest.approx(
        dkd_loss(s, t, torch.tensor([0, 2])).item(), rel=1e-12)
    assert dkd_loss(s, t, torch.tensor([-1, -1])).item() != pytest.approx(dkd_loss(s, t, torch.tensor([0, 2])).item())


def test_gradients_reach_the_student_only_and_confident_rows_are_stable():
    s = _t(STUDENT).requires_grad_(True)
    t = _t(TEACHER).requires_grad_(True)
    dkd_loss(s, t, torch.tensor(TARGET), temperature=T).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    # p_t ~ 1 - 1e-40: log(1 - p_t) from logsumexp stays finite
    far = torch.tensor([[100.0, 0.0, -5.0]], requires_grad=True)
    value = dkd_loss(far, torch.tensor([[90.0, 1.0, 0.0]]), torch.tensor([0]), temperature=1.0)
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(far.grad).all()


def test_registered_entry_and_its_options():
    entry = DISTILL["dkd"]
    assert entry.options is DKDOptions and entry.resolve(None) == DKDOptions(tckd=1.0, nckd=1.0, warmup=0.0)
    with pytest.raises(ConfigError, match="--dkd-nckd"):
        entry.resolve({"nckd": -1})
    with pytest.raises(ConfigError, match="--dkd-alpha"):
        entry.resolve({"alpha": 1})   # the options are tckd/nckd, not the command's alpha


def _models():
    torch.manual_seed(0)
    student = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=3)
    teacher = timm.create_model("resnet18", pretrained=False, num_classes=3)
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return student, TeacherView(teacher, norm, norm, teacher_size=32)


def test_term_through_a_real_step_with_a_teacher_view():
    student, view = _models()
    ctx = SimpleNamespace(net=student, teacher=view, temperature=4.0, alpha=0.7, image_size=32,
                          options=DKDOptions(tckd=1.0, nckd=8.0, warmup=0.5))
    term = DISTILL["dkd"].build(ctx)
    assert isinstance(term, DecoupledKD) and (term.name, term.weight, term.rebuilt) == ("distill", 0.7, ("teacher",))
    assert term.teacher is view
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, -1, 2])
    step = Step(student, x, y, progress=1.0)
    value, logs = term(step)
    assert value.ndim == 0 and math.isfinite(value.item())
    expected = dkd_loss(step.logits.detach(), view(x), y, 1.0, 8.0, 4.0).item()
    assert value.item() == pytest.approx(0.7 * expected, rel=1e-4)
    assert set(logs) == {"distill_loss", "tckd", "nckd"}
    value.backward()
    assert student.conv_stem.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in view.parameters())
    # the warm-up ramps the term in: at 1/4 of training, half of 0.5
    early, _ = term(Step(student, x, y, progress=0.25))
    assert early.item() == pytest.approx(0.5 * value.item(), rel=1e-4)


def test_cached_teacher_logits_are_used_instead_of_the_teacher():
    student, view = _models()
    student.eval()   # the same logits in the step and below
    term = DecoupledKD(view, temperature=4.0, weight=1.0, tckd=1.0, nckd=8.0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    cached = _t(TEACHER).float()
    value, _ = term(Step(student, x, y, extra={"teacher_logits": cached}))
    with torch.no_grad():
        logits = student(x)
    assert value.item() == pytest.approx(dkd_loss(logits, cached, y, 1.0, 8.0, 4.0).item(), rel=1e-4)
