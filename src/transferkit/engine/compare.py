"""``compare``: every strategy on the same data and splits, side by side (Q1, Q15).

The freeze-or-fine-tune question answered by measurement: each strategy (and
seed) is one ordinary ``finetune`` run under ``<out>/runs/``, on identical
splits; the records go to ``compare.json`` and a leaderboard (validation and
test accuracy mean ± std over seeds, train time, trainable parameters,
forgetting) to ``leaderboard.md`` with a bar chart and a recommendation derived
from the numbers. Ranking and recommendation use validation accuracy only (a
strategy chosen on test would promise an optimistically biased number); test
accuracy is reported beside it, never consulted.

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
from transferkit.engine.loggers import logging_into
from transferkit.rundir import MLFLOW_STORE, RunDir, RunKind, declare_kind, is_global_zero, write_json
from transferkit.registry import REGULARIZERS
from transferkit.strategies import REGISTRY
from transferkit.strategies.base import LOOP_OPTIONS_OFF

#: Kept in each ``compare.json`` record (besides ``strategy``, ``seed`` and ``run_dir``).
RECORD_KEYS = ("test_accuracy", "val_accuracy", "train_seconds", "trainable_params", "total_params",
               "image_size", "epochs", "pixel_baseline_accuracy", "source_agreement", "source_kl",
               "wise_curve")

#: The files compare writes next to ``runs/``.
OUTPUTS = ("compare.json", "leaderboard.md", "compare.png", "leaderboard.html")
#: what a compare run owns (rundir.layout): its files, the MLflow store its runs share (--logger mlflow), and
#: its runs, each a finetune run of its own
COMPARE_RUN = declare_kind("compare", (*OUTPUTS, *MLFLOW_STORE, "runs/*/"), result=OUTPUTS[0])

#: "within noise of the best": the paired validation gap is at most this many accuracy points (or the std
#: of the per-seed gaps, if larger); see :func:`within_noise`.
TIE_POINTS = 1.0

#: a strategy is called cheaper only when it trains at least this many times faster.
FASTER = 1.5


def default_lineup() -> list[str]:
    """Every registered recipe that is part of compare's line-up, then ``scratch``."""
    return [name for name, r in REGISTRY.items() if r.in_compare] + ["scratch"]


