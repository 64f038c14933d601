"""Test-time adaptation (issue 11): BN statistics, TENT, EATA as blocks; ``transferkit tta`` and
``transferkit corrupt`` end to end."""

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from transferkit.errors import ConfigError
from transferkit.tta import (EATA, BNAdapt, PriorBatchNorm, Tent, build_adapter, entropy, fisher_diagonal,
                             norm_affine_params, unwrap_bn)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cnn(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, num_classes))


@pytest.fixture(scope="module")
def digits_cnn():
    """A small BN CNN trained on 1,200 of scikit-learn's real digits (8x8, seeded shuffle); the
    other 597 to test (98% clean accuracy)."""
    torch.manual_seed(0)
    d = load_digits()
    perm = torch.randperm(len(d.target))
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)[perm]
    y = torch.tensor(d.target)[perm]
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):
        for i in range(0, 1200, 100):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    return model.eval(), x[1200:], y[1200:]


def shifted(x):
    """A covariate shift: lower contrast, brighter (an affine change of the input intensities)."""
    return 0.3 * x + 0.6


def online_accuracy(adapter, x, y, batch=64):
    preds = [adapter(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)]
    return float((torch.cat(preds) == y).float().mean())


def test_prior_batchnorm_follows_the_mixing_formula():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).eval()
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    var_t, mu_t = x.var((0, 2, 3), unbiased=False), x.mean((0, 2, 3))
    for prior in (0.0, 8.0, 1e9):
        mean = (prior * bn.running_mean + 8 * mu_t) / (prior + 8)
        var = (prior * bn.running_var + 8 * var_t) / (prior + 8)
        expected = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
        expected = expected * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        torch.testing.assert_close(PriorBatchNorm(bn, prior)(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(PriorBatchNorm(bn, 1e9)(x), bn(x), rtol=1e-4, atol=1e-4)  # the source's


def test_bn_adaptation_undoes_a_covariate_shift_and_tent_keeps_it(digits_cnn):
    model, x, y = digits_cnn
    clean = online_accuracy(build_adapter("none", _copy(model), 10), x, y)
    before = online_accuracy(build_adapter("none", _copy(model), 10), shifted(x), y)
    bn = online_accuracy(BNAdapt(_copy(model)), shifted(x), y)
    tent = online_accuracy(Tent(_copy(model), lr=1e-3), shifted(x), y)
    assert clean > 0.9 and before < clean - 0.3, (clean, before)
    assert bn > before + 0.3 and tent > before + 0.3, (before, bn, tent)


def test_tent_updates_nothing_but_the_normalisation_affine_parameters(digits_cnn):
    model, x, _ = digits_cnn
    start = {k: v.clone() for k, v in model.state_dict().items()}
    tent = Tent(_copy(model), lr=1e-2)
    tent(shifted(x[:32]))
    adapted = unwrap_bn(tent.model).state_dict()
    affine = {"1.weight", "1.bias", "4.weight", "4.bias"}
    changed = {k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
               and not torch.equal(start[k], adapted[k])}
    assert changed == affine


def test_tent_episodic_returns_the_exact_initial_weights_after_each_batch(digits_cnn):
    model, x, _ = digits_cnn
    tent = Tent(_copy(model), lr=1e-2, steps=3, episodic=True)
    initial = {k: v.clone() for k, v in tent.model.state_dict().items()}
    for i in range(3):
        tent(shifted(x[32 * i:32 * (i + 1)]))
        now = tent.model.state_dict()
        assert all(torch.equal(initial[k], now[k]) for k in initial)
    online = Tent(_copy(model), lr=1e-2, steps=3)
    online(shifted(x[:32]))
    assert any(not torch.equal(initial[k], v) for k, v in online.model.state_dict().items())


def test_eata_does_not_update_on_unreliable_samples(digits_cnn):
    model, x, _ = digits_cnn
    strict = EATA(_copy(model), 10, lr=1e-2, margin=1e-6)  # E0 ~ 0: no sample is reliable enough
    before = [p.clone() for p in strict.params]
    strict(shifted(x[:64]))
    assert strict.kept == 0 and strict.seen == 64
    assert all(torch.equal(a, b) for a, b in zip(before, strict.params))
    eata = EATA(_copy(model), 10, lr=1e-2)
    eata(shifted(x[:64]))
    assert 0 < eata.kept < 64 and any(not torch.equal(a, b) for a, b in zip(before, eata.params))


def test_eata_fisher_penalty_holds_parameters_near_the_source(digits_cnn):
    model, x, y = digits_cnn
    clean = [x[i:i + 64] for i in range(0, 256, 64)]
    fisher = fisher_diagonal(_copy(model), clean)
    plain, held = EATA(_copy(model), 10, lr=5e-2), EATA(_copy(model), 10, lr=5e-2, fisher=fisher, fisher_beta=1e6)
    for i in range(0, 320, 64):
        plain(shifted(x[i:i + 64])), held(shifted(x[i:i + 64]))
    drift = lambda e: sum(float((p.detach() - a).pow(2).sum()) for p, a in zip(e.params, e.anchor))  # noqa: E731
    assert held.fisher is not None and drift(held) < 0.5 * drift(plain)


def test_layernorm_models_adapt_with_tent_and_bn_adaptation_refuses_them():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vit.modules())
    with pytest.raises(ConfigError, match="no BatchNorm"):
        BNAdapt(vit)
    tent = Tent(vit, lr=1e-2)
    start = [p.clone() for p in tent.params]
    tent(torch.randn(4, 3, 32, 32))
    assert tent.params == norm_affine_params(vit) and any(not torch.equal(a, b) for a, b in zip(start, tent.params))


def test_a_method_registered_at_run_time_is_validated_configured_and_built():
    """The registry drives TTAConfig (names, per-method options, the default line-up) and build_adapter."""
    from transferkit.config import TTAConfig
    from transferkit.registry import TTA, Method, Options

    class Factor(Options):
        factor: float = 2.0

    class Scaled(nn.Module):
        def __init__(self, model, factor):
            super().__init__()
            self.model, self.factor = model, factor

        def forward(self, x):
            return self.factor * self.model(x)

    TTA.register(Method("scaled", "multiply the logits", build=lambda ctx: Scaled(ctx.model, ctx.options.factor),
                        options=Factor, in_lineup=False))
    try:
        cfg = TTAConfig(run="r", data="d", methods=["none", "scaled"], options={"scaled": {"factor": "3"}})
        assert cfg.methods == ["none", "scaled"] and cfg.options == {"scaled": {"factor": 3.0}}
        assert TTAConfig(run="r", data="d").methods == ["none", "bn", "tent", "eata"]  # the line-up, in order
        with pytest.raises(ConfigError, match="--scaled-factor configure"):
            TTAConfig(run="r", data="d", methods=["tent"], options={"scaled": {"factor": 3}})
        with pytest.raises(ConfigError, match="invalid option --scaled-factor"):
            TTAConfig(run="r", data="d", methods=["scaled"], options={"scaled": {"factor": "big"}})
        torch.manual_seed(0)
        model, x = nn.Linear(2, 3), torch.randn(4, 2)
        torch.testing.assert_close(build_adapter("scaled", model, 3, options={"factor": 3})(x), 3 * model(x))
    finally:
        TTA.unregister("scaled")
    with pytest.raises(ConfigError, match="unknown method 'scaled'"):
        TTAConfig.build(run="r", data="d", methods=["scaled"])


def test_eata_options_and_the_fisher_trait(digits_cnn):
    import math

    from transferkit.engine.tta import needs_fisher

    model, _, _ = digits_cnn
    eata = build_adapter("eata", _copy(model), 10, options={"margin": 0.2, "fisher_beta": 0})
    assert eata.e0 == pytest.approx(0.2 * math.log(10)) and eata.d_margin == 0.4 and eata.fisher is None
    assert build_adapter("eata", _copy(model), 10).e0 == pytest.approx(0.4 * math.log(10))
    assert needs_fisher(["none", "eata"]) and not needs_fisher(["none", "bn", "tent"])
    with pytest.raises(ConfigError, match="tent takes no options"):
        build_adapter("tent", _copy(model), 10, options={"margin": 0.2})


def test_cli_method_options_reach_the_config_and_the_help(run_cli, monkeypatch, tmp_path):
    import transferkit.engine.tta as engine

    seen = {}

    def fake_tta(cfg, **kwargs):
        seen["cfg"] = cfg
        return {"mean_accuracy": {}, "accuracy_before": None, "corruptions": ["clean"]}

    monkeypatch.setattr(engine, "tta", fake_tta)
    common = ("--data", "images", "--out", tmp_path / "out", "--no-progress")
    code, _, err = run_cli("tta", "run", "--method", "none,eata", "--eata-margin", "0.3", *common)
    assert code == 0, err
    assert seen["cfg"].options == {"eata": {"margin": 0.3, "d_margin": 0.4, "fisher_beta": 2000.0}}
    code, _, err = run_cli("tta", "run", *common)
    assert code == 0 and seen["cfg"].methods == ["none", "bn", "tent", "eata"] and seen["cfg"].options == {}
    for args, words in ((("--method", "tent", "--eata-margin", "0.3"), "which this run does not use"),
                        (("--method", "eata", "--eata-margin", "-1"), "invalid option --eata-margin")):
        code, _, err = run_cli("tta", "run", *args, *common)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli("tta", "--help")
    assert code == 0 and "--eata-fisher-beta" in out and "eata: EATA" in out and "default: none,bn,tent,eata" in out


@pytest.mark.needs_opencv
def test_corruptions_are_seeded_sized_and_named():
    from transferkit.data.corruptions import BENCHMARK, corrupt_images, corruption_names

    images = (load_digits().images[:4] * 255 / 16).astype(np.uint8).repeat(4, 1).repeat(4, 2)[:, :28, :28]
    for name in ("gaussian_noise", "impulse_noise", "contrast"):
        a, b = corrupt_images(images, name, 5, seed=0), corrupt_images(images, name, 5, seed=0)
        assert a[0].shape == (32, 32, 3) and a[0].dtype == np.uint8
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    noisy1, noisy5 = corrupt_images(images, "gaussian_noise", 1), corrupt_images(images, "gaussian_noise", 5)
    clean = corrupt_images(images, "brightness", 1)  # the same upsampling, nearly untouched
    assert np.abs(noisy5[0].astype(int) - clean[0]).mean() > np.abs(noisy1[0].astype(int) - clean[0]).mean()
    assert corruption_names("all") == list(BENCHMARK) and len(BENCHMARK) == 15
    with pytest.raises(ConfigError, match="unknown corruption"):
        corruption_names("gaussian_noise,rain")


def _copy(model):
    import copy

    return copy.deepcopy(model)


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture
def animal_folder(tmp_path):
    """Real digit images filed under the tiny run's class names (cat, dog, owl), 4 per class."""
    from conftest import TINY_RUN_CLASSES, write_digit_folder

    root = write_digit_folder(tmp_path / "stream", per_class=4)
    for digit, name in zip("012", TINY_RUN_CLASSES):
        (root / digit).rename(root / name)
    return root


@pytest.mark.needs_opencv
@pytest.mark.slow
def test_cli_tta_grid_writes_metrics_table_and_heatmap(run_cli, tiny_run, animal_folder, tmp_path):
    out = tmp_path / "tta"
    code, stdout, err = run_cli("tta", tiny_run, "--data", animal_folder, "--method", "none,bn,tent,eata",
                                "--corruptions", "gaussian_noise,contrast", "--batch-size", "4", "--out", out,
                                "--no-progress")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {(c["method"], c["corruption"]) for c in metrics["cells"]} == {
        (m, k) for m in ("none", "bn", "tent", "eata") for k in ("gaussian_noise", "contrast")}
    assert all(c["images"] == 12 and 0 <= c["accuracy"] <= 1 for c in metrics["cells"])
    assert metrics["accuracy_before"] == metrics["mean_accuracy"]["none"] and metrics["batch_size"] == 4
    assert metrics["eata_fisher"] is False  # the tiny run has no training data on record: ETA
    assert (out / "tta.png").stat().st_size > 0 and "| gaussian_noise | contrast |" in (out / "report.md").read_text()
    assert "<th>gaussian_noise</th>" in (out / "report.html").read_text()


@pytest.mark.slow
def test_cli_tta_save_writes_a_model_predict_reads(run_cli, tiny_run, animal_folder, tmp_path):
    out = tmp_path / "tta"
    code, _, err = run_cli("tta", tiny_run, "--data", animal_folder, "--method", "bn", "--batch-size", "6",
                           "--save", "--out", out, "--no-progress")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "bn" and metrics["accuracy_after"] is not None and metrics["seed"] == 0
    code, stdout, err = run_cli("predict", out, animal_folder / "cat", "--format", "json")
    assert code == 0, err
    assert len(json.loads(stdout)) == 4


def test_cli_tta_refuses_bad_input_in_one_line(run_cli, tiny_run, animal_folder, tmp_path):
    from transferkit.backbones import describe_model, load_backbone
    from transferkit.data import data_config_for
    from transferkit.rundir import save_weights, write_json
    from transferkit.surgery.norm import batchnorm_to_groupnorm

    digits = animal_folder.parent / "digits"
    shutil.copytree(animal_folder, digits)
    (digits / "cat").rename(digits / "zebra")
    gn = tmp_path / "gn-run"
    gn.mkdir()
    model = batchnorm_to_groupnorm(load_backbone("efficientnet_lite0", weights="none", num_classes=3))
    save_weights(gn / "model.safetensors", model)
    write_json(gn / "model.json", {**describe_model(model), "norm": "groupnorm", "classes": ["cat", "dog", "owl"],
                                   "data_config": data_config_for(model, 32)})
    for args, message in (
            ((tiny_run, "--data", animal_folder, "--batch-size", "0"), "batch_size"),
            ((tiny_run, "--data", digits, "--method", "bn"), "classes the model does not know: zebra"),
            ((gn, "--data", animal_folder, "--method", "bn"), "no BatchNorm layer"),
            ((tiny_run, "--data", animal_folder, "--method", "tent,bogus"), "unknown method 'bogus'"),
            ((tiny_run, "--data", animal_folder, "--corruptions", "rain"), "unknown corruption rain")):
        code, _, err = run_cli("tta", *args, "--out", tmp_path / "out", "--no-progress")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli("tta", tiny_run, "--data", animal_folder, "--out", tiny_run / "tta", "--no-progress")
    assert code == 2 and "lies inside it" in err and not (tiny_run / "tta").exists()


@pytest.mark.needs_opencv
def test_cli_corrupt_writes_a_dataset_tta_reads(run_cli, tiny_run, animal_folder, tmp_path):
    code, _, err = run_cli("corrupt", animal_folder, "--corruption", "fog", "--severity", "2", "--out",
                           tmp_path / "c")
    assert code == 0, err
    csv = tmp_path / "c" / "fog-2" / "labels.csv"
    assert len(csv.read_text().splitlines()) == 13
    code, _, err = run_cli("tta", tiny_run, "--data", csv, "--method", "tent", "--batch-size", "4",
                           "--out", tmp_path / "t", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["cells"][0]["images"] == 12
    code, _, err = run_cli("corrupt", animal_folder, "--corruption", "fog", "--severity", "2", "--out",
                           tmp_path / "c")
    assert code == 2 and "--overwrite" in err
