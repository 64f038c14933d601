"""``compare``: every strategy on the same data and splits, side by side (Q1, Q15).

The freeze-or-fine-tune question answered by measurement: each strategy (and
seed) is one ordinary ``finetune`` run under ``<out>/runs/``, on identical
splits; the records go to ``compare.json`` and a leaderboard (mean ± std over
seeds, train time, trainable parameters, forgetting) to ``leaderboard.md`` with
a bar chart and a recommendation derived from the numbers.

Strategy names are ``finetune``'s plus:

* ``scratch`` — ``full`` from random init (``--weights none``): when it matches
  the pretrained strategies, pretraining did not help (negative transfer, Q15);
* ``<strategy>+lwf`` — that strategy with ``--reg lwf`` (e.g. ``full+lwf``).

Nothing is lost: a finished run is reused, an interrupted one resumed, so
re-running the same command continues a compare.
"""

from __future__ import annotations

from contextlib import contextmanager

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from transferkit.config import FinetuneConfig
from transferkit.engine.finetune import choose_recipe, finetune
from transferkit.errors import ConfigError, Interrupted, RunDirError
from transferkit.report.compare import plot_compare, write_leaderboard
from transferkit.engine.checks import run_inputs
from transferkit.rundir import RunDir, is_global_zero, write_json
from transferkit.strategies import REGISTRY

#: Kept in each ``compare.json`` record (besides ``strategy``, ``seed`` and ``run_dir``).
RECORD_KEYS = ("test_accuracy", "val_accuracy", "train_seconds", "trainable_params", "total_params",
               "image_size", "epochs", "pixel_baseline_accuracy", "source_agreement", "source_kl",
               "wise_curve")

#: The files compare writes next to ``runs/``.
OUTPUTS = ("compare.json", "leaderboard.md", "compare.png")

#: "as good as the best": within this many accuracy points (or the best's seed std, if larger).
TIE_POINTS = 1.0

#: a strategy is called cheaper only when it trains at least this many times faster.
FASTER = 1.5


def default_lineup() -> list[str]:
    """Every registered recipe that is part of compare's line-up, then ``scratch``."""
    return [name for name, r in REGISTRY.items() if r.in_compare] + ["scratch"]


def variant_config(base: FinetuneConfig, name: str, seed: int, out: Path,
                   wise_curve: list[float] | None = None) -> FinetuneConfig:
    """The ``finetune`` config of compare entry ``name`` (a strategy, ``scratch`` or ``X+lwf``)."""
    strategy, _, reg = name.partition("+")
    update: dict = {"seed": seed, "out": str(out), "strategy": strategy}
    if name == "scratch":
        update.update(strategy="full", weights="none", source_eval=False)
    elif strategy not in REGISTRY or reg not in ("", "lwf"):
        choices = ", ".join([*REGISTRY, "scratch", "<strategy>+lwf"])
        raise ConfigError(f"unknown strategy '{name}' for compare; choose from: {choices}")
    if reg:
        update["reg"] = reg
    if wise_curve and REGISTRY[strategy].trains_backbone and name != "scratch":  # auto: not known before the data
        update["wise_curve"] = wise_curve
    return base.model_copy(update=update)


def compare(base: FinetuneConfig, strategies: list[str], seeds: list[int], out: Path | str, *,
            wise_curve: list[float] | None = None, overwrite: bool = False, progress: bool = True,
            console: Console | None = None) -> dict:
    """Run every ``strategies`` × ``seeds`` and write the leaderboard into ``out``.

    ``base`` holds the shared settings (data, model, per-class, epochs, ...);
    ``wise_curve`` alphas are evaluated for the strategies that fine-tune the
    backbone. Returns ``{"records": [...], "leaderboard": [...], "recommendation": str, ...}``.
    """
    out = Path(out)
    if not strategies or not seeds:
        raise ConfigError("compare needs at least one strategy and one seed")
    if len(set(strategies)) != len(strategies):
        raise ConfigError(f"a strategy is listed twice in {','.join(strategies)}")
    plan = [(name, seed, variant_config(base, name, seed, out / "runs" / f"{name}-seed{seed}", wise_curve))
            for seed in seeds for name in strategies]
    for _, _, cfg in plan:  # refuse before running anything: impossible combinations first
        choose_recipe(cfg)
    with grid_dir(out, "compare", plan, base, overwrite):
        records = run_all(plan, finetune, progress, console or Console())
        if not is_global_zero():
            return {}
        board = leaderboard(records)
        result = {"data": base.data, "model": base.model, "per_class": base.per_class, "seeds": seeds,
                  "strategies": strategies, "records": records, "leaderboard": board,
                  "wise_curve": wise_summary(records), "recommendation": recommend(board)}
        plot_compare(board, out / OUTPUTS[2])
        write_leaderboard(out / OUTPUTS[1], result, OUTPUTS[2])
        write_json(out / OUTPUTS[0], result)
    return result


