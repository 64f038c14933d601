"""Every option of every command defaults to its source, so the CLI and the library cannot drift.

Each command is built as ``main()`` builds it (``cli._complete([name])``, then typer's click
command). Every option and argument must have a source, else the test fails naming it:

* a config field (``transferkit.config``): the option's default is the field's;
* a Python function's parameter: the option's default is the parameter's;
* a generated ``--<method>-<option>`` flag: None (the method's own default), for a real option
  field of a registered method;
* run control and output options that exist only on the command line: :data:`CLI_ONLY`.

A source without a default (the user must give it) matches a required option, or an option whose
default is None (the command then says in one line what to give). A list default is spelled on the
command line as comma-separated text (None when empty), an empty dict as None.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import typer

from transferkit import cli

REQUIRED = "<required>"

#: command -> its options' source: a config class of transferkit.config, or "module:function"
#: a config default computed when the config is built (a default factory): the CLI's default must be None
FACTORY = object()

SOURCES = {
    "finetune": "FinetuneConfig",
    "compare": "FinetuneConfig",
    "adapt": "AdaptConfig",
    "distill": "DistillConfig",
    "pretrain": "PretrainConfig",
    "tta": "TTAConfig",
    "rank": "transferkit.transferability.rank:rank_candidates",
    "predict": "transferkit.predict:predict",
    "export": "transferkit.engine.export:export_run",
    "corrupt": "transferkit.engine.corrupt:corrupt",
    "groups": "transferkit.backbones:describe_groups",
    "models": "transferkit.backbones:list_backbones",
}

#: command -> {option (flag without dashes, "_" for "-") -> the source's name for it}
ALIASES = {
    "distill": {"student": "model", "student_weights": "weights", "student_args": "model_args"},
    "tta": {"run_dir": "run", "method": "methods"},
    "export": {"format": "fmt"},
    "corrupt": {"corruption": "names"},
}

_RUN = {"out": None, "config": None, "overwrite": False, "resume": False, "progress": True}
#: command -> run control and output options that exist only on the command line, with their defaults
CLI_ONLY = {
    "finetune": _RUN,
    "compare": {"strategies": "", "seeds": 3, "out": REQUIRED, "config": None, "overwrite": False, "progress": True},
    "adapt": {"seeds": 1, **_RUN},
    "distill": {"seeds": 1, **_RUN},
    "pretrain": _RUN,
    "tta": {"save": False, "out": None, "overwrite": False, "progress": True},
    "rank": {"out": None},
    "predict": {"format": "table"},
}


def _source_defaults(source: str) -> dict:
    """Name -> default (REQUIRED when there is none) of a config class's fields or a function's parameters."""
    if ":" not in source:
        import transferkit.config as config

        return {name: REQUIRED if f.is_required() else FACTORY if f.default_factory else f.default
                for name, f in getattr(config, source).model_fields.items()}
    module, name = source.split(":")
    fn = getattr(importlib.import_module(module), name)
    return {p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
            for p in inspect.signature(fn).parameters.values()}


def _as_cli(value):
    """A source default as the command line spells it."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or None
    if isinstance(value, dict) and not value:
        return None
    return value


def _key(param) -> str:
    """The option's long flag without dashes (``--student-args`` -> ``student_args``); an argument's name."""
    flags = [o for o in param.opts if o.startswith("--")]
    return flags[0][2:].replace("-", "_") if flags and param.param_type_name == "option" else param.name


def _method_option(param) -> str | None:
    """Why ``param`` is not a generated method option, or None when it is a real one."""
    from transferkit.registry import FAMILIES

    method, field = cli._OPTION_FLAGS[param.name]
    entries = [fam[method] for fam in FAMILIES.values() if method in fam.names()]
    if not any(e.options is not None and field in e.options.model_fields for e in entries):
        return f"no registered method '{method}' has an option '{field}'"
    return None if param.default is None else f"default {param.default!r}, not None (the method's own)"


def _problems(name: str) -> list[str]:
    cli._complete([name])
    command = typer.main.get_command(cli.app).commands[name]
    source = _source_defaults(SOURCES[name])
    problems = []
    for param in command.params:
        key = _key(param)
        given = REQUIRED if param.required else param.default
        where = f"{name} {'/'.join(param.opts)}"
        if key in CLI_ONLY.get(name, {}):
            expected, origin = CLI_ONLY[name][key], "the CLI_ONLY table"
        elif ALIASES.get(name, {}).get(key, key) in source:
            field = ALIASES.get(name, {}).get(key, key)
            expected, origin = source[field], f"{SOURCES[name]} {field}"
        elif param.name in cli._OPTION_FLAGS and param.param_type_name == "option":
            if why := _method_option(param):
                problems.append(f"{where}: {why}")
            continue
        else:
            problems.append(f"{where}: no known source (not in {SOURCES[name]}, the aliases or CLI_ONLY)")
            continue
        if expected is FACTORY:  # the config computes it (tta's line-up, from the registry): the CLI defers
            ok = given is None
        elif expected == REQUIRED:
            ok = given is REQUIRED or given is None
        else:
            ok = given is not REQUIRED and given == _as_cli(expected)
        if not ok:
            problems.append(f"{where}: CLI default {given!r}, source ({origin}) {expected!r}")
    return problems


def test_every_command_has_a_source():
    names = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
    assert names == set(SOURCES), f"commands without a source here: {names - set(SOURCES)}; gone: {set(SOURCES) - names}"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_option_defaults_are_their_sources(name):
    problems = _problems(name)
    assert not problems, "\n".join(problems)
