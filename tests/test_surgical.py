"""``--strategy surgical``: which layer groups train for first/middle/last/an index/a name, the plan's
optimizer groups, no backward through the frozen bottom, and the one-line refusals."""

from types import SimpleNamespace

import pytest
import timm
import torch

from transferkit.config import FinetuneConfig
from transferkit.errors import ConfigError
from transferkit.strategies import get_recipe, make_plan
from transferkit.strategies.surgical import SurgicalOptions, chosen_groups

# efficientnet_lite0's layer groups (`transferkit groups efficientnet_lite0`), by their module prefixes
GROUPS = ["conv_stem+bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5",
          "blocks.6+conv_head+bn2", "head"]
PREFIXES = {"conv_stem+bn1": ("conv_stem.", "bn1."), "blocks.6+conv_head+bn2": ("blocks.6.", "conv_head.", "bn2."),
            "head": ("classifier.",)}


def _model():
    torch.manual_seed(0)
    return timm.create_model("efficientnet_lite0", pretrained=False, num_classes=3)


def _plan(model, block, **cfg):
    return make_plan("surgical", model, options={"surgical": {"block": block}}, **cfg)


def _prefixes(groups):
    """The parameter-name prefixes of the given groups (written out above, not from layer_groups)."""
    return tuple(p for g in groups for p in PREFIXES.get(g, (g + ".",)))


@pytest.mark.parametrize("block, expected", [
    ("first", ["conv_stem+bn1", "blocks.0"]),           # the stem with the first block, as the paper's code
    ("last", ["blocks.6+conv_head+bn2"]),
    ("middle", ["blocks.3"]),                           # block 7 // 2 = 3 of blocks.0 ... blocks.6
    ("2", ["blocks.1"]),                                # an index as `transferkit groups` numbers them
    ("blocks.4", ["blocks.4"]),
    ("conv_head", ["blocks.6+conv_head+bn2"]),          # one part of a joined name
])
def test_exactly_the_chosen_groups_and_the_head_train(block, expected):
    model = _model()
    plan = _plan(model, block)
    prefixes = _prefixes(expected + ["head"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    assert trainable  # something trains
    assert [g for g, *_ in plan.groups] == expected + ["head"]
    in_optimizer = {n for _, params, _ in plan.groups for n, _ in params}
    assert in_optimizer == trainable
    assert [s for *_, s in plan.groups] == [0.1] * len(expected) + [1.0]   # --backbone-lr-mult, head LR
    # frozen groups run in eval mode (their BatchNorm statistics stay): the stem is frozen unless chosen
    assert (model.bn1 in plan.frozen_modules) == ("conv_stem+bn1" not in expected)


def test_lr_decay_scales_are_kept_for_the_chosen_block():
    plan = _plan(_model(), "last", lr_decay=0.5)
    assert [(g, s) for g, _, s in plan.groups] == [("blocks.6+conv_head+bn2", 0.5), ("head", 1.0)]


def test_no_backward_through_the_frozen_bottom():
    """With the last block tuned, nothing below it builds a graph, and only the tuned groups get gradients."""
    model = _model()
    _plan(model, "last")
    seen = {}
    model.blocks[5].register_forward_hook(lambda m, i, out: seen.update(below=out.requires_grad))
    model.blocks[6].register_forward_hook(lambda m, i, out: seen.update(top=out.requires_grad))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert seen == {"below": False, "top": True}
    assert model.conv_stem.weight.grad is None and model.blocks[5][0].conv_pw.weight.grad is None
    assert model.conv_head.weight.grad is not None and model.classifier.weight.grad is not None


def test_the_named_blocks_on_a_resnet():
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    names = ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [chosen_groups(names, b) for b in ("first", "middle", "last", "head", "0")] == [
        ["conv1+bn1", "layer1"], ["layer3"], ["layer4"], ["head"], ["conv1+bn1"]]
    plan = _plan(model, "layer2")
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"layer2", "fc"}
    assert [g for g, *_ in plan.groups] == ["layer2", "head"]


def test_unknown_block_is_one_config_error_naming_the_groups():
    recipe, model = get_recipe("surgical"), _model()
    for bad in ("blocks.9", "9", "lastt", "blocks"):
        cfg = SimpleNamespace(options={"surgical": {"block": bad}})
        with pytest.raises(ConfigError) as e:
            recipe.check_model(model, cfg)
        line = str(e.value)
        assert "\n" not in line and f"--surgical-block {bad}" in line and ", ".join(GROUPS) in line
    recipe.check_model(model, SimpleNamespace(options={"surgical": {"block": "blocks.2"}}))
    recipe.check_model(model, SimpleNamespace())   # no options: the default, first


def test_options_and_recipe_checks():
    assert SurgicalOptions().block == "first" and SurgicalOptions(block=3).block == "3"
    recipe = get_recipe("surgical")
    assert recipe.options is SurgicalOptions and recipe.trains_backbone and not recipe.in_compare
    assert recipe.defaults == get_recipe("full").defaults   # full's until measured
    with pytest.raises(ConfigError, match="--surgical-block"):
        recipe.resolve_options(SimpleNamespace(options={"surgical": {"block": " "}}))
    with pytest.raises(ConfigError, match="--surgical-blocks"):
        recipe.resolve_options(SimpleNamespace(options={"surgical": {"blocks": "first"}}))
    with pytest.raises(ConfigError, match="contradict"):
        recipe.check(FinetuneConfig(data="builtin:digits", strategy="surgical", freeze_groups=2))
    recipe.check(FinetuneConfig(data="builtin:digits", strategy="surgical", reg="l2sp", wise_alpha=0.5))
