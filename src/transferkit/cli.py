"""The ``transferkit`` command line: parse, call the library, report.

Every :class:`~transferkit.errors.TransferkitError` becomes one line on stderr
and exit code 2 — no traceback.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import io
import json
import os
import signal
import sys
from pathlib import Path
from types import UnionType
from typing import Optional, Union, get_args, get_origin

import typer
from rich.console import Console
from rich.table import Column, Table

from transferkit.errors import Interrupted, IOFault, TransferkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning for computer vision: the best model for the least data and compute.")
console = Console()


def _cli_type(annotation, argument: bool = False):
    """The command-line type of a config field or a function's parameter: ``X | None`` stays optional, a path
    stays a path (``Path | str`` too), lists (comma-separated: pydantic or the command splits them; an
    ``argument`` takes several values), literals and anything else are text."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType):
        if len(args) < len(get_args(annotation)):
            return Optional[_cli_type(Union[tuple(args)], argument)]
        return Path if Path in args else str
    if argument and get_origin(annotation) is list:
        return list[_cli_type(args[0])]
    return annotation if annotation in (bool, int, float, str, Path) else str


def _config_params(names, config_cls=None, **overrides) -> list[inspect.Parameter]:
    """Typer options generated from the fields of ``config_cls`` (default :class:`FinetuneConfig`): one
    default, one help text each (``overrides``: name -> (default, help) where a command needs another)."""
    from transferkit.config import FinetuneConfig

    params = []
    for name in names:
        f = (config_cls or FinetuneConfig).model_fields[name]
        default, help_text, *flag = overrides.get(name, (f.default, f.description))
        if isinstance(default, dict):  # model_args: typed as "name=value,..." text
            default = None
        annotation = Optional[_cli_type(f.annotation)] if default is None else _cli_type(f.annotation)
        panel = (config_cls or FinetuneConfig).panel_of(name)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                        default=typer.Option(default, *flag, help=help_text, rich_help_panel=panel)))
    return params


def _with_params(*params: list[inspect.Parameter]):
    """Give a ``**values`` command function the generated signature typer reads."""
    def wrap(fn):
        ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        fn.__signature__ = inspect.Signature([ctx, *(p for group in params for p in group)])
        return fn
    return wrap


def _extra(name: str, annotation, default, help_text: str, panel: str = "Run") -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, help=help_text, rich_help_panel=panel))


def _from_function(target: str, help: dict[str, str], *, arguments=(), flags=None, skip=(), asked=(), extra=()):
    """Give a ``**values`` command the parameters of the Python function ``target`` ("module:function"):
    name, type and default from its signature, so the two cannot drift; the help texts from ``help``
    (every parameter needs one). ``arguments``: the positional ones; ``flags``: name -> flag names where
    they are not ``--name``; ``skip``: parameters the command line does not take; ``asked``: parameters
    without a default that the command asks for itself, in one line (default None here; others without
    one are required by typer); ``extra``: options of the command line alone, after the function's.
    The signature is read by :func:`_complete` when the command runs (the module may import torch)."""
    def mark(fn):
        def params() -> list[inspect.Parameter]:
            generated = _function_params(target, help, arguments, flags or {}, skip, asked)
            return [*generated, *extra]

        fn.__function_params__ = params
        fn.__signature__ = inspect.Signature([])  # until _complete: `transferkit --help` needs no torch
        return fn
    return mark


def _function_params(target: str, help: dict[str, str], arguments, flags: dict, skip, asked) -> list[inspect.Parameter]:
    """Typer parameters from the signature of ``target`` (see :func:`_from_function`)."""
    module, name = target.split(":")
    params = []
    for p in inspect.signature(getattr(importlib.import_module(module), name), eval_str=True).parameters.values():
        if p.name in skip:
            continue
        if p.name not in help:
            raise TypeError(f"{target}: parameter '{p.name}' has no help text in cli.py: add one, or skip it")
        default = None if p.name in asked else (... if p.default is p.empty else p.default)
        annotation = _cli_type(p.annotation, argument=p.name in arguments)
        if default is None and get_origin(annotation) not in (Union, UnionType):
            annotation = Optional[annotation]
        info = (typer.Argument(default, help=help[p.name]) if p.name in arguments
                else typer.Option(default, *flags.get(p.name, ()), help=help[p.name]))
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=info))
    return params


#: generated ``--<method>-<option>`` flags: parameter name -> (method, option); filled in by :func:`_complete`
_OPTION_FLAGS: dict[str, tuple[str, str]] = {}


def _method_options(*families: str, choices: str | None = None, lineup: bool = False):
    """Mark a command as taking the ``--<method>-<option>`` flags of the registered methods of ``families``
    (added by :func:`_complete` when the command runs: the registries import torch, the bare CLI does not).
    ``choices``: the family whose methods (name: summary) the ``--method`` help lists, with ``lineup``
    its default line-up. A command with its own parameters receives the flags in ``**options``."""
    def mark(fn):
        fn.__method_families__, fn.__method_choices__ = families, (choices, lineup)
        sig = inspect.signature(fn)
        fn.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD])
        return fn
    return mark


def _engine_defaults(loader):
    """Mark a command whose help names engine defaults as ``{name}`` placeholders: ``loader()`` (importing
    the engine) fills them in when the command runs (:func:`_complete`), so help never copies a default."""
    def mark(fn):
        fn.__help_defaults__ = loader
        return fn
    return mark


def _rewrite_help(info, make) -> None:
    """``info.help = make(the help as written)``: the text as written is kept aside, so a command completed
    again (:func:`_complete`) rewrites it anew instead of twice."""
    info.help = make(info.__dict__.setdefault("base_help", info.help))


