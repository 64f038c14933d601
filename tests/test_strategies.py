import pytest

from transferkit.config import FinetuneConfig
import timm
import torch

from transferkit.errors import ConfigError
from transferkit.strategies import get_recipe, make_plan
from transferkit.surgery.freezing import frozen_subtrees
from transferkit.surgery.freezing import batchnorm_modules, freeze_batchnorm, reapply_frozen


def _model():
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=5)


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_plans_set_trainability():
    m = _model()
    head = sum(p.numel() for p in m.get_classifier().parameters())
    total = sum(p.numel() for p in m.parameters())
    for name in ("linear-probe", "freeze"):
        plan = make_plan(name, m)
        assert _trainable(m) == head
        assert plan.cached_features == (name == "linear-probe")
        assert [g[0] for g in plan.groups] == ["head"]
    plan = make_plan("full", m, backbone_lr_mult=0.1)
    assert _trainable(m) == total
    assert [(g[0], g[2]) for g in plan.groups] == [("backbone", 0.1), ("head", 1.0)]
    assert plan.frozen_modules == []


def test_frozen_subtrees_keep_head_dropout_training():
    m = _model()
    plan = make_plan("freeze", m)
    m.train()
    reapply_frozen(plan.frozen_modules)
    assert m.training  # root flag drives the head's dropout
    assert all(not bn.training for bn in batchnorm_modules(m))
    assert m.get_classifier() not in frozen_subtrees(m)


def test_freeze_batchnorm_survives_train_and_keeps_statistics():
    m = _model()
    layers = freeze_batchnorm(m)
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    m.train()
    reapply_frozen(layers)
    with torch.no_grad():
        m(torch.randn(2, 3, 32, 32))
    after = {k: v for k, v in m.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for bn in layers for p in bn.parameters())


def test_auto_rule_and_unknown_strategy():
    assert get_recipe("auto").resolve(10)[0] == "linear-probe"
    assert get_recipe("auto").resolve(115)[0] == "full"
    auto = get_recipe("auto")  # the bottom groups it keeps pretrained: only when fine-tuning a deep enough model
    assert [auto.freeze_groups_for("full", 9), auto.freeze_groups_for("full", 6),
            auto.freeze_groups_for("linear-probe", 9)] == [3, 0, 0]
    # the reason states what is really frozen (a user's --freeze-groups, or none on a shallow model)
    assert "bottom 4 layer groups kept pretrained" in auto.resolve(115, 4)[1]
    assert "every layer group trains" in auto.resolve(115, 0)[1]
    with pytest.raises(ConfigError, match="linear-probe"):
        make_plan("lora-xl", _model())


def test_registry_drives_cli_compare_and_readme():
    """Every registered recipe is a --strategy choice, in compare's line-up (unless it opts out)
    and a row of the README's strategy table with its registered defaults."""
    from pathlib import Path

    from transferkit.config import FinetuneConfig
    from transferkit.engine.compare import default_lineup
    from transferkit.strategies import REGISTRY, markdown_table, strategy_names

    assert set(strategy_names()) == set(REGISTRY)
    assert default_lineup() == [n for n, r in REGISTRY.items() if r.in_compare] + ["scratch"]
    for name in REGISTRY:
        FinetuneConfig(data="builtin:digits", strategy=name)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README's strategy table is stale: paste transferkit.strategies.markdown_table()"


def test_recipe_checks_refuse_in_one_line():
    from transferkit.config import FinetuneConfig

    lwf = FinetuneConfig(data="builtin:digits", reg="lwf")
    with pytest.raises(ConfigError, match="--reg lwf does not apply to strategy freeze.*full"):
        get_recipe("freeze").check(lwf)
    wise = FinetuneConfig(data="builtin:digits", wise_alpha=0.5)
    with pytest.raises(ConfigError, match="leaves it frozen"):
        get_recipe("lora").check(wise)
    get_recipe("full").check(lwf)
    get_recipe("l2sp").check(wise)


def test_a_new_recipe_is_one_registration():
    """Registering a recipe is all it takes for the CLI, compare and the checks to know it."""
    from transferkit.engine.compare import default_lineup
    from transferkit.strategies import REGISTRY, Defaults, Recipe, register
    from transferkit.strategies.base import head_only_plan

    class Probe2(Recipe):
        def plan(self, net, cfg, freeze_bn):
            return head_only_plan(self.name, net, cached_features=True)

    register(Probe2(name="probe-test", summary="test", defaults=Defaults(32, 1, 1e-3), trains="head",
                    cached_features=True))
    try:
        assert "probe-test" in default_lineup()
        assert [g for g, *_ in make_plan("probe-test", _model()).groups] == ["head"]
        # registered at run time: the config accepts it (nothing frozen at import)
        assert FinetuneConfig(data="builtin:digits", strategy="probe-test").strategy == "probe-test"
    finally:
        REGISTRY.unregister("probe-test")
