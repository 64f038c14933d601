"""The ``transferkit`` command line: parse, call the library, report.

Every :class:`~transferkit.errors.TransferkitError` becomes one line on stderr
and exit code 2 — no traceback.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from transferkit.errors import TransferkitError

DEFAULT_STRATEGIES = ("linear-probe", "freeze", "full", "lp-ft", "gradual", "l2sp", "lora", "scratch")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning for computer vision: the best model for the least data and compute.")
console = Console()


@app.command()
def finetune(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, help="builtin:digits, builtin:fashion-mnist, an image folder or a CSV (path,label)"),
    model: str = typer.Option("efficientnet_lite0", help="any timm model name (see `transferkit models`)"),
    weights: str = typer.Option("packaged", help="packaged (offline), imagenet (hub), none (scratch) or a file"),
    strategy: str = typer.Option("auto", help="auto, linear-probe, freeze, full, gradual, l2sp, lp-ft or lora"),
    epochs: Optional[int] = typer.Option(None, help="default: the strategy's (linear-probe 30, freeze 10, full 6)"),
    batch_size: int = typer.Option(64),
    lr: Optional[float] = typer.Option(None, help="head learning rate (default: full 1e-2, others 1e-3)"),
    backbone_lr_mult: float = typer.Option(0.1, help="full: backbone LR = head LR x this"),
    lr_decay: Optional[float] = typer.Option(None, help="layer-wise LR: group i from the top trains at LR x D^i "
                                             "(head i=0, see `transferkit groups`); overrides --backbone-lr-mult"),
    unfreeze_every: int = typer.Option(1, help="gradual: unfreeze one more layer group, top down, every N epochs"),
    bn: str = typer.Option("auto", help="BatchNorm: train, freeze (eval mode, affine frozen) or auto (freeze below 16 images per device)"),
    norm: str = typer.Option("batchnorm", help="batchnorm or groupnorm (replaces every BatchNorm2d; discards its pretrained statistics)"),
    reg: str = typer.Option("none", help="regulariser added to the loss: none, l2sp (--strategy l2sp = full + l2sp) "
                            "or lwf (Learning without Forgetting: distil the pretrained source-head outputs)"),
    reg_alpha: float = typer.Option(0.1, help="l2sp: alpha/2 ||w - w_pretrained||^2 on the backbone"),
    reg_beta: float = typer.Option(0.01, help="l2sp: beta/2 ||w||^2 on the new head"),
    lwf_weight: float = typer.Option(1.0, help="lwf: weight of the distillation loss"),
    lwf_temperature: float = typer.Option(2.0, help="lwf: softmax temperature"),
    source_eval: bool = typer.Option(False, help="measure forgetting: keep the pretrained source head (e.g. ImageNet's) "
                                     "and report its agreement with the pretrained model after fine-tuning"),
    source_data: Optional[str] = typer.Option(None, help="images for --source-eval (default: the test split; "
                                              "implies --source-eval)"),
    source_labels: bool = typer.Option(False, help="the class names of --source-data are source-class indices "
                                       "(e.g. ImageNet folders 281/, 967/): also report source accuracy"),
    wise_alpha: Optional[float] = typer.Option(None, help="WiSE-FT: final backbone = (1-a) pretrained + a fine-tuned"),
    wise_curve: Optional[str] = typer.Option(None, help="WiSE-FT: also evaluate these comma-separated alphas, e.g. 0,0.25,0.5,0.75,1"),
    lora_rank: int = typer.Option(4, help="lora: rank of the low-rank weight updates (4: 3.1 percent of EfficientNet-Lite0 trains)"),
    lora_alpha: Optional[float] = typer.Option(None, help="lora: update scale alpha/rank (default 2 x rank)"),
    lora_targets: Optional[str] = typer.Option(None, help="lora: comma-separated module names (default: 1x1 convs for CNNs, attention qkv,proj for ViTs)"),
    weight_decay: float = typer.Option(0.05),
    optimizer: str = typer.Option("adamw", help="adamw or sgd"),
    warmup_epochs: float = typer.Option(1.0, help="linear warmup, then cosine decay"),
    label_smoothing: float = typer.Option(0.1),
    image_size: Optional[int] = typer.Option(None, help="default: the strategy's (linear-probe 160, freeze 96, full 64)"),
    hflip: float = typer.Option(0.0, help="horizontal flip probability in training augmentation"),
    val_split: float = typer.Option(0.15),
    test_split: float = typer.Option(0.2, help="ignored when the data has its own test split"),
    per_class: Optional[int] = typer.Option(None, help="few-shot: N training images per class"),
    test_per_class: Optional[int] = typer.Option(None, help="evaluate on at most N test images per class (faster)"),
    seed: int = typer.Option(0),
    skip_bad_images: bool = typer.Option(False, help="skip unreadable images instead of stopping"),
    baseline: bool = typer.Option(True, help="also report logistic regression on raw pixels (the baseline to beat)"),
    workers: int = typer.Option(0, help="data-loader worker processes"),
    accelerator: str = typer.Option("auto", help="Lightning accelerator: auto, cpu, gpu, ..."),
    devices: str = typer.Option("auto", help="Lightning devices"),
    num_nodes: int = typer.Option(1, help="Lightning num_nodes"),
    dist: str = typer.Option("auto", help="Lightning strategy: auto, ddp, fsdp, ..."),
    precision: str = typer.Option("32-true", help="Lightning precision: 32-true, bf16-mixed, 16-mixed, ..."),
    out: Optional[Path] = typer.Option(None, help="run directory (default runs/<model>-<strategy>-<time>)"),
    config: Optional[Path] = typer.Option(None, help="YAML config file; command-line options given override it"),
    overwrite: bool = typer.Option(False, help="replace an existing run directory"),
    resume: bool = typer.Option(False, help="continue the interrupted run in --out (its config.yaml is used)"),
    progress: bool = typer.Option(True, help="rich progress bars"),
) -> None:
    """Fine-tune a pretrained backbone on labelled images and write a run directory."""
    from transferkit.config import FinetuneConfig
    from transferkit.engine.finetune import finetune as run_finetune

    values = {k: v for k, v in locals().items() if k in FinetuneConfig.model_fields}
    values["out"] = str(out) if out else None
    values["wise_curve"] = _floats(wise_curve, "--wise-curve")
    if resume:
        if not out:
            raise TransferkitError("--resume needs --out RUN_DIR (the run to continue)")
        values["data"] = values["data"] or "(from config.yaml)"
    elif not data and not config:
        raise TransferkitError("--data is required, e.g. --data builtin:digits or --data path/to/images")
    cfg = _config(ctx, values, config)
    metrics = run_finetune(cfg, overwrite=overwrite, resume=resume, progress=progress)
    if metrics:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        console.print(f"[bold]{metrics['strategy']}[/] on {metrics['model']}: test accuracy "
                      f"{fmt(metrics['test_accuracy'])} (raw-pixel baseline {fmt(metrics['pixel_baseline_accuracy'])}), "
                      f"val accuracy {fmt(metrics['val_accuracy'])}, {metrics['train_seconds']:.0f} s training "
                      f"-> {metrics['run_dir']}", highlight=False)


@app.command()
def compare(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, help="builtin:digits, builtin:fashion-mnist, an image folder or a CSV (path,label)"),
    strategies: str = typer.Option(",".join(DEFAULT_STRATEGIES), help="comma-separated: finetune strategies, "
                                   "scratch (full from random init) and X+lwf (X with --reg lwf)"),
    seeds: int = typer.Option(3, help="seeds 0..N-1: each changes the splits, init and data order"),
    out: Path = typer.Option(..., help="folder for compare.json, leaderboard.md, compare.png and runs/"),
    model: str = typer.Option("efficientnet_lite0", help="any timm model name"),
    weights: str = typer.Option("packaged", help="pretrained weights of every strategy but scratch"),
    per_class: Optional[int] = typer.Option(None, help="few-shot: N training images per class"),
    test_per_class: Optional[int] = typer.Option(None, help="evaluate on at most N test images per class"),
    epochs: Optional[int] = typer.Option(None, help="one budget for all (default: each strategy's measured default)"),
    image_size: Optional[int] = typer.Option(None, help="one input size for all (default: each strategy's)"),
    source_eval: bool = typer.Option(False, help="also measure forgetting (source-head agreement) per strategy"),
    wise_curve: Optional[str] = typer.Option(None, help="WiSE-FT alphas evaluated for the fine-tuning strategies, e.g. 0,0.5,1"),
    config: Optional[Path] = typer.Option(None, help="YAML with any other finetune setting shared by all runs"),
    overwrite: bool = typer.Option(False, help="start afresh (default: reuse finished runs, resume interrupted ones)"),
    progress: bool = typer.Option(True, help="rich progress bar"),
) -> None:
    """Run strategies side by side on the same splits: leaderboard, chart and a recommendation."""
    from transferkit.engine.compare import OUTPUTS, compare as run_compare

    values = {"data": data, "model": model, "weights": weights, "per_class": per_class, "epochs": epochs,
              "test_per_class": test_per_class, "image_size": image_size, "source_eval": source_eval}
    if not data and not config:
        raise TransferkitError("--data is required, e.g. --data builtin:fashion-mnist --per-class 10")
    if seeds < 1:
        raise TransferkitError(f"--seeds must be at least 1, got {seeds}")
    base = _config(ctx, values, config)
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    result = run_compare(base, names, list(range(seeds)), out, wise_curve=_floats(wise_curve, "--wise-curve"),
                         overwrite=overwrite, progress=progress, console=console)
    table = Table("#", "strategy", "test acc % (mean ± std)", "train s", "trainable", "forgetting %",
                  title=f"transferkit compare: {result['data']}, {len(result['seeds'])} seed(s)")
    for i, r in enumerate(result["leaderboard"], 1):
        acc, std = r["test_accuracy_mean"], r["test_accuracy_std"]
        table.add_row(str(i), r["strategy"], "-" if acc is None else f"{100 * acc:.1f} ± {100 * (std or 0):.1f}",
                      f"{r['train_seconds_mean']:.0f}", f"{r['trainable_params']:,}",
                      "-" if r["forgetting"] is None else f"{100 * r['forgetting']:.1f}")
    console.print(table)
    console.print(result["recommendation"].replace("**", ""), highlight=False)
    console.print("-> " + ", ".join(str(Path(out) / name) for name in OUTPUTS))


def _floats(text: Optional[str], option: str) -> Optional[list[float]]:
    if not text:
        return None
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise TransferkitError(f"{option} takes comma-separated numbers, e.g. 0,0.5,1; got '{text}'") from None


def _config(ctx: typer.Context, values: dict, config: Optional[Path]):
    """A FinetuneConfig from command-line values, over a YAML file's when ``config`` is given
    (only the options given on the command line override the file)."""
    from transferkit.config import FinetuneConfig

    if not config:
        return FinetuneConfig.build(**values)
    given = {k: v for k, v in values.items() if ctx.get_parameter_source(k) is None
             or ctx.get_parameter_source(k).name != "DEFAULT"}
    return FinetuneConfig.load(config, **given)


@app.command()
def groups(
    model: str = typer.Argument(..., help="timm model name"),
    lr_decay: Optional[float] = typer.Option(None, help="also show each group's LR scale under --lr-decay D"),
) -> None:
    """Show a model's layer groups, stem to head: what --lr-decay and gradual unfreezing act on."""
    from transferkit.backbones import layer_groups, load_backbone
    from transferkit.optim import layer_lr_decay

    rows = layer_groups(load_backbone(model, weights="none"))
    scales = [s for *_, s in layer_lr_decay(rows, lr_decay)] if lr_decay is not None else []
    table = Table("#", "group", "tensors", "params", *(["LR scale"] if scales else []),
                  title=f"{model}: {len(rows)} layer groups")
    for i, (name, params) in enumerate(rows):
        table.add_row(str(i), name, str(len(params)), f"{sum(p.numel() for _, p in params):,}",
                      *([f"{scales[i]:.3g}"] if scales else []))
    console.print(table)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    paths: list[Path] = typer.Argument(..., help="image files or folders"),
    topk: int = typer.Option(3, "--topk", "-k"),
    format: str = typer.Option("table", "--format", help="table, json or csv"),
    skip_bad_images: bool = typer.Option(False),
) -> None:
    """Print the top-k classes with probabilities for each image."""
    from transferkit.predict import predict as run_predict

    if format not in ("table", "json", "csv"):
        raise TransferkitError(f"unknown --format '{format}'; choose table, json or csv")
    results = run_predict(run_dir, paths, topk=topk, skip_bad_images=skip_bad_images)
    if format == "json":
        print(json.dumps(results, indent=2))
    elif format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["path", "rank", "class", "prob"])
        for r in results:
            for rank, t in enumerate(r["top"], 1):
                w.writerow([r["path"], rank, t["class"], t["prob"]])
        print(buf.getvalue(), end="")
    else:
        table = Table("image", *(f"top-{i + 1}" for i in range(len(results[0]["top"]) if results else 0)))
        for r in results:
            table.add_row(r["path"], *(f"{t['class']} ({t['prob']:.3f})" for t in r["top"]))
        console.print(table)


