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
from transferkit.data.balance import balanced_sampler, class_counts, inverse_frequency_weights
from transferkit.data.mixing import Mixing, mix_batch, mixed_cross_entropy
from transferkit.data.transforms import (AUGMENT_POLICIES, AUGMENTS, TransformedSubset, build_transform, data_config_for,
                                         eval_data_config, train_transform)

__all__ = [
    "AUGMENTS",
    "AUGMENT_POLICIES",
    "Mixing",
    "balanced_sampler",
    "class_counts",
    "inverse_frequency_weights",
    "mix_batch",
    "mixed_cross_entropy",
    "train_transform",
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
