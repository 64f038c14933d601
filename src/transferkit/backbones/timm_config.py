"""A saved model as timm reads it: the ``config.json`` beside ``model.safetensors`` that makes the
folder a timm / Hugging Face model, ``timm.create_model("local-dir:FOLDER", pretrained=True)``.

timm (``models/_hub.py: load_model_config_from_path``) reads ``architecture`` (the model to
build), ``model_args`` (keyword arguments of ``create_model``: the architecture arguments and, for
ViT-like models, ``img_size``), ``num_classes`` and ``label_names`` (copied into the pretrained
config) and ``pretrained_cfg``; the weights are the folder's ``model.safetensors``.
``pretrained_cfg`` replaces the architecture's registered one, so it carries what describes the
architecture (``first_conv``, ``classifier``, ``fixed_input_size``) and the preprocessing the
model was evaluated with (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``,
``std``): ``timm.data.resolve_data_config(model=m)`` then gives that preprocessing back.
``num_features`` is informational, as in the files timm writes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: keys of the architecture's pretrained config that still hold for any weights of it
ARCHITECTURE_KEYS = ("first_conv", "classifier", "fixed_input_size")
#: keys of the preprocessing (a timm data config)
DATA_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def timm_config(model: nn.Module, label_names: list[str] | None, data_config: dict[str, Any]) -> dict[str, Any]:
    """timm's ``config.json`` content for ``model`` (built by ``load_backbone``: its ``timm_args``
    are the ``model_args``) with classes ``label_names`` (None or empty: a model without a
    classifier, ``num_classes`` 0) evaluated through timm data config ``data_config``."""
    registered = model.pretrained_cfg
    num_classes = int(model.num_classes)
    pretrained_cfg = {k: registered[k] for k in ARCHITECTURE_KEYS if registered.get(k) is not None}
    pretrained_cfg |= {k: _plain(data_config[k]) for k in DATA_KEYS if k in data_config}
    pretrained_cfg["num_classes"] = num_classes
    config: dict[str, Any] = {"architecture": registered["architecture"], "num_classes": num_classes,
                              "num_features": int(model.num_features)}
    if label_names:
        config["label_names"] = pretrained_cfg["label_names"] = list(label_names)
    args = {k: _plain(v) for k, v in getattr(model, "timm_args", {}).items()}
    if args:
        config["model_args"] = args
    config["pretrained_cfg"] = pretrained_cfg
    return config


def _plain(value: Any) -> Any:
    """Tuples as lists (what JSON holds); other values as they are."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value
