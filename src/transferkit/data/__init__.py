"""Datasets, transforms and splits."""

from transferkit.data.files import (
    IMAGE_EXTENSIONS,
    display_name,
    is_image_file,
    is_junk,
    iter_image_files,
    quoted,
    subfolders,
)
from transferkit.data.sources import ImageSet, Source, as_rgb, check_images, content_fingerprint, load_source, open_image
from transferkit.data.splits import Splits, cap_per_class, few_shot_indices, make_splits
from transferkit.data.transforms import TransformedSubset, build_transform, data_config_for, eval_data_config

__all__ = [
    "cap_per_class",
    "IMAGE_EXTENSIONS",
    "ImageSet",
    "Source",
    "Splits",
    "TransformedSubset",
    "as_rgb",
    "build_transform",
    "check_images",
    "content_fingerprint",
    "data_config_for",
    "eval_data_config",
    "display_name",
    "few_shot_indices",
    "is_image_file",
    "is_junk",
    "iter_image_files",
    "load_source",
    "make_splits",
    "open_image",
    "quoted",
    "subfolders",
]
