"""Change a model's structure or trainability."""

from transferkit.surgery.heads import backbone_parameters, count_parameters, head_parameters, replace_head
from transferkit.surgery.resize import resize_pos_embed

__all__ = ["backbone_parameters", "count_parameters", "head_parameters", "replace_head", "resize_pos_embed"]
