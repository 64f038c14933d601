"""SAR (transferkit.tta.sar): the reliable-sample filter, the sharpness-aware update against a hand
computation, model recovery, adaptation of a real model, and ``tta --method sar``."""

import copy
import json
import math

import pytest
import torch
from torch import nn

from test_tta import animal_folder, digits_cnn, shifted  # noqa: F401 -- fixtures
from transferkit.tta import build_adapter
from transferkit.tta.sar import SAR, ema_update, reliable

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hand_entropy(probs):
    return -sum(p * math.log(p) for p in probs if p > 0)


def test_the_filter_keeps_exactly_the_samples_below_the_margin():
    """C = 4: E0 = 0.4 ln 4 = 0.5545. Entropies by hand from the softmax probabilities."""
    e0 = 0.4 * math.log(4)
    rows = [[10.0, 0, 0, 0], [3.0, 0, 0, 0], [2.8, 0, 0, 0], [0.0, 0, 0, 0], [0.0, 0, -100, -100]]
    expected = []
    for row in rows:
        z = sum(math.exp(v) for v in row)
        expected.append(hand_entropy([math.exp(v) / z for v in row]) < e0)
    # [3, 0, 0, 0]: H = 0.529 (kept); [2.8, 0, 0, 0]: H = 0.600; uniform: ln 4; two-way: ln 2 = 0.693
    assert expected == [True, True, False, False, False]
    assert reliable(torch.tensor(rows), e0).tolist() == expected


def tiny_model():
    """BatchNorm (affine: what SAR adapts) + Linear, on (B, 3, 1, 1) inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3, 4))
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 2.0), model[0].bias.uniform_(-1, 1)
        model[2].weight.mul_(4)
    return model.eval()


def hand_logits(x, w, b, linear):
    """BatchNorm with the batch's (biased) statistics, its affine (w, b), then the linear layer."""
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    h = (x - mu) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    return h.flatten(1) @ linear.weight.T + linear.bias


def hand_entropy_rows(logits):
    p = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    return -(p * torch.log(p)).sum(1)


def test_the_sharpness_aware_update_equals_a_hand_computed_two_step_update():
    """theta' = theta - lr * grad H_S'(theta + rho g/||g||) with SGD's first step (momentum buffer = gradient)."""
    model = tiny_model()
    linear = model[2]
    x = torch.randn(8, 3, 1, 1) * 2 + 0.5
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    h0 = hand_entropy_rows(hand_logits(x, w0, b0, linear)).detach()
    e0 = float(h0.sort().values[3:5].mean())  # halfway between the 4th and 5th: 4 of the 8 reliable
    lr, rho = 0.5, 0.5

    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    keep1 = h0 < e0
    g = torch.autograd.grad(hand_entropy_rows(hand_logits(x, w, b, linear))[keep1].mean(), [w, b])
    norm = torch.sqrt(sum((t ** 2).sum() for t in g))
    wp, bp = (w0 + rho * g[0] / norm).requires_grad_(True), (b0 + rho * g[1] / norm).requires_grad_(True)
    h1 = hand_entropy_rows(hand_logits(x, wp, bp, linear))[keep1]
    keep2 = h1.detach() < e0
    g2 = torch.autograd.grad(h1[keep2].mean(), [wp, bp])
    expected_w, expected_b = w0 - lr * g2[0], b0 - lr * g2[1]

    sar = SAR(model, 4, lr=lr, optimizer="sgd", bn_prior=0.0, rho=rho, margin=e0 / math.log(4), reset_threshold=0)
    logits = sar(x)
    torch.testing.assert_close(logits, hand_logits(x, w0, b0, linear).detach())  # predicted before the update
    assert sar.kept == 4 and sar.seen == 8 and keep2.sum() >= 1
    torch.testing.assert_close(sar.params[0].detach(), expected_w)
    torch.testing.assert_close(sar.params[1].detach(), expected_b)
    plain = w0 - lr * g[0]  # the gradient at the unperturbed point would give another update
    assert (plain - expected_w).abs().max() > 1e-3
    assert torch.equal(sar.model[2].weight, linear.weight)  # the linear layer is frozen
    assert int(sar.model[0].batches) == 1  # the perturbed pass is not in the stream statistics (--save)
    torch.testing.assert_close(sar.model[0].stream_mean, x.mean(dim=(0, 2, 3)))