def _fill_defaults(sig: inspect.Signature, values: dict) -> None:
    """Format every ``{name}`` placeholder in the options' help with ``values``."""
    for p in sig.parameters.values():
        if "{" in (getattr(p.default, "help", None) or ""):
            _rewrite_help(p.default, lambda text: text.format_map(values))


def _adapt_defaults() -> dict:
    from transferkit.engine.adapt import DEFAULTS

    return DEFAULTS


def _distill_defaults() -> dict:
    from transferkit.engine.distill import SCRATCH_EPOCHS

    return {"scratch_epochs": SCRATCH_EPOCHS}


def _option_params(families) -> list[inspect.Parameter]:
    """One typer option per field of each registered method's options model, default None (the method's own)."""
    from transferkit.registry import FAMILIES

    params = []
    for entry in (e for fam in families for e in FAMILIES[fam].with_options()):
        for field, f in entry.options.model_fields.items():
            name = f"{entry.name}_{field}".replace("-", "_")
            _OPTION_FLAGS[name] = (entry.name, field)
            help_text = f"{entry.name}: {f.description or field} (default {f.default})"
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(
                None, help=help_text, rich_help_panel="Method options"), annotation=Optional[_cli_type(f.annotation)]))
    return params


def _complete(argv: list[str]) -> None:
    """Add the parameters read late to the command named in ``argv``: a Python function's
    (:func:`_from_function`) and the generated method-option flags (:func:`_method_options`); rebuilt from
    the command's own signature on every call, so methods registered since count."""
    name = next((a for a in argv if not a.startswith("-")), None)
    info = next((c for c in app.registered_commands if (c.name or c.callback.__name__) == name), None)
    fn = info.callback if info else None
    function_params = getattr(fn, "__function_params__", None)
    families = getattr(fn, "__method_families__", ())
    if getattr(fn, "__help_defaults__", None):
        _fill_defaults(inspect.signature(fn), fn.__help_defaults__())
    if not (function_params or families):
        return
    fn.__base_signature__ = sig = getattr(fn, "__base_signature__", None) or inspect.signature(fn)
    if families:
        _list_choices(sig, *fn.__method_choices__)
    params = [*sig.parameters.values(), *(function_params() if function_params else [])]
    taken = {p.name for p in params}
    params += [p for p in (_option_params(families) if families else []) if p.name not in taken]
    fn.__signature__ = sig.replace(parameters=params)


def _list_choices(sig: inspect.Signature, family: str | None, lineup: bool) -> None:
    """Append the registered methods of ``family`` (and its default line-up) to the help of the family's
    flag (``--method``, ``--loss``; its parameter may be plural: tta's ``methods``)."""
    if family is None:
        return
    from transferkit.registry import FAMILIES

    registry = FAMILIES[family]
    flag = registry.flag.lstrip("-")
    name = next((n for n in (flag, flag + "s") if n in sig.parameters), None)
    if name is None:
        return
    default = f"; default: {','.join(registry.lineup())}" if lineup else ""
    _rewrite_help(sig.parameters[name].default, lambda text: f"{text}: {registry.help()}{default}")


def _collect_options(values: dict) -> dict:
    """Pop the method-option flags given (not None) out of ``values``: ``{method: {option: value}}``."""
    options: dict = {}
    for name in [k for k in values if k in _OPTION_FLAGS]:
        value = values.pop(name)
        if value is not None:
            method, field = _OPTION_FLAGS[name]
            options.setdefault(method, {})[field] = value
    return options


def _given(ctx: typer.Context, values: dict) -> dict:
    """The options the user typed (not left at their default)."""
    return {k: v for k, v in values.items()
            if ctx.get_parameter_source(k) is not None and ctx.get_parameter_source(k).name != "DEFAULT"}


def _strategy_help() -> str:
    from transferkit.strategies import strategy_names as names

    return f"{', '.join(names())} (see the README's strategy table)"


def _finetune_fields() -> list[str]:
    from transferkit.config import FinetuneConfig

    return [n for n in FinetuneConfig.model_fields if n not in ("out", "options")]


RUN_OPTIONS = [
    _extra("out", Optional[Path], None, "run directory (default runs/<model>-<strategy>-<time>)"),
    _extra("config", Optional[Path], None, "YAML config file; options given on the command line override it"),
    _extra("overwrite", bool, False, "replace an existing transferkit run directory (only the files it wrote)"),
    _extra("resume", bool, False, "continue the interrupted run in --out with its saved settings"),
    _extra("progress", bool, True, "rich progress bars"),
]


@app.command()
@_method_options("strategies", "regularizers")
@_with_params(_config_params(_finetune_fields(), data=(None, "builtin:digits, builtin:fashion-mnist, an image "
                                                               "folder or a CSV (path,label[,split])"),
                             strategy=("auto", _strategy_help())), RUN_OPTIONS)
