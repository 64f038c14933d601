"""The one registry pattern (transferkit.registry): run-time registration reaches the configs and the
commands, third-party entry points load, options are validated in one line, README tables stay in sync."""

import sys
import textwrap

import pytest

from transferkit.config import AdaptConfig, DistillConfig, FinetuneConfig
from transferkit.errors import ConfigError
from transferkit.registry import ADAPTATION, DISTILL, FAMILIES, REGULARIZERS, Method, Options, Registry


class Weight(Options):
    weight: float = 0.5


def test_a_method_registered_at_run_time_is_accepted_by_config_and_cli(run_cli, tmp_path):
    ADAPTATION.register(Method(name="noop-test", summary="nothing", build=lambda ctx: None, options=Weight))
    try:
        cfg = AdaptConfig(source="builtin:synth-digits", target="builtin:digits", method="noop-test",
                          options={"noop-test": {"weight": 2}})
        assert cfg.options == {"noop-test": {"weight": 2.0}}
        code, _, err = run_cli("adapt", "--source", "builtin:synth-digits", "--target", "builtin:digits",
                               "--method", "noop-test", "--noop-test-weight", "abc", "--out", tmp_path / "r")
        assert code == 2 and "--noop-test-weight" in err, err  # the generated flag exists and is typed
    finally:
        ADAPTATION.unregister("noop-test")
    with pytest.raises(ConfigError, match="unknown method 'noop-test'"):
        AdaptConfig.build(source="builtin:synth-digits", target="builtin:digits", method="noop-test")


def test_options_are_validated_in_one_line_and_only_for_methods_the_run_uses():
    with pytest.raises(ConfigError, match=r"invalid option --bss-k: .*greater than or equal to 1"):
        FinetuneConfig(data="builtin:digits", reg="bss", options={"bss": {"k": 0}})
    with pytest.raises(ConfigError, match="--bss-k configure.* bss, which this run does not use"):
        FinetuneConfig(data="builtin:digits", options={"bss": {"k": 2}})
    with pytest.raises(ConfigError, match="'dkd', which is not a method of this command"):
        FinetuneConfig(data="builtin:digits", options={"dkd": {"nckd": 1}})
    assert DistillConfig(teacher="t", loss="dkd", options={"dkd": {"nckd": 1}}).options["dkd"]["nckd"] == 1.0


def test_duplicate_names_and_missing_summaries_are_refused():
    reg = Registry("test-family", "transferkit.registry", "--x", "thing")
    reg.register(Method(name="a", summary="one"))
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(Method(name="a", summary="two"))
    with pytest.raises(ValueError, match="one-line summary"):
        reg.register(Method(name="b", summary=""))
    assert reg["a"].summary == "one" and list(reg) == ["a"]
    with pytest.raises(ConfigError, match="unknown thing 'c'; choose one of: a"):
        reg["c"]


def test_third_party_methods_load_from_the_entry_point_group(tmp_path, monkeypatch):
    """A package that declares ``[transferkit.test-plugins] mine = plugin_mod:METHOD`` adds its method."""
    (tmp_path / "plugin_mod.py").write_text(textwrap.dedent("""
        from transferkit.registry import Method
        METHOD = Method(name="mine", summary="a third-party method", build=lambda ctx: None)
    """))
    info = tmp_path / "plugin_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[transferkit.test-plugins]\nmine = plugin_mod:METHOD\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("test-plugins", "transferkit.registry", "--x", "method")
    assert reg.names() == ("mine",) and reg["mine"].summary == "a third-party method"
    sys.modules.pop("plugin_mod", None)


def test_every_family_has_a_registry_of_documented_entries():
    assert set(FAMILIES) == {"strategies", "regularizers", "adaptation", "tta", "distill", "selfsup"}
    for family, registry in FAMILIES.items():
        assert len(registry) >= 3, family
        for name in registry:
            assert registry[name].summary and "\n" not in registry[name].summary, (family, name)
    assert {"bss", "l2sp", "lwf", "co-tuning"} <= set(REGULARIZERS)
    assert {"mcc", "self-training", "dann"} <= set(ADAPTATION) and {"dkd", "soft"} <= set(DISTILL)


def test_readme_tables_are_generated_from_the_registries():
    from pathlib import Path

    from transferkit.registry import families_markdown

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert families_markdown() in readme, "README's method tables are stale: paste transferkit.registry.families_markdown()"


@pytest.mark.parametrize("command, flag, new", [("adapt", "--method", "mcc:"), ("adapt", "--method", "self-training:"),
                                                ("distill", "--loss", "dkd:"), ("tta", "--method", "sar:"),
                                                ("pretrain", "--method", "vicreg:")])
def test_help_lists_every_registered_method(run_cli, monkeypatch, command, flag, new):
    """The choices in --help come from the registry: a method added as one module is listed."""
    monkeypatch.setenv("COLUMNS", "2000")
    code, out, _ = run_cli(command, "--help")
    line = next(line for line in out.splitlines() if f"{flag} " in line)
    assert code == 0 and new in line, line
