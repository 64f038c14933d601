"""Load a pretrained timm model from any source: timm's hub, a PyPI package, a local file; layer groups."""

from transferkit.backbones.groups import describe_groups, layer_groups
from transferkit.backbones.load import (
    build_from_description,
    describe_model,
    list_backbones,
    load_backbone,
    read_state_dict,
)
from transferkit.backbones.packaged import PACKAGED, packaged_available, packaged_state_dict
from transferkit.backbones.timm_config import timm_config

__all__ = [
    "PACKAGED",
    "build_from_description",
    "describe_groups",
    "describe_model",
    "layer_groups",
    "list_backbones",
    "load_backbone",
    "packaged_available",
    "packaged_state_dict",
    "read_state_dict",
    "timm_config",
]