def finetune(ctx: typer.Context, **values) -> None:
    """Fine-tune a pretrained backbone on labelled images and write a run directory."""
    from transferkit.engine.finetune import finetune as run_finetune

    values["wise_curve"] = _floats(values["wise_curve"], "--wise-curve")
    cfg, overwrite, resume, progress = _one_run_config(ctx, values, "builtin:digits")
    metrics = run_finetune(cfg, overwrite=overwrite, resume=resume, progress=progress)
    if metrics:
        for key, change in metrics.get("resume_changes", {}).items():
            console.print(f"--{key.replace('_', '-')} {change['now']} applied on resume (was {change['saved']})")
        console.print(f"[bold]{metrics['strategy']}[/] on {metrics['model']}: test accuracy "
                      f"{_fmt(metrics['test_accuracy'])} (raw-pixel baseline {_fmt(metrics['pixel_baseline_accuracy'])}), "
                      f"val accuracy {_fmt(metrics['val_accuracy'])}, {metrics['train_seconds']:.0f} s training "
                      f"-> {_run_dir(cfg)}", highlight=False, soft_wrap=True)
        console.print(f"why {metrics['strategy']}: {metrics['strategy_reason']}", highlight=False)
        _say_verdict(metrics)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _shown(path) -> str:
    """A path as summaries print it: relative to the working directory when it lies below it, else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _run_dir(cfg) -> str:
    """The run directory a one-run command wrote: ``--out``, else the ``runs/...`` folder it chose
    (``engine.finetune.run_path`` decides it once per process, so asking again gives the same)."""
    from transferkit.engine.run import run_path

    return _shown(run_path(cfg))


def _say_verdict(result: dict) -> None:
    """The baseline verdict (the method lost to its baseline) and why none could be given, one line each."""
    for key, style in (("baseline_verdict", "bold yellow"), ("baseline_note", None)):
        if result.get(key):
            console.print(result[key], style=style, markup=False, highlight=False, soft_wrap=True)


def _one_run_config(ctx: typer.Context, values: dict, example: str, config_cls=None):
    """``(config, overwrite, resume, progress)`` of a one-run command: ``--resume`` continues the saved config
    in ``--out``; otherwise ``--data`` (or ``--config``) is required."""
    out, config, overwrite, resume, progress = (values.pop(k) for k in ("out", "config", "overwrite", "resume",
                                                                       "progress"))
    values["out"] = str(out) if out else None
    if resume:
        if not out:
            raise TransferkitError("--resume needs --out RUN_DIR (the run to continue)")
        options = _collect_options(values)
        given = {**_given(ctx, values), **({"options": options} if options else {})}
        return _resume_config(Path(out), given, config_cls), overwrite, resume, progress
    if not values["data"] and not config:
        raise TransferkitError(f"--data is required, e.g. --data {example} or --data path/to/images")
    return _config(ctx, values, config, config_cls), overwrite, resume, progress


def _resume_config(out: Path, given: dict, config_cls=None):
    from transferkit.config import FinetuneConfig
    from transferkit.engine.checks import saved_config
    from transferkit.rundir import RunDir

    return saved_config(RunDir(out), config_cls or FinetuneConfig, **{**given, "out": str(out)})


COMPARE_SHARED = ("data", "model", "weights", "per_class", "test_per_class", "epochs", "image_size", "source_eval",
                  "wise_curve", "logger", "experiment", "mlflow_db")


@app.command()
@_with_params(
    [_extra("strategies", str, "", "comma-separated: finetune strategies, scratch (full from random init) and "
            "X+REG (X with --reg REG, e.g. full+lwf, full+bss); default: every registered strategy but auto, plus scratch"),
     _extra("seeds", int, 3, "seeds 0..N-1: each changes the splits, init and data order"),
     _extra("out", Path, ..., "folder for compare.json, leaderboard.md, compare.png and runs/")],
    _config_params(COMPARE_SHARED, data=(None, "builtin:digits, builtin:fashion-mnist, an image folder or a CSV"),
                   epochs=(None, "one budget for all (default: each strategy's measured default)"),
                   image_size=(None, "one input size for all (default: each strategy's)")),
    [_extra("config", Optional[Path], None, "YAML with any other finetune setting shared by all runs"),
     _extra("overwrite", bool, False, "start afresh (default: reuse finished runs, resume interrupted ones)"),
     _extra("progress", bool, True, "rich progress bar")])
def compare(ctx: typer.Context, **values) -> None:
    """Run strategies side by side on the same splits: leaderboard, chart and a recommendation."""
    from transferkit.engine.compare import OUTPUTS, compare as run_compare, default_lineup

    strategies, seeds, out, config, overwrite, progress = (values.pop(k) for k in (
        "strategies", "seeds", "out", "config", "overwrite", "progress"))
    wise_curve = _floats(values.pop("wise_curve"), "--wise-curve")
    if not values["data"] and not config:
        raise TransferkitError("--data is required, e.g. --data builtin:fashion-mnist --per-class 10")
    if seeds < 1:
        raise TransferkitError(f"--seeds must be at least 1, got {seeds}")
    base = _config(ctx, values, config)
    names = [s.strip() for s in strategies.split(",") if s.strip()] or default_lineup()
    result = run_compare(base, names, list(range(seeds)), out, wise_curve=wise_curve,
                         overwrite=overwrite, progress=progress, console=console)
    if not result:  # a non-zero DDP rank
        return
    table = Table("#", Column("strategy", no_wrap=True), "val acc % (mean ± std)", "test acc % (mean ± std)",
                  "train s", "trainable", "forgetting %",
                  title=f"transferkit compare: {result['data']}, {len(result['seeds'])} seed(s)",
                  caption="ranked by validation accuracy; test is reported, never used to choose")
    for i, r in enumerate(result["leaderboard"], 1):
        table.add_row(str(i), r["strategy"], _pm(r, "val_accuracy"), _pm(r, "test_accuracy"),
                      f"{r['train_seconds_mean']:.0f}", f"{r['trainable_params']:,}",
                      "-" if r["forgetting"] is None else f"{100 * r['forgetting']:.1f}")
    console.print(table)
    console.print(result["recommendation"].replace("**", ""), highlight=False)
    console.print("-> " + ", ".join(_shown(Path(out) / name) for name in OUTPUTS), highlight=False, soft_wrap=True)


def _pm(row: dict, score: str) -> str:
    """A leaderboard row's ``<score>_mean ± _std`` in percent, ``-`` when missing."""
    mean, std = row[f"{score}_mean"], row[f"{score}_std"]
    return "-" if mean is None else f"{100 * mean:.1f} ± {100 * (std or 0):.1f}"


