"""LP-FT: the head is fitted by a linear probe before everything trains."""

import torch
from torch.utils.data import DataLoader

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits
from transferkit.evaluation import evaluate
from transferkit.strategies.lp_ft import fit_linear_probe


def test_probe_stage_fits_the_head_and_leaves_the_backbone():
    src = load_source("builtin:digits")
    s = make_splits(src.train.targets, seed=0, per_class=20)
    model = load_backbone("efficientnet_lite0", "packaged", num_classes=10, image_size=64)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    tf = build_transform(data_config_for(model, 64), 64, train=False)
    test = DataLoader(TransformedSubset(src.train, s.test[:200], tf), batch_size=100)
    random_head = evaluate(model, test, 10)["accuracy"]
    fit_linear_probe(model, DataLoader(TransformedSubset(src.train, s.train, tf), batch_size=64), 10,
                     epochs=30, progress=False)
    probed = evaluate(model, test, 10)["accuracy"]
    assert random_head < 0.3 < 0.6 < probed
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_lp_ft_run_trains_everything_after_the_probe(tmp_path):
    m = finetune(FinetuneConfig(data="builtin:digits", per_class=20, image_size=64, val_split=0.05,
                                strategy="lp-ft", epochs=1, out=str(tmp_path / "lpft")), progress=False)
    assert m["strategy"] == "lp-ft"
    assert m["trainable_params"] == m["total_params"]
    assert m["test_accuracy"] > 0.5  # one fine-tuning epoch from a fitted head (full from a random head: ~0.3)
