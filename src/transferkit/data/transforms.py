"""Train/eval transforms resolved from the model's pretrained config (timm).

Mean, std and interpolation come from the model (``data_config_for`` or any
``timm.data.resolve_data_config`` dict); the output size is ``image_size``.

Choices, made for small, centred inputs (digits, Fashion-MNIST, crops):

* eval: resize the whole image to ``image_size`` x ``image_size`` (timm
  ``crop_pct=1.0``, ``crop_mode='squash'``); no centre crop, which would cut
  off content at the borders.
* train: light augmentation only -- RandomResizedCrop with scale (0.7, 1.0)
  and ratio (3/4, 4/3); horizontal flip off by default (digits and text are
  not flip-invariant; pass ``hflip=0.5`` for natural images); no colour
  jitter, AutoAugment or random erasing. That is ``--augment light``, the default;
  :data:`AUGMENT_POLICIES` adds timm's RandAugment or a TrivialAugment to it, and
  ``--augment none`` trains on the evaluation transform (:func:`train_transform`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import timm.data
import torch
import torch.utils.data
from PIL import Image

from transferkit.data.sources import ImageSet

TRAIN_SCALE = (0.7, 1.0)
TRAIN_RATIO = (3 / 4, 4 / 3)


def data_config_for(model: torch.nn.Module, image_size: int) -> dict[str, Any]:
    """The model's timm data config (mean, std, interpolation) at input size
    (3, image_size, image_size) with ``crop_pct=1.0``."""
    return timm.data.resolve_data_config(
        {"input_size": (3, image_size, image_size), "crop_pct": 1.0}, model=model
    )


#: The strong augmentation of self-training's target view: timm's RandAugment, 2 ops of magnitude 10
#: (FixMatch's RandAugment draws 2 ops at a random magnitude; ``mstd0.5`` jitters the magnitude).
STRONG = "rand-m10-n2-mstd0.5"

#: ``--augment`` presets: the timm ``auto_augment`` policy added to the light crop (None: the crop alone).
#: randaugment: timm's ImageNet recipe, 2 ops at magnitude 9 (std 0.5), severity increasing with magnitude;
#: trivialaugment (Muller & Hutter 2021): 1 op, always applied, at a magnitude drawn uniformly in [0, 10]
#: (``mstd`` > 100 means uniform in timm), over the same (increasing) RandAugment ops.
#: ``mmax9`` caps the jittered magnitude at 9: at 10, timm's increasing posterize keeps 0 bits, which
#: Pillow >= 10 refuses ("bits must be between or equal to 1 and 8": a crash in the data loader).
AUGMENT_POLICIES: dict[str, str | None] = {
    "light": None,
    "randaugment": "rand-m9-mstd0.5-mmax9-inc1",
    "trivialaugment": "rand-n1-m10-mstd101-inc1-p1.0",
}
#: the ``--augment`` choices: none (no augmentation: the evaluation transform) and the presets
AUGMENTS = ("none", *AUGMENT_POLICIES)


def build_transform(
    data_cfg: dict[str, Any], image_size: int, train: bool, hflip: float = 0.0, auto_augment: str | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """A timm transform mapping an RGB PIL image to a normalised float tensor
    of shape (3, image_size, image_size); see the module docstring. ``auto_augment``: a timm policy
    string added to the training transform (e.g. ``STRONG``, RandAugment)."""
    common = eval_data_config(data_cfg, image_size)
    if train:
        common = {k: v for k, v in common.items() if k not in ("crop_pct", "crop_mode")}
        return timm.data.create_transform(
            **common, is_training=True, scale=TRAIN_SCALE, ratio=TRAIN_RATIO,
            hflip=hflip, vflip=0.0, color_jitter=None, auto_augment=auto_augment, re_prob=0.0,
        )
    return timm.data.create_transform(**common, is_training=False)


def train_transform(
    data_cfg: dict[str, Any], image_size: int, augment: str = "light", hflip: float = 0.0
) -> Callable[[Image.Image], torch.Tensor]:
    """The training transform of ``--augment``: ``none`` is the evaluation transform (no crop, no flip:
    ``hflip`` unused); ``light``, ``randaugment``, ``trivialaugment`` the light crop (and ``hflip``) plus
    :data:`AUGMENT_POLICIES`' timm policy."""
    if augment == "none":
        return build_transform(data_cfg, image_size, train=False)
    if augment not in AUGMENT_POLICIES:
        raise ValueError(f"unknown augment '{augment}'; choose one of: {', '.join(AUGMENTS)}")
    return build_transform(data_cfg, image_size, train=True, hflip=hflip, auto_augment=AUGMENT_POLICIES[augment])


def eval_data_config(data_cfg: dict[str, Any], image_size: int) -> dict[str, Any]:
    """The timm data config of the evaluation transform (``build_transform(..., train=False)``):
    ``input_size`` (3, image_size, image_size), ``interpolation``, ``mean``, ``std`` from ``data_cfg``,
    ``crop_pct=1.0`` and ``crop_mode='squash'`` (the whole image resized, nothing cut off).
    ``timm.data.create_transform(**eval_data_config(...))`` is that transform; a run's timm
    ``config.json`` records these values, so timm's own preprocessing is the run's."""
    return dict(
        input_size=(3, image_size, image_size),
        interpolation=data_cfg.get("interpolation", "bicubic"),
        mean=tuple(data_cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)),
        std=tuple(data_cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)),
        crop_pct=1.0,
        crop_mode="squash",
    )


class TransformedSubset(torch.utils.data.Dataset):
    """``images[indices[i]]`` through ``transform``: ``(tensor, class index)``."""

    def __init__(
        self,
        images: ImageSet,
        indices: Sequence[int] | np.ndarray,
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    @property
    def targets(self) -> np.ndarray:
        """Class index of each item."""
        return self.images.targets[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, target = self.images[int(self.indices[i])]
        return self.transform(image), target