def _one_run_or_grid(ctx: typer.Context, values: dict, key: str, default: str, config_cls, missing: str | None):
    """The config of a command that runs one run or a grid (``--KEY a,b --seeds N``): the names listed
    in ``values[key]``, the run options popped; ``missing``: the error when required options are absent."""
    out, config, overwrite, resume, progress, seeds = (values.pop(k) for k in (
        "out", "config", "overwrite", "resume", "progress", "seeds"))
    names = [m.strip() for m in (values[key] or "").split(",") if m.strip()] or [default]
    values[key], values["out"] = names[0], str(out) if out else None
    if resume:
        if not out or len(names) > 1 or seeds != 1:
            raise TransferkitError(f"--resume continues one run: give --out RUN_DIR and one --{key}")
        cfg = _resume_config(Path(out), _given(ctx, values), config_cls)
    elif not config and missing:
        raise TransferkitError(missing)
    else:
        cfg = _config(ctx, values, config, config_cls)
    if len(names) > 1 or seeds > 1:
        if not out:
            raise TransferkitError(f"several {key} values or seeds write a leaderboard: give --out DIR")
        if seeds < 1:
            raise TransferkitError(f"--seeds must be at least 1, got {seeds}")
    return cfg, names, out, overwrite, resume, progress, seeds


def _adapt_fields() -> list[str]:
    from transferkit.config import AdaptConfig

    first = ["source", "target", "method"]
    return first + [n for n in AdaptConfig.model_fields if n not in (*first, "data", "out", "options")]


def _adapt_cls():
    from transferkit.config import AdaptConfig

    return AdaptConfig


@app.command()
@_engine_defaults(_adapt_defaults)
@_method_options("strategies", "regularizers", "adaptation", choices="adaptation")
@_with_params(
    _config_params(_adapt_fields(), _adapt_cls(),
                   source=(None, "labelled source domain: builtin:synth-digits, an image folder or a CSV"),
                   target=(None, "target domain (its labels are never trained on): as --source, or a folder of "
                                 "images without class folders"),
                   method=("dann", "the adaptation method; several, comma-separated, run side by side into a "
                                   "leaderboard"),
                   image_size=(None, "None: {image_size} (adapt's measured default)"),
                   epochs=(None, "None: {epochs} (adapt's measured default)"),
                   lr=(None, "head learning rate; None: {lr:g} (adapt's measured default)")),
    [_extra("seeds", int, 1, "seeds 0..N-1 (with several methods or N > 1: a leaderboard in --out)"),
     *RUN_OPTIONS])
def adapt(ctx: typer.Context, **values) -> None:
    """Domain adaptation: train on a labelled source and unlabelled target images; score the target."""
    missing = None if values["source"] and values["target"] else (
        "--source and --target are required, e.g. --source builtin:synth-digits --target builtin:digits")
    cfg, methods, out, overwrite, resume, progress, seeds = _one_run_or_grid(ctx, values, "method", "dann",
                                                                              _adapt_cls(), missing)
    if len(methods) > 1 or seeds > 1:
        return _adapt_leaderboard(cfg, methods, seeds, out, overwrite, progress)
    from transferkit.engine.adapt import adapt as run_adapt

    metrics = run_adapt(cfg, overwrite=overwrite, resume=resume, progress=progress)
    if metrics:
        console.print(f"[bold]{metrics['method']}[/] {cfg.source} -> {cfg.target}: target accuracy "
                      f"{_fmt(metrics['target_accuracy'])} ({metrics['target_eval']}), source accuracy "
                      f"{_fmt(metrics['source_accuracy'])}, proxy A-distance {_fmt(metrics['proxy_a_distance_before'])} "
                      f"-> {_fmt(metrics['proxy_a_distance_after'])}, {metrics['train_seconds']:.0f} s training "
                      f"-> {_run_dir(cfg)}", highlight=False, soft_wrap=True)
        _say_verdict(metrics)


def _adapt_leaderboard(base, methods: list[str], seeds: int, out, overwrite: bool, progress: bool) -> None:
    from transferkit.engine.adapt_compare import OUTPUTS, adapt_compare

    result = adapt_compare(base, methods, list(range(seeds)), out, overwrite=overwrite, progress=progress,
                           console=console)
    if not result:  # a non-zero DDP rank
        return
    table = Table("#", Column("method", no_wrap=True), "source val acc % (mean ± std)", "target acc % (mean ± std)",
                  "source test acc %", "proxy A after", "train s",
                  title=f"transferkit adapt: {result['source']} -> {result['target']}, {len(result['seeds'])} seed(s)",
                  caption="ranked by source validation accuracy (reads no target labels; a weak proxy for the "
                          "target); target accuracy is reported, never used to choose")
    for i, r in enumerate(result["leaderboard"], 1):
        pad = r["proxy_a_distance_after_mean"]
        table.add_row(str(i), r["method"], _pm(r, "source_val_accuracy"), _pm(r, "target_accuracy"),
                      "-" if r["source_accuracy_mean"] is None else f"{100 * r['source_accuracy_mean']:.1f}",
                      "-" if pad is None else f"{pad:.2f}", f"{r['train_seconds_mean']:.0f}")
    console.print(table)
    _say_verdict(result)
    console.print("-> " + ", ".join(_shown(Path(out) / name) for name in OUTPUTS), highlight=False, soft_wrap=True)


