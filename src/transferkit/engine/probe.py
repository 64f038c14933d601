"""The cached-feature stages: features through the shared cache, the converged linear probe.

``linear-probe`` is trained here entirely (no Lightning loop: a convex problem is solved,
not run for epochs); ``lp-ft`` and ``auto`` use :func:`init_head` as their first stage,
and ``auto`` keeps the probe when it beats the fine-tuned model on validation.
"""

from __future__ import annotations

import copy
import random
import time

import torch
from torch.utils.data import TensorDataset

from transferkit.config import FinetuneConfig
from transferkit.engine.stages import Built, Data, Trained, device_of, loader


def features(cfg: FinetuneConfig, data: Data, built: Built, split: str, image_size: int, progress: bool,
             view: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features of ``split`` (``view`` 0: un-augmented; k > 0: the k-th augmented
    view, seeded), from the shared on-disk cache when it has them (rank, compare and every
    run that needs the same features share them)."""
    from transferkit.evaluation.features import FeatureCache, extract_features, feature_key, weights_identity

    key = feature_key(model=cfg.model, weights=weights_identity(cfg.model, cfg.weights, cfg.seed),
                      image_size=image_size, data=data.fingerprint(split), norm=cfg.norm,
                      view=view or None, **({"seed": cfg.seed} if view else {}))
    transform = built.eval_tf if view == 0 else built.train_tf

    def compute() -> dict:  # a cache hit and a miss leave training the same random state
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                if view:
                    torch.manual_seed(cfg.seed * 1000 + view)
                    random.seed(cfg.seed * 1000 + view)                # timm's random crops
                x, y = extract_features(built.model, loader(data.images(split, transform), cfg),
                                        device=device_of(cfg), progress=progress,
                                        desc=f"features ({split}{f', view {view}' if view else ''})")
        finally:
            random.setstate(state)
        return {"features": x, "labels": y}

    got = FeatureCache().cached(key, compute)
    return got["features"], got["labels"]


def fit_head(cfg: FinetuneConfig, data: Data, built: Built, image_size: int, progress: bool) -> dict:
    """Fit ``built.model``'s head by the converged probe; returns the probe's metrics and features."""
    from transferkit.evaluation.linear_probe import fit_linear_probe, load_into

    feats = {s: features(cfg, data, built, s, image_size, progress) for s in ("train", "val")}
    x, y = feats["train"]
    groups = torch.arange(len(y))
    for k in range(1, cfg.probe_augment + 1):  # K augmented views of each training image
        xk, yk = features(cfg, data, built, "train", image_size, progress, view=k)
        x, y, groups = torch.cat([x, xk]), torch.cat([y, yk]), torch.cat([groups, torch.arange(len(yk))])
    fit = fit_linear_probe(x, y, *feats["val"], num_classes=len(data.classes), seed=cfg.seed, groups=groups)
    load_into(built.model.get_classifier(), fit)
    return {"probe_val_accuracy": fit.val_accuracy, "probe_l2": fit.lam, "probe_selected_by": fit.selected_by,
            "probe_seconds": round(fit.seconds, 3), "probe_augment": cfg.probe_augment, "features": feats}


def train_probe(cfg: FinetuneConfig, data: Data, built: Built, image_size: int, progress: bool) -> Trained:
    """``linear-probe``: the whole training is :func:`fit_head` (features cached, then one convex fit)."""
    start = time.perf_counter()
    out = fit_head(cfg, data, built, image_size, progress)
    feats = out.pop("features")
    feats["test"] = features(cfg, data, built, "test", image_size, progress)
    return Trained(built.model.get_classifier(), time.perf_counter() - start, extra=out, features=feats)


def init_head(cfg: FinetuneConfig, data: Data, built: Built, image_size: int, progress: bool,
              keep_head: bool = True) -> dict:
    """The converged probe on the pretrained backbone: LP-FT's first stage (``keep_head``: the
    model trains on from the probe's head) or, for ``auto``, the baseline a fine-tuned model must
    beat (``keep_head=False``: the model's own fresh head is put back). Either way the probe's
    whole model state is kept for ``auto``'s check on validation."""
    fresh = copy.deepcopy(built.model.get_classifier().state_dict())
    out = fit_head(cfg, data, built, image_size, progress)
    out.pop("features")
    out["probe_state"] = copy.deepcopy(built.model.state_dict())
    if not keep_head:
        built.model.get_classifier().load_state_dict(fresh)
    return out


def keep_better(model: torch.nn.Module, extra: dict, data: Data, built: Built, cfg: FinetuneConfig,
                device: torch.device, reason: str) -> tuple[str, bool, dict | None]:
    """``auto``: keep the fine-tuned model unless its own first-stage probe scores higher on
    validation; returns the reason, with both scores, whether the probe was kept, and the
    fine-tuned model's validation scores when it was kept (``None`` otherwise)."""
    from transferkit.evaluation import evaluate

    if data.size("val") == 0:
        return reason + " (no validation split: kept the fine-tuned model)", False, None
    val = loader(data.images("val", built.eval_tf), cfg)
    scores = evaluate(model, val, len(data.classes), device=device)
    tuned, probe = scores["accuracy"], extra["probe_val_accuracy"]
    if probe > tuned:
        model.load_state_dict(extra["probe_state"])
        return reason + f"; validation: probe {probe:.4f} > fine-tuned {tuned:.4f}, so the probe is kept", True, None
    return (reason + f"; validation: fine-tuned {tuned:.4f} >= probe {probe:.4f}, so the fine-tuned model is kept",
            False, scores)


def eval_loaders(cfg: FinetuneConfig, data: Data, built: Built, trained: Trained) -> dict:
    """Loaders of the val and test splits: cached features for the probe, else images."""
    if trained.features is not None:
        return {s: loader(TensorDataset(*trained.features[s]), cfg) for s in ("val", "test")}
    return {s: loader(data.images(s, built.eval_tf), cfg) for s in ("val", "test")}
