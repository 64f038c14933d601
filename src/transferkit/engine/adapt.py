"""``adapt``: unsupervised domain adaptation (issue 10), a short sequence of named stages.

    open the run -> load_domains -> choose the recipe -> build_model -> features before
    -> train (labelled source + unlabelled target batches) -> evaluate (source test, target test,
    proxy A-distance before/after) -> save -> report

The source is split as ``finetune`` splits its data (train/val/test). The target images are
split by a seeded permutation that never looks at labels into an adaptation part and a held-out
test part (``--target-test-split``; ``--transductive``: adapt on all, score on all). The
target's labels only score the target test part — except for ``oracle``, the upper bound, which
trains on the labelled adaptation part and says so (``uses_target_labels``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from transferkit.config import AdaptConfig
from transferkit.data import TransformedSubset, build_transform, load_source
from transferkit.data.transforms import STRONG
from transferkit.engine.analysis import MISTAKES_PNG
from transferkit.engine.export import EXPORTED
from transferkit.engine.finetune import Setup, choose_recipe
from transferkit.engine.run import Command, build_entry, run_command
from transferkit.engine.stages import (Built, Data, Trained, build_model, device_of, load_data, loader, save_model,
                                       scored, split_logits, train_lightning, train_loader, write_card)
from transferkit.errors import ConfigError, DataError
from transferkit.registry import ADAPTATION
from transferkit.rundir import RunDir, declare_model_run, write_json

#: what an adapt run writes besides a model run's files (rundir.layout); a new plot adds its name here
ADAPT_RUN = declare_model_run("adapt", "learning_curve.png", "confusion_matrix.png", "embedding.png",
                              MISTAKES_PNG, *EXPORTED)
#: why an adapt run fits no calibration temperature (its ECE is reported at T = 1)
NO_TEMPERATURE = ("no temperature fitted: adapt has no labelled target validation split (the target's labels only "
                  "score its test part), and a temperature fitted on the source validation split calibrates the "
                  "source domain")

#: Defaults chosen on the source validation split (never the target's labels): synth-digits ->
#: digits, seed 0, 32 px, LR 0.01: source-only's source val accuracy was 0.69 after 3 epochs and
#: still rising, 0.91 after 10 (DANN 0.92, CDAN 0.92; proxy A-distance after DANN 0.78 vs
#: source-only 1.27). 32 px keeps a run at 1.5-3 min on 2 CPU cores; larger sizes not yet swept
#: (benchmarks/RESULTS.md, "adapt").
DEFAULTS = {"image_size": 32, "epochs": 10, "lr": 1e-2}
#: Alignment-loss weights (``--trade-off``): each method's ``defaults["trade_off"]``, the papers' 1.0. DANN on
#: synth-digits, 3 seeds, chosen on source validation accuracy and proxy A-distance (never the target's
#: labels): 0.3 -> val 93.4%, PAD 1.18; 1.0 -> 93.2%, 0.83; 3.0 -> 89.5%, 0.81: 1.0 kept (RESULTS.md, "adapt").


@dataclass
class Domains:
    """The data stage: the labelled source (as finetune's), and the target's subsets ``adapt`` and
    ``test`` (``target.classes == []`` when the target has no labels)."""

    source: Data
    target: Data
    target_eval: str  # "held-out" or "transductive"

    @property
    def target_labelled(self) -> bool:
        return bool(self.target.classes)

    def record(self, cfg: AdaptConfig) -> dict:
        """``data.json``: the source's record (``Data.record``) and the target's content."""
        return self.source.record(source=cfg.source, target=cfg.target,
                                  target_fingerprint=self.target.source.content())


class Adapt(Command):
    """``adapt`` in the run skeleton (:mod:`transferkit.engine.run`)."""

    kind = "adapt"

    def label(self, cfg: AdaptConfig) -> str:
        return cfg.method

    def load(self, cfg: AdaptConfig, state) -> None:
        state.domains = load_domains(cfg)
        state.setup = choose_recipe(with_defaults(cfg), state.domains.source)

    def check(self, cfg: AdaptConfig, state, run: RunDir, *, overwrite: bool, resume: bool) -> None:
        from transferkit.engine.checks import check_run_options, check_same_data

        check_run_options(cfg, state.setup, state.domains.source, run, overwrite=overwrite, resume=resume)
        if resume:  # the source was checked with the options; the target's images too
            check_same_data(run, {"target_fingerprint": state.domains.target.source.content()})
        state.built = build_model(cfg, len(state.domains.source.classes), state.setup.image_size)

    def record(self, cfg: AdaptConfig, state) -> dict:
        return state.domains.record(cfg)

    def before(self, cfg: AdaptConfig, state) -> None:
        state.before = domain_features(cfg, state.domains, state.built, state.built.model)

    def train(self, cfg: AdaptConfig, state, run: RunDir, resume: bool, progress: bool) -> Trained:
        return train(cfg, state.setup, state.domains, state.built, run, resume, progress)

    def evaluate(self, cfg: AdaptConfig, state, run: RunDir, trained: Trained) -> dict:
        metrics, state.after = evaluate_and_save(cfg, state.setup, state.domains, state.built, run, trained,
                                                 state.before)
        metrics["baseline_verdict"] = None
        metrics["baseline_note"] = baseline_note(cfg.method, state.domains.target_labelled)
        return metrics

    def report(self, run: RunDir, cfg: AdaptConfig, metrics: dict, state) -> None:
        write_adapt_report(run, cfg, metrics, state.domains.source.classes, state.before, state.after)


def adapt(cfg: AdaptConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) a domain-adaptation run; returns its ``metrics.json`` content ({} on non-zero ranks).

    The example has a small budget: 10 source images per class, 200 target images, one epoch at 32 px.

    Example::

        >>> import transferkit as tk
        >>> cfg = tk.AdaptConfig(source="builtin:synth-digits", target="builtin:digits", method="mcc",
        ...                      per_class=10, target_images=200, epochs=1, image_size=32, out="runs/mcc")
        >>> metrics = tk.adapt(cfg, progress=False)
        >>> metrics["method"], metrics["uses_target_labels"], metrics["target_adapt_images"]
        ('mcc', False, 140)
        >>> 0.0 <= metrics["target_accuracy"] <= 1.0
        True
    """
    return run_command(Adapt(), cfg, overwrite=overwrite, resume=resume, progress=progress)


def with_defaults(cfg: AdaptConfig) -> AdaptConfig:
    """``cfg`` with adapt's measured image size, epochs and LR where it leaves them unset."""
    return cfg.model_copy(update={k: v for k, v in DEFAULTS.items() if getattr(cfg, k) is None})


def trade_off(cfg: AdaptConfig) -> float:
    return ADAPTATION[cfg.method].defaults.get("trade_off", 1.0) if cfg.trade_off is None else cfg.trade_off


def baseline_note(method: str, target_labelled: bool) -> str | None:
    """Why one adapt run gives no baseline verdict: its baseline, source-only, is another run (and an
    unlabelled target scores neither)."""
    if not target_labelled:
        return "no baseline verdict: the target has no labels, so no target accuracy to compare with source-only"
    if method == "source-only":
        return None
    return (f"no baseline verdict: source-only is not in this run; `--method source-only,{method}` trains both on "
            "the same splits and says whether it wins")


# ----------------------------------------------------------------------------- data
def load_domains(cfg: AdaptConfig) -> Domains:
    """The source's splits (as finetune), the target loaded and split; refuses a target whose classes
    differ from the source's, an oracle without target labels, too few target images."""
    check_two_domains(cfg.source, cfg.target)
    source = load_data(cfg)
    target = load_source(cfg.target, skip_bad_images=cfg.skip_bad_images, allow_unlabelled=True)
    if target.labelled and target.classes != source.classes:
        missing, extra = sorted(set(source.classes) - set(target.classes)), sorted(set(target.classes) - set(source.classes))
        raise DataError(f"source and target must have the same classes; the target lacks {missing or '-'} and "
                        f"adds {extra or '-'}")
    if ADAPTATION[cfg.method].traits.get("uses_target_labels") and not target.labelled:
        raise ConfigError(f"--method oracle trains on the target's labels; {cfg.target} has none (a folder "
                          "without class folders)")
    subsets, target_eval = target_split(target, cfg)
    if len(subsets["adapt"][1]) < 2:
        raise DataError(f"the target {cfg.target} leaves {len(subsets['adapt'][1])} image(s) for adaptation; "
                        "it needs at least 2 (add images or lower --target-test-split)")
    return Domains(source, Data(target, target.classes, subsets), target_eval)


def check_two_domains(source: str, target: str) -> None:
    """Refuse a target that is the source: the same builtin, the same path (links resolved), or a path
    inside the other one (a class folder of the source given as the target, or the reverse)."""
    same = source == target
    if not same and not (source.startswith("builtin:") or target.startswith("builtin:")):
        s, t = Path(source).expanduser().resolve(), Path(target).expanduser().resolve()
        same = s == t or s.is_relative_to(t) or t.is_relative_to(s)
    if same:
        raise ConfigError(f"--source {source} and --target {target} are the same images (or one lies inside the "
                          "other); adaptation needs two domains: give another --target")


def target_split(target, cfg: AdaptConfig) -> tuple[dict, str]:
    """``{"adapt": (images, idx), "test": (images, idx)}`` from a seeded permutation (labels unread):
    the target's own test split when it has one; ``transductive``: test = adapt = all."""
    rng = np.random.default_rng(cfg.seed)
    pool = rng.permutation(len(target.train))[: cfg.target_images]
    if cfg.transductive:
        return {"adapt": (target.train, np.sort(pool)), "test": (target.train, np.sort(pool))}, "transductive"
    if target.test is not None:
        test = rng.permutation(len(target.test))[: cfg.target_images]
        return {"adapt": (target.train, np.sort(pool)), "test": (target.test, np.sort(test))}, "held-out"
    k = int(round(cfg.target_test_split * len(pool)))
    return {"adapt": (target.train, np.sort(pool[k:])), "test": (target.train, np.sort(pool[:k]))}, "held-out"


class ImagesOnly(torch.utils.data.Dataset):
    """A labelled dataset's images without their labels: how target images reach training."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[i][0]


def adapt_batches(cfg: AdaptConfig, domains: Domains, built: Built):
    """``{"labelled": (x, y), "unlabelled": x}`` batches (Lightning's CombinedLoader, ``max_size_cycle``:
    one epoch is one pass over the larger domain), both through the training transform."""
    from lightning.pytorch.utilities import CombinedLoader

    def shuffled(ds):
        return train_loader(ds, cfg, drop_last=len(ds) > cfg.batch_size)  # full batches when there are any

    entry = ADAPTATION[cfg.method]
    if entry.traits.get("uses_target_labels"):  # the one place target labels reach training (oracle)
        return CombinedLoader({"labelled": shuffled(domains.target.images("adapt", built.train_tf))}, "max_size_cycle")
    target_tf = built.train_tf
    if "strong" in entry.traits.get("target_views", ()):  # (weak, strong) views of each target image
        strong = build_transform(built.data_config, built_size(built), train=True, hflip=cfg.hflip, auto_augment=STRONG)
        target_tf = WeakStrong(built.train_tf, strong)
    return CombinedLoader({"labelled": shuffled(domains.source.images("train", built.train_tf)),
                           "unlabelled": shuffled(ImagesOnly(domains.target.images("adapt", target_tf)))},
                          "max_size_cycle")


class WeakStrong:
    """Two views of one image: the training transform's and a strongly augmented one (self-training)."""

    def __init__(self, weak, strong):
        self.weak, self.strong = weak, strong

    def __call__(self, image):
        return self.weak(image), self.strong(image)


def built_size(built: Built) -> int:
    return int(built.data_config["input_size"][-1])


# ----------------------------------------------------------------------------- train
def train(cfg: AdaptConfig, setup: Setup, domains: Domains, built: Built, run: RunDir, resume: bool,
          progress: bool) -> Trained:
    """The recipe's plan (``full``: everything trains) under Lightning: the task loss on the source, the
    recipe's regularisers and the method's alignment term (:data:`transferkit.registry.ADAPTATION`)."""
    from transferkit.engine.finetune import term_context
    from transferkit.engine.module import TransferModule
    from transferkit.registry import REGULARIZERS

    start, recipe = time.perf_counter(), setup.recipe
    ctx = term_context(cfg, domains.source, built, setup.image_size)
    terms = [build_entry(REGULARIZERS[name], ctx, cfg) for name in recipe.regularizers(cfg)]
    net = recipe.prepare(built.model, cfg)
    plan = recipe.plan(net, cfg.model_copy(update={"freeze_groups": setup.freeze_groups}), setup.freeze_bn)
    features_dim = getattr(net, "head_hidden_size", None) or net.num_features
    align = build_entry(ADAPTATION[cfg.method], SimpleNamespace(features_dim=features_dim, seed=cfg.seed,
                        num_classes=len(domains.source.classes), weight=trade_off(cfg)), cfg)
    module = TransferModule(net, len(domains.source.classes), plan, setup.optim, terms + ([align] if align else []),
                            stop_hint="lower --lr or --trade-off")
    loaders = {"train": adapt_batches(cfg, domains, built),
               "val": loader(domains.source.images("val", built.eval_tf), cfg)}
    resume_from = run.last_checkpoint if resume and run.last_checkpoint.is_file() else None
    return train_lightning(module, cfg, run, loaders, setup.epochs, callbacks=recipe.callbacks(cfg),
                           resume_from=resume_from, prep_seconds=time.perf_counter() - start, progress=progress)


# ----------------------------------------------------------------------------- evaluate
def domain_features(cfg: AdaptConfig, domains: Domains, built: Built, model: torch.nn.Module) -> dict:
    """``{"source": (features, labels), "target": (...)}``: pre-logits features of as many seeded
    held-out images per domain (source test, else train; target test, else adapt), at most
    ``max_proxy_rows``: balanced, so the domain probe of the proxy A-distance is not skewed to the
    larger one. The global RNG is left as it was, so training is the same with or without this."""
    from transferkit.evaluation import extract_features

    picks = {"source": (domains.source, "test" if domains.source.size("test") else "train"),
             "target": (domains.target, "test" if domains.target.size("test") else "adapt")}
    rows = min(cfg.max_proxy_rows, *(data.size(split) for data, split in picks.values()))
    out = {}
    for name, (data, split) in picks.items():  # extract_features restores torch's global RNG itself
        base, idx = data.subsets[split]
        if len(idx) > rows:
            idx = np.sort(np.random.default_rng(cfg.seed).choice(idx, rows, replace=False))
        out[name] = extract_features(model, loader(TransformedSubset(base, idx, built.eval_tf), cfg),
                                     progress=False, device=device_of(cfg))
    return out


def proxy_a(features: dict, seed: int) -> float | None:
    """The proxy A-distance between the two domains' features (None below 4 rows per domain)."""
    from transferkit.adaptation import proxy_a_distance

    (f_s, _), (f_t, _) = features["source"], features["target"]
    return round(proxy_a_distance(f_s, f_t, seed=seed), 4) if min(len(f_s), len(f_t)) >= 4 else None


def per_class_accuracy(confusion: list[list[int]] | None, classes: list[str]) -> dict | None:
    """``{class: accuracy}`` from a confusion matrix's rows (None for a class without test images)."""
    if confusion is None:
        return None
    return {c: (row[i] / sum(row) if sum(row) else None) for i, (c, row) in enumerate(zip(classes, confusion))}


def evaluate_and_save(cfg: AdaptConfig, setup: Setup, domains: Domains, built: Built, run: RunDir,
                      trained: Trained, before: dict) -> tuple[dict, dict]:
    """Rank zero: source test/val and target test scores, proxy A-distance after, the target test's error
    analysis (:func:`target_errors`); saves the model. Returns the metrics and the features after adaptation."""
    from transferkit.evaluation.metrics import per_class_scores

    model, _ = setup.recipe.finish(trained.net, built.model, run.path)
    built.model, classes, device = model, domains.source.classes, device_of(cfg)
    loaders = {"test": loader(domains.source.images("test", built.eval_tf), cfg),
               "val": loader(domains.source.images("val", built.eval_tf), cfg),
               "target": loader(domains.target.images("test", built.eval_tf), cfg)}
    splits = ("test", "val", "target") if domains.target_labelled else ("test", "val")
    outputs = split_logits(model, loaders, device, splits)  # one pass per split: scores and the target's errors
    scores = scored(outputs, len(classes))
    after = domain_features(cfg, domains, built, model)
    errors = target_errors(model, loaders["target"].dataset, outputs["target"], classes, run) if "target" in outputs else {}
    save_model(run, model, built, cfg, classes, cfg.method)
    acc = lambda split: scores[split]["accuracy"] if split in scores else None  # noqa: E731
    target = scores.get("target")
    return {
        "method": cfg.method, "uses_target_labels": bool(ADAPTATION[cfg.method].traits.get("uses_target_labels")), "strategy": setup.recipe.name,
        "model": cfg.model, "weights": cfg.weights, "source": cfg.source, "target": cfg.target,
        "run_dir": run.path.name, "image_size": setup.image_size, "epochs": setup.epochs, "trade_off": trade_off(cfg),
        "source_accuracy": acc("test"), "source_val_accuracy": acc("val"), "target_accuracy": acc("target"),
        "target_macro_f1": target["macro_f1"] if target else None, "target_eval": domains.target_eval,
        "per_class_target_accuracy": per_class_accuracy(target["confusion"] if target else None, classes),
        "proxy_a_distance_before": proxy_a(before, cfg.seed), "proxy_a_distance_after": proxy_a(after, cfg.seed),
        "train_seconds": round(trained.train_seconds, 2), "resumed": trained.resumed, "seed": cfg.seed,
        "target_labelled": domains.target_labelled, "classes": classes,
        "source_train_images": domains.source.size("train"), "source_val_images": domains.source.size("val"),
        "source_test_images": domains.source.size("test"), "target_adapt_images": domains.target.size("adapt"),
        "target_test_images": domains.target.size("test"), "optim": asdict(setup.optim),
        "target_confusion": target["confusion"] if target else None,
        "target_per_class": per_class_scores(target["confusion"], classes) if target else None,
        "calibration": errors.get("calibration"), "target_mistakes": errors.get("mistakes"),
        "gradcam_note": errors.get("note"),
    }, after


def target_errors(model: torch.nn.Module, dataset, outputs: tuple, classes: list[str], run: RunDir) -> dict:
    """The labelled target test split's error analysis (``engine.analysis``) from its ``(logits, labels)``:
    its most confident mistakes and their gallery, and its ECE at T = 1 (:data:`NO_TEMPERATURE`)."""
    from transferkit.engine.analysis import error_analysis, uncalibrated

    logits, labels = outputs
    errors = error_analysis(model, dataset, classes, run.path, logits=logits)
    return errors | {"calibration": uncalibrated(logits, labels, "target_test", NO_TEMPERATURE)}


def write_adapt_report(run: RunDir, cfg: AdaptConfig, metrics: dict, classes: list[str], before: dict,
                       after: dict) -> None:
    """Learning curve, the feature embedding before/after, the target confusion matrix, ``report.md``
    with the per-class target accuracy; ``metrics.json`` last (the run is complete)."""
    from transferkit.report import plot_confusion, plot_learning_curve
    from transferkit.report.adapt import ADAPT_SHOWN, adapt_sections, plot_embedding
    from transferkit.report.markdown import write_report

    plots = {}
    if rows := run.merge_logs():
        plots["Learning curve"] = plot_learning_curve(rows, run.path / "learning_curve.png").name
    plots["Features before and after adaptation (PCA)"] = plot_embedding(
        before, after, classes, run.path / "embedding.png").name
    if metrics["target_confusion"]:
        plots["Confusion matrix (target test)"] = plot_confusion(metrics["target_confusion"], classes,
                                                                 run.path / "confusion_matrix.png", "target test").name
    write_report(run.report, cfg.model_dump(), metrics, plots, shown=ADAPT_SHOWN,
                 title=f"transferkit adapt: {cfg.source} -> {cfg.target} / {cfg.method}",
                 sections=adapt_sections(metrics))
    write_card(run, cfg, metrics)
    write_json(run.metrics_json, metrics)


__all__ = ["Adapt", "DEFAULTS", "Domains", "adapt", "load_domains", "target_split"]