def _distill_fields() -> list[str]:
    from transferkit.config import DistillConfig

    first = ["teacher", "model", "weights", "model_args", "data", "loss"]
    return first + [n for n in DistillConfig.model_fields if n not in (*first, "out", "options")]


def _distill_cls():
    from transferkit.config import DistillConfig

    return DistillConfig


@app.command()
@_engine_defaults(_distill_defaults)
@_method_options("distill", choices="distill")
@_with_params(
    _config_params(_distill_fields(), _distill_cls(),
                   teacher=(None, "a finished run directory (finetune, adapt, distill): its model teaches"),
                   model=("efficientnet_lite0", "the student: any timm model, e.g. deit_tiny_distilled_patch16_224 "
                                                "(a ViT with a distillation token)", "--student"),
                   weights=("none", "the student's weights: none (from scratch), packaged, imagenet or a file",
                            "--student-weights"),
                   model_args=(None, "architecture arguments for timm.create_model, e.g. "
                                     "patch_size=4,embed_dim=192,depth=6,num_heads=3", "--student-args"),
                   loss=("soft", "the distillation loss (none: the student alone); several, comma-separated, run "
                                 "side by side into a leaderboard"),
                   image_size=(None, "the student's input size; None: the teacher's"),
                   epochs=(None, "None: {scratch_epochs} for a student from scratch (--student-weights none), "
                                 "else the recipe's default")),
    [_extra("seeds", int, 1, "seeds 0..N-1 (with several losses or N > 1: a leaderboard in --out)"), *RUN_OPTIONS])
def distill(ctx: typer.Context, **values) -> None:
    """Knowledge distillation: train a student (any timm model, a ViT from scratch too) from a finished run."""
    missing = None if values["teacher"] else (
        "--teacher RUN_DIR is required (a finished finetune run), e.g. --teacher runs/lite0")
    cfg, losses, out, overwrite, resume, progress, seeds = _one_run_or_grid(ctx, values, "loss", "soft",
                                                                             _distill_cls(), missing)
    if len(losses) > 1 or seeds > 1:
        return _distill_leaderboard(cfg, losses, seeds, out, overwrite, progress)
    from transferkit.engine.distill import distill as run_distill

    m = run_distill(cfg, overwrite=overwrite, resume=resume, progress=progress)
    if m:
        console.print(f"[bold]{m['loss']}[/] {m['teacher_model']} -> {m['model']}: student accuracy "
                      f"{_fmt(m['student_accuracy'])} (teacher {_fmt(m['teacher_accuracy'])}, student alone "
                      f"{_fmt(m['student_alone_accuracy'])}); {m['student_params']:,} vs {m['teacher_params']:,} "
                      f"parameters, {m['student_images_per_second']:.0f} vs {m['teacher_images_per_second']:.0f} "
                      f"images/s; {m['train_seconds']:.0f} s training -> {_run_dir(cfg)}", highlight=False,
                      soft_wrap=True)
        _say_verdict(m)


def _distill_leaderboard(base, losses: list[str], seeds: int, out, overwrite: bool, progress: bool) -> None:
    from transferkit.engine.distill_compare import OUTPUTS, distill_compare

    result = distill_compare(base, losses, list(range(seeds)), out, overwrite=overwrite, progress=progress,
                             console=console)
    if not result:  # a non-zero DDP rank
        return
    table = Table("#", Column("loss", no_wrap=True), "student val acc % (mean ± std)",
                  "student test acc % (mean ± std)", "Δ alone (test points)", "train s",
                  title=f"transferkit distill: {result['teacher_model']} -> {result['model']}, "
                        f"{len(result['seeds'])} seed(s); teacher {100 * result['teacher_accuracy']:.1f}%",
                  caption="ranked by validation accuracy; test is reported, never used to choose")
    for i, r in enumerate(result["leaderboard"], 1):
        delta = r["delta_alone"]
        table.add_row(str(i), r["loss"], _pm(r, "student_val_accuracy"), _pm(r, "student_accuracy"),
                      "-" if delta is None else f"{100 * delta:+.1f}", f"{r['train_seconds_mean']:.0f}")
    console.print(table)
    _say_verdict(result)
    console.print("-> " + ", ".join(_shown(Path(out) / name) for name in OUTPUTS), highlight=False, soft_wrap=True)


def _pretrain_fields() -> list[str]:
    from transferkit.config import PretrainConfig

    first = ["data", "method", "model", "weights", "model_args", "images"]
    return first + [n for n in PretrainConfig.model_fields if n not in (*first, "out", "options", "val_split", "test_split")]


def _pretrain_cls():
    from transferkit.config import PretrainConfig

    return PretrainConfig


@app.command()
@_method_options("selfsup", choices="selfsup")
@_with_params(
    _config_params(_pretrain_fields(), _pretrain_cls(),
                   data=(None, "images: builtin:fashion-mnist, an image folder (with class folders, or without: "
                               "unlabelled) or a CSV; labels only feed the kNN monitor"),
                   method=("simclr", "the self-supervised method"),
                   epochs=(None, "None: the method's measured default (README: pretraining table)"),
                   lr=(None, "AdamW learning rate; None: the method's measured default (README: pretraining table)")),
    RUN_OPTIONS)
