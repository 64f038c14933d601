"""Evaluation stages on what fine-tuning did to the source task: forgetting and WiSE-FT."""

from __future__ import annotations

import torch

from transferkit.config import FinetuneConfig
from transferkit.engine.stages import Built, Data, loader, source_model


class Drift:
    """``drift(model) -> {source_agreement, source_kl[, source_accuracy...]}`` of a fine-tuned
    ``model`` against the pretrained one (``{}`` when ``--source-eval`` is off).

    Images: the target's test split, or ``--source-data`` (with ``--source-labels`` its class
    folders are source-class indices and source accuracy is reported too).
    """

    def __init__(self, cfg: FinetuneConfig, image_size: int, built: Built, data: Data):
        self.on = cfg.source_eval or cfg.source_data is not None
        if not self.on:
            return
        from transferkit.data import TransformedSubset, load_source

        self.source = source_model(cfg, image_size)
        self.label_map = None
        if cfg.source_data is None:
            self.loader = loader(data.images("test", built.eval_tf), cfg)
            return
        images = load_source(cfg.source_data, skip_bad_images=cfg.skip_bad_images).train
        if cfg.source_labels:
            n = self.source.num_classes
            bad = [c for c in images.classes if not c.isdigit() or int(c) >= n]
            if bad:
                from transferkit.errors import ConfigError

                raise ConfigError(f"--source-labels: class '{bad[0]}' of {cfg.source_data} is not a source-class "
                                  f"index (0..{n - 1})")
            self.label_map = [int(c) for c in images.classes]
        self.loader = loader(TransformedSubset(images, range(len(images)), built.eval_tf), cfg)

    def __call__(self, model: torch.nn.Module) -> dict:
        if not self.on:
            return {}
        from transferkit.evaluation.forgetting import SourceView, source_drift

        return source_drift(self.source, SourceView(model, self.source.get_classifier()), self.loader, self.label_map)


def wise_metrics(cfg: FinetuneConfig, model: torch.nn.Module, pretrained: dict | None, test_loader,
                 num_classes: int, device: torch.device, drift: Drift) -> dict:
    """WiSE-FT: the alpha curve (test accuracy and forgetting per alpha), then ``model`` set to
    ``--wise-alpha`` (and the fine-tuned test accuracy before it), or left fine-tuned."""
    if pretrained is None:
        return {}
    from transferkit.evaluation import evaluate
    from transferkit.surgery.heads import split_head
    from transferkit.surgery.wise_ft import wise_ft

    has_test = len(test_loader.dataset) > 0
    score = lambda: evaluate(model, test_loader, num_classes, device=device)["accuracy"] if has_test else None  # noqa: E731
    finetuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    head = {n for n, _ in split_head(model)[1]}
    curve = []
    for alpha in cfg.wise_curve or []:
        model.load_state_dict(wise_ft(pretrained, finetuned, alpha, keep=head))
        curve.append({"alpha": alpha, "test_accuracy": score(), **drift(model)})
    model.load_state_dict(finetuned)
    out = {"wise_curve": curve} if curve else {}
    if cfg.wise_alpha is not None:
        out.update(wise_alpha=cfg.wise_alpha, test_accuracy_before_wise=score())
        model.load_state_dict(wise_ft(pretrained, finetuned, cfg.wise_alpha, keep=head))
    return out