@app.command()
def models(pattern: Optional[str] = typer.Argument(None, help="timm wildcard, e.g. 'resnet*'")) -> None:
    """List backbones and which weights work offline here."""
    from transferkit.backbones import list_backbones

    rows = list_backbones(pattern)
    table = Table("model", "params (M)", "offline weights", "pretrained tags")
    for r in rows:
        params = r.get("params")
        table.add_row(r["name"], f"{params:.1f}" if params else "-", r.get("offline") or "-",
                      ", ".join(r.get("tags") or [])[:60])
    console.print(table)


@app.command()
def rank(
    data: Optional[str] = typer.Option(None, help="builtin:digits, builtin:fashion-mnist, an image folder or a CSV (path,label)"),
    models: str = typer.Option("efficientnet_lite0", help="comma-separated timm model names"),
    weights: str = typer.Option("packaged", help="comma-separated: packaged, imagenet, none (random-init baseline), a file"),
    layers: str = typer.Option("last", help="comma-separated: last (pre-logits) or feature-stage indices, e.g. last,-2,-3"),
    per_class: Optional[int] = typer.Option(None, help="few-shot: N training images per class (as finetune)"),
    image_size: int = typer.Option(64, help="input size (>= 64; rank at the size you will train at)"),
    seed: int = typer.Option(0, help="fixes splits (same as finetune --seed), random init and probes"),
    out: Optional[Path] = typer.Option(None, help="folder for rank.json and rank.md"),
    cache_dir: Optional[Path] = typer.Option(None, help="feature cache (default $TRANSFERKIT_CACHE/features or ~/.cache/transferkit/features)"),
    progress: bool = typer.Option(True, help="rich progress bars"),
) -> None:
    """Rank backbones (and layers) for a dataset by transferability scores and probes, before training."""
    from rich import box

    from transferkit.transferability.rank import rank_candidates

    if not data:
        raise TransferkitError("--data is required, e.g. --data builtin:digits or --data path/to/images")
    result = rank_candidates(data, models, weights=weights, layers=layers, per_class=per_class,
                             image_size=image_size, seed=seed, cache_dir=cache_dir, progress=progress)
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
    if out:
        json_path, md_path = result.write(out)
        console.print(f"-> {json_path}, {md_path}")


def _quiet_lightning() -> None:
    """Keep the terminal for progress bars and results: no Lightning banners or tips."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (sets its loggers to INFO on import; override after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|weights_only|num_workers|does not have many workers"
                                               r"|module\(s\) in eval mode).*")


def main() -> None:
    """Entry point: run the app; known errors -> one line on stderr, exit 2."""
    _quiet_lightning()
    try:
        app(standalone_mode=True)
    except TransferkitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