def pretrain(ctx: typer.Context, **values) -> None:
    """Self-supervised pretraining (SimCLR, BYOL, DINO, MAE, ... via lightly) on unlabelled images; the run
    directory is a backbone for finetune --weights RUN_DIR."""
    from transferkit.engine.pretrain import pretrain as run_pretrain

    cfg, overwrite, resume, progress = _one_run_config(ctx, values, "builtin:fashion-mnist", _pretrain_cls())
    m = run_pretrain(cfg, overwrite=overwrite, resume=resume, progress=progress)
    if m:
        console.print(f"[bold]{m['method']}[/] on {m['model']} ({m['weights']}): {m['train_images']} images, "
                      f"{m['epochs']} epochs, final loss {_fmt(m['final_train_loss'])}, kNN accuracy "
                      f"{_fmt(m['knn_accuracy_before'])} -> {_fmt(m['knn_accuracy'])}; {m['train_seconds']:.0f} s "
                      f"training -> {_run_dir(cfg)}", highlight=False, soft_wrap=True)
        _say_verdict(m)
        console.print(f"next: transferkit finetune --weights {_run_dir(cfg)} --model {m['model']} --data DATA",
                      highlight=False, soft_wrap=True)


def _floats(text: Optional[str], option: str) -> Optional[list[float]]:
    if not text:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise TransferkitError(f"{option} takes comma-separated numbers, e.g. 0,0.5,1; got '{text}'") from None


def _config(ctx: typer.Context, values: dict, config: Optional[Path], config_cls=None):
    """A ``config_cls`` (default FinetuneConfig) from command-line values, over a YAML file's when
    ``config`` is given (only the options given on the command line override the file)."""
    from transferkit.config import FinetuneConfig

    cls = config_cls or FinetuneConfig
    options = _collect_options(values)
    if not config:
        return cls.build(**values, **({"options": options} if options else {}))
    return cls.load(config, **_given(ctx, values), **({"options": options} if options else {}))


GROUPS_HELP = {"model": "timm model name", "lr_decay": "also show each group's LR scale under --lr-decay D"}


@app.command()
@_from_function("transferkit.backbones:describe_groups", GROUPS_HELP, arguments=("model",))
def groups(**values) -> None:
    """Show a model's layer groups, stem to head: what --lr-decay and gradual unfreezing act on."""
    from transferkit.backbones import describe_groups

    rows = describe_groups(**values)
    scaled = values["lr_decay"] is not None
    table = Table("#", "group", "tensors", "params", *(["LR scale"] if scaled else []),
                  title=f"{values['model']}: {len(rows)} layer groups")
    for i, r in enumerate(rows):
        table.add_row(str(i), r["group"], str(r["tensors"]), f"{r['params']:,}",
                      *([f"{r['lr_scale']:.3g}"] if scaled else []))
    console.print(table)


PREDICT_HELP = {
    "run_dir": "a finished run directory", "paths": "image files or folders",
    "topk": "classes shown per image, most probable first (all of them when the run has fewer)",
    "skip_bad_images": "skip unreadable images (named on stderr) instead of stopping",
    "device": "cpu, cuda, cuda:N or auto (cuda when available)",
    "backend": "torch, or onnxruntime (the run's model.onnx: transferkit export)",
    "labels": "the images lie in class folders: also score them (accuracy, calibration error, per class)",
    "gallery": "with --labels: write the most confident mistakes beside their Grad-CAM to this PNG"}


@app.command()
@_from_function("transferkit.predict:predict", PREDICT_HELP, arguments=("run_dir", "paths"),
                flags={"topk": ("--topk", "-k")}, skip=("batch_size",),
                extra=[_extra("format", str, "table", "table, json or csv")])
def predict(**values) -> None:
    """Print the top-k classes with probabilities for each image."""
    from transferkit.predict import predict as run_predict, shown

    format = values.pop("format")
    if format not in ("table", "json", "csv"):
        raise TransferkitError(f"unknown --format '{format}'; choose table, json or csv")
    results = run_predict(**values)
    if results.skipped:  # stderr: stdout stays the results alone
        print(f"warning: skipped {len(results.skipped)} unreadable image(s): {shown(results.skipped, 10)}",
              file=sys.stderr)
    if format == "json":
        print(json.dumps({"predictions": results, "evaluation": results.evaluation} if values["labels"] else results,
                         indent=2))
    elif format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "rank", "class", "prob"])
        for r in results:
            for rank, t in enumerate(r["top"], 1):
                w.writerow([r["path"], rank, t["class"], t["prob"]])
        print(buf.getvalue(), end="")
        if results.evaluation:  # stderr: stdout stays the CSV
            print(_scored(results.evaluation), file=sys.stderr)
            if "mistakes" in results.evaluation:
                print(_gallery_line(results.evaluation), file=sys.stderr)
    else:
        table = Table("image", *(f"top-{i + 1}" for i in range(len(results[0]["top"]) if results else 0)))
        for r in results:
            table.add_row(r["path"], *(f"{t['class']} ({t['prob']:.3f})" for t in r["top"]))
        console.print(table)
        if results.evaluation:
            _print_evaluation(results.evaluation)


def _scored(ev: dict) -> str:
    """One line of ``predict --labels``' scores."""
    return (f"{ev['images']} labelled images: accuracy {ev['accuracy']:.4f}, macro-F1 {ev['macro_f1']:.4f}, "
            f"ECE {ev['ece']:.4f} (at the run's temperature T = {ev['temperature']:.3g})")


def _gallery_line(ev: dict) -> str:
    """Where ``predict --gallery`` drew the mistakes (or that there were none)."""
    if not ev["mistakes"]:
        return "no mistakes: no gallery written"
    note = f" ({ev['gradcam_note']})" if ev.get("gradcam_note") else ""
    return f"-> {ev['gallery']}: the {len(ev['mistakes'])} most confident mistakes with Grad-CAM{note}"


