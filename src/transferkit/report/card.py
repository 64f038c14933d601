"""``README.md``: the model card of a run folder (Hugging Face style: YAML front matter, then Markdown):
the data, the recipe, the scores, the intended use, and how to load the model with timm and with
transferkit. ``report.md`` stays the full report; the card is what a reader of the folder (or of a
Hub repository made of it) sees first.

The card is the run's file (``rundir.layout: MODEL_RUN``; ``--overwrite`` replaces it) and carries
``CARD_MARK``; a ``README.md`` without it is the user's own, and :func:`write_model_card` leaves it.
"""

from __future__ import annotations

from pathlib import Path

from transferkit.rundir import atomic_write

CARD_MARK = "<!-- transferkit model card: rewritten with the run; a README.md of your own here is kept -->"

#: scores shown, per command: (metrics key, label)
SCORES = {
    "finetune": (("test_accuracy", "test accuracy"), ("test_macro_f1", "test macro F1"),
                 ("val_accuracy", "validation accuracy"),
                 ("pixel_baseline_accuracy", "raw-pixel logistic regression, test accuracy (baseline)")),
    "adapt": (("target_accuracy", "target test accuracy"), ("target_macro_f1", "target test macro F1"),
              ("source_accuracy", "source test accuracy"), ("source_val_accuracy", "source validation accuracy")),
    "distill": (("student_accuracy", "test accuracy"), ("student_macro_f1", "test macro F1"),
                ("student_val_accuracy", "validation accuracy"), ("teacher_accuracy", "teacher's test accuracy")),
    "pretrain": (("knn_accuracy", "kNN validation accuracy"),
                 ("knn_accuracy_before", "kNN validation accuracy of the starting weights"),
                 ("final_train_loss", "final self-supervised loss")),
}
#: what the card names of the data, from the run's config (adapt's ``data`` is its ``source``: not repeated)
DATA_KEYS = ("data", "source", "target", "teacher")
#: what the card names of the recipe: from the metrics (what was resolved), else the config
RECIPE_KEYS = ("model", "weights", "model_args", "strategy", "method", "loss", "alpha", "temperature", "image_size",
               "epochs", "batch_size", "seed")


def model_card(kind: str, meta: dict, config: dict, metrics: dict, run_name: str, timm_loadable: bool) -> str:
    """The card's text for a ``kind`` run (``finetune``, ``adapt``, ``distill``, ``pretrain``): ``meta`` is
    its ``model.json``, ``config`` its config, ``metrics`` its ``metrics.json`` content, ``run_name`` its
    folder's name; ``timm_loadable``: the folder has a timm ``config.json``."""
    classes, arch = meta.get("classes") or [], meta["architecture"]
    size = meta["data_config"]["input_size"][-1]
    tags = ["image-classification" if classes else "feature-extraction", "timm", "transferkit"]
    lines = ["---", "tags:", *[f"- {t}" for t in tags], *(["library_name: timm"] if timm_loadable else []), "---",
             CARD_MARK, "", f"# {arch}: {title(kind, config, metrics)}", "",
             f"A `{arch}` trained by `transferkit {kind}`"
             + (f" to tell {len(classes)} classes apart: {shown_classes(classes)}." if classes
                else ": a backbone without a classifier (pooled features)."),
             "", "## Data", "", *items(config, DATA_KEYS[1:] if config.get("source") else DATA_KEYS),
             *[f"- {k.replace('_', ' ')}: {v}" for k, v in metrics.items() if k.endswith("_images") and v],
             "", "## Recipe", "", *items({**config, **metrics}, RECIPE_KEYS),
             "", "## Scores", "", *score_lines(kind, metrics),
             "", "Full report, plots and config: `report.html` (one self-contained page; also `report.md`); every score: `metrics.json`.",
             "", "## Intended use", "", *intended_use(classes, size),
             "", "## Load it", "", *loading(kind, run_name, timm_loadable, bool(classes),
                                            float(meta.get("temperature", 1.0))), ""]
    return "\n".join(lines)


