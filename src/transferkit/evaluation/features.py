"""Frozen features: one extractor and one on-disk cache.

When nothing before the head trains and no random augmentation is used, the
head's inputs never change, so they are computed once (under
``torch.inference_mode``, on the model's device) and the head is fitted on the
cached tensors — the fast path for linear probing, LP-FT's first stage, LogME
and kNN (DESIGN: "Frozen backbone => cached features").

* :func:`map_batches` — the one loop: ``fn(model, x) -> {name: (B, ...)}`` over a
  loader, in eval and inference mode on a device, with a transient rich progress
  bar; the model's mode and device are restored afterwards. Everything that runs a
  frozen network over a dataset goes through it (:func:`extract_features`,
  :func:`~transferkit.evaluation.metrics.predict_logits`,
  :func:`transferkit.transferability.rank.extract_layers`).
* :func:`extract_features` — pre-logits features ``(N, D)`` and labels ``(N,)``.
* :class:`FeatureCache` — tensors on disk, one ``.safetensors`` file per key; a key
  is a JSON-able dict (model, weights identity, layer, image size, data
  fingerprint, split indices hash, augmentation view, ...) hashed to a file name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from transferkit.errors import ConfigError
from transferkit.rundir import atomic_write

__all__ = ["FeatureCache", "default_cache_dir", "extract_features", "feature_key", "indices_digest",
           "map_batches", "pre_logits", "weights_identity"]

#: Bump when extraction changes in a way that cache keys do not capture.
CACHE_VERSION = 1


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The head's input for a timm model: pooled features, shape ``(B, D)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def resolve_device(device: str | None) -> torch.device:
    """``None`` or ``"cpu"`` -> cpu; ``"cuda"``, ``"cuda:N"``; ``"auto"`` -> cuda if available, else cpu."""
    device = "cpu" if device is None else str(device).strip().lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise ConfigError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto")
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for but CUDA is not available here; use cpu or auto")
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device '{device}' does not exist: {torch.cuda.device_count()} CUDA device(s) "
                          "(cuda:0 ...); pick one of them")
    return torch.device("cuda", index)


def model_device(model: nn.Module) -> torch.device:
    """Device of ``model``'s first parameter (or buffer); CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _to_channels_last(model: nn.Module) -> bool:
    """Put ``model``'s 4-D weights in channels-last (NHWC) order; True if any was not."""
    if all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def map_batches(model: nn.Module, loader: Iterable, fn: Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]],
                *, device: torch.device | str | None = None, progress: bool = True,
                desc: str = "features", channels_last: bool = True) -> dict[str, torch.Tensor]:
    """``{name: cat over batches of fn(model, x)[name]}`` (float32, CPU) plus ``"labels"`` (int64).

    ``loader`` yields ``(x, y)``. Runs under ``torch.inference_mode`` with the
    model in eval mode on ``device`` (``None``: where the model already is);
    afterwards the model is back in its former mode, device and memory format, and torch's global
    random generator where it was (so a cache hit and a fresh extraction leave the same random
    state to whatever runs next, e.g. training).
    An empty loader gives ``{}``. ``channels_last``: run convolutions on NHWC weights and images
    (EfficientNet-Lite0 on 2 CPU cores, four runs of ``benchmarks/bench_extract.py``: 1.0-1.5x the
    images per second at 64 px, 1.5-2x at 224 px; the same outputs up to float rounding).
    """
    was_training, home = model.training, model_device(model)
    device = home if device is None else torch.device(device)
    model.eval().to(device)
    nhwc = channels_last and _to_channels_last(model)
    out: dict[str, list[torch.Tensor]] = {}
    try:  # fork_rng: iterating a DataLoader draws a seed from torch's global generator
        with torch.random.fork_rng(devices=[]), torch.inference_mode(), \
                Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(desc, total=len(loader) if hasattr(loader, "__len__") else None)
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                if nhwc and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                for name, t in fn(model, x).items():
                    out.setdefault(name, []).append(t.float().cpu())
                out.setdefault("labels", []).append(torch.as_tensor(y).long().cpu())
                bar.advance(task)
    finally:
        if nhwc:
            model.to(memory_format=torch.contiguous_format)
        model.to(home).train(was_training)
    return {name: torch.cat(ts) for name, ts in out.items()}