def _print_evaluation(ev: dict) -> None:
    """``predict --labels``: the scores and the per-class table, worst F1 first."""
    from transferkit.evaluation.metrics import worst_first

    table = Table("class", "precision", "recall", "F1", "support", title="per class, worst F1 first")
    shown, absent = worst_first(ev["per_class"])
    for r in shown:
        table.add_row(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
    console.print(_scored(ev), highlight=False, soft_wrap=True)
    console.print(table)
    if "mistakes" in ev:
        console.print(_gallery_line(ev), highlight=False, soft_wrap=True)
    if absent:
        console.print(f"not in these images and never predicted: {', '.join(absent)}", highlight=False, soft_wrap=True)


@app.command()
@_from_function("transferkit.backbones:list_backbones", {"pattern": "timm wildcard, e.g. 'resnet*'"},
                arguments=("pattern",))
def models(**values) -> None:
    """List backbones and which weights work offline here."""
    from transferkit.backbones import list_backbones

    rows = list_backbones(**values)
    if not rows:  # a typo, not an empty answer: say so instead of printing an empty table
        raise TransferkitError(f"no timm model matches '{values['pattern']}'; try a wildcard, e.g. 'resnet*', or "
                               "transferkit models for common backbones")
    table = Table("model", "params (M)", "offline weights", "pretrained tags")
    for r in rows:
        params = r.get("params")
        table.add_row(r["name"], f"{params:.1f}" if params else "-", r.get("offline") or "-",
                      ", ".join(r.get("tags") or [])[:60])
    console.print(table)


RANK_HELP = {
    "data": "builtin:digits, builtin:fashion-mnist, an image folder or a CSV (path,label)",
    "models": "comma-separated timm model names",
    "weights": "comma-separated: packaged, imagenet, none (random-init baseline), a file or a run directory "
               "(a pretrain run)",
    "layers": "comma-separated: last (pre-logits) or feature-stage indices, e.g. last,-2,-3",
    "per_class": "few-shot: N training images per class (as finetune)",
    "image_size": "input size (>= 64; rank at the size you will train at)",
    "seed": "fixes splits (same as finetune --seed), random init and probes",
    "cache_dir": "feature cache (default $TRANSFERKIT_CACHE/features or ~/.cache/transferkit/features)",
    "progress": "rich progress bars",
    "device": "where features are extracted: cpu, cuda, cuda:N or auto"}


@app.command()
@_from_function("transferkit.transferability.rank:rank_candidates", RANK_HELP, asked=("data",),
                extra=[_extra("out", Optional[Path], None, "folder for rank.json and rank.md")])
def rank(**values) -> None:
    """Rank backbones (and layers) for a dataset by transferability scores and probes, before training."""
    from rich import box

    from transferkit.transferability.rank import RANK_RUN, rank_candidates

    out, data, image_size = values.pop("out"), values["data"], values["image_size"]
    if not data:
        raise TransferkitError("--data is required, e.g. --data builtin:digits or --data path/to/images")
    run = None
    if out:  # refuse an unusable --out before computing anything
        from transferkit.rundir import RunDir

        run = RunDir(out, kind=RANK_RUN)
        run.check(overwrite=True, inputs=[] if data.startswith("builtin:") else [data])
    result = rank_candidates(**values)
    headers, rows = result.table()
    table = Table(*headers, title=f"transferkit rank: {data} ({result.info['train_images']} train / "
                                  f"{result.info['val_images']} val images, {image_size} px)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    # a terminal fits the table to its width; a file or pipe gets it unsqueezed
    (console if console.is_terminal else Console(width=max(console.width, 150))).print(table)
    rec = result.recommendation
    for key, title in (("best_by_logme", "best by LogME"), ("best_by_linear_probe", "best by linear probe")):
        b = rec[key]
        console.print(f"{title}: [bold]{b['model']}[/] ({b['weights']}, layer {b['layer']})")
    advice = rec["freeze_or_finetune"]
    console.print(f"[bold]{advice['advice']}[/]: {advice['reason']}", highlight=False)
    if rec["negative_transfer"]:
        console.print(f"[yellow]negative-transfer risk[/]: {', '.join(rec['negative_transfer'])}")
    console.print(f"next: {rec['command']}", highlight=False, soft_wrap=True)
    if run is not None:
        with run.open(overwrite=True, inputs=[] if data.startswith("builtin:") else [data]):
            json_path, md_path = result.write(out)
        console.print(f"-> {_shown(json_path)}, {_shown(md_path)}", highlight=False, soft_wrap=True)


def _tta_fields() -> list[str]:
    from transferkit.config import TTAConfig

    return [n for n in TTAConfig.model_fields if n not in ("run", "out", "options")]


def _tta_cls():
    from transferkit.config import TTAConfig

    return TTAConfig


@app.command()
@_method_options("tta", choices="tta", lineup=True)
@_with_params(
    [inspect.Parameter("run_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                       default=typer.Argument(..., help="a finished finetune or adapt run directory"))],
    _config_params(_tta_fields(), _tta_cls(),
                   data=(..., "the test stream: builtin:fashion-mnist (its test split), an image folder or a CSV; "
                              "labels only score"),
                   methods=(None, "the methods, comma-separated for a grid", "--method"),
                   corruptions=(None, "corrupt the stream: all (the 15 of CIFAR-10-C), extra, or comma-separated "
                                      "names")),
    [_extra("save", bool, False, "write the adapted model (one method) so predict can use --out"),
     _extra("out", Optional[Path], None, "output folder (required)"),
     _extra("overwrite", bool, False, "replace an existing tta folder"),
     _extra("progress", bool, True, "rich progress bars")])
def tta(ctx: typer.Context, **values) -> None:
    """Test-time adaptation: adapt a finished run to a drifted test stream, batch by batch, without labels."""
    run_dir, save, out, overwrite, progress = (values.pop(k) for k in ("run_dir", "save", "out", "overwrite",
                                                                       "progress"))
    if out is None:
        raise TransferkitError("give --out DIR for the tta results")
    if values["corruptions"]:
        from transferkit.data.corruptions import corruption_names

        values["corruptions"] = corruption_names(values["corruptions"])
    values["corruptions"] = values["corruptions"] or []
    method = values.pop("methods")
    if method is not None:
        values["methods"] = [m.strip() for m in method.split(",") if m.strip()]
    options = _collect_options(values)
    cfg = _tta_cls().build(run=str(run_dir), out=str(out), **values, **({"options": options} if options else {}))
    from transferkit.engine.tta import tta as run_tta

    metrics = run_tta(cfg, overwrite=overwrite, save=save, progress=progress)
    table = Table("method", "mean accuracy %", "Δ none (points)",
                  title=f"transferkit tta: {cfg.data}, batch {cfg.batch_size}, {len(metrics['corruptions'])} stream(s)")
    before = metrics["accuracy_before"]
    for m, acc in metrics["mean_accuracy"].items():
        table.add_row(m, "-" if acc is None else f"{100 * acc:.1f}",
                      "-" if acc is None or before is None else f"{100 * (acc - before):+.1f}")
    console.print(table)
    _say_verdict(metrics)
    console.print(f"-> {_shown(out / 'report.html')}", highlight=False, soft_wrap=True)


CORRUPT_HELP = {
    "data": "builtin:fashion-mnist (its test split), an image folder or a CSV",
    "names": "gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, "
             "frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression (all), speckle_noise, "
             "gaussian_blur, spatter, saturate (extra); several comma-separated",
    "severity": "1..5",
    "seed": "fixes the random parts of the corruptions",
    "out": "folder to write: <corruption>-<severity>/images/<n>.png + labels.csv",
    "overwrite": "replace the <corruption>-<severity> folders this command writes (only the files transferkit "
                 "wrote in them)"}


@app.command()
@_from_function("transferkit.engine.corrupt:corrupt", CORRUPT_HELP, arguments=("data",),
                flags={"names": ("--corruption",)})
def corrupt(**values) -> None:
    """Write corrupted copies of a dataset's test images (ImageNet-C / CIFAR-10-C corruptions): images + labels.csv."""
    from transferkit.data.corruptions import corruption_names
    from transferkit.engine.corrupt import corrupt as run_corrupt

    folders = run_corrupt(**{**values, "names": corruption_names(values["names"])})
    console.print(f"-> {', '.join(_shown(f) for f in folders)}", highlight=False, soft_wrap=True)


EXPORT_HELP = {
    "run_dir": "a finished run directory (finetune, adapt, tta --save)", "fmt": "onnx", "opset": "ONNX opset",
    "dynamic_batch": "any batch size (else batch 1 only)",
    "threads": "CPU threads both backends are timed on (1: the steadiest where other processes share the CPU)"}


@app.command()
@_from_function("transferkit.engine.export:export_run", EXPORT_HELP, arguments=("run_dir",),
                flags={"fmt": ("--format",)})
def export(**values) -> None:
    """Export a run's model for deployment (ONNX), checked and verified against PyTorch with onnxruntime."""
    from transferkit.engine.export import export_run

    info, run_dir = export_run(**values), Path(values["run_dir"])
    verdict, lat = ("within" if info["within_tolerance"] else "[red]OVER[/]"), info["latency"]
    console.print(f"{_shown(run_dir / info['file'])}: {info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, batch "
                  f"{'dynamic' if info['dynamic_batch'] else 1}; onnxruntime vs PyTorch max |diff| "
                  f"{info['max_abs_diff']:.2e} on {info['images']} {info['parity_images']} ({verdict} "
                  f"{info['tolerance']:g}); batch 1, median: {lat['torch_ms_batch1']:.1f} ms PyTorch, "
                  f"{lat['onnxruntime_ms_batch1']:.1f} ms onnxruntime ({lat['threads']} thread(s) each; spread "
                  "in export.md)", highlight=False, soft_wrap=True)


#: the command line's usage errors (typer's own click: a value it cannot parse, an unknown option, a missing one)
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def main() -> None:
    """Entry point: known errors -> one line on stderr, exit 2 (1 for I/O faults);
    SIGINT / SIGTERM -> where to resume from, exit 130 / 143.

    Before torch loads, its CPU allocator is asked to back buffers of 2 MB and more with
    transparent huge pages (``THP_MEM_ALLOC_ENABLE``, Linux, PyTorch >= 2.2; a value already in
    the environment wins): inference over large activations stops paying a page fault per 4 KB
    (EfficientNet-Lite0 forward passes, batch 64, 2 CPU cores: 1.3x the images per second at 64 px,
    1.6x at 224 px; benchmarks/RESULTS.md)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        _complete(sys.argv[1:])
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare command: its help, as before
            help_text = e.ctx.get_help() if e.ctx else ""
            if help_text:
                print(help_text)
            sys.exit(2)
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""  # a value typer cannot parse, an unknown option
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as e:
        print(f"interrupted by {signal.Signals(e.signum).name}: {e.where or 'nothing was written'}",
              file=sys.stderr)
        sys.exit(128 + e.signum)
    except TransferkitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1 if isinstance(e, IOFault) else 2)


if __name__ == "__main__":
    main()
