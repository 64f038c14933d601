"""LP-FT: the head is fitted by the converged linear probe before everything trains."""

import pytest
import torch

from transferkit import FinetuneConfig, finetune
from transferkit.engine.probe import fit_head
from transferkit.engine.stages import build_model, load_data
from transferkit.evaluation import evaluate
from transferkit.engine.stages import loader


@pytest.mark.slow
def test_probe_stage_fits_the_head_and_leaves_the_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    cfg = FinetuneConfig(data="builtin:digits", per_class=20, image_size=64, out=str(tmp_path / "unused"))
    data = load_data(cfg)
    built = build_model(cfg, 10, 64)
    before = {k: v.clone() for k, v in built.model.state_dict().items() if not k.startswith("classifier")}
    test = loader(data.images("test", built.eval_tf), cfg)
    random_head = evaluate(built.model, test, 10)["accuracy"]
    out = fit_head(cfg, data, built, 64, progress=False)
    probed = evaluate(built.model, test, 10)["accuracy"]
    assert random_head < 0.3 < 0.7 < probed
    assert 0.5 < out["probe_val_accuracy"] <= 1.0
    after = built.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.slow
def test_lp_ft_run_starts_from_the_probe_and_trains_everything(tmp_path):
    """With BatchNorm frozen and a vanishing LR, fine-tuning leaves the probe's solution as it
    was: the head the probe fitted is the one that trains, and the saved model is the trained one."""
    base = dict(data="builtin:digits", per_class=20, image_size=64, val_split=0.05, strategy="lp-ft", epochs=1,
                baseline=False)
    still = finetune(FinetuneConfig(**base, lr=1e-9, bn="freeze", out=str(tmp_path / "still")), progress=False)
    assert still["val_accuracy"] == pytest.approx(still["probe_val_accuracy"], abs=0.02)
    assert still["val_accuracy"] > 0.6
    m = finetune(FinetuneConfig(**base, out=str(tmp_path / "lpft")), progress=False)
    assert m["strategy"] == "lp-ft" and m["trainable_params"] == m["total_params"]


@pytest.mark.slow
def test_a_cache_hit_trains_the_same_model_as_a_fresh_extraction(tmp_path, monkeypatch):
    """The probe stage's features (and one augmented view) are extracted on the first run and read
    from the cache on the second; training must start from the same random state either way
    (iterating a DataLoader draws from torch's generator; the view seeds it and Python's)."""
    from transferkit.rundir import load_weights

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    base = dict(data="builtin:digits", per_class=10, image_size=32, val_split=0.1, strategy="lp-ft", epochs=1,
                probe_augment=1, baseline=False)
    fresh = finetune(FinetuneConfig(**base, out=str(tmp_path / "fresh")), progress=False)
    assert list((tmp_path / "cache").rglob("*.safetensors"))                 # it did extract
    cached = finetune(FinetuneConfig(**base, out=str(tmp_path / "cached")), progress=False)
    a, b = load_weights(tmp_path / "fresh" / "model.safetensors"), load_weights(tmp_path / "cached" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fresh["test_accuracy"] == cached["test_accuracy"]