def test_the_moving_average_and_recovery_reset_to_the_initial_state():
    assert ema_update(None, 0.5) == 0.5 and ema_update(0.5, 0.3) == pytest.approx(0.9 * 0.5 + 0.1 * 0.3)
    x = torch.randn(8, 3, 1, 1) * 2
    initial = [p.detach().clone() for p in tiny_model()[0].parameters()]
    kept_going = SAR(tiny_model(), 4, lr=0.5, optimizer="sgd", margin=1.0, reset_threshold=0.0)
    kept_going(x)
    assert kept_going.resets == 0 and 0 < kept_going.ema < math.log(4)
    assert any(not torch.equal(a, p) for a, p in zip(initial, kept_going.params))
    assert kept_going.optimizer.state  # SGD's momentum buffers

    recovered = SAR(tiny_model(), 4, lr=0.5, optimizer="sgd", margin=1.0, reset_threshold=10.0)  # e_m < 10: always
    recovered(x)
    assert recovered.resets == 1 and recovered.ema is None and not recovered.optimizer.state
    assert all(torch.equal(a, p) for a, p in zip(initial, recovered.params))


def test_sar_lowers_the_entropy_of_a_shifted_stream_without_losing_accuracy(digits_cnn):
    """The digits CNN on lower-contrast, brighter digits (test-batch BatchNorm statistics, as in the paper):
    three passes over 512 shifted images lower the entropy on 64 other shifted images."""
    model, x, y = digits_cnn
    stream, probe, labels = shifted(x[:512]), shifted(x[512:576]), y[512:576]
    start = SAR(copy.deepcopy(model), 10, bn_prior=0.0)
    sar = SAR(copy.deepcopy(model), 10, bn_prior=0.0, lr=3e-3)
    for _ in range(3):
        for i in range(0, len(stream), 64):
            sar(stream[i:i + 64])
    with torch.no_grad():
        before, after = start.model(probe), sar.model(probe)
    h_before, h_after = hand_entropy_rows(before).mean(), hand_entropy_rows(after).mean()
    assert 0 < sar.kept < sar.seen and h_after < 0.9 * h_before, (float(h_before), float(h_after))
    accuracy = [float((z.argmax(1) == labels).float().mean()) for z in (before, after)]
    assert accuracy[1] >= accuracy[0] - 0.1, accuracy


def test_tta_accepts_sar_and_its_options(run_cli, monkeypatch, tmp_path):
    import transferkit.engine.tta as engine
    from transferkit.config import TTAConfig

    cfg = TTAConfig.build(run="run", data="images", methods=["none", "sar"], options={"sar": {"rho": "0.1"}})
    assert cfg.methods == ["none", "sar"] and cfg.options == {"sar": {"rho": 0.1, "margin": 0.4, "reset_threshold": 0.2}}
    assert "sar" not in TTAConfig(run="run", data="images").methods  # not in the default line-up
    seen = {}
    monkeypatch.setattr(engine, "tta", lambda cfg, **kw: seen.update(cfg=cfg) or {
        "mean_accuracy": {}, "accuracy_before": None, "corruptions": ["clean"]})
    code, _, err = run_cli("tta", "run", "--data", "images", "--method", "sar", "--sar-reset-threshold", "0",
                           "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    assert seen["cfg"].methods == ["sar"] and seen["cfg"].options["sar"]["reset_threshold"] == 0.0
    adapter = build_adapter("sar", copy.deepcopy(tiny_model()), 4, options={"rho": 0.1})
    assert isinstance(adapter, SAR) and adapter.rho == 0.1 and adapter.e0 == pytest.approx(0.4 * math.log(4))


@pytest.mark.slow
def test_cli_tta_runs_sar_on_a_stream(run_cli, tiny_run, animal_folder, tmp_path):  # noqa: F811
    out = tmp_path / "tta"
    code, _, err = run_cli("tta", tiny_run, "--data", animal_folder, "--method", "sar", "--batch-size", "4",
                           "--out", out, "--no-progress")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    cell = next(c for c in metrics["cells"] if c["method"] == "sar")
    assert cell["images"] == 12 and 0 <= cell["accuracy"] <= 1 and 0 <= cell["kept_fraction"] <= 1