@contextmanager
def grid_dir(out: Path, kind: str, plan: list, base: FinetuneConfig, overwrite: bool):
    """The folder of a grid of runs (compare, adapt/distill leaderboards), held while they run: resumed
    when started before (unless ``overwrite``), refused when a planned run folder holds other settings."""
    run = RunDir(out, kind=kind)
    resume = not overwrite and run.is_started
    if not overwrite:
        for _, _, cfg in plan:
            check_reusable(cfg)
    with run.open(overwrite=overwrite, resume=resume, inputs=run_inputs(base)):
        yield run


def run_all(plan: list, run: Callable[..., dict], progress: bool, console: Console, *, title: str = "compare",
            name_key: str = "strategy", score: str = "test_accuracy", keys: tuple[str, ...] = RECORD_KEYS) -> list[dict]:
    """Run (or reuse, or resume) every planned ``(name, seed, cfg)`` with ``run`` (``finetune``, ``adapt``)
    in order; one record per run: ``{name_key: name, "seed", "run_dir", **metrics[keys]}``.
    On SIGINT/SIGTERM say which finished."""
    records = []
    with Progress(TextColumn(f"[bold]{title}[/] {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task("", total=len(plan))
        for name, seed, cfg in plan:
            bar.update(task, description=f"{name} (seed {seed})")
            try:
                metrics = _run_or_reuse(cfg, run)
            except Interrupted as e:
                done = ", ".join(f"{r[name_key]} seed {r['seed']}" for r in records) or "none"
                e.where = (f"{e.where}; finished runs: {done}; the same {title} command continues "
                           "(finished runs are reused)")
                raise
            bar.advance(task)
            if not metrics:  # a non-zero DDP rank: it only trained
                continue
            records.append({name_key: name, "seed": seed, "run_dir": str(Path(cfg.out).relative_to(
                Path(cfg.out).parents[1])), **{k: metrics.get(k) for k in keys}})
            if progress:
                bar.console.print(f"  {name:<14} seed {seed}: {score.replace('_', ' ')} {_fmt(metrics.get(score))}, "
                                  f"{metrics['train_seconds']:.0f} s", highlight=False)
    return records




#: Settings that change where or how fast a run executes, not what it computes.
NOT_COMPARED = {"out", "workers", "accelerator", "devices", "num_nodes", "dist"}


def check_reusable(cfg: FinetuneConfig) -> None:
    """Refuse a planned run folder that holds a run with other settings (``cfg``'s own config class)."""
    run = RunDir(cfg.out)
    if run.config.is_file() and (type(cfg).load(run.config).model_dump(exclude=NOT_COMPARED)
                                 != cfg.model_dump(exclude=NOT_COMPARED)):
        raise RunDirError(f"{run.path} holds a run with other settings; pass --overwrite to start the compare "
                          "afresh or choose another --out")


def _run_or_reuse(cfg: FinetuneConfig, run_fn: Callable[..., dict]) -> dict:
    """A finished run's metrics; else resume an interrupted one; else run it."""
    run = RunDir(cfg.out)
    if run.metrics_json.is_file():  # written last: the run, its weights and report are complete
        return json.loads(run.metrics_json.read_text())
    if run.last_checkpoint.is_file():
        return run_fn(cfg, resume=True, progress=False)
    return run_fn(cfg, overwrite=True, progress=False)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summarise(records: list[dict], *, name_key: str, score: str, means: tuple[str, ...] = (),
              firsts: tuple[str, ...] = ()) -> list[dict]:
    """One row per name (``name_key``): ``runs``, ``<score>_mean``/``_std`` over its seeds, ``<k>_mean``
    for the ``means`` keys, the first record's ``firsts`` keys; best mean score first."""
    rows = []
    for name in dict.fromkeys(r[name_key] for r in records):
        rs = [r for r in records if r[name_key] == name]
        mean, std = mean_std([r.get(score) for r in rs])
        rows.append({name_key: name, "runs": len(rs), f"{score}_mean": mean, f"{score}_std": std,
                     **{f"{k}_mean": mean_std([r.get(k) for r in rs])[0] for k in means},
                     **{k: rs[0].get(k) for k in firsts}})
    return sorted(rows, key=lambda r: -(r[f"{score}_mean"] if r[f"{score}_mean"] is not None else -1))


def leaderboard(records: list[dict]) -> list[dict]:
    """One row per strategy, best mean test accuracy first."""
    rows = summarise(records, name_key="strategy", score="test_accuracy",
                     means=("train_seconds", "source_agreement", "pixel_baseline_accuracy"),
                     firsts=("trainable_params", "total_params", "image_size", "epochs"))
    for r in rows:
        agreement = r.pop("source_agreement_mean")
        r["forgetting"] = None if agreement is None else 1.0 - agreement
        r["pixel_baseline_accuracy"] = r.pop("pixel_baseline_accuracy_mean")
    return rows


def wise_summary(records: list[dict]) -> dict[str, list[dict]]:
    """Per strategy, the WiSE-FT alpha curve averaged over seeds."""
    out: dict[str, list[dict]] = {}
    for name in dict.fromkeys(r["strategy"] for r in records if r.get("wise_curve")):
        curves = [r["wise_curve"] for r in records if r["strategy"] == name and r.get("wise_curve")]
        rows = []
        for i, point in enumerate(curves[0]):
            row = {"alpha": point["alpha"]}
            for key in ("test_accuracy", "source_agreement"):
                mean, std = mean_std([c[i].get(key) for c in curves])
                if mean is not None:
                    row[key], row[f"{key}_std"] = mean, std
            rows.append(row)
        out[name] = rows
    return out


def recommend(board: list[dict]) -> str:
    """A paragraph of advice derived from the leaderboard rows."""
    scored = [r for r in board if r["test_accuracy_mean"] is not None]
    if not scored:
        return "No strategy produced a test accuracy (the data has no test split), so there is nothing to compare."
    best = scored[0]
    pts = lambda a: 100 * a  # noqa: E731
    tie = max(TIE_POINTS, pts(best["test_accuracy_std"] or 0.0))
    text = [f"**{best['strategy']}** scores best: {pts(best['test_accuracy_mean']):.1f}% test accuracy "
            f"(± {pts(best['test_accuracy_std'] or 0):.1f} over {best['runs']} seed(s)) "
            f"in {best['train_seconds_mean']:.0f} s of training."]
    pretrained = [r for r in scored if r["strategy"] != "scratch"]
    speed = lambda r: best["train_seconds_mean"] / max(r["train_seconds_mean"], 1e-9)  # noqa: E731
    ties = lambda r: pts(best["test_accuracy_mean"] - r["test_accuracy_mean"]) <= tie  # noqa: E731
    close = [r for r in pretrained if r is not best and ties(r) and speed(r) >= FASTER]
    cheap = max(close, key=speed) if close else None
    if cheap:
        text.append(f"**{cheap['strategy']}** is within {pts(best['test_accuracy_mean'] - cheap['test_accuracy_mean']):.1f} "
                    f"points of it with {speed(cheap):.1f}× less training time"
                    f"{' — the better buy when compute matters' if speed(cheap) >= 2 else ''}.")
    small = [r for r in pretrained if r is not best and r is not cheap
             and r["trainable_params"] < 0.05 * r["total_params"] and ties(r)]
    if small:
        s = min(small, key=lambda r: r["trainable_params"])
        text.append(f"**{s['strategy']}** trains only {100 * s['trainable_params'] / s['total_params']:.1f}% of the "
                    "parameters for a comparable score.")
    scratch = next((r for r in scored if r["strategy"] == "scratch"), None)
    top = max((r for r in pretrained), key=lambda r: r["test_accuracy_mean"], default=None)
    if scratch and top:
        gap = pts(top["test_accuracy_mean"] - scratch["test_accuracy_mean"])
        if gap < -tie:
            text.append(f"Training from scratch ({pts(scratch['test_accuracy_mean']):.1f}%) beats every pretrained "
                        f"start by {-gap:.1f} points: negative transfer — the pretrained weights hurt on this data.")
        elif gap <= tie:
            text.append(f"Training from scratch ({pts(scratch['test_accuracy_mean']):.1f}%) is within {abs(gap):.1f} "
                        "points of the best pretrained start: no measurable benefit from pretraining here.")
        else:
            text.append(f"Pretraining pays: scratch reaches {pts(scratch['test_accuracy_mean']):.1f}%, "
                        f"{gap:.1f} points below the best pretrained strategy.")
    baseline = best.get("pixel_baseline_accuracy")
    if baseline is not None and top:
        gain = pts(top["test_accuracy_mean"] - baseline)
        text.append(f"Logistic regression on raw pixels scores {pts(baseline):.1f}%"
                    + (f"; the best transfer strategy ({top['strategy']}) beats it by {gain:.1f} points." if gain > 0
                       else " — no transfer strategy beats it here; try higher resolution, more epochs or more labels."))
    forgetting = [r for r in scored if r["forgetting"] is not None and ties(r)]
    if len(forgetting) > 1:
        f = min(forgetting, key=lambda r: r["forgetting"])
        text.append(f"Of the strategies within {tie:.1f} points of the best, **{f['strategy']}** forgets least: "
                    f"its source head agrees with the pretrained model on {pts(1 - f['forgetting']):.0f}% of images.")
    return " ".join(text)
