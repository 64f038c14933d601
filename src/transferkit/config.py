"""Typed run configuration (pydantic), saved as ``config.yaml`` in each run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transferkit.errors import ConfigError
from transferkit.strategies import STRATEGIES


class FinetuneConfig(BaseModel):
    """Everything that defines a ``transferkit finetune`` run."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str
    model: str = "efficientnet_lite0"
    weights: str = "packaged"
    strategy: str = "auto"
    epochs: int | None = Field(None, ge=1, description="None: the strategy's default")
    batch_size: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0, description="head LR; None: the strategy's default")
    backbone_lr_mult: float = Field(0.1, ge=0)
    lr_decay: float | None = Field(None, gt=0, le=1, description="layer group i from the top trains at "
                                   "lr x lr_decay^i (head i=0); takes precedence over backbone_lr_mult")
    unfreeze_every: int = Field(1, ge=1, description="gradual: unfreeze one more group every N epochs")
    bn: Literal["auto", "train", "freeze"] = "auto"
    norm: Literal["batchnorm", "groupnorm"] = "batchnorm"
    reg: Literal["none", "l2sp", "lwf"] = "none"
    reg_alpha: float = Field(0.1, ge=0)
    reg_beta: float = Field(0.01, ge=0)
    lwf_weight: float = Field(1.0, ge=0, description="lwf: weight of the source-output distillation loss")
    lwf_temperature: float = Field(2.0, gt=0, description="lwf: softmax temperature T")
    source_eval: bool = Field(False, description="measure forgetting: source-head agreement with the pretrained model")
    source_data: str | None = Field(None, description="images for --source-eval (default: the target's test "
                                    "split); implies source_eval")
    source_labels: bool = Field(False, description="the class names of source_data are source-class indices: "
                                "also report source accuracy")
    wise_alpha: float | None = Field(None, ge=0, le=1, description="WiSE-FT: interpolate backbone weights")
    wise_curve: list[float] | None = Field(None, description="WiSE-FT: also evaluate these alphas (the alpha curve)")
    lora_rank: int = Field(4, ge=1, description="lora: rank r of the low-rank updates (4: 3.1 percent of EfficientNet-Lite0 trains)")
    lora_alpha: float | None = Field(None, gt=0, description="lora: scale alpha/r; None: 2 x rank")
    lora_targets: str | None = Field(None, description="lora: comma-separated module names (or suffixes); "
                                     "None: 1x1 convolutions (CNN) or attention qkv/proj (ViT)")
    weight_decay: float = Field(0.05, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    image_size: int | None = Field(None, ge=16, description="None: the strategy's default")
    hflip: float = Field(0.0, ge=0, le=1)
    val_split: float = Field(0.15, ge=0, lt=1)
    test_split: float = Field(0.2, ge=0, lt=1)
    per_class: int | None = Field(None, ge=1)
    test_per_class: int | None = Field(None, ge=1, description="evaluate on at most N seeded test images per class")
    seed: int = 0
    skip_bad_images: bool = False
    baseline: bool = Field(True, description="also score logistic regression on raw pixels")
    workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = Field(1, ge=1)
    dist: str = "auto"
    precision: str = "32-true"
    out: str | None = None

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy '{v}'; choose one of: {', '.join(STRATEGIES)}")
        return v

    @field_validator("wise_curve")
    @classmethod
    def _alphas_in_range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(0.0 <= a <= 1.0 for a in v):
            raise ValueError(f"WiSE-FT alphas must be in [0, 1], got {v}")
        return v

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(), sort_keys=False))

    @classmethod
    def load(cls, path: Path, **overrides) -> "FinetuneConfig":
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        return cls.build(**{**raw, **overrides})

    @classmethod
    def build(cls, **values) -> "FinetuneConfig":
        """Validate ``values``; an invalid option becomes one ConfigError line."""
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "config"
            raise ConfigError(f"invalid option {where}: {err['msg']}") from None