def variant_config(base: FinetuneConfig, name: str, seed: int, out: Path,
                   wise_curve: list[float] | None = None) -> FinetuneConfig:
    """The ``finetune`` config of compare entry ``name`` (a strategy, ``scratch`` or ``<strategy>+<regulariser>``,
    e.g. ``full+bss``)."""
    strategy, _, reg = name.partition("+")
    update: dict = {"seed": seed, "out": str(out), "strategy": strategy}
    if name == "scratch":
        update.update(strategy="full", weights="none", source_eval=False)
    elif strategy not in REGISTRY or (reg and reg not in REGULARIZERS):
        choices = ", ".join([*REGISTRY, "scratch", f"<strategy>+<{'|'.join(REGULARIZERS)}>"])
        raise ConfigError(f"unknown strategy '{name}' for compare; choose from: {choices}")
    if reg:
        update["reg"] = reg
    if REGISTRY[update["strategy"]].cached_features:  # no training loop: its options (mixing, weights, ...) do not apply
        update.update(LOOP_OPTIONS_OFF)
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

    The example compares two quick strategies on one seed (``progress=False``: no progress bars).

    Example::

        >>> import transferkit as tk
        >>> base = tk.FinetuneConfig(data="builtin:digits", per_class=10, epochs=1, image_size=32)
        >>> result = tk.compare(base, ["linear-probe", "freeze"], seeds=[0], out="runs/compare", progress=False)
        >>> sorted(row["strategy"] for row in result["leaderboard"])
        ['freeze', 'linear-probe']
        >>> result["recommendation"]
        '**...** scores best on validation: ...'
    """
    out = Path(out)
    if not strategies or not seeds:
        raise ConfigError("compare needs at least one strategy and one seed")
    if len(set(strategies)) != len(strategies):
        raise ConfigError(f"a strategy is listed twice in {','.join(strategies)}")
    base = grid_logging(base, out)
    plan = [(name, seed, variant_config(base, name, seed, out / "runs" / f"{name}-seed{seed}", wise_curve))
            for seed in seeds for name in strategies]
    for _, _, cfg in plan:  # refuse before running anything: impossible combinations first
        choose_recipe(cfg)
    with grid_dir(out, COMPARE_RUN, plan, base, overwrite):
        records = run_all(plan, finetune, progress, console or Console())
        if not is_global_zero():
            return {}
        board = leaderboard(records)
        result = {"data": base.data, "model": base.model, "per_class": base.per_class, "seeds": seeds,
                  "strategies": strategies, "records": records, "leaderboard": board,
                  "wise_curve": wise_summary(records), "recommendation": recommend(board, records)}
        plot_compare(board, out / OUTPUTS[2])
        write_leaderboard(out / OUTPUTS[1], result, OUTPUTS[2])
        write_json(out / OUTPUTS[0], result)
    return result


def grid_logging(base, out: Path):
    """``base`` with ``--logger mlflow``'s store and experiment of a grid in ``out``: ``<out>/mlflow.db`` and
    the name of ``out`` (unless given), so that every run of the grid logs into one experiment."""
    return logging_into(base, out / MLFLOW_STORE[0], out.resolve().name or "transferkit")


@contextmanager
def grid_dir(out: Path, kind: RunKind, plan: list, base: FinetuneConfig, overwrite: bool):
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
                metrics = run_or_reuse(cfg, run)
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




#: Settings that change where or how fast a run executes, or where it logs, not what it computes.
NOT_COMPARED = {"out", "workers", "accelerator", "devices", "num_nodes", "dist", "logger", "experiment", "mlflow_db"}


def check_reusable(cfg: FinetuneConfig) -> None:
    """Refuse a planned run folder that holds a run with other settings (``cfg``'s own config class)."""
    run = RunDir(cfg.out)
    if run.config.is_file() and (type(cfg).load(run.config).model_dump(exclude=NOT_COMPARED)
                                 != cfg.model_dump(exclude=NOT_COMPARED)):
        raise RunDirError(f"{run.path} holds a run with other settings; pass --overwrite to start the compare "
                          "afresh or choose another --out")


def run_or_reuse(cfg: FinetuneConfig, run_fn: Callable[..., dict]) -> dict:
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


def summarise(records: list[dict], *, name_key: str, scores: tuple[str, ...], rank: str,
              means: tuple[str, ...] = (), firsts: tuple[str, ...] = ()) -> list[dict]:
    """One row per name (``name_key``): ``runs``, ``<k>_mean``/``_std`` over its seeds for the ``scores``
    keys, ``<k>_mean`` for the ``means`` keys, the first record's ``firsts`` keys. Sorted by ``rank``'s
    mean, best first (a validation score: the order is a choice); rows without it last, in run order."""
    rows = []
    for name in dict.fromkeys(r[name_key] for r in records):
        rs = [r for r in records if r[name_key] == name]
        row = {name_key: name, "runs": len(rs)}
        for k in scores:
            row[f"{k}_mean"], row[f"{k}_std"] = mean_std([r.get(k) for r in rs])
        rows.append({**row, **{f"{k}_mean": mean_std([r.get(k) for r in rs])[0] for k in means},
                     **{k: rs[0].get(k) for k in firsts}})
    return sorted(rows, key=lambda r: (r[f"{rank}_mean"] is None, -(r[f"{rank}_mean"] or 0.0)))


def paired_diff(records: list[dict], a: str, b: str, *, name_key: str = "strategy",
                score: str = "val_accuracy") -> tuple[float | None, float | None, int]:
    """``a``'s ``score`` minus ``b``'s, seed by seed, over the seeds where both have one: the mean and
    std (ddof 1; 0 for one seed) of those differences and how many; ``(None, None, 0)`` when none."""
    from transferkit.evaluation.baselines import paired_differences

    diffs = paired_differences(records, name_key, a, b, score)
    mean, std = mean_std(diffs)
    return mean, std, len(diffs)


def leaderboard(records: list[dict]) -> list[dict]:
    """One row per strategy, best mean validation accuracy first; test accuracy is carried, not ranked on."""
    rows = summarise(records, name_key="strategy", scores=("val_accuracy", "test_accuracy"), rank="val_accuracy",
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


def _pts(fraction: float) -> float:
    return 100 * fraction


def _gap(records: list[dict], a: str, b: str) -> tuple[float | None, float, int]:
    """``a``'s validation accuracy minus ``b``'s in points, paired by seed: mean, std, seeds."""
    mean, std, n = paired_diff(records, a, b)
    return (None, 0.0, 0) if mean is None else (_pts(mean), _pts(std), n)


def within_noise(records: list[dict], best: str, other: str) -> bool:
    """``other`` is as good as ``best`` on validation: their paired gap (mean over the shared seeds) is at
    most :data:`TIE_POINTS` or the std of the per-seed gaps, whichever is larger. The std of the per-seed
    differences is the spread that matters: a seed that is hard for both moves both, and pairing removes
    it. Not within noise when no seed scored both (nothing measured, nothing claimed)."""
    mean, std, _ = _gap(records, best, other)
    return mean is not None and mean <= max(TIE_POINTS, std)


def recommend(board: list[dict], records: list[dict]) -> str:
    """A paragraph of advice derived from the leaderboard rows (best validation accuracy first) and their
    per-seed ``records``. Everything chosen — the best, the ties (:func:`within_noise`), the better buy, the
    verdict on scratch — is chosen on validation; test accuracy is quoted beside it, never compared."""
    scored = [r for r in board if r["val_accuracy_mean"] is not None]
    if not scored:
        return ("No strategy has a validation accuracy (the validation split is empty: set val_split above 0, "
                "e.g. in --config), so nothing is recommended: compare chooses on validation only, and the test "
                "accuracies in the table are reports, not a ranking.")
    best = scored[0]
    pretrained = [r for r in scored if r["strategy"] != "scratch"]
    ties = [r for r in pretrained if within_noise(records, best["strategy"], r["strategy"])]
    cheap = _cheaper(best, ties)
    text = [_headline(best), cheap and _cheaper_text(best, cheap, records),
            _smallest(best, [r for r in ties if r is not cheap]), _scratch_verdict(scored, records),
            _pixels(pretrained[0] if pretrained else None), _forgets_least(ties)]
    return " ".join(t for t in text if t)


def _headline(best: dict) -> str:
    test = best["test_accuracy_mean"]
    return (f"**{best['strategy']}** scores best on validation: {_pts(best['val_accuracy_mean']):.1f}% validation "
            f"accuracy (± {_pts(best['val_accuracy_std'] or 0):.1f} over {best['runs']} seed(s)) in "
            f"{best['train_seconds_mean']:.0f} s of training; "
            + ("no test split." if test is None else f"{_pts(test):.1f}% on test (reported, not used to choose)."))


def _speed(best: dict, r: dict) -> float:
    return best["train_seconds_mean"] / max(r["train_seconds_mean"], 1e-9)


def _cheaper(best: dict, ties: list[dict]) -> dict | None:
    """The fastest of ``ties`` (within noise of ``best`` on validation) that trains :data:`FASTER` times faster."""
    close = [r for r in ties if r is not best and _speed(best, r) >= FASTER]
    return max(close, key=lambda r: _speed(best, r)) if close else None


def _cheaper_text(best: dict, cheap: dict, records: list[dict]) -> str:
    mean, std, n = _gap(records, best["strategy"], cheap["strategy"])
    speed = _speed(best, cheap)
    return (f"**{cheap['strategy']}** is within noise of it on validation ({mean:.1f} ± {std:.1f} points behind, "
            f"paired over {n} seed(s)) with {speed:.1f}× less training time"
            f"{' — the better buy when compute matters' if speed >= 2 else ''}.")


def _smallest(best: dict, ties: list[dict]) -> str | None:
    small = [r for r in ties if r is not best and r["trainable_params"] < 0.05 * r["total_params"]]
    if not small:
        return None
    s = min(small, key=lambda r: r["trainable_params"])
    return (f"**{s['strategy']}** trains only {100 * s['trainable_params'] / s['total_params']:.1f}% of the "
            "parameters for a validation score within noise of the best.")


def _scratch_verdict(scored: list[dict], records: list[dict]) -> str | None:
    """Pretraining judged on validation: the best pretrained strategy against scratch, paired by seed."""
    scratch = next((r for r in scored if r["strategy"] == "scratch"), None)
    top = next((r for r in scored if r["strategy"] != "scratch"), None)
    mean, std, n = _gap(records, top["strategy"], "scratch") if scratch and top else (None, 0.0, 0)
    if mean is None:
        return None
    diff = (f"{top['strategy']} − scratch: {mean:+.1f} ± {std:.1f} points on validation, paired over {n} "
            f"seed(s); scratch {_pts(scratch['val_accuracy_mean']):.1f}%")
    if mean < -max(TIE_POINTS, std):
        return (f"**Negative transfer**: training from scratch beats every pretrained strategy on validation "
                f"({diff}) — the pretrained weights hurt on this data.")
    if mean <= max(TIE_POINTS, std):
        return (f"**Scratch is not beaten**: training from scratch matches every pretrained strategy on "
                f"validation ({diff}, within the seed spread) — no measurable benefit from pretraining here.")
    return f"Pretraining pays: the best pretrained strategy beats training from scratch ({diff})."


def _pixels(top: dict | None) -> str | None:
    """The raw-pixel baseline is scored on test only: a report on the strategy validation picked, not a choice."""
    baseline = top and top.get("pixel_baseline_accuracy")
    if baseline is None or top["test_accuracy_mean"] is None:
        return None
    gain = _pts(top["test_accuracy_mean"] - baseline)
    return (f"On test (a report, not a choice: the raw-pixel baseline has no validation score), logistic "
            f"regression on raw pixels scores {_pts(baseline):.1f}% and {top['strategy']}, the best pretrained "
            f"strategy on validation, {_pts(top['test_accuracy_mean']):.1f}% ({gain:+.1f} points)"
            + ("." if gain > 0 else " — transfer does not beat raw pixels here; try higher resolution, more "
                                    "epochs or more labels."))


def _forgets_least(ties: list[dict]) -> str | None:
    forgetting = [r for r in ties if r["forgetting"] is not None]
    if len(forgetting) < 2:
        return None
    f = min(forgetting, key=lambda r: r["forgetting"])
    return (f"Of the strategies within noise of the best on validation, **{f['strategy']}** forgets least: "
            f"its source head agrees with the pretrained model on {_pts(1 - f['forgetting']):.0f}% of images.")
