"""BSS (batch spectral shrinkage): the penalty on a feature matrix built from known singular values,
its gradient, the registered entry and the term through a real step of a timm model."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

from transferkit.errors import ConfigError
from transferkit.regularizers.bss import BatchSpectralShrinkage, BSSOptions, bss_penalty
from transferkit.registry import REGULARIZERS
from transferkit.terms import Step

SIGMA = [5.0, 3.0, 2.0, 0.5]  # by construction, descending


def _features_with_known_spectrum(batch=4, dim=6):
    """F = U diag(SIGMA) V^T with orthonormal columns U (B x 4), V (D x 4) from QR of fixed matrices."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((batch, batch)))
    v, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    u, v = u[:, :len(SIGMA)], v[:, :len(SIGMA)]
    return u @ np.diag(SIGMA) @ v.T, u, v


def test_penalty_is_the_sum_of_the_k_smallest_squared_singular_values():
    f, _, _ = _features_with_known_spectrum()
    x = torch.tensor(f, dtype=torch.float32)
    assert bss_penalty(x, k=1).item() == pytest.approx(0.5 ** 2, rel=1e-4)
    assert bss_penalty(x, k=2).item() == pytest.approx(0.5 ** 2 + 2.0 ** 2, rel=1e-4)
    # k beyond min(B, D) = 4: every singular value, i.e. the squared Frobenius norm
    assert bss_penalty(x, k=9).item() == pytest.approx(sum(s * s for s in SIGMA), rel=1e-4)
    # the transpose has the same singular values (B > D works too)
    assert bss_penalty(x.T.contiguous(), k=1).item() == pytest.approx(0.25, rel=1e-4)
    with pytest.raises(ValueError, match="k must be"):
        bss_penalty(x, k=0)
    with pytest.raises(ValueError, match="batch, dim"):
        bss_penalty(x[None])


def test_gradient_is_2_sigma_u_v_of_the_smallest_component():
    """d(sigma_min^2)/dF = 2 sigma_min u_min v_min^T (u, v: its singular vectors)."""
    f, u, v = _features_with_known_spectrum()
    x = torch.tensor(f, dtype=torch.float64, requires_grad=True)
    bss_penalty(x, k=1).backward()
    expected = 2 * 0.5 * np.outer(u[:, -1], v[:, -1])
    assert np.allclose(x.grad.double().numpy(), expected, atol=1e-5)


def test_registered_entry_builds_the_term_with_its_options():
    entry = REGULARIZERS["bss"]
    assert entry.traits == {"needs_backbone": True} and entry.options is BSSOptions
    term = entry.build(SimpleNamespace(options=entry.resolve(None)))
    assert isinstance(term, BatchSpectralShrinkage) and (term.name, term.weight, term.k) == ("reg", 0.001, 1)
    term = entry.build(SimpleNamespace(options=entry.resolve({"k": 3, "weight": 0.01})))
    assert (term.weight, term.k) == (0.01, 3)
    with pytest.raises(ConfigError, match="--bss-k"):
        entry.resolve({"k": 0})


def test_term_through_a_real_step_is_finite_and_reaches_the_backbone():
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=3)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    step = Step(model, x, y)
    value, logs = BatchSpectralShrinkage(k=1, weight=0.001)(step)
    assert value.ndim == 0 and math.isfinite(value.item()) and value.item() > 0
    expected = 0.001 * torch.linalg.svdvals(step.features.detach())[-1].item() ** 2  # independent recomputation
    assert value.item() == pytest.approx(expected, rel=1e-4)
    assert logs["reg_loss"].item() == pytest.approx(value.item() / 0.001, rel=1e-5)
    value.backward()
    assert model.conv_stem.weight.grad is not None and model.conv_stem.weight.grad.abs().sum() > 0
