"""Gradual unfreezing: a callback over the plan's layer groups, restored on resume."""

import pytest
import timm
import torch
from safetensors.torch import load_file

from transferkit import FinetuneConfig, finetune, load_backbone
from transferkit.backbones import layer_groups
from transferkit.strategies.callbacks import GradualUnfreezing
from transferkit.engine.module import OptimSettings, TransferModule
from transferkit.strategies import make_plan
from transferkit.surgery.freezing import batchnorm_modules

TINY = dict(data="builtin:digits", per_class=10, image_size=64, batch_size=32, val_split=0.0,
            test_split=0.02, seed=0)


def _trainable_groups(plan):
    return [name for name, params, _ in plan.groups if all(p.requires_grad for _, p in params)]


def test_unfreezes_top_down_keeping_frozen_bn_and_eval_modes():
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=10)
    plan = make_plan("gradual", model, freeze_bn=True)
    names = [g for g, _, _ in plan.groups]
    assert names == [g for g, _ in layer_groups(model)]
    assert [p.requires_grad for _, p in plan.groups[-1][1]] == [True, True]
    assert not any(p.requires_grad for _, params, _ in plan.groups[:-1] for _, p in params)
    module = TransferModule(model, 10, plan, OptimSettings())
    cb = GradualUnfreezing(every=2)
    cb.apply(module, 3)
    bn_ids = {id(p) for bn in batchnorm_modules(model) for p in bn.parameters()}
    for k, (_, params, _) in enumerate(plan.groups):
        for _, p in params:
            assert p.requires_grad == (k >= len(names) - 3 and id(p) not in bn_ids)
    module.train()
    assert all(not bn.training for bn in batchnorm_modules(model))  # BN policy kept
    assert not model.blocks[4].training and model.blocks[5][0].conv_pw.training
    assert cb.state_dict() == {"every": 2, "unfrozen": 3}
    restored = GradualUnfreezing(every=2)
    restored.load_state_dict(cb.state_dict())
    assert restored.unfrozen == 3


@pytest.mark.slow
def test_gradual_run_trains_top_groups_only_and_resume_continues_schedule(tmp_path, monkeypatch):
    """K=1, 3 epochs: epoch 0 trains the head, 1 adds the last block group, 2 the one below.
    The run is killed when epoch 2 starts and resumed from the epoch-1 checkpoint."""
    out = tmp_path / "gradual"
    cfg = FinetuneConfig(**TINY, strategy="gradual", unfreeze_every=1, epochs=3, out=str(out))
    seen = []
    original = GradualUnfreezing.on_train_epoch_start

    def spy(self, trainer, pl_module, kill_at=None):
        seen.append((trainer.current_epoch, self.unfrozen))
        if trainer.current_epoch == kill_at:
            raise RuntimeError("killed")
        original(self, trainer, pl_module)

    monkeypatch.setattr(GradualUnfreezing, "on_train_epoch_start", lambda s, t, m: spy(s, t, m, kill_at=2))
    with pytest.raises(RuntimeError, match="killed"):
        finetune(cfg, progress=False)
    assert seen == [(0, 1), (1, 1), (2, 2)]

    pretrained = load_backbone("efficientnet_lite0", "packaged").state_dict()
    groups = layer_groups(load_backbone("efficientnet_lite0", "none", num_classes=10))
    owner = {n.rsplit(".", 1)[0]: g for g, params in groups for n, _ in params}  # module -> group

    def changed_groups(state):
        """Groups with any tensor (weights or BN statistics) different from the pretrained ones."""
        return sorted({owner[k.rsplit(".", 1)[0]] for k, v in state.items()
                       if k.startswith("classifier") or not torch.equal(v, pretrained[k])})

    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1
    assert next(v for k, v in ckpt["callbacks"].items() if "GradualUnfreezing" in k) == {"every": 1, "unfrozen": 2}
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert changed_groups(state) == ["blocks.6+conv_head+bn2", "head"]  # the rest bit-identical, BN stats too

    seen.clear()
    monkeypatch.setattr(GradualUnfreezing, "on_train_epoch_start", lambda s, t, m: spy(s, t, m))
    metrics = finetune(cfg, resume=True, progress=False)
    assert metrics["resumed"] is True
    assert seen == [(2, 2)]  # the restored callback state, before epoch 2 unfreezes one more group
    saved = load_file(str(out / "model.safetensors"))
    assert changed_groups(saved) == ["blocks.5", "blocks.6+conv_head+bn2", "head"]
