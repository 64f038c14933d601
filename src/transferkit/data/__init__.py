"""Datasets, transforms and splits."""

from transferkit.data.sources import IMAGE_EXTENSIONS, ImageSet, Source, check_images, load_source
from transferkit.data.splits import Splits, cap_per_class, few_shot_indices, make_splits
from transferkit.data.transforms import TransformedSubset, build_transform, data_config_for

__all__ = [
    "cap_per_class",
    "IMAGE_EXTENSIONS",
    "ImageSet",
    "Source",
    "Splits",
    "TransformedSubset",
    "build_transform",
    "check_images",
    "data_config_for",
    "few_shot_indices",
    "load_source",
    "make_splits",
]