def title(kind: str, config: dict, metrics: dict) -> str:
    if kind == "adapt":
        return f"{config.get('source')} -> {config.get('target')} ({metrics.get('method')})"
    if kind == "pretrain":
        return f"{metrics.get('method')} pretraining on {config.get('data')}"
    if kind == "distill":
        return f"{config.get('data')} (distilled from {metrics.get('teacher_model')}, {metrics.get('loss')} loss)"
    return f"{config.get('data')} ({metrics.get('strategy')})"


def shown_classes(classes: list[str], first: int = 10) -> str:
    more = f" and {len(classes) - first} more" if len(classes) > first else ""
    return ", ".join(f"`{c}`" for c in classes[:first]) + more


def items(values: dict, keys: tuple[str, ...]) -> list[str]:
    return [f"- {k.replace('_', ' ')}: `{values[k]}`" for k in keys if values.get(k) not in (None, "", {}, [])]


def score_lines(kind: str, metrics: dict) -> list[str]:
    rows = [f"| {label} | {metrics[key]:.4f} |" for key, label in SCORES.get(kind, ())
            if isinstance(metrics.get(key), (int, float))]
    verdict = [f"> {metrics[k]}" for k in ("baseline_verdict", "baseline_note") if metrics.get(k)]
    table = ["| score | value |", "|---|---|", *rows] if rows else ["No held-out score was computed."]
    return [*table, *([""] + verdict if verdict else [])]


def intended_use(classes: list[str], size: int) -> list[str]:
    if not classes:
        return ["A starting point for fine-tuning on images like the pretraining images "
                "(`transferkit finetune --weights THIS_FOLDER`), or a feature extractor."]
    return [f"Classifying images like the training images into these {len(classes)} classes, at "
            f"{size}x{size} pixels (each image is resized whole to that size). It always answers one of its "
            "classes: an image of anything else still gets one, so check the probability. The scores above "
            "hold for images from the same source as its test split, not beyond."]


def loading(kind: str, run_name: str, timm_loadable: bool, classifier: bool, temperature: float = 1.0) -> list[str]:
    """How to load the folder; ``temperature``: the calibration fitted on validation (``model.json``),
    which ``transferkit predict`` applies: probabilities = softmax(logits / T)."""
    scaled = "model(x)" if temperature == 1.0 else f"(model(x) / {temperature:.4g})"
    note = [] if temperature == 1.0 else [f"    # {temperature:.4g}: the temperature calibrated on validation "
                                          "(model.json), as transferkit predict applies it"]
    timm_code = ["```python", "import timm", "import torch", "from PIL import Image", "",
                 f'model = timm.create_model("local-dir:{run_name}", pretrained=True).eval()  # this folder',
                 "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
                 'x = transform(Image.open("image.png").convert("RGB")).unsqueeze(0)',
                 "with torch.no_grad():",
                 *([*note, f"    probs = {scaled}.softmax(-1)",
                    'print(model.pretrained_cfg["label_names"][int(probs.argmax())])']
                   if classifier else ["    features = model(x)  # pooled features"]), "```"]
    timm_part = (["With timm (the folder's `config.json` + `model.safetensors`):", "", *timm_code] if timm_loadable
                 else ["timm cannot rebuild this model alone (its BatchNorm layers were replaced by GroupNorm); "
                       "load it with transferkit."])
    if not classifier:
        return [*timm_part, "", "With transferkit:", "", "```bash",
                f"transferkit finetune --weights {run_name} --data DATA", "```"]
    return [*timm_part, "", "With transferkit:", "", "```python", "import transferkit as tk", "",
            f'model = tk.load("{run_name}")', 'print(model.predict("image.png", topk=3))', "```", "",
            "```bash", f"transferkit predict {run_name} image.png", "```"]


def write_model_card(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless a ``README.md`` of the user's (one without
    ``CARD_MARK``) is there; returns whether it was written."""
    path = Path(path)
    if path.is_file() and CARD_MARK not in path.read_text(encoding="utf-8", errors="replace"):
        return False
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return True