def extract_features(model: nn.Module, loader: Iterable, desc: str = "features", progress: bool = True, *,
                     device: torch.device | str | None = None,
                     channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float32 CPU, labels (N,) int64)``: ``model``'s pre-logits over ``loader``.

    See :func:`map_batches` for device, mode, memory format and progress. An empty loader
    (e.g. ``--val-split 0``) gives ``(N=0, D=model.num_features)`` tensors.
    Pass ``desc`` and ``progress`` by keyword; they are positional only for the
    callers written before ``device`` existed.
    """
    got = map_batches(model, loader, lambda m, x: {"features": pre_logits(m, x)},
                      device=device, progress=progress, desc=desc, channels_last=channels_last)
    if not got:
        return torch.empty(0, getattr(model, "num_features", 0)), torch.empty(0, dtype=torch.long)
    return got["features"], got["labels"]


# ----------------------------------------------------------------------------- cache keys
def default_cache_dir() -> Path:
    """``$TRANSFERKIT_CACHE/features`` if that variable is set, else ``~/.cache/transferkit/features``."""
    root = os.environ.get("TRANSFERKIT_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "transferkit") / "features"


def indices_digest(indices: np.ndarray | torch.Tensor | Iterable[int]) -> str:
    """Short stable hash of a sequence of integer indices (a split's selection), for a cache key."""
    arr = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else list(indices), dtype="<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def weights_identity(name: str, weights: str, seed: int = 0) -> str:
    """What identifies a backbone's weights' content, for a cache key.

    ``packaged``: package and version; ``imagenet``: the timm name; ``none``
    (random init): the seed and torch version; a file (a run directory's
    ``model.safetensors``): its resolved path, size and modification time.
    """
    if weights == "packaged":
        from transferkit.backbones import PACKAGED
        package = PACKAGED[name.partition(".")[0]]
        return f"packaged:{package}=={importlib.metadata.version(package)}"
    if weights == "imagenet":
        return f"imagenet:{name}"
    if weights == "none":
        return f"none:seed={seed}:torch={torch.__version__}"
    path = Path(weights).expanduser().resolve()
    if path.is_dir():  # a run directory: its weights file
        path = path / "model.safetensors"
    st = path.stat()
    return f"file:{path}:{st.st_size}:{st.st_mtime_ns}"


def feature_key(*, model: str, weights: str, image_size: int, data: str, layer: str = "last",
                split: str | None = None, indices=None, view: int | None = None, **extra: Any) -> dict[str, Any]:
    """The cache key of one set of features.

    ``weights``: :func:`weights_identity`; ``data``: the images' identity (e.g.
    :meth:`ImageSet.fingerprint`, which covers the selected images); ``indices``:
    a split's selection, hashed by :func:`indices_digest` (when ``data`` does not
    already cover it); ``view``: which augmented view (``None``/absent: the eval
    transform); ``extra``: anything else that changes the features. The timm
    version is included.
    """
    import timm

    key = {"model": model, "weights": weights, "layer": layer, "image_size": int(image_size), "data": data,
           "timm": timm.__version__, **extra}
    for name, value in (("split", split), ("view", view)):
        if value is not None:
            key[name] = value
    if indices is not None:
        key["indices"] = indices_digest(indices)
    return key


# ----------------------------------------------------------------------------- cache
class FeatureCache:
    """Tensors on disk under ``root``, one ``.safetensors`` file per key.

    A key is a JSON-serialisable dict; its file name is a readable label (from
    the key's ``model``, ``layer``, ``image_size``, ``split``, ``view`` entries
    when present) plus a SHA-256 prefix of the whole key (with
    :data:`CACHE_VERSION`). The key is stored in the file's metadata and checked
    on read. Writes are atomic (:func:`transferkit.rundir.atomic_write`), so a
    reader never sees half a file; a file that cannot be read, or whose stored
    key differs, is a miss and is recomputed by :meth:`cached`.
    """

    LABEL_FIELDS = ("model", "layer", "image_size", "split", "view")

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the feature cache folder '{self.root}' ({e.strerror}); "
                              "pass --cache-dir DIR or set TRANSFERKIT_CACHE") from None

    @staticmethod
    def _canonical(key: dict[str, Any]) -> str:
        return json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str)

    def path(self, key: dict[str, Any]) -> Path:
        """The file that holds ``key``'s tensors (it may not exist)."""
        digest = hashlib.sha256(self._canonical(key).encode()).hexdigest()[:20]
        label = "-".join(str(key[f]) for f in self.LABEL_FIELDS if f in key)
        label = re.sub(r"[^A-Za-z0-9_.+-]", "_", label)[:80]
        return self.root / f"{label + '-' if label else ''}{digest}.safetensors"

    def get(self, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or ``None`` when absent, unreadable or stored under another key."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != self._canonical(key):
                    return None
                return {name: f.get_tensor(name) for name in f.keys()}
        except Exception:                                            # truncated or foreign file: a miss
            return None

    def put(self, key: dict[str, Any], tensors: dict[str, torch.Tensor], **metadata: Any) -> Path:
        """Store ``tensors`` (moved to CPU) under ``key``, atomically; ``metadata`` is kept as strings."""
        state = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
        meta = {**{k: str(v) for k, v in metadata.items()}, "key": self._canonical(key)}
        return atomic_write(self.path(key), lambda p: save_file(state, str(p), metadata=meta))

    def cached(self, key: dict[str, Any], compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``get(key)``, or on a miss ``compute()``, stored with :meth:`put`; CPU tensors either way."""
        hit = self.get(key)
        if hit is not None:
            return hit
        tensors = {name: t.detach().cpu() for name, t in compute().items()}
        self.put(key, tensors)
        return tensors
